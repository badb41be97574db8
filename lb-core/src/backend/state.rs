//! Live state of a backend: counters and states in atomics, read on the hot path without locks.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backend, BackendId};
use crate::balancer::Shared;
use crate::clock;
use crate::event::EventKind;

/// What an operator says about a backend (HAProxy's admin states, Apache's status flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes new and sticky traffic.
    #[default]
    Ready,
    /// Takes sticky traffic only (HAProxy `drain`, Apache `N`).
    Drain,
    /// Takes no traffic (HAProxy `maint`, Apache `D` disabled / `S` stopped).
    Maintenance,
}

/// What health checks say about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Passing checks (or not checked).
    #[default]
    Up,
    /// Failing checks: takes no traffic.
    Down,
}

/// Why a use of a backend failed; fed to passive health by [`Lease::failure`](crate::Lease::failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The connection was refused or reset before it was established.
    Connect,
    /// Connecting or waiting for the backend took too long.
    Timeout,
    /// The backend answered with a status configured as a failure (Apache `failonstatus`).
    Status(u16),
    /// Anything else the caller counts as a failure.
    Other,
}

impl AdminState {
    fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maintenance => 2,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            0 => AdminState::Ready,
            1 => AdminState::Drain,
            _ => AdminState::Maintenance,
        }
    }
}

/// Live counters and states of one backend, shared by every snapshot and lease that refers
/// to it, so re-configuring a backend never loses its counts.
pub struct BackendState {
    id: BackendId,
    /// Active leases (low 32 bits) and the low 32 bits of the total (high 32 bits), so a
    /// pick and a release each cost one atomic operation.
    conns: AtomicU64,
    /// How many times the total's low 32 bits wrapped.
    total_wraps: AtomicU32,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    admin: AtomicU8,
    down: AtomicBool,
    ignore_errors: AtomicBool,
    error_until: AtomicU64,
    ewma_ns: AtomicU64,
    ewma_stamp_ms: AtomicU64,
    pub(crate) shared: Arc<Shared>,
}

/// One more active lease and one more in the total, as one addition to `conns`.
const CONN_ONE: u64 = 1 | (1 << 32);

/// Reads the clock at most once per pick, and only when a backend is in error.
#[derive(Debug, Default)]
pub(crate) struct LazyNow(Option<u64>);

impl LazyNow {
    pub(crate) fn get(&mut self) -> u64 {
        *self.0.get_or_insert_with(clock::now_ms)
    }

    /// Starts from a reading kept in a cell (0 = not read yet).
    pub(crate) fn from_cell(cell: &std::cell::Cell<u64>) -> Self {
        LazyNow((cell.get() != 0).then(|| cell.get()))
    }

    /// Keeps the reading, if one was taken, in a cell.
    pub(crate) fn store(&self, cell: &std::cell::Cell<u64>) {
        if let Some(v) = self.0 {
            cell.set(v);
        }
    }
}

