//! A lock-free random number source for the random schedulers.
//!
//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
//! 2014) over an atomic counter: each draw adds the golden-ratio increment with one
//! `fetch_add` and mixes the result, so concurrent picks never wait for each other and a
//! seeded scheduler draws the same sequence on every run (single-threaded).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A shared SplitMix64 generator.
#[derive(Debug)]
pub(crate) struct AtomicRng(AtomicU64);

impl AtomicRng {
    /// A generator seeded from the process's random hasher keys (not reproducible).
    pub(crate) fn from_entropy() -> Self {
        AtomicRng::seed_from_u64(RandomState::new().hash_one(0x5eed_u64))
    }

    /// A generator that always draws the same sequence for `seed`.
    pub(crate) fn seed_from_u64(seed: u64) -> Self {
        AtomicRng(AtomicU64::new(seed))
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        // SplitMix64: the state advances by the golden gamma, the output is mixed with
        // Stafford's variant 13 of MurmurHash3's finalizer.
        let mut z = self.0.fetch_add(GAMMA, Relaxed).wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift.
    #[inline]
    pub(crate) fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_splitmix64() {
        // The reference sequence of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let rng = AtomicRng::seed_from_u64(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[rng.below(5) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
    }
}
