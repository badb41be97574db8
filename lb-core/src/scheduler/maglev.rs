//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4).
//!
//! A lookup table of prime size `M` (65537 by default) maps a key's hash to a member. Each
//! member has a permutation of the slots, `(offset + j × skip) mod M` with `offset = h1(name)
//! mod M` and `skip = h2(name) mod (M − 1) + 1`, from two independent hashes of its address
//! (`name`); members take turns claiming their next preferred free slot until the table is
//! full (the paper's Pseudocode 1). With weights, a member takes a turn only every
//! `max_weight / weight` rounds (the weighted population Envoy uses), so slot shares follow
//! weights. Because `M` is prime every `skip` generates a full permutation.
//!
//! With equal weights each member owns `⌊M/N⌋` or `⌈M/N⌉` slots, so the max/min share ratio is
//! at most `⌈M/N⌉ / ⌊M/N⌋`: with the default 65537 that is ≤ 1.01 for up to about 650
//! members; larger sets want a larger table (`maglev:655373`, ...). Removing one of N
//! members moves little more than its own 1/N of the keys (the paper's Figure 12).
//!
//! Lookups hash the key (the pick's hash key, else the client's IP address; with neither,
//! picks take turns) with [`hash64`](super::hash), fixed and stable across processes, and
//! map it to a slot by multiply-shift. `h1`/`h2` are `hash64` under two different fixed
//! seeds. When the owner is ineligible (or over its load bound, see
//! [`Maglev::with_bounded_load`]) the key is rehashed to the next probe and looked up again,
//! so only that member's keys move, spread by weight over the others; after 32 probes the
//! first eligible member from a key-derived start is taken.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::hash::{LoadBound, hash64, probe, reduce, rotate, with_key};
use super::ketama::bound_milli;
use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;
use crate::error::{Error, Result};

/// The default table size: the prime 65537.
pub const DEFAULT_TABLE_SIZE: usize = 65_537;
/// The largest table size accepted.
pub const MAX_TABLE_SIZE: usize = 1 << 24;
const SEED_OFFSET: u64 = 0x4d41_474c_4556_4f31; // "MAGLEVO1"
const SEED_SKIP: u64 = 0x4d41_474c_4556_5332; // "MAGLEVS2"
const SEED_KEY: u64 = 0x4d41_474c_4556_4b33; // "MAGLEVK3"
const PROBES: u64 = 32;

/// Maglev consistent hashing, optionally with bounded loads.
#[derive(Debug, Clone)]
pub struct Maglev {
    size: usize,
    bound_milli: Option<u64>,
}

