//! Random choices: weighted random, and the power of two choices.
//!
//! - [`Random`] (HAProxy `random(1)`, Envoy `RANDOM`): a member drawn with probability
//!   proportional to its weight, by binary search in the cumulative weights built in
//!   `prepare`. An ineligible draw is redrawn a few times; then the draw is made among the
//!   eligible members only, so the proportions among them hold.
//! - [`PowerOfTwo`] (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing",
//!   2001; HAProxy `random(2)`, Envoy `LEAST_REQUEST`): two members drawn by weight (as
//!   `Random` draws, the second redrawn if it repeats the first), the one with fewer active
//!   leases per unit of weight wins (compared by cross-multiplication), ties to the first
//!   draw. With nothing in flight the draws alone decide, so short requests follow the
//!   weights; with long ones the loads per unit of weight even out. The maximum load is
//!   exponentially better than with one random choice, at the cost of reading two counters.
//!
//! Both draw from a lock-free SplitMix64 source; seed it with
//! [`Random::seed_from_u64`] / [`Random::from_rng`] (and the same on `PowerOfTwo`) for
//! reproducible runs. [`Random::new`] seeds from the process's randomness.

use std::sync::Arc;

use rand::RngCore;

use super::rng::AtomicRng;
use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;

/// Draws retried before drawing among eligible members only.
const REDRAWS: usize = 4;

/// Weighted random choice.
#[derive(Debug)]
pub struct Random {
    rng: AtomicRng,
}

impl Random {
    /// Weighted random, seeded from the process's randomness.
    pub fn new() -> Self {
        Random {
            rng: AtomicRng::from_entropy(),
        }
    }

    /// Weighted random drawing the same sequence for the same seed.
    pub fn seed_from_u64(seed: u64) -> Self {
        Random {
            rng: AtomicRng::seed_from_u64(seed),
        }
    }

    /// Weighted random seeded from another generator.
    pub fn from_rng<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        Random::seed_from_u64(rng.next_u64())
    }
}

impl Default for Random {
    fn default() -> Self {
        Random::new()
    }
}

/// The cumulative weights of a tier, for [`Random`].
#[derive(Debug)]
pub struct CumulativeWeights(Box<[u64]>);

impl Scheduler for Random {
    type State = CumulativeWeights;

    fn prepare(&self, members: &[Arc<Member>]) -> CumulativeWeights {
        let mut sum = 0u64;
        CumulativeWeights(
            members
                .iter()
                .map(|m| {
                    sum += u64::from(m.backend().weight());
                    sum
                })
                .collect(),
        )
    }

    fn pick(
        &self,
        cumulative: &CumulativeWeights,
        c: &Candidates<'_>,
        _ctx: &PickContext<'_>,
    ) -> Option<usize> {
        let cum = &cumulative.0;
        let total = *cum.last()?;
        if total == 0 {
            return None;
        }
        for _ in 0..REDRAWS {
            let r = self.rng.below(total);
            let i = cum.partition_point(|&x| x <= r);
            if c.is_eligible(i) {
                return Some(i);
            }
        }
        weighted_among_eligible(&self.rng, c)
    }
}

/// A weighted draw among the eligible members only (two scans).
fn weighted_among_eligible(rng: &AtomicRng, c: &Candidates<'_>) -> Option<usize> {
    let total: u64 = c
        .eligible()
        .map(|i| u64::from(c.member(i).backend().weight()))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.below(total);
    for i in c.eligible() {
        let w = u64::from(c.member(i).backend().weight());
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// The power of two choices on load, weight-aware.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: AtomicRng,
}

impl PowerOfTwo {
    /// Two choices, seeded from the process's randomness.
    pub fn new() -> Self {
        PowerOfTwo {
            rng: AtomicRng::from_entropy(),
        }
    }

    /// Two choices drawing the same sequence for the same seed.
    pub fn seed_from_u64(seed: u64) -> Self {
        PowerOfTwo {
            rng: AtomicRng::seed_from_u64(seed),
        }
    }

    /// Two choices seeded from another generator.
    pub fn from_rng<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        PowerOfTwo::seed_from_u64(rng.next_u64())
    }
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        PowerOfTwo::new()
    }
}

