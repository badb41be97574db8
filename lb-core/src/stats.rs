//! Counters and states as plain values, for status pages and metrics.

use std::time::Duration;

use serde::Serialize;

use crate::backend::{AdminState, BackendId, Health, Member, Role};

/// A backend's counters and states at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BackendStats {
    /// The backend's id.
    pub id: BackendId,
    /// Its address, as written in configuration.
    pub address: String,
    /// Its weight.
    pub weight: u32,
    /// Its route name.
    pub route: Option<String>,
    /// Its lbset.
    pub lbset: u32,
    /// Its priority.
    pub priority: u32,
    /// Its role.
    pub role: Role,
    /// The soft connection limit.
    pub max_conns: Option<u32>,
    /// The hard connection limit.
    pub hard_conns: Option<u32>,
    /// Admin state.
    pub admin: AdminState,
    /// Health-check state.
    pub health: Health,
    /// Time left in error, if in error.
    pub in_error_for: Option<Duration>,
    /// Whether passive errors are ignored (Apache `I`).
    pub ignore_errors: bool,
    /// Connections or requests in flight.
    pub active: u32,
    /// Connections or requests ever assigned.
    pub total: u64,
    /// Bytes from clients to the backend.
    pub bytes_in: u64,
    /// Bytes from the backend to clients.
    pub bytes_out: u64,
    /// Failures ever recorded.
    pub failures: u64,
    /// The peak EWMA latency.
    pub latency_ewma: Option<Duration>,
}

impl BackendStats {
    /// The stats of one member now.
    pub fn of(m: &Member) -> Self {
        let b = m.backend();
        let s = m.state();
        BackendStats {
            id: m.id(),
            address: b.address().to_string(),
            weight: b.weight(),
            route: b.route().map(str::to_owned),
            lbset: b.lbset(),
            priority: b.priority(),
            role: b.role(),
            max_conns: b.max_conns(),
            hard_conns: b.hard_conns(),
            admin: s.admin(),
            health: s.health(),
            in_error_for: s.in_error_for(),
            ignore_errors: s.ignores_errors(),
            active: s.active(),
            total: s.total(),
            bytes_in: s.bytes_in(),
            bytes_out: s.bytes_out(),
            failures: s.failures(),
            latency_ewma: s.latency_ewma(),
        }
    }

    /// Whether the backend can take new clients (ready, up, not in error).
    pub fn is_usable(&self) -> bool {
        self.admin == AdminState::Ready && self.health == Health::Up && self.in_error_for.is_none()
    }
}

/// Counters of a whole balancer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Each member.
    pub backends: Vec<BackendStats>,
    /// Sum of `active`.
    pub active: u64,
    /// Sum of `total`.
    pub total: u64,
    /// Sum of `bytes_in`.
    pub bytes_in: u64,
    /// Sum of `bytes_out`.
    pub bytes_out: u64,
    /// How many members can take new clients.
    pub usable: usize,
}

impl Stats {
    pub(crate) fn new(backends: Vec<BackendStats>) -> Self {
        Stats {
            active: backends.iter().map(|b| u64::from(b.active)).sum(),
            total: backends.iter().map(|b| b.total).sum(),
            bytes_in: backends.iter().map(|b| b.bytes_in).sum(),
            bytes_out: backends.iter().map(|b| b.bytes_out).sum(),
            usable: backends.iter().filter(|b| b.is_usable()).count(),
            backends,
        }
    }
}