impl Default for Maglev {
    fn default() -> Self {
        Maglev {
            size: DEFAULT_TABLE_SIZE,
            bound_milli: None,
        }
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

impl Maglev {
    /// Maglev with a table of 65537 slots.
    pub fn new() -> Self {
        Maglev::default()
    }

    /// Sets the table size: a prime from 3 to 2^24 (64 MiB of table). It should be well above the number of
    /// members (the paper suggests M > 100 × N).
    pub fn with_table_size(mut self, size: usize) -> Result<Self> {
        if !(3..=MAX_TABLE_SIZE).contains(&size) || !is_prime(size) {
            return Err(Error::InvalidParameter {
                name: "table size",
                value: size.to_string(),
                reason: "the maglev table size must be a prime from 3 to 16777216",
            });
        }
        self.size = size;
        Ok(self)
    }

    /// Bounds every member's load to `factor ×` its share (HAProxy's
    /// `hash-balance-factor` / 100). Refuses factors below 1.
    pub fn with_bounded_load(mut self, factor: f64) -> Result<Self> {
        self.bound_milli = Some(bound_milli(factor)?);
        Ok(self)
    }

    /// The table size.
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// The load bound factor, if any.
    pub fn bounded_load(&self) -> Option<f64> {
        self.bound_milli.map(|m| m as f64 / 1000.0)
    }
}

/// The lookup table of [`Maglev`].
#[derive(Debug)]
pub struct Table {
    /// Slot → member index.
    slots: Box<[u32]>,
    next: AtomicUsize,
}

impl Table {
    /// How many slots each member owns, by member index.
    pub fn shares(&self, members: usize) -> Vec<usize> {
        let mut counts = vec![0; members];
        for &s in self.slots.iter() {
            if let Some(c) = counts.get_mut(s as usize) {
                *c += 1;
            }
        }
        counts
    }
}

impl Scheduler for Maglev {
    type State = Table;

    fn prepare(&self, members: &[Arc<Member>]) -> Table {
        let m = self.size as u64;
        let mut name = String::new();
        // (member index, offset, skip, weight, next j, turn threshold)
        let mut entries: Vec<(u32, u64, u64, u64, u64, u128)> = Vec::new();
        for (i, member) in members.iter().enumerate() {
            let w = u64::from(member.backend().weight());
            if w == 0 {
                continue;
            }
            name.clear();
            let _ = write!(name, "{}", member.backend().address());
            let offset = hash64(SEED_OFFSET, name.as_bytes()) % m;
            let skip = hash64(SEED_SKIP, name.as_bytes()) % (m - 1) + 1;
            entries.push((i as u32, offset, skip, w, 0, 0));
        }
        let Some(max_w) = entries.iter().map(|e| e.3).max() else {
            return Table {
                slots: Box::default(),
                next: AtomicUsize::new(0),
            };
        };
        for e in &mut entries {
            e.5 = u128::from(max_w);
        }
        const EMPTY: u32 = u32::MAX;
        let mut slots = vec![EMPTY; self.size];
        let mut filled = 0usize;
        let mut round: u128 = 1;
        'fill: loop {
            for e in entries.iter_mut() {
                // Weighted turns: a member takes a turn when round × weight reaches its
                // threshold; the threshold then grows by max_weight.
                if round * u128::from(e.3) < e.5 {
                    continue;
                }
                e.5 += u128::from(max_w);
                loop {
                    let slot = ((e.1 + e.4 * e.2) % m) as usize;
                    e.4 += 1;
                    if slots[slot] == EMPTY {
                        slots[slot] = e.0;
                        filled += 1;
                        break;
                    }
                }
                if filled == self.size {
                    break 'fill;
                }
            }
            round += 1;
        }
        Table {
            slots: slots.into(),
            next: AtomicUsize::new(0),
        }
    }

    fn uses_key(&self) -> bool {
        true
    }

    #[inline]
    fn pick(&self, t: &Table, c: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize> {
        let Some(h) = with_key(ctx, |k| hash64(SEED_KEY, k)) else {
            return rotate(&t.next, c);
        };
        let slots = &t.slots;
        if slots.is_empty() {
            return None;
        }
        let i = slots[reduce(h, slots.len())] as usize;
        if self.bound_milli.is_none() && c.is_eligible(i) {
            return Some(i);
        }
        let bound = self.bound_milli.map(|m| LoadBound::measure(c, m));
        let mut fallback = None;
        for j in 0..PROBES {
            let i = slots[reduce(probe(h, j), slots.len())] as usize;
            if c.is_eligible(i) {
                if bound.is_none_or(|b| b.admits(c, i)) {
                    return Some(i);
                }
                fallback.get_or_insert(i);
            }
        }
        let start = reduce(h, c.len());
        (start..c.len())
            .chain(0..start)
            .find(|&i| c.is_eligible(i) && bound.is_none_or(|b| b.admits(c, i)))
            .or(fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::scheduler::testing::{assert_proportional, balancer, pick_key};

    #[test]
    fn equal_shares_within_one_percent() {
        for n in [3usize, 10, 100, 600] {
            let lb = balancer(Maglev::new(), &vec![1; n]);
            let shares = Maglev::new().prepare(&lb.members()).shares(n);
            let (max, min) = (*shares.iter().max().unwrap(), *shares.iter().min().unwrap());
            assert!(max as f64 / min as f64 <= 1.01, "{n} members: {max}/{min}");
        }
    }

    #[test]
    fn weighted_shares_and_keys_follow_weights() {
        let weights = [1, 2, 3, 4];
        let lb = balancer(Maglev::new(), &weights);
        let shares = Maglev::new().prepare(&lb.members()).shares(4);
        assert_proportional(&shares, &weights, 0.01);
        let mut counts = [0usize; 4];
        for k in 0..40_000 {
            counts[pick_key(&lb, format!("key-{k}").as_bytes())] += 1;
        }
        assert_proportional(&counts, &weights, 0.04);
    }

    #[test]
    fn removing_one_of_ten_moves_few_keys() {
        let lb = balancer(Maglev::new(), &[1; 10]);
        let keys: Vec<String> = (0..50_000).map(|k| format!("session-{k}")).collect();
        let before: Vec<usize> = keys.iter().map(|k| pick_key(&lb, k.as_bytes())).collect();
        lb.remove(lb.members()[7].id()).unwrap();
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| pick_key(&lb, k.as_bytes()) != **b)
            .count();
        let share = moved as f64 / keys.len() as f64;
        assert!(share <= 1.1 / 10.0, "moved {share:.4}");
        assert!(
            share >= 0.09,
            "at least the removed member's keys move: {share:.4}"
        );
    }

    #[test]
    fn ineligible_owner_moves_only_its_keys() {
        let lb = balancer(Maglev::new(), &[1; 5]);
        let keys: Vec<String> = (0..5_000).map(|k| format!("k{k}")).collect();
        let before: Vec<usize> = keys.iter().map(|k| pick_key(&lb, k.as_bytes())).collect();
        lb.set_health(lb.members()[3].id(), Health::Down).unwrap();
        let mut moved_to = [0usize; 5];
        for (k, &b) in keys.iter().zip(&before) {
            let now = pick_key(&lb, k.as_bytes());
            if b == 3 {
                moved_to[now] += 1;
            } else {
                assert_eq!(now, b);
            }
        }
        assert_eq!(moved_to[3], 0);
        assert!(
            moved_to.iter().enumerate().all(|(i, &n)| i == 3 || n > 100),
            "{moved_to:?}"
        );
    }

    #[test]
    fn table_size_must_be_prime() {
        assert!(Maglev::new().with_table_size(65_536).is_err());
        assert!(Maglev::new().with_table_size(1).is_err());
        let e = Maglev::new().with_table_size(100).unwrap_err();
        assert!(e.to_string().contains("100"), "{e}");
        assert_eq!(
            Maglev::new().with_table_size(251).unwrap().table_size(),
            251
        );
    }

    #[test]
    fn hash_is_stable() {
        let lb = balancer(Maglev::new(), &[1; 10]);
        let got: Vec<usize> = ["alpha", "beta", "gamma", "delta", "user-42"]
            .iter()
            .map(|k| pick_key(&lb, k.as_bytes()))
            .collect();
        assert_eq!(got, [2, 0, 5, 2, 6]);
    }

    #[test]
    fn bounded_load_caps_a_hot_key() {
        let lb = balancer(Maglev::new().with_bounded_load(1.25).unwrap(), &[1; 4]);
        let leases: Vec<_> = (0..400)
            .map(|_| lb.pick(&PickContext::new().with_key(b"hot")).unwrap())
            .collect();
        let max = lb.stats().backends.iter().map(|b| b.active).max().unwrap();
        assert!(max <= 125, "max {max}");
        drop(leases);
    }
}
