//! Consistent hashing on a Ketama ring (libmemcached's `MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA`,
//! the ring nginx's `hash $key consistent` and HAProxy's `hash-type consistent` follow).
//!
//! Each member puts 160 points per unit of weight on a 32-bit ring. The points are derived
//! as libmemcached derives them (`ketama_server_hash`): for `k = 0, 1, ...` the MD5 digest of
//! the label `"host:port-k"` (`"host-k"` when the port is memcached's default 11211) gives
//! four points, bytes `4h..4h+4` of the digest read little-endian for `h = 0..4`. A key
//! hashes to the first four bytes of its MD5 digest, little-endian, and belongs to the first
//! point at or after it, wrapping around. With equal weights the ring is libmemcached's
//! (which gives 160 points per server); with weights it has `160 × weight` points per
//! member, as this crate promises (libmemcached scales by the share of the total instead).
//! When the total would pass 2^20 points (a weight total of 6553), weights are scaled down
//! in proportion (each member keeps at least 160 points), which bounds the ring's memory
//! (8 MiB) and the MD5 work of building it.
//!
//! The key is the pick's hash key, else the client's IP address; with neither, picks take
//! turns. Adding or removing a member moves only the keys on the arcs it gains or loses.
//! When a key's owner is ineligible the walk goes on to the next point of another member,
//! so the other keys stay where they are.
//!
//! Bounded load (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded
//! Loads", 2016; HAProxy's `hash-balance-factor`): with a factor `c`, a member at or above
//! `c ×` its weighted share of the active leases (plus the new one) is passed over like an
//! ineligible one. That costs one scan of the tier per pick.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use md5::{Digest, Md5};

use super::hash::{LoadBound, rotate};
use super::{Candidates, Scheduler};
use crate::backend::{Address, Member};
use crate::context::PickContext;
use crate::error::{Error, Result};

/// Ring points per unit of weight.
pub const POINTS_PER_WEIGHT: u64 = 160;
const MAX_POINTS: u64 = 1 << 20;
const MEMCACHED_PORT: u16 = 11211;
/// Members whose eligibility a walk remembers (a bitset on the stack).
const MEMO: usize = 1024;

/// Consistent hashing on a Ketama ring, optionally with bounded loads.
#[derive(Debug, Clone, Default)]
pub struct Ketama {
    bound_milli: Option<u64>,
}

impl Ketama {
    /// A Ketama ring without a load bound.
    pub fn new() -> Self {
        Ketama::default()
    }

    /// Bounds every member's load to `factor ×` its share (HAProxy's
    /// `hash-balance-factor` / 100; 1.25 is the usual choice). Refuses factors below 1.
    pub fn with_bounded_load(mut self, factor: f64) -> Result<Self> {
        self.bound_milli = Some(bound_milli(factor)?);
        Ok(self)
    }

    /// The load bound factor, if any.
    pub fn bounded_load(&self) -> Option<f64> {
        self.bound_milli.map(|m| m as f64 / 1000.0)
    }
}

/// Checks a bounded-load factor and converts it to thousandths.
pub(crate) fn bound_milli(factor: f64) -> Result<u64> {
    if !factor.is_finite() || !(1.0..=1000.0).contains(&factor) {
        return Err(Error::InvalidParameter {
            name: "bound",
            value: factor.to_string(),
            reason: "the bounded-load factor must be a number from 1 to 1000",
        });
    }
    Ok((factor * 1000.0).round() as u64)
}

/// The libmemcached label prefix of an address: `host:port` or `host` for port 11211.
fn label(address: &Address) -> String {
    match address {
        Address::Socket(a) if a.port() == MEMCACHED_PORT => a.ip().to_string(),
        Address::Socket(a) => format!("{}:{}", a.ip(), a.port()),
        Address::Host { host, port } if *port == MEMCACHED_PORT => host.clone(),
        Address::Host { host, port } => format!("{host}:{port}"),
        Address::Unix(p) => p.display().to_string(),
    }
}

/// libmemcached's `ketama_server_hash`: bytes `4h..4h+4` of the digest, little-endian.
fn point(digest: &[u8], h: usize) -> u32 {
    u32::from_le_bytes([
        digest[4 * h],
        digest[4 * h + 1],
        digest[4 * h + 2],
        digest[4 * h + 3],
    ])
}

/// The ring position of a key (libmemcached's MD5 key hash).
pub(crate) fn key_hash(key: &[u8]) -> u32 {
    point(&Md5::digest(key), 0)
}

/// The ring of [`Ketama`]: points sorted by position.
#[derive(Debug)]
pub struct Ring {
    /// (position, member index), sorted.
    points: Box<[(u32, u32)]>,
    next: AtomicUsize,
}

impl Ring {
    /// How many points the ring has.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the ring has no points (no member has a weight).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

impl Scheduler for Ketama {
    type State = Ring;

    fn prepare(&self, members: &[Arc<Member>]) -> Ring {
        let total: u64 = members
            .iter()
            .map(|m| u64::from(m.backend().weight()))
            .sum();
        let scale = |w: u64| -> u64 {
            if w == 0 {
                0
            } else if total * POINTS_PER_WEIGHT <= MAX_POINTS {
                w * POINTS_PER_WEIGHT
            } else {
                (w * MAX_POINTS / total).max(POINTS_PER_WEIGHT)
            }
        };
        let mut points = Vec::new();
        let mut buf = String::new();
        for (i, m) in members.iter().enumerate() {
            let n = scale(u64::from(m.backend().weight()));
            let prefix = label(m.backend().address());
            for k in 0..n.div_ceil(4) {
                buf.clear();
                let _ = write!(buf, "{prefix}-{k}");
                let digest = Md5::digest(buf.as_bytes());
                for h in 0..4 {
                    points.push((point(&digest, h), i as u32));
                }
            }
        }
        points.sort_unstable();
        Ring {
            points: points.into(),
            next: AtomicUsize::new(0),
        }
    }

