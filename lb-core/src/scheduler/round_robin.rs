//! Round robin: each eligible member in turn.
//!
//! An atomic counter per tier advances on every pick; ineligible members are skipped by
//! probing forward, so a down member costs one probe rather than breaking the rotation.
//! Weights are ignored (see the weighted schedulers for those). The counter restarts when the
//! member set changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::hash::FastMod;
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

/// The state of [`RoundRobin`]: the turn counter of one tier.
#[derive(Debug)]
pub struct RoundRobinState {
    next: AtomicUsize,
    len: FastMod,
}

impl Scheduler for RoundRobin {
    type State = RoundRobinState;

    fn prepare(&self, members: &[Arc<Member>]) -> RoundRobinState {
        RoundRobinState {
            next: AtomicUsize::new(0),
            len: FastMod::new(members.len() as u64),
        }
    }

    fn pick(
        &self,
        state: &RoundRobinState,
        c: &Candidates<'_>,
        _ctx: &PickContext<'_>,
    ) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        let start = state.next.fetch_add(1, Relaxed) as u64;
        let mut i = if state.len.divisor() == n as u64 {
            state.len.rem(start) as usize
        } else {
            (start % n as u64) as usize
        };
        for probe in 0..n {
            if c.is_eligible(i) {
                if probe > 0 {
                    // Keep the rotation fair after skipping ineligible members.
                    state.next.fetch_add(probe, Relaxed);
                }
                return Some(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::scheduler::testing::{balancer, count_picks, picks};

    #[test]
    fn turns_ignore_weights_and_skip_down_members_fairly() {
        let lb = balancer(RoundRobin::new(), &[1, 5, 1, 2]);
        assert_eq!(picks(&lb, 8), [0, 1, 2, 3, 0, 1, 2, 3]);
        lb.set_health(lb.members()[1].id(), Health::Down).unwrap();
        assert_eq!(count_picks(&lb, 300), [100, 0, 100, 100]);
    }
}
