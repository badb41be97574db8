//! Peak EWMA: latency-aware choice, as Finagle's `P2CPeakEwma` and linkerd's balancer.
//!
//! Each member's cost is its peak-sensitive exponentially weighted moving average of
//! latency times its active leases plus one: `cost = ewma × (active + 1)`, divided by its
//! weight. A latency sample above the average replaces it at once (the "peak"), lower ones
//! decay it with the balancer's time constant (see
//! [`BalancerBuilder::ewma_decay`](crate::BalancerBuilder::ewma_decay)); samples come from
//! [`Lease::observe_latency`](crate::Lease::observe_latency). When a pick reads an average,
//! it decays it toward zero by the time since its last sample, as linkerd's `PeakEwma`
//! does, so a member that was slow long ago is tried again. A member with no sample yet
//! costs the configured default round-trip time (30 ms by default, linkerd2-proxy's
//! default).
//!
//! As in Finagle and linkerd, the choice is the power of two choices: two distinct members
//! drawn uniformly, the cheaper one wins (Mitzenmacher 2001; the costs come from
//! "Peak EWMA", Finagle's `PeakEwma` load metric). Seed the draws with
//! [`PeakEwma::seed_from_u64`] for reproducible runs.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use super::rng::AtomicRng;
use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::clock;
use crate::context::PickContext;

/// The default round-trip time of a member with no latency sample.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

const REDRAWS: usize = 4;

/// Peak EWMA latency with two random choices.
#[derive(Debug)]
pub struct PeakEwma {
    rng: AtomicRng,
    default_rtt_ns: f64,
}

impl PeakEwma {
    /// Peak EWMA with the default RTT, seeded from the process's randomness.
    pub fn new() -> Self {
        PeakEwma {
            rng: AtomicRng::from_entropy(),
            default_rtt_ns: DEFAULT_RTT.as_nanos() as f64,
        }
    }

    /// Peak EWMA drawing the same sequence for the same seed.
    pub fn seed_from_u64(seed: u64) -> Self {
        PeakEwma {
            rng: AtomicRng::seed_from_u64(seed),
            ..PeakEwma::new()
        }
    }

    /// Peak EWMA seeded from another generator.
    pub fn from_rng<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        PeakEwma::seed_from_u64(rng.next_u64())
    }

    /// Sets the round-trip time assumed for members with no sample yet (at least 1 ns).
    pub fn with_default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt_ns = (rtt.as_nanos() as f64).max(1.0);
        self
    }

    /// The round-trip time assumed for members with no sample yet.
    pub fn default_rtt(&self) -> Duration {
        Duration::from_nanos(self.default_rtt_ns as u64)
    }

    /// The cost of member `i` at clock reading `now` (milliseconds).
    fn cost(&self, c: &Candidates<'_>, i: usize, now: &mut Option<u64>) -> f64 {
        let m = c.member(i);
        let s = m.state();
        let (ewma, stamp) = s.ewma_raw();
        let rtt = if ewma == 0 {
            self.default_rtt_ns
        } else {
            let now = *now.get_or_insert_with(clock::now_ms);
            let elapsed = now.saturating_sub(stamp) as f64;
            let tau = s.shared.ewma_decay().as_millis().max(1) as f64;
            (ewma as f64 * (-elapsed / tau).exp()).max(1.0)
        };
        rtt * (f64::from(s.active()) + 1.0) / f64::from(m.backend().weight().max(1))
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma::new()
    }
}

impl Scheduler for PeakEwma {
    type State = ();

    fn prepare(&self, _members: &[Arc<Member>]) {}

    fn uses_latency(&self) -> bool {
        true
    }

