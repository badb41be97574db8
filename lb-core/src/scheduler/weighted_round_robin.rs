//! Smooth weighted round robin: nginx's `upstream` balancing, Apache's
//! `lbmethod=byrequests`.
//!
//! nginx's algorithm (ngx_http_upstream_round_robin.c, `ngx_http_upstream_get_peer`): every
//! pick adds each member's weight to its current weight, takes the member with the highest
//! current weight (the first on ties) and subtracts the total weight from it. Weights 5, 1, 1
//! give `a a b a c a a`, and every window of `sum(weights)` consecutive picks holds each
//! member exactly `weight` times. Apache's byrequests is the same loop (`lbstatus +=
//! lbfactor`, take the highest, subtract the total).
//!
//! Lock-free: the sequence is periodic with period `sum(weights) / gcd(weights)`, so
//! [`Scheduler::prepare`] computes one period (when it has at most [`MAX_PERIOD`] entries
//! and costs at most [`MAX_WORK`] steps to build) and a pick indexes it with an atomic
//! counter. An entry whose member is ineligible is skipped (the next entries are probed, and
//! the counter moves past them). When the first few probes all fail, or when the period is
//! too long to precompute, the pick runs nginx's loop itself, under a mutex, over the
//! eligible members only, exactly as nginx skips down peers.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::hash::FastMod;
use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;

/// The longest precomputed period; longer ones run the locked loop.
pub const MAX_PERIOD: usize = 1 << 16;
/// The most steps (period × members) spent precomputing a sequence.
pub const MAX_WORK: usize = 1 << 22;
/// Sequence entries probed before falling back to the locked loop.
const PROBES: usize = 8;

/// Smooth weighted round robin (nginx; Apache `byrequests`; HAProxy `roundrobin` with
/// weights).
///
/// ```
/// use lb_core::{Backend, Balancer, PickContext};
/// use lb_core::scheduler::WeightedRoundRobin;
/// # let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
/// let lb = Balancer::builder()
///     .scheduler(WeightedRoundRobin::new())
///     .backend(Backend::new(addr(1)).with_weight(5))
///     .backend(Backend::new(addr(2)))
///     .backend(Backend::new(addr(3)))
///     .build()
///     .unwrap();
/// let order: Vec<u16> = (0..7)
///     .map(|_| lb.pick(&PickContext::new()).unwrap().backend().address().port().unwrap())
///     .collect();
/// assert_eq!(order, [1, 1, 2, 1, 3, 1, 1]);
/// ```
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    _private: (),
}

impl WeightedRoundRobin {
    /// Smooth weighted round robin.
    pub fn new() -> Self {
        WeightedRoundRobin::default()
    }
}

/// The precomputed state of [`WeightedRoundRobin`] for one tier.
#[derive(Debug)]
pub struct WrrState(pub(crate) SmoothSeq);

impl Scheduler for WeightedRoundRobin {
    type State = WrrState;

    fn prepare(&self, members: &[Arc<Member>]) -> WrrState {
        WrrState(SmoothSeq::new(
            members
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m.backend().weight())),
        ))
    }

    fn pick(&self, state: &WrrState, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        state.0.pick(c)
    }
}

