//! The errors of lb-core.

use crate::backend::BackendId;

/// A `Result` whose error is lb-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything lb-core can refuse or fail at. Messages name the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend address could not be parsed.
    #[error("invalid backend address {value:?}: {reason}")]
    InvalidAddress {
        /// What was given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A weight outside what a scheduler accepts.
    #[error("invalid weight {weight} for backend {address}: {reason}")]
    InvalidWeight {
        /// The backend's address.
        address: String,
        /// The weight given.
        weight: u32,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Two backends with the same address in one balancer.
    #[error("duplicate backend address {0}")]
    DuplicateAddress(String),
    /// A netmask or prefix length out of range.
    #[error("invalid netmask {value:?}: {reason}")]
    InvalidNetmask {
        /// What was given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A scheduler name that lb-core does not know.
    #[error("unknown scheduler {name:?} (known: {known})")]
    UnknownScheduler {
        /// The name given.
        name: String,
        /// The names that are known, comma separated.
        known: &'static str,
    },
    /// A scheduler parameter that is out of range or malformed.
    #[error("invalid scheduler parameter {name}={value:?}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What was given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A backend id that is not (or no longer) in the balancer.
    #[error("unknown backend {0}")]
    UnknownBackend(BackendId),
    /// Nothing could take the request: every backend is down, disabled, full or was tried.
    #[error("no backend available ({tried} tried of {members})")]
    NoBackend {
        /// How many backends this request tried.
        tried: usize,
        /// How many backends the balancer has.
        members: usize,
    },
    /// A sticky route or client names a backend that cannot take it, and failover is off
    /// (`nofailover`, pen's stubborn mode).
    #[error("sticky backend {0} is unavailable and failover is off")]
    StickyUnavailable(BackendId),
    /// A configuration value that is inconsistent or out of range.
    #[error("invalid configuration {name}={value:?}: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// What was given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
}
