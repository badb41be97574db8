//! A lease: one connection or request assigned to a backend, counted until dropped.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BackendId, Failure, Member};

/// One connection or request on a backend.
///
/// Created by a pick, it counts as active on its backend until dropped, so least-connection
/// schedulers see it. Bytes and the outcome are recorded through it; a failure feeds passive
/// health. A lease of a backend that was removed meanwhile still releases correctly.
#[derive(Debug)]
#[must_use = "dropping a lease releases the backend at once"]
pub struct Lease {
    member: Arc<Member>,
    sticky: bool,
    /// The backend's error state when the lease was made.
    error_mark: u64,
}

impl Lease {
    pub(crate) fn new(member: Arc<Member>, sticky: bool) -> Self {
        member.state().acquire();
        let error_mark = member.state().error_mark();
        Lease {
            member,
            sticky,
            error_mark,
        }
    }

    /// The backend's id.
    pub fn id(&self) -> BackendId {
        self.member.id()
    }

    /// The backend's configuration as it was when picked (its address to connect to).
    pub fn backend(&self) -> &Backend {
        self.member.backend()
    }

    /// The member, with its live state.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The member as the balancer shares it. A member's configuration never changes in
    /// place: a change makes a new `Member` (sharing the same live state), so while picks
    /// hand out this same `Arc` (compare with [`Arc::ptr_eq`]), a cache of what was derived
    /// from the configuration is still good.
    pub fn shared_member(&self) -> &Arc<Member> {
        &self.member
    }

    /// Whether the pick came from persistence or a sticky route rather than the scheduler.
    pub fn is_sticky(&self) -> bool {
        self.sticky
    }

    /// Counts bytes from the client to the backend.
    pub fn add_bytes_in(&self, n: u64) {
        self.member.state().add_bytes_in(n);
    }

    /// Counts bytes from the backend to the client.
    pub fn add_bytes_out(&self, n: u64) {
        self.member.state().add_bytes_out(n);
    }

    /// Records a success: ends a failure streak and any error state (Apache's `retry` probe
    /// succeeded). A success of a lease made before the backend was last put in error
    /// changes nothing: it began alongside the failure that did it, and ended an error it
    /// never saw.
    pub fn success(&self) {
        self.member.state().record_success(self.error_mark);
    }

    /// Records a failure for passive health, which may put the backend in error.
    pub fn failure(&self, failure: Failure) {
        self.member.state().record_failure(failure);
    }

    /// Puts the backend in error for `duration` (pen's blacklist, Apache's `retry`), as
    /// [`Balancer::set_error_for`](crate::Balancer::set_error_for) does, whether or not it
    /// is still a member. The caller decides whether the backend's `ignores_errors` state
    /// lets it.
    pub fn set_error_for(&self, duration: Duration) {
        self.member
            .state()
            .set_error_until(crate::clock::deadline_ms(duration));
    }

    /// Whether the balancer's scheduler reads latency samples (it is [`PeakEwma`]). When
    /// it does not, a caller can skip timing its requests; samples recorded anyway still
    /// show in [`BackendStats::latency_ewma`](crate::BackendStats::latency_ewma).
    ///
    /// [`PeakEwma`]: crate::scheduler::PeakEwma
    pub fn wants_latency(&self) -> bool {
        self.member.state().shared.latency_wanted()
    }

    /// Records a latency sample (time to first byte or request time) for peak EWMA.
    pub fn observe_latency(&self, rtt: Duration) {
        let state = self.member.state();
        state.observe_latency(rtt, state.shared.ewma_decay());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.member.state().release();
    }
}
