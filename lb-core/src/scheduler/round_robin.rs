//! Round robin: each eligible member in turn.
//!
//! An atomic counter per tier advances on every pick; ineligible members are skipped by
//! probing forward, so a down member costs one probe rather than breaking the rotation.
//! Weights are ignored (see the weighted schedulers for those). The counter restarts when the
//! member set changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;

/// Plain round robin (pen's default, IPVS `rr`, HAProxy `roundrobin` with equal weights).
#[derive(Debug, Default)]
pub struct RoundRobin {
    _private: (),
}

impl RoundRobin {
    /// A round robin starting at the first member.
    pub fn new() -> Self {
        RoundRobin::default()
    }
}

impl Scheduler for RoundRobin {
    type State = AtomicUsize;

    fn prepare(&self, _members: &[Arc<Member>]) -> AtomicUsize {
        AtomicUsize::new(0)
    }

    fn pick(
        &self,
        next: &AtomicUsize,
        c: &Candidates<'_>,
        _ctx: &PickContext<'_>,
    ) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        let start = next.fetch_add(1, Relaxed);
        for probe in 0..n {
            let i = start.wrapping_add(probe) % n;
            if c.is_eligible(i) {
                if probe > 0 {
                    // Keep the rotation fair after skipping ineligible members.
                    next.fetch_add(probe, Relaxed);
                }
                return Some(i);
            }
        }
        None
    }
}
