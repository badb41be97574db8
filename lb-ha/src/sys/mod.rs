//! The one place with `unsafe`: sending raw link-layer frames through `AF_PACKET`.
#![allow(unsafe_code)]

pub(crate) mod packet;