impl BackendState {
    pub(crate) fn new(id: BackendId, shared: Arc<Shared>, health: Health) -> Self {
        BackendState {
            id,
            conns: AtomicU64::new(0),
            total_wraps: AtomicU32::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            admin: AtomicU8::new(AdminState::Ready.to_u8()),
            down: AtomicBool::new(health == Health::Down),
            ignore_errors: AtomicBool::new(false),
            error_until: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0),
            ewma_stamp_ms: AtomicU64::new(0),
            shared,
        }
    }

    /// The backend's id.
    pub fn id(&self) -> BackendId {
        self.id
    }
    /// Connections or requests in flight.
    pub fn active(&self) -> u32 {
        self.conns.load(Relaxed) as u32
    }
    /// Connections or requests ever assigned.
    pub fn total(&self) -> u64 {
        let wraps = u64::from(self.total_wraps.load(Relaxed));
        (wraps << 32) | (self.conns.load(Relaxed) >> 32)
    }
    /// Bytes received from clients and sent to the backend.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Relaxed)
    }
    /// Bytes received from the backend and sent to clients.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }
    /// Failures ever recorded.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }
    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }
    /// The admin state.
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Relaxed))
    }
    /// The health-check state.
    pub fn health(&self) -> Health {
        if self.down.load(Relaxed) {
            Health::Down
        } else {
            Health::Up
        }
    }
    /// Whether errors are ignored (Apache's `I` flag): passive health never ejects it.
    pub fn ignores_errors(&self) -> bool {
        self.ignore_errors.load(Relaxed)
    }
    /// The time left in error (pen's blacklist, Apache's `retry`), if in error now.
    pub fn in_error_for(&self) -> Option<Duration> {
        let until = self.error_until.load(Relaxed);
        (until != 0 && clock::now_ms() < until).then(|| clock::remaining(until))
    }
    /// The smoothed latency (peak EWMA), if any was observed.
    pub fn latency_ewma(&self) -> Option<Duration> {
        match self.ewma_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
    /// The raw EWMA and when it was last updated, for the EWMA scheduler.
    pub(crate) fn ewma_raw(&self) -> (u64, u64) {
        (self.ewma_ns.load(Relaxed), self.ewma_stamp_ms.load(Relaxed))
    }

    #[inline]
    pub(crate) fn in_error(&self, now: &mut LazyNow) -> bool {
        let until = self.error_until.load(Relaxed);
        until != 0 && now.get() < until
    }

    /// Usable for a new client: ready, up, not in error, below the soft limit.
    #[inline]
    pub(crate) fn usable_for_new(&self, backend: &Backend, now: &mut LazyNow) -> bool {
        self.usable_below(backend.max_conns(), now)
    }

    /// [`usable_for_new`](Self::usable_for_new) with the soft limit given directly, for
    /// schedulers that keep members' limits in their own compact tables.
    #[inline]
    pub(crate) fn usable_below(&self, max_conns: Option<u32>, now: &mut LazyNow) -> bool {
        self.admin.load(Relaxed) == 0
            && !self.down.load(Relaxed)
            && max_conns.is_none_or(|m| self.active() < m)
            && !self.in_error(now)
    }

    /// Usable for a returning (sticky) client: ready or draining, up, not in error, below
    /// the hard limit.
    #[inline]
    pub(crate) fn usable_for_sticky(&self, backend: &Backend, now: &mut LazyNow) -> bool {
        self.admin.load(Relaxed) <= 1
            && !self.down.load(Relaxed)
            && backend.hard_conns().is_none_or(|m| self.active() < m)
            && !self.in_error(now)
    }

    /// Usable when recovery is forced: as for a new client, but in error or not.
    #[inline]
    pub(crate) fn usable_ignoring_errors(&self, backend: &Backend) -> bool {
        self.ready_and_up() && backend.max_conns().is_none_or(|m| self.active() < m)
    }

    /// Ready and passing health checks.
    #[inline]
    pub(crate) fn ready_and_up(&self) -> bool {
        self.admin.load(Relaxed) == 0 && !self.down.load(Relaxed)
    }

    pub(crate) fn acquire(&self) {
        let old = self.conns.fetch_add(CONN_ONE, Relaxed);
        if old >> 32 == u64::from(u32::MAX) {
            // The total's low half wrapped to 0: carry into the high half.
            self.total_wraps.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn release(&self) {
        // Active is at least 1 here (the lease being released), so no borrow reaches the
        // total's half.
        self.conns.fetch_sub(1, Relaxed);
    }

    pub(crate) fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Relaxed);
    }

    pub(crate) fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Relaxed);
    }

    pub(crate) fn set_admin(&self, admin: AdminState) -> bool {
        let changed = self.set_admin_silently(admin);
        if changed {
            self.shared.emit(self.id, EventKind::Admin(admin));
        }
        changed
    }

    /// Sets the admin state without an event: for a member not published yet, whose
    /// event comes after its `Added`.
    pub(crate) fn set_admin_silently(&self, admin: AdminState) -> bool {
        self.admin.swap(admin.to_u8(), Relaxed) != admin.to_u8()
    }

    pub(crate) fn set_health(&self, health: Health) -> bool {
        let down = health == Health::Down;
        let changed = self.down.swap(down, Relaxed) != down;
        if changed {
            self.shared.emit(self.id, EventKind::Health(health));
        }
        changed
    }

    pub(crate) fn set_ignore_errors(&self, ignore: bool) {
        self.ignore_errors.store(ignore, Relaxed);
    }

    /// Puts the backend in error until `deadline` (clock milliseconds).
    pub(crate) fn set_error_until(&self, deadline: u64) {
        self.error_until.store(deadline.max(1), Relaxed);
        self.shared
            .emit(self.id, EventKind::InError(clock::remaining(deadline)));
    }

    pub(crate) fn clear_error(&self) {
        self.consecutive_failures.store(0, Relaxed);
        self.ejections.store(0, Relaxed);
        if self.error_until.swap(0, Relaxed) != 0 {
            self.shared.emit(self.id, EventKind::Recovered);
        }
    }

    /// The error state as a lease sees it when it is made: see [`record_success`].
    ///
    /// [`record_success`]: Self::record_success
    pub(crate) fn error_mark(&self) -> u64 {
        self.error_until.load(Relaxed)
    }

    /// Records a success of a use that began when the error state was `mark`
    /// ([`error_mark`](Self::error_mark)): resets the failure streak and leaves any error
    /// state. Not when the backend was put in error since: that use began before the
    /// failure that did it (a request in flight alongside the one that failed), and says
    /// nothing about the backend since. A use that began while it was in error (a retry
    /// after the error time, a forced recovery) is what ends the error.
    pub(crate) fn record_success(&self, mark: u64) {
        let until = self.error_until.load(Relaxed);
        if until != 0 && until != mark {
            return;
        }
        if self.consecutive_failures.load(Relaxed) != 0 || until != 0 {
            self.clear_error();
        }
    }

    /// Records a failure and lets passive health decide on ejection.
    pub(crate) fn record_failure(&self, failure: Failure) {
        self.failures.fetch_add(1, Relaxed);
        let streak = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if self.ignore_errors.load(Relaxed) {
            return;
        }
        let Some(until) = self.shared.passive_verdict(self, streak, failure) else {
            return;
        };
        self.ejections.fetch_add(1, Relaxed);
        self.set_error_until(until);
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    /// Folds a latency sample into the peak EWMA (Finagle): a sample above the average
    /// replaces it at once, lower samples decay it with time constant `decay`.
    pub(crate) fn observe_latency(&self, rtt: Duration, decay: Duration) {
        let now = clock::now_ms();
        let sample = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        let (old, stamp) = self.ewma_raw();
        let next = if old == 0 || sample > old {
            sample
        } else {
            let elapsed = now.saturating_sub(stamp) as f64;
            let tau = (decay.as_millis().max(1)) as f64;
            let w = (-elapsed / tau).exp();
            ((old as f64) * w + (sample as f64) * (1.0 - w)).max(1.0) as u64
        };
        self.ewma_ns.store(next, Relaxed);
        self.ewma_stamp_ms.store(now, Relaxed);
    }
}

impl fmt::Debug for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendState")
            .field("id", &self.id)
            .field("active", &self.active())
            .field("total", &self.total())
            .field("admin", &self.admin())
            .field("health", &self.health())
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::PassiveConfig;

    #[test]
    fn active_and_total_share_one_word_and_the_total_carries() {
        let shared = Arc::new(Shared::new(
            PassiveConfig::default(),
            Duration::from_secs(10),
        ));
        let s = BackendState::new(BackendId(0), shared, Health::Up);
        s.acquire();
        s.acquire();
        s.release();
        assert_eq!((s.active(), s.total()), (1, 2));
        // Just below the total's low half wrapping, with one lease active.
        s.conns.store((u64::from(u32::MAX) << 32) | 1, Relaxed);
        s.acquire();
        assert_eq!((s.active(), s.total()), (2, 1 << 32));
        s.acquire();
        s.release();
        s.release();
        assert_eq!((s.active(), s.total()), (1, (1 << 32) + 1));
    }
}
