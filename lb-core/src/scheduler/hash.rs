//! Fixed hash functions and helpers shared by the hashing schedulers.
//!
//! Hashing schedulers must send a key to the same backend in every process and on every
//! build, so nothing here is seeded at random. [`hash64`] is our own word-at-a-time hash in
//! the style of xxHash/wyhash: each 8-byte little-endian word is xored in, multiplied by a
//! 64-bit odd constant and rotated; the tail and the length are folded into a last word; the
//! result goes through MurmurHash3's 64-bit finalizer (`fmix64`) for avalanche. Its output
//! for a few inputs is pinned by tests, so any change to it fails them.
//!
//! The Ketama ring does not use this hash: it uses MD5 like libmemcached (see
//! [`Ketama`](super::Ketama)).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::Candidates;
use crate::context::PickContext;
use crate::persistence::ClientKey;

const P1: u64 = 0x9e37_79b9_7f4a_7c15;
const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// MurmurHash3's 64-bit finalizer.
#[inline]
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The fixed 64-bit hash of `bytes` under `seed` (a constant chosen per use).
#[inline]
pub(crate) fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ P2;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(P1).rotate_left(29);
    }
    let rest = chunks.remainder();
    let mut w = [0u8; 8];
    w[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(w)).wrapping_mul(P1).rotate_left(29);
    fmix64(h ^ (bytes.len() as u64).wrapping_mul(P2))
}

/// The `j`-th fallback hash derived from a key's hash (`j = 0` is the hash itself): the
/// probe sequence used when a key's owner cannot take it.
#[inline]
pub(crate) fn probe(h: u64, j: u64) -> u64 {
    if j == 0 {
        h
    } else {
        fmix64(h ^ j.wrapping_mul(P1))
    }
}

/// Maps a 64-bit hash onto `0..n` without a division (Lemire's multiply-shift).
#[inline]
pub(crate) fn reduce(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

/// `a % d` without a division, for a divisor fixed in `prepare` (Lemire, Kaser and Kurz,
/// "Faster Remainder by Direct Computation", 2019: `fastmod_u64`). A 64-bit division costs
/// tens of cycles on the hot path of the round-robin schedulers; this costs three
/// multiplications.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastMod {
    m: u128,
    d: u64,
}

impl FastMod {
    /// The remainder by `d` (0 is treated as 1).
    pub(crate) fn new(d: u64) -> Self {
        let d = d.max(1);
        FastMod {
            m: (u128::MAX / u128::from(d)).wrapping_add(1),
            d,
        }
    }

    /// The divisor.
    #[inline]
    pub(crate) fn divisor(&self) -> u64 {
        self.d
    }

    /// `a % d`.
    #[inline]
    pub(crate) fn rem(&self, a: u64) -> u64 {
        let low = self.m.wrapping_mul(u128::from(a));
        let d = u128::from(self.d);
        // The high 64 bits of the 192-bit product low × d.
        let lo = u128::from(low as u64) * d;
        let hi = (low >> 64) * d;
        ((hi + (lo >> 64)) >> 64) as u64
    }
}

/// Runs `f` on the bytes a pick hashes: the context's key, else the client's IP address
/// (without the port). `None` when the context has neither.
#[inline]
pub(crate) fn with_key<T>(ctx: &PickContext<'_>, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    if let Some(k) = ctx.key() {
        return Some(f(k));
    }
    let client = ctx.client()?;
    Some(f(ClientKey::from_ip(client.ip()).as_bytes()))
}

/// For picks with nothing to hash: the first eligible member from a rotating start, so such
/// picks still spread instead of failing.
pub(crate) fn rotate(next: &AtomicUsize, c: &Candidates<'_>) -> Option<usize> {
    let n = c.len();
    if n == 0 {
        return None;
    }
    let start = next.fetch_add(1, Relaxed);
    (0..n)
        .map(|p| start.wrapping_add(p) % n)
        .find(|&i| c.is_eligible(i))
}

/// The bounded-load test (consistent hashing with bounded loads, Mirrokni, Thorup and
/// Zadimoghaddam 2016; HAProxy's `hash-balance-factor`): a member may take a new client
/// while its active count stays below `ceil(c × (total + 1) × weight / total_weight)`,
/// counted over the eligible members. One scan of the tier per pick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadBound {
    total: u64,
    weight: u64,
    /// The factor in thousandths.
    milli: u64,
}

impl LoadBound {
    /// Measures the tier now.
    pub(crate) fn measure(c: &Candidates<'_>, milli: u64) -> Self {
        let mut total = 0u64;
        let mut weight = 0u64;
        for i in c.eligible() {
            let m = c.member(i);
            total += u64::from(m.state().active());
            weight += u64::from(m.backend().weight());
        }
        LoadBound {
            total,
            weight,
            milli,
        }
    }

    /// Whether member `i` is below its bound.
    pub(crate) fn admits(&self, c: &Candidates<'_>, i: usize) -> bool {
        if self.weight == 0 {
            return true;
        }
        let m = c.member(i);
        let w = u128::from(m.backend().weight());
        let num = u128::from(self.milli) * u128::from(self.total + 1) * w;
        let den = 1000 * u128::from(self.weight);
        let cap = num.div_ceil(den);
        u128::from(m.state().active()) < cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        // These values pin the function: changing it moves every hashed key.
        assert_eq!(hash64(0, b""), 0xe775_4b15_7bf7_bf1b);
        assert_eq!(hash64(0, b"user-42"), 0x45c5_0303_35f0_2eea);
        assert_eq!(
            hash64(7, b"192.0.2.1 and a longer key"),
            0xd146_b58a_68ae_2858
        );
        assert_ne!(hash64(0, b"a"), hash64(1, b"a"));
        assert_ne!(hash64(0, b"a"), hash64(0, b"a\0"));
    }

    #[test]
    fn fast_mod_is_the_remainder() {
        let divisors = [
            1u64,
            2,
            3,
            7,
            64,
            1000,
            65_537,
            154_624,
            u32::MAX as u64,
            u64::MAX,
        ];
        for &d in &divisors {
            let f = FastMod::new(d);
            for k in 0..2_000u64 {
                let a = hash64(k, &d.to_le_bytes());
                assert_eq!(f.rem(a), a % d, "{a} % {d}");
                assert_eq!(f.rem(k), k % d);
            }
            assert_eq!(f.rem(u64::MAX), u64::MAX % d);
        }
    }

    #[test]
    fn reduce_stays_in_range_and_spreads() {
        let mut counts = [0u32; 7];
        for k in 0u64..70_000 {
            let s = reduce(hash64(1, &k.to_le_bytes()), 7);
            counts[s] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
