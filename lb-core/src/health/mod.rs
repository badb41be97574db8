//! Health: active checks and passive ejection, both feeding a backend's state.
//!
//! # Active checks
//!
//! A check implements [`HealthCheck`]: one async method that checks a backend once. The
//! [`Monitor`] runs a check per backend of a [`Balancer`](crate::Balancer) and owns all the
//! policy, as HAProxy's `inter`/`fastinter`/`downinter`/`rise`/`fall` and Apache's
//! `hcinterval`/`hcpasses`/`hcfails` do: the interval (with seeded jitter), a timeout (a
//! check that takes longer failed), and the thresholds: a backend goes down after `fall`
//! consecutive failures and comes back up after `rise` consecutive successes; the monitor
//! calls [`Balancer::set_health`](crate::Balancer::set_health) exactly at those points, so
//! subscribers see one [`EventKind::Health`](crate::EventKind::Health) per transition.
//!
//! Built in: [`TcpCheck`] (a TCP or Unix-socket connect) and [`ExecCheck`] (a script, as
//! keepalived's `MISC_CHECK`, optionally setting the weight from its exit code as
//! `misc_dynamic`). HTTP checks live in lb-http.
//!
//! A check can report more than up or down through [`HealthCheck::probe`], which returns a
//! [`CheckReport`]; today that is a weight, which the monitor applies with
//! [`Balancer::set_weight`](crate::Balancer::set_weight).
//!
//! # Passive health
//!
//! Configured with [`PassiveConfig`]: failures reported through
//! [`Lease::failure`](crate::Lease::failure) put a backend in error for a blacklist time
//! (pen's `-b`, Apache's `retry`), doubling on each repeated ejection up to a cap, after
//! which it is tried again; the last usable backend is not ejected unless configured. In
//! the pipeline ([`PipelineConfig`](crate::PipelineConfig)), Envoy's panic threshold and
//! Apache's `forcerecovery` decide what happens when too many backends are in error.

mod exec_check;
mod monitor;
mod passive;
mod tcp_check;

use std::fmt;
use std::future::Future;

pub use exec_check::ExecCheck;
pub use monitor::{CheckStatus, Monitor, MonitorConfig, MonitorGroup, MonitorHandle};
pub use passive::PassiveConfig;
pub use tcp_check::TcpCheck;

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
    /// The checker's own host ran short (file descriptors, socket buffers, memory: see
    /// [`is_local_shortage`]), so the check could not be made. That says nothing of the
    /// backend: a [`Monitor`] leaves its health, and its run of passes or failures, as they
    /// were, where a [`Connect`](Self::Connect) failure would have counted against it (and,
    /// with every backend failing so at once, taken them all down).
    #[error("health check could not be made for want of local resources: {0}")]
    Local(String),
}

impl CheckError {
    /// A check's failed connect to `target`: [`Local`](Self::Local) when this host ran
    /// short ([`is_local_shortage`]), else [`Connect`](Self::Connect).
    pub fn connect(target: &dyn std::fmt::Display, e: &std::io::Error) -> CheckError {
        if is_local_shortage(e) {
            CheckError::Local(format!("{target}: {e}"))
        } else {
            CheckError::Connect(format!("{target}: {e}"))
        }
    }
}

/// Whether a failed `socket()`, `connect()`, `accept()` or `fork()` says that this host ran
/// short rather than that the other end failed: `EMFILE`, `ENFILE` (file descriptors),
/// `ENOBUFS` (socket buffers), `ENOMEM`. Every other backend would meet the same shortage.
/// Not `EADDRNOTAVAIL`: it depends on the destination (an IPv6 address on a host without
/// IPv6, the local ports to one backend used up).
pub fn is_local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What a passing check can report besides "up".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// A new weight for the backend (keepalived's `misc_dynamic`); `None`: unchanged.
    pub weight: Option<u32>,
}

impl CheckReport {
    /// A report that sets the weight.
    pub fn with_weight(weight: u32) -> Self {
        CheckReport {
            weight: Some(weight),
        }
    }
}

/// One active health check of a backend.
///
/// ```
/// use lb_core::Backend;
/// use lb_core::health::{CheckError, HealthCheck};
///
/// /// Up when the backend has a route name (a stand-in for a real probe).
/// #[derive(Debug)]
/// struct HasRoute;
///
/// impl HealthCheck for HasRoute {
///     async fn check(&self, target: &Backend) -> Result<(), CheckError> {
///         match target.route() {
///             Some(_) => Ok(()),
///             None => Err(CheckError::Unexpected("no route".into())),
///         }
///     }
/// }
/// ```
pub trait HealthCheck: Send + Sync + fmt::Debug + 'static {
    /// Checks `target` once. Timeouts are applied by the monitor, which drops the future
    /// when one expires, so a check must clean up on drop.
    fn check(&self, target: &Backend) -> impl Future<Output = Result<(), CheckError>> + Send;

    /// Checks `target` once and reports extra findings (a weight); what the monitor
    /// calls. The default runs [`check`](Self::check) and reports nothing more.
    fn probe(
        &self,
        target: &Backend,
    ) -> impl Future<Output = Result<CheckReport, CheckError>> + Send {
        let check = self.check(target);
        async move { check.await.map(|()| CheckReport::default()) }
    }
}
