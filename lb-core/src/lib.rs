//! The balancing model of lb.
#![forbid(unsafe_code)]
