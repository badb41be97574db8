//! Weighted by traffic: Apache's `lbmethod=bytraffic`.
//!
//! mod_lbmethod_bytraffic.c (`find_best_bytraffic`) sends each request to the worker that has
//! moved the fewest bytes per unit of its weight (`lbfactor`): `(transferred + read) /
//! lbfactor`. Here the bytes are a member's `bytes_in + bytes_out` as leases record them
//! ([`Lease::add_bytes_in`](crate::Lease::add_bytes_in), `add_bytes_out`), compared by
//! cross-multiplication so there is no rounding. Over time every member moves bytes in
//! proportion to its weight, whatever the size of each request. Ties (a fresh set) are
//! broken by a rotating start, so equal members take turns.

use std::sync::Arc;

use super::least_conn::ConnTable;
use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;

/// Apache's `bytraffic`: the member with the fewest bytes moved per unit of weight.
#[derive(Debug, Default)]
pub struct ByTraffic {
    _private: (),
}

impl ByTraffic {
    /// The scheduler.
    pub fn new() -> Self {
        ByTraffic::default()
    }
}

impl Scheduler for ByTraffic {
    type State = ConnTable;

    fn prepare(&self, members: &[Arc<Member>]) -> ConnTable {
        ConnTable::new(members)
    }

    fn pick(&self, t: &ConnTable, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        let mut best: Option<(usize, u128, u128)> = None;
        t.for_each_eligible(c, t.rotate(n), |i, state, weight| {
            let bytes = u128::from(state.bytes_in()) + u128::from(state.bytes_out());
            let w = u128::from(weight);
            match best {
                // bytes < 2^65 and weights < 2^32: the products fit in u128.
                Some((_, bb, bw)) if bytes * bw >= bb * w => {}
                _ => best = Some((i, bytes, w)),
            }
        });
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{assert_proportional, balancer, index};

    #[test]
    fn bytes_follow_weights_whatever_the_request_sizes() {
        let weights = [1, 2, 5];
        let lb = balancer(ByTraffic::new(), &weights);
        let mut bytes = [0usize; 3];
        // Requests of very different sizes, cycling through a fixed pattern.
        let sizes = [100u64, 5_000, 20, 70_000, 1_500, 300];
        for k in 0..6_000 {
            let lease = lb.pick(&PickContext::new()).unwrap();
            let size = sizes[k % sizes.len()];
            lease.add_bytes_in(size / 10);
            lease.add_bytes_out(size - size / 10);
            bytes[index(&lease)] += size as usize;
        }
        // Each member's bytes stay within one largest request of its share.
        assert_proportional(&bytes, &weights, 0.02);
    }

    #[test]
    fn a_fresh_set_rotates_ties() {
        let lb = balancer(ByTraffic::new(), &[1, 1, 1]);
        let mut seen = [0; 3];
        for _ in 0..3 {
            seen[index(&lb.pick(&PickContext::new()).unwrap())] += 1;
        }
        assert_eq!(seen, [1, 1, 1]);
    }
}
