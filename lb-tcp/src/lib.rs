//! Layer-4 (TCP) load balancing built on [`lb_core`].
//!
//! This crate is being built: listeners, connect with failover, the `splice(2)` relay and
//! the PROXY protocol arrive with the lb-tcp issue. Nothing here is usable yet.
#![forbid(unsafe_code)]