    fn pick(&self, _state: &(), c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        let n = c.len();
        if n < 2 {
            return (n == 1 && c.is_eligible(0)).then_some(0);
        }
        let mut now = None;
        for _ in 0..REDRAWS {
            let a = self.rng.below(n as u64) as usize;
            let mut b = self.rng.below(n as u64 - 1) as usize;
            if b >= a {
                b += 1;
            }
            match (c.is_eligible(a), c.is_eligible(b)) {
                (true, true) => {
                    let (ca, cb) = (self.cost(c, a, &mut now), self.cost(c, b, &mut now));
                    return Some(if cb < ca { b } else { a });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        // Most members are ineligible: the cheapest eligible one.
        let mut best: Option<(usize, f64)> = None;
        for i in c.eligible() {
            let cost = self.cost(c, i, &mut now);
            if best.is_none_or(|(_, b)| cost < b) {
                best = Some((i, cost));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{balancer, count_picks, index};

    #[test]
    fn slow_members_get_fewer_clients() {
        // Two members: each pick compares both. 10 ms vs 40 ms: with connections held the
        // costs even out at active + 1 in the ratio 4 : 1.
        let lb = balancer(PeakEwma::seed_from_u64(1), &[1, 1]);
        let members = lb.members();
        let fast = lb.pick(&PickContext::new()).unwrap();
        let slow_lease = lb.pick(&PickContext::new()).unwrap();
        let (fast, slow) = if fast.id() == members[0].id() {
            (fast, slow_lease)
        } else {
            (slow_lease, fast)
        };
        fast.observe_latency(Duration::from_millis(10));
        slow.observe_latency(Duration::from_millis(40));
        let fast_index = index(&fast);
        drop((fast, slow));
        let mut counts = [0usize; 2];
        let leases: Vec<_> = (0..500)
            .map(|_| {
                let l = lb.pick(&PickContext::new()).unwrap();
                counts[index(&l)] += 1;
                l
            })
            .collect();
        let (f, s) = (counts[fast_index], counts[1 - fast_index]);
        // (f + 1) × 10 ≈ (s + 1) × 40, within a few leases (the average decays a little
        // while the test runs).
        assert!((395..=405).contains(&f), "fast {f}, slow {s}");
        drop(leases);
    }

    #[test]
    fn unsampled_members_cost_the_default_rtt() {
        let lb = balancer(
            PeakEwma::seed_from_u64(2).with_default_rtt(Duration::from_millis(5)),
            &[1, 1, 1],
        );
        // One member measured at 50 ms; the others cost 5 ms: it is avoided while idle.
        let l = lb.pick(&PickContext::new()).unwrap();
        l.observe_latency(Duration::from_millis(50));
        let slow = index(&l);
        drop(l);
        let counts = count_picks(&lb, 3000);
        assert_eq!(counts[slow], 0, "{counts:?}");
        assert!(counts.iter().all(|&c| c == 0 || c > 1200), "{counts:?}");
    }

    /// Leases say whether the scheduler reads latency, and follow a change of scheduler.
    #[test]
    fn leases_want_latency_only_under_peak_ewma() {
        use crate::scheduler::{AnyScheduler, RoundRobin};
        let lb = balancer(AnyScheduler::from(RoundRobin::new()), &[1, 1]);
        assert!(!lb.pick(&PickContext::new()).unwrap().wants_latency());
        lb.set_scheduler(AnyScheduler::from(PeakEwma::seed_from_u64(4)));
        assert!(lb.pick(&PickContext::new()).unwrap().wants_latency());
        lb.set_scheduler(AnyScheduler::from(RoundRobin::new()));
        assert!(!lb.pick(&PickContext::new()).unwrap().wants_latency());
        assert!(
            balancer(PeakEwma::seed_from_u64(5), &[1])
                .pick(&PickContext::new())
                .unwrap()
                .wants_latency()
        );
    }

    #[test]
    fn equal_costs_spread_evenly() {
        let lb = balancer(PeakEwma::seed_from_u64(3), &[1, 1, 1, 1]);
        let counts = count_picks(&lb, 40_000);
        crate::scheduler::testing::assert_proportional(&counts, &[1, 1, 1, 1], 0.03);
    }
}