/// Smooth weighted round robin over a subset of a tier's members (also used per priority
/// group by [`Priority`](super::Priority)).
#[derive(Debug)]
pub(crate) struct SmoothSeq {
    /// One period of the sequence, as candidate indices (empty: use the locked loop).
    seq: Box<[u32]>,
    /// The sequence's length, for a division-free remainder.
    len: FastMod,
    next: AtomicUsize,
    /// (candidate index, weight) of every member with a weight.
    entries: Box<[(u32, u32)]>,
    /// nginx's current weights, for the locked loop.
    current: Mutex<Vec<i64>>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl SmoothSeq {
    pub(crate) fn new(members: impl Iterator<Item = (usize, u32)>) -> Self {
        let entries: Box<[(u32, u32)]> = members
            .filter(|&(_, w)| w > 0)
            .map(|(i, w)| (u32::try_from(i).unwrap_or(u32::MAX), w))
            .collect();
        let g = entries.iter().fold(0, |g, &(_, w)| gcd(g, u64::from(w)));
        let period: u64 = entries.iter().map(|&(_, w)| u64::from(w) / g.max(1)).sum();
        let n = entries.len() as u64;
        let seq = if period > 0
            && period <= MAX_PERIOD as u64
            && period.saturating_mul(n) <= MAX_WORK as u64
        {
            let weights: Vec<i64> = entries.iter().map(|&(_, w)| i64::from(w)).collect();
            let total: i64 = weights.iter().sum();
            let mut current = vec![0i64; entries.len()];
            (0..period)
                .map(|_| {
                    let k = nginx_step(&mut current, &weights, total);
                    entries[k].0
                })
                .collect()
        } else {
            Box::default()
        };
        SmoothSeq {
            len: FastMod::new(seq.len() as u64),
            seq,
            next: AtomicUsize::new(0),
            current: Mutex::new(vec![0; entries.len()]),
            entries,
        }
    }

    #[inline]
    pub(crate) fn pick(&self, c: &Candidates<'_>) -> Option<usize> {
        let len = self.seq.len();
        if len > 0 {
            let start = self.next.fetch_add(1, Relaxed) as u64;
            let mut k = self.len.rem(start) as usize;
            for probe in 0..PROBES.min(len) {
                let i = self.seq[k] as usize;
                if c.is_eligible(i) {
                    if probe > 0 {
                        self.next.fetch_add(probe, Relaxed);
                    }
                    return Some(i);
                }
                k += 1;
                if k == len {
                    k = 0;
                }
            }
        }
        self.pick_locked(c)
    }

    /// nginx's loop over the eligible members.
    fn pick_locked(&self, c: &Candidates<'_>) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (k, &(i, w)) in self.entries.iter().enumerate() {
            if !c.is_eligible(i as usize) {
                continue;
            }
            current[k] += i64::from(w);
            total += i64::from(w);
            if best.is_none_or(|b| current[k] > current[b]) {
                best = Some(k);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(self.entries[b].0 as usize)
    }
}

/// One step of nginx's smooth weighted round robin over all entries.
fn nginx_step(current: &mut [i64], weights: &[i64], total: i64) -> usize {
    let mut best = 0;
    for k in 0..current.len() {
        current[k] += weights[k];
        if current[k] > current[best] {
            best = k;
        }
    }
    current[best] -= total;
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::scheduler::testing::{balancer, count_picks, picks};

    #[test]
    fn five_one_one_is_nginx_order() {
        let lb = balancer(WeightedRoundRobin::new(), &[5, 1, 1]);
        assert_eq!(picks(&lb, 14), [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn every_window_is_exact() {
        let weights = [3, 7, 1, 4, 2, 6];
        let sum: u32 = weights.iter().sum();
        let lb = balancer(WeightedRoundRobin::new(), &weights);
        let seq = picks(&lb, 5 * sum as usize);
        for window in seq.windows(sum as usize) {
            for (i, &w) in weights.iter().enumerate() {
                assert_eq!(window.iter().filter(|&&x| x == i).count(), w as usize);
            }
        }
    }

    #[test]
    fn gcd_shortens_the_period_and_skips_down_members() {
        let lb = balancer(WeightedRoundRobin::new(), &[40, 20, 20, 0]);
        assert_eq!(picks(&lb, 8), [0, 1, 2, 0, 0, 1, 2, 0]);
        lb.set_health(lb.members()[0].id(), Health::Down).unwrap();
        let counts = count_picks(&lb, 1000);
        assert_eq!(counts, [0, 500, 500, 0]);
    }

    #[test]
    fn long_periods_use_the_locked_loop_exactly() {
        // Co-prime large weights: a period far above MAX_PERIOD.
        let weights = [100_003, 100_019, 3];
        let lb = balancer(WeightedRoundRobin::new(), &weights);
        let seq = picks(&lb, 6);
        // nginx: the two heavy members alternate, the light one waits its turn.
        assert_eq!(seq, [1, 0, 1, 0, 1, 0]);
        let s = SmoothSeq::new(weights.iter().copied().enumerate());
        assert!(s.seq.is_empty());
    }

    #[test]
    fn weighted_proportions_skip_a_down_heavy_member() {
        let lb = balancer(WeightedRoundRobin::new(), &[100, 50, 1]);
        lb.set_health(lb.members()[0].id(), Health::Down).unwrap();
        let counts = count_picks(&lb, 5100);
        // Mixing sequence picks and locked-loop picks keeps the 50:1 ratio only roughly.
        assert_eq!(counts[0], 0);
        assert!((50..=150).contains(&counts[2]), "{counts:?}");
    }
}