    fn uses_key(&self) -> bool {
        true
    }

    fn pick(&self, ring: &Ring, c: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize> {
        let Some(h) = super::hash::with_key(ctx, key_hash) else {
            return rotate(&ring.next, c);
        };
        let points = &ring.points;
        let n = points.len();
        if n == 0 {
            return None;
        }
        let bound = self.bound_milli.map(|m| LoadBound::measure(c, m));
        let start = points.partition_point(|&(p, _)| p < h) % n;
        // Members already found ineligible (or over the bound), remembered for the first
        // MEMO members so each is tested once and the walk stops when all were refused.
        let mut refused = [0u64; MEMO / 64];
        let mut distinct = 0usize;
        let mut fallback = None;
        for step in 0..n {
            let i = points[(start + step) % n].1 as usize;
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if i < MEMO && refused[word] & bit != 0 {
                continue;
            }
            let eligible = c.is_eligible(i);
            if eligible && fallback.is_none() {
                fallback = Some(i);
            }
            let admitted = eligible && bound.is_none_or(|b| b.admits(c, i));
            if admitted {
                return Some(i);
            }
            if i < MEMO {
                refused[word] |= bit;
                distinct += 1;
                if distinct == c.len() {
                    break;
                }
            }
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use crate::scheduler::testing::{addr, assert_proportional, balancer, pick_key};

    #[test]
    fn points_are_libmemcached_md5() {
        // MD5("") = d41d8cd9 8f00b204 e9800998 ecf8427e: little-endian words.
        let d = Md5::digest(b"");
        assert_eq!(point(&d, 0), 0xd98c_1dd4);
        assert_eq!(point(&d, 3), 0x7e42_f8ec);
        let a: Address = "10.0.1.1:11211".parse().unwrap();
        assert_eq!(label(&a), "10.0.1.1");
        let a: Address = "10.0.1.1:8080".parse().unwrap();
        assert_eq!(label(&a), "10.0.1.1:8080");
        let lb = balancer(Ketama::new(), &[1, 3]);
        let ring = Ketama::new().prepare(&lb.members());
        assert_eq!(ring.len(), 4 * 160);
    }

    #[test]
    fn keys_spread_by_weight() {
        let weights = [1, 2, 3, 4];
        let lb = balancer(Ketama::new(), &weights);
        let mut counts = [0usize; 4];
        for k in 0..40_000 {
            counts[pick_key(&lb, format!("key-{k}").as_bytes())] += 1;
        }
        // 160 points per weight unit: a member's arcs add up to its share only within
        // about ±8% (one standard deviation), so the tolerance is 20%.
        assert_proportional(&counts, &weights, 0.20);
    }

    #[test]
    fn removing_a_member_moves_only_its_keys() {
        let lb = balancer(Ketama::new(), &[1; 10]);
        let keys: Vec<String> = (0..20_000).map(|k| format!("user:{k}")).collect();
        let before: Vec<usize> = keys.iter().map(|k| pick_key(&lb, k.as_bytes())).collect();
        lb.remove(lb.members()[4].id()).unwrap();
        for (k, &b) in keys.iter().zip(&before) {
            let now = pick_key(&lb, k.as_bytes());
            if b != 4 {
                assert_eq!(now, b, "key {k} moved");
            }
        }
        // And adding it back restores every key.
        lb.add(Backend::new(addr(4))).unwrap();
        let again: Vec<usize> = keys.iter().map(|k| pick_key(&lb, k.as_bytes())).collect();
        assert_eq!(again, before);
    }

    #[test]
    fn ineligible_owner_walks_on_without_moving_others() {
        let lb = balancer(Ketama::new(), &[1; 6]);
        let keys: Vec<String> = (0..5_000).map(|k| format!("k{k}")).collect();
        let before: Vec<usize> = keys.iter().map(|k| pick_key(&lb, k.as_bytes())).collect();
        lb.set_admin(lb.members()[1].id(), crate::AdminState::Maintenance)
            .unwrap();
        for (k, &b) in keys.iter().zip(&before) {
            let now = pick_key(&lb, k.as_bytes());
            assert_ne!(now, 1);
            if b != 1 {
                assert_eq!(now, b);
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        let lb = balancer(Ketama::new(), &[1; 10]);
        let got: Vec<usize> = ["alpha", "beta", "gamma", "delta", "user-42"]
            .iter()
            .map(|k| pick_key(&lb, k.as_bytes()))
            .collect();
        assert_eq!(got, [5, 2, 6, 2, 7]);
    }

    #[test]
    fn bounded_load_caps_a_hot_key() {
        let lb = balancer(Ketama::new().with_bounded_load(1.25).unwrap(), &[1; 4]);
        // Every client has the same key: without a bound all go to one member.
        let leases: Vec<_> = (0..400)
            .map(|_| lb.pick(&PickContext::new().with_key(b"hot")).unwrap())
            .collect();
        let max = lb.stats().backends.iter().map(|b| b.active).max().unwrap();
        // ceil(1.25 × 400 / 4) = 125.
        assert!(max <= 125, "max {max}");
        drop(leases);
        assert!(Ketama::new().with_bounded_load(0.9).is_err());
        assert!(Ketama::new().with_bounded_load(f64::NAN).is_err());
    }
}
