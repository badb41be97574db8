//! Source hashing, map-based: IPVS `sh`, pen's `-h`.
//!
//! IPVS `sh` (ip_vs_sh.c) hashes the client address into a fixed table of buckets; each
//! backend owns a number of buckets in proportion to its weight, so a client keeps its
//! backend while the set is unchanged. Like IPVS (and unlike [`Ketama`](super::Ketama) or
//! [`Maglev`](super::Maglev)), changing the set may move many clients: use those when
//! minimal disruption matters.
//!
//! Here the table has `max(256, next_power_of_two(16 × total weight))` buckets (IPVS uses
//! 256), capped at 2^20, shared out by largest remainder so each member's share is within
//! one bucket of exact. The key is the client's IP address, masked to a netmask (IPv4 bits,
//! IPv6 prefix; IPVS persistence netmask grouping) and, optionally, with the client's port
//! (IPVS `sh-port`). When the context has no client, the pick's hash key is used; when it
//! has neither, picks take turns. The hash is [`hash64`](super::hash) (fixed, stable across
//! processes).
//!
//! When a client's bucket belongs to an ineligible member, the key is rehashed with the
//! next probe, as IPVS's `sh-fallback` does, so only that member's clients move, and they
//! spread over the others by weight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::hash::{hash64, probe, reduce, rotate};
use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;
use crate::error::{Error, Result};
use crate::persistence::ClientKey;

const SEED: u64 = 0x5348_5f49_5056_5321; // "SH_IPVS!"
const MAX_BUCKETS: u64 = 1 << 20;
/// Probes of other buckets before scanning for any eligible member.
const PROBES: u64 = 32;

/// Source-address hashing with a bucket table.
#[derive(Debug, Clone)]
pub struct SourceHash {
    v4_bits: u8,
    v6_bits: u8,
    port: bool,
}

impl Default for SourceHash {
    fn default() -> Self {
        SourceHash {
            v4_bits: 32,
            v6_bits: 128,
            port: false,
        }
    }
}

impl SourceHash {
    /// Hashes the whole client IP address.
    pub fn new() -> Self {
        SourceHash::default()
    }

    /// Groups clients by network: only the first `v4_bits` of an IPv4 address and
    /// `v6_bits` of an IPv6 address count. Refuses more than 32 or 128 bits.
    pub fn with_netmask(mut self, v4_bits: u8, v6_bits: u8) -> Result<Self> {
        if v4_bits > 32 {
            return Err(Error::InvalidNetmask {
                value: v4_bits.to_string(),
                reason: "an IPv4 netmask has at most 32 bits",
            });
        }
        if v6_bits > 128 {
            return Err(Error::InvalidNetmask {
                value: v6_bits.to_string(),
                reason: "an IPv6 prefix has at most 128 bits",
            });
        }
        self.v4_bits = v4_bits;
        self.v6_bits = v6_bits;
        Ok(self)
    }

    /// Includes the client's port in the hash (IPVS `sh-port`).
    pub fn with_port(mut self, port: bool) -> Self {
        self.port = port;
        self
    }

    /// The IPv4 and IPv6 netmask lengths.
    pub fn netmask(&self) -> (u8, u8) {
        (self.v4_bits, self.v6_bits)
    }

    /// Whether the client's port is hashed.
    pub fn hashes_port(&self) -> bool {
        self.port
    }

    fn hash_client(&self, client: SocketAddr) -> u64 {
        let key = ClientKey::masked(client.ip(), self.v4_bits, self.v6_bits);
        let bytes = key.as_bytes();
        let mut buf = [0u8; 18];
        buf[..bytes.len()].copy_from_slice(bytes);
        let mut len = bytes.len();
        if self.port {
            buf[len..len + 2].copy_from_slice(&client.port().to_be_bytes());
            len += 2;
        }
        hash64(SEED, &buf[..len])
    }
}

/// The bucket table of [`SourceHash`].
#[derive(Debug)]
pub struct Buckets {
    table: Box<[u32]>,
    next: AtomicUsize,
}

impl Scheduler for SourceHash {
    type State = Buckets;

