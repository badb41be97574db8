//! pen's server selection, switchable at run time (penctl `hash`, `weight`, `prio`).
//!
//! pen chooses the initial server for a client that the client table does not know
//! (pen.c, `server_by_roundrobin` and friends). Precedence as in pen: `prio` first (the
//! usable server with the lowest priority value), then `weight` (the lowest connections
//! per unit of weight), then `hash` (a hash of the client address picks the starting
//! server, the scan moves forward past unusable ones), else round robin. Ties in `prio`
//! and `weight` go round robin, so equal servers share the load.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use lb_core::PickContext;
use lb_core::backend::Member;
use lb_core::scheduler::{Candidates, Scheduler};

/// pen's selection modes.
#[derive(Debug, Default)]
pub(crate) struct PenScheduler {
    pub(crate) hash: AtomicBool,
    pub(crate) weight: AtomicBool,
    pub(crate) prio: AtomicBool,
}

/// FNV-1a over the address octets (IPv4-mapped addresses hash as IPv4).
fn hash_ip(ip: IpAddr) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes: Vec<u8> = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Truncation is fine: only the value modulo the member count matters.
    h as usize
}

impl PenScheduler {
    /// Eligible index with the smallest `key`, scanning from `start` so ties rotate.
    fn min_by(c: &Candidates<'_>, start: usize, key: impl Fn(&Member) -> u64) -> Option<usize> {
        let n = c.len();
        let mut best: Option<(u64, usize)> = None;
        for probe in 0..n {
            let i = start.wrapping_add(probe) % n;
            if c.is_eligible(i) {
                let k = key(c.member(i));
                if best.is_none_or(|(b, _)| k < b) {
                    best = Some((k, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }
}

impl Scheduler for PenScheduler {
    type State = AtomicUsize;

    fn prepare(&self, _members: &[Arc<Member>]) -> AtomicUsize {
        AtomicUsize::new(0)
    }

    fn pick(&self, next: &AtomicUsize, c: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        if self.prio.load(Relaxed) {
            let start = next.fetch_add(1, Relaxed);
            return Self::min_by(c, start, |m| u64::from(m.backend().priority()));
        }
        if self.weight.load(Relaxed) {
            let start = next.fetch_add(1, Relaxed);
            return Self::min_by(c, start, |m| {
                u64::from(m.state().active()) * 1_000_000 / u64::from(m.backend().weight().max(1))
            });
        }
        let start = match (self.hash.load(Relaxed), ctx.client()) {
            (true, Some(client)) => hash_ip(client.ip()),
            _ => next.fetch_add(1, Relaxed),
        };
        (0..n)
            .map(|p| start.wrapping_add(p) % n)
            .find(|&i| c.is_eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{Backend, Balancer};
    use std::net::SocketAddr;

    fn lb(s: PenScheduler) -> Balancer<PenScheduler> {
        let b = |p: u16, w: u32, prio: u32| {
            Backend::new(SocketAddr::from(([127, 0, 0, 1], p)))
                .with_weight(w)
                .with_priority(prio)
        };
        lb_core::BalancerBuilder::with_scheduler(s)
            .backend(b(1, 1, 2))
            .backend(b(2, 3, 1))
            .backend(b(3, 1, 1))
            .build()
            .unwrap()
    }

    #[test]
    fn round_robin_by_default() {
        let lb = lb(PenScheduler::default());
        let ids: Vec<_> = (0..6)
            .map(|_| lb.pick(&PickContext::new()).unwrap().id())
            .collect();
        assert_eq!(ids[0..3], ids[3..6]);
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn hash_is_stable_per_client() {
        let lb = lb(PenScheduler {
            hash: AtomicBool::new(true),
            ..Default::default()
        });
        let mut seen = std::collections::HashSet::new();
        for last in 1..40u8 {
            let client = SocketAddr::from(([127, 0, 0, last], 1000));
            let first = lb
                .pick(&PickContext::new().with_client(client))
                .unwrap()
                .id();
            let again = lb
                .pick(&PickContext::new().with_client(SocketAddr::from(([127, 0, 0, last], 2000))))
                .unwrap()
                .id();
            assert_eq!(first, again);
            seen.insert(first);
        }
        assert!(seen.len() > 1, "every client hashed to one server");
    }

    #[test]
    fn prio_prefers_lowest_and_weight_balances_by_ratio() {
        let lb1 = lb(PenScheduler {
            prio: AtomicBool::new(true),
            ..Default::default()
        });
        for _ in 0..4 {
            let l = lb1.pick(&PickContext::new()).unwrap();
            assert_eq!(l.backend().priority(), 1);
        }
        let lb2 = lb(PenScheduler {
            weight: AtomicBool::new(true),
            ..Default::default()
        });
        // Hold leases: the weight-3 server gets 3 of every 5 concurrent connections.
        let leases: Vec<_> = (0..5)
            .map(|_| lb2.pick(&PickContext::new()).unwrap())
            .collect();
        let heavy = leases.iter().filter(|l| l.backend().weight() == 3).count();
        assert_eq!(heavy, 3);
    }
}
