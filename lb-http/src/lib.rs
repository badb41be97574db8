//! Layer-7 (HTTP) load balancing built on [`lb_core`]: tower layers and a hyper reverse proxy.
//!
//! This crate is being built: the layers, the proxy and the balancer manager arrive with the
//! lb-http issue. Nothing here is usable yet.
#![forbid(unsafe_code)]