    fn prepare(&self, members: &[Arc<Member>]) -> Buckets {
        let weights: Vec<u64> = members
            .iter()
            .map(|m| u64::from(m.backend().weight()))
            .collect();
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return Buckets {
                table: Box::default(),
                next: AtomicUsize::new(0),
            };
        }
        let size = total
            .saturating_mul(16)
            .next_power_of_two()
            .clamp(256, MAX_BUCKETS);
        // Largest remainder: floor shares, then one more for the largest remainders.
        let mut counts: Vec<u64> = weights.iter().map(|w| size * w / total).collect();
        let mut rest: Vec<(u64, usize)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| ((size * w) % total, i))
            .collect();
        rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let missing = size - counts.iter().sum::<u64>();
        for &(_, i) in rest.iter().take(missing as usize) {
            counts[i] += 1;
        }
        let mut table = Vec::with_capacity(size as usize);
        for (i, &n) in counts.iter().enumerate() {
            table.extend(std::iter::repeat_n(i as u32, n as usize));
        }
        Buckets {
            table: table.into(),
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self, b: &Buckets, c: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize> {
        let h = match (ctx.client(), ctx.key()) {
            (Some(client), _) => self.hash_client(client),
            (None, Some(key)) => hash64(SEED, key),
            (None, None) => return rotate(&b.next, c),
        };
        let n = b.table.len();
        if n == 0 {
            return None;
        }
        for j in 0..PROBES {
            let i = b.table[reduce(probe(h, j), n)] as usize;
            if c.is_eligible(i) {
                return Some(i);
            }
        }
        let start = reduce(h, c.len());
        (start..c.len()).chain(0..start).find(|&i| c.is_eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::scheduler::testing::{assert_proportional, balancer, index};

    fn pick(lb: &crate::Balancer<SourceHash>, client: &str) -> usize {
        let ctx = PickContext::new().with_client(client.parse().unwrap());
        index(&lb.pick(&ctx).unwrap())
    }

    #[test]
    fn clients_spread_by_weight_and_stick() {
        let weights = [1, 2, 3, 4];
        let lb = balancer(SourceHash::new(), &weights);
        let mut counts = [0usize; 4];
        for k in 0..40_000u32 {
            let [a, b, c, d] = (0x0a00_0000 + k).to_be_bytes();
            let client = format!("{a}.{b}.{c}.{d}:{}", 1000 + k % 50_000);
            let first = pick(&lb, &client);
            assert_eq!(pick(&lb, &client), first);
            counts[first] += 1;
        }
        assert_proportional(&counts, &weights, 0.04);
    }

    #[test]
    fn netmask_groups_and_port_splits() {
        let lb = balancer(SourceHash::new().with_netmask(24, 64).unwrap(), &[1; 8]);
        let home = pick(&lb, "192.0.2.1:1000");
        for last in 2..=254 {
            assert_eq!(pick(&lb, &format!("192.0.2.{last}:{last}")), home);
        }
        let lb = balancer(SourceHash::new().with_port(true), &[1; 8]);
        let seen: std::collections::HashSet<usize> = (1000..1100)
            .map(|p| pick(&lb, &format!("192.0.2.1:{p}")))
            .collect();
        assert!(seen.len() > 4, "ports should spread: {seen:?}");
        assert!(SourceHash::new().with_netmask(33, 64).is_err());
        assert!(SourceHash::new().with_netmask(24, 129).is_err());
    }

    #[test]
    fn only_a_down_members_clients_move() {
        let lb = balancer(SourceHash::new(), &[1; 5]);
        let clients: Vec<String> = (0..2000)
            .map(|k| format!("198.51.{}.{}:80", k / 250, k % 250))
            .collect();
        let before: Vec<usize> = clients.iter().map(|c| pick(&lb, c)).collect();
        lb.set_health(lb.members()[2].id(), Health::Down).unwrap();
        for (c, &b) in clients.iter().zip(&before) {
            let now = pick(&lb, c);
            if b == 2 {
                assert_ne!(now, 2);
            } else {
                assert_eq!(now, b, "client {c} moved");
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        // Pinned: a change of hash function or table layout fails here.
        let lb = balancer(SourceHash::new(), &[1; 10]);
        let got: Vec<usize> = [
            "192.0.2.1:1",
            "192.0.2.2:1",
            "[2001:db8::1]:1",
            "10.0.0.1:9",
        ]
        .iter()
        .map(|c| pick(&lb, c))
        .collect();
        assert_eq!(got, [6, 1, 2, 3]);
    }
}
