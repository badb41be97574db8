//! Layer-7 (HTTP) load balancing built on [`lb_core`]: tower layers and a hyper reverse proxy.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod body;
pub mod error;
pub mod ext;
pub mod guard;
pub mod hcheck;
pub mod headers;
pub mod member;
pub mod proxy;
pub mod retry;
pub mod router;
pub mod server;
pub mod sticky;

pub use error::{BalanceError, Error, ProxyError, Result};

/// The error type services in this crate return; downcast to [`ProxyError`],
/// [`BalanceError`] and friends to see what happened.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
