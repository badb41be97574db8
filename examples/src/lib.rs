//! Shared code of the lb binaries.
#![forbid(unsafe_code)]

pub mod ha;
pub mod limits;
