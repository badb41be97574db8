//! High availability for lb: a pluggable failover trait and Heartbeat-style node pairs.
//!
//! This crate is being built: the membership protocol and virtual IP resources arrive with
//! the lb-ha issue. Nothing here is usable yet.
#![forbid(unsafe_code)]
