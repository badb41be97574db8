//! pen's server selection modes (penctl `hash`, `weight`, `prio`) on lb-core's schedulers.
//!
//! pen chooses the initial server for a client that the client table does not know
//! (pen.c, `server_by_roundrobin` and friends). Precedence as in pen: `prio` first
//! (lb-core's `prio`: the usable servers with the lowest priority value, shared by weighted
//! round robin), then `weight` (`wlc`: the fewest connections per unit of weight), then
//! `hash` (`sh`: a hash of the client address), else `roundrobin`.

use lb_core::scheduler::{AnyScheduler, Priority, RoundRobin, SourceHash, WeightedLeastConn};

/// pen's selection flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Modes {
    pub(crate) hash: bool,
    pub(crate) weight: bool,
    pub(crate) prio: bool,
}

impl Modes {
    /// The lb-core scheduler these flags select, in pen's precedence.
    pub(crate) fn scheduler(self) -> AnyScheduler {
        if self.prio {
            Priority::new().into()
        } else if self.weight {
            WeightedLeastConn::new().into()
        } else if self.hash {
            SourceHash::new().into()
        } else {
            RoundRobin::new().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{Backend, Balancer, BalancerBuilder, PickContext};
    use std::net::SocketAddr;

    fn lb(m: Modes) -> Balancer {
        let b = |p: u16, w: u32, prio: u32| {
            Backend::new(SocketAddr::from(([127, 0, 0, 1], p)))
                .with_weight(w)
                .with_priority(prio)
        };
        BalancerBuilder::with_scheduler(m.scheduler())
            .backend(b(1, 1, 2))
            .backend(b(2, 3, 1))
            .backend(b(3, 1, 1))
            .build()
            .unwrap()
    }

    #[test]
    fn precedence_is_prio_weight_hash_roundrobin() {
        let all = Modes {
            hash: true,
            weight: true,
            prio: true,
        };
        assert_eq!(all.scheduler().name(), "prio");
        let m = Modes { prio: false, ..all };
        assert_eq!(m.scheduler().name(), "wlc");
        let m = Modes { weight: false, ..m };
        assert_eq!(m.scheduler().name(), "sh");
        assert_eq!(Modes::default().scheduler().name(), "roundrobin");
    }

    #[test]
    fn round_robin_by_default() {
        let lb = lb(Modes::default());
        let ids: Vec<_> = (0..6)
            .map(|_| lb.pick(&PickContext::new()).unwrap().id())
            .collect();
        assert_eq!(ids[0..3], ids[3..6]);
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn hash_is_stable_per_client() {
        let lb = lb(Modes {
            hash: true,
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
        let lb1 = lb(Modes {
            prio: true,
            ..Default::default()
        });
        for _ in 0..4 {
            let l = lb1.pick(&PickContext::new()).unwrap();
            assert_eq!(l.backend().priority(), 1);
        }
        let lb2 = lb(Modes {
            weight: true,
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