/// Active leases per unit of weight of member `i`, as a fraction.
#[inline]
fn load(c: &Candidates<'_>, i: usize) -> (u64, u64) {
    let m = c.member(i);
    (
        u64::from(m.state().active()),
        u64::from(m.backend().weight()),
    )
}

/// Whether load `a` is below load `b`.
#[inline]
fn less(a: (u64, u64), b: (u64, u64)) -> bool {
    u128::from(a.0) * u128::from(b.1) < u128::from(b.0) * u128::from(a.1)
}

/// A draw by weight.
#[inline]
fn draw(rng: &AtomicRng, cum: &[u64], total: u64) -> usize {
    let r = rng.below(total);
    cum.partition_point(|&x| x <= r)
}

impl Scheduler for PowerOfTwo {
    type State = CumulativeWeights;

    fn prepare(&self, members: &[Arc<Member>]) -> CumulativeWeights {
        Random::seed_from_u64(0).prepare(members)
    }

    fn pick(
        &self,
        cumulative: &CumulativeWeights,
        c: &Candidates<'_>,
        _ctx: &PickContext<'_>,
    ) -> Option<usize> {
        let cum = &cumulative.0;
        let total = *cum.last()?;
        if total == 0 {
            return None;
        }
        for _ in 0..REDRAWS {
            let a = draw(&self.rng, cum, total);
            let mut b = a;
            for _ in 0..3 {
                b = draw(&self.rng, cum, total);
                if b != a {
                    break;
                }
            }
            match (c.is_eligible(a), c.is_eligible(b)) {
                (true, true) => {
                    return Some(if less(load(c, b), load(c, a)) { b } else { a });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        // Most members are ineligible: two draws among the eligible ones only.
        let a = weighted_among_eligible(&self.rng, c)?;
        let b = weighted_among_eligible(&self.rng, c)?;
        Some(if less(load(c, b), load(c, a)) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::scheduler::testing::{assert_proportional, balancer, count_picks, index};

    #[test]
    fn random_follows_weights() {
        let weights = [1, 2, 3, 4];
        let lb = balancer(Random::seed_from_u64(1), &weights);
        // 100k draws: the standard deviation of a count is under 0.6% of its mean.
        assert_proportional(&count_picks(&lb, 100_000), &weights, 0.03);
    }

    #[test]
    fn random_keeps_proportions_among_eligible_members() {
        let weights = [50, 1, 3];
        let lb = balancer(Random::seed_from_u64(2), &weights);
        lb.set_health(lb.members()[0].id(), Health::Down).unwrap();
        let counts = count_picks(&lb, 40_000);
        assert_eq!(counts[0], 0);
        assert_proportional(&counts[1..], &weights[1..], 0.05);
    }

    #[test]
    fn seeded_random_is_reproducible() {
        let a = balancer(Random::seed_from_u64(9), &[1, 1, 1, 1]);
        let b = balancer(Random::seed_from_u64(9), &[1, 1, 1, 1]);
        let pa: Vec<_> = (0..50)
            .map(|_| index(&a.pick(&PickContext::new()).unwrap()))
            .collect();
        let pb: Vec<_> = (0..50)
            .map(|_| index(&b.pick(&PickContext::new()).unwrap()))
            .collect();
        assert_eq!(pa, pb);
    }

    #[test]
    fn two_choices_hold_connections_by_weight() {
        let weights = [1, 2, 3, 4];
        let lb = balancer(PowerOfTwo::seed_from_u64(3), &weights);
        let mut counts = [0usize; 4];
        let leases: Vec<_> = (0..10_000)
            .map(|_| {
                let l = lb.pick(&PickContext::new()).unwrap();
                counts[index(&l)] += 1;
                l
            })
            .collect();
        assert_proportional(&counts, &weights, 0.05);
        drop(leases);
        // Short requests (nothing held): all tie, the weighted draws decide.
        assert_proportional(&count_picks(&lb, 100_000), &weights, 0.03);
    }
}
