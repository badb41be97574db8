//! A lock-free random number source for the random schedulers.
//!
//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
//! 2014) over an atomic counter: each draw adds the golden-ratio increment with one
//! `fetch_add` and mixes the result, so concurrent picks never wait for each other and a
//! seeded scheduler draws the same sequence on every run (single-threaded).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::hash::fmix64;

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
        let z = self.0.fetch_add(GAMMA, Relaxed).wrapping_add(GAMMA);
        // SplitMix64's mixer is MurmurHash3's finalizer with other constants; fmix64 mixes
        // as well for our purpose.
        fmix64(z)
    }

    /// A number in `0..n` (`n > 0`).
    #[inline]
    pub(crate) fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}
