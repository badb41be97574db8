//! Health: active checks and passive ejection, both feeding a backend's state.
//!
//! Active checks implement [`HealthCheck`]; a monitor runs them per backend with the
//! thresholds and intervals (those live in the monitor, not in each check). Passive health
//! is configured with [`PassiveConfig`]: failures reported through
//! [`Lease::failure`](crate::Lease::failure) put a backend in error for a blacklist time
//! (pen's `-b`, Apache's `retry`), after which it is tried again.

mod passive;

use std::fmt;
use std::future::Future;

pub use passive::PassiveConfig;

use crate::backend::Backend;

/// Why a health check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The check did not finish within its timeout.
    #[error("health check timed out")]
    Timeout,
    /// Connecting failed.
    #[error("health check could not connect: {0}")]
    Connect(String),
    /// The backend answered, but not as expected.
    #[error("health check got an unexpected answer: {0}")]
    Unexpected(String),
    /// The check itself could not run (a script missing, a bad setting).
    #[error("health check could not run: {0}")]
    Setup(String),
}

/// One active health check of a backend.
pub trait HealthCheck: Send + Sync + fmt::Debug + 'static {
    /// Checks `target` once. Timeouts are applied by the monitor.
    fn check(&self, target: &Backend) -> impl Future<Output = Result<(), CheckError>> + Send;
}
