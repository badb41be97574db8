//! The connection-count family: least connections, weighted least connections, shortest
//! expected delay, never queue and Apache's bybusyness.
//!
//! All read the live count of active leases of every eligible member (one scan of the tier
//! per pick) and take the least loaded:
//!
//! - [`LeastConn`] (IPVS `lc`, HAProxy `leastconn`): fewest active connections `C`;
//! - [`WeightedLeastConn`] (IPVS `wlc`; pen's `-W` weighted least connections):
//!   least `C / W`, compared by cross-multiplication (`C_a × W_b < C_b × W_a`) as IPVS does,
//!   so there is no rounding;
//! - [`ShortestExpectedDelay`] (IPVS `sed`): least `(C + 1) / W`, the delay a new client
//!   would see if every connection took the same time;
//! - [`NeverQueue`] (IPVS `nq`): an idle member (`C = 0`) when there is one, else as `sed`;
//! - [`ByBusyness`] (Apache `lbmethod=bybusyness`): fewest active, ties broken by Apache's
//!   byrequests counters (smooth weighted round robin among the least busy).
//!
//! Ties are broken fairly: each scan starts one member further than the previous one (an
//! atomic counter), and the first of equally loaded members from there wins, so equal
//! members take turns rather than the first one taking everything. `ByBusyness` keeps its
//! counters under a mutex, as Apache keeps them in its balancer's shared memory under a
//! lock.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;

/// The rotating start of a scan.
#[derive(Debug, Default)]
pub struct Rotor(pub(crate) AtomicUsize);

/// The first eligible member minimising `load` (a fraction `num / den`, compared by
/// cross-multiplication), scanning from a rotating start.
#[inline]
fn scan_min(
    rotor: &Rotor,
    c: &Candidates<'_>,
    load: impl Fn(&Member) -> (u64, u64),
) -> Option<usize> {
    let n = c.len();
    if n == 0 {
        return None;
    }
    let start = rotor.0.fetch_add(1, Relaxed) % n;
    let mut best: Option<(usize, u64, u64)> = None;
    for i in (start..n).chain(0..start) {
        if !c.is_eligible(i) {
            continue;
        }
        let (num, den) = load(c.member(i));
        match best {
            Some((_, bn, bd))
                if u128::from(num) * u128::from(bd) >= u128::from(bn) * u128::from(den) => {}
            _ => best = Some((i, num, den)),
        }
    }
    best.map(|(i, _, _)| i)
}

macro_rules! conn_scheduler {
    ($(#[$doc:meta])* $name:ident, $m:ident => $load:expr) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name {
            _private: (),
        }

        impl $name {
            /// The scheduler.
            pub fn new() -> Self {
                $name::default()
            }
        }

        impl Scheduler for $name {
            type State = Rotor;

            fn prepare(&self, _members: &[Arc<Member>]) -> Rotor {
                Rotor::default()
            }

            #[inline]
            fn pick(&self, rotor: &Rotor, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
                scan_min(rotor, c, |$m: &Member| $load)
            }
        }
    };
}

conn_scheduler!(
    /// Least connections (IPVS `lc`, HAProxy `leastconn`): the member with the fewest
    /// active leases; weights are ignored.
    LeastConn, m => (u64::from(m.state().active()), 1)
);

conn_scheduler!(
    /// Weighted least connections (IPVS `wlc`, pen `-W`): the least active leases per unit
    /// of weight.
    WeightedLeastConn, m => (u64::from(m.state().active()), u64::from(m.backend().weight()))
);

conn_scheduler!(
    /// Shortest expected delay (IPVS `sed`): the least `(active + 1) / weight`.
    ShortestExpectedDelay, m => (u64::from(m.state().active()) + 1, u64::from(m.backend().weight()))
);

/// Never queue (IPVS `nq`): an idle member if there is one, else as
/// [`ShortestExpectedDelay`].
#[derive(Debug, Default)]
pub struct NeverQueue {
    _private: (),
}

impl NeverQueue {
    /// The scheduler.
    pub fn new() -> Self {
        NeverQueue::default()
    }
}

impl Scheduler for NeverQueue {
    type State = Rotor;

    fn prepare(&self, _members: &[Arc<Member>]) -> Rotor {
        Rotor::default()
    }

    fn pick(&self, rotor: &Rotor, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        // Idle members cost 0 whatever their weight, so the scan takes the first idle one
        // from the rotating start; otherwise sed's (C + 1) / W.
        scan_min(rotor, c, |m| match m.state().active() {
            0 => (0, 1),
            a => (u64::from(a) + 1, u64::from(m.backend().weight())),
        })
    }
}

/// Apache's `bybusyness`: the member with the fewest active requests; among the least busy,
/// byrequests' smooth weighted round robin decides.
#[derive(Debug, Default)]
pub struct ByBusyness {
    _private: (),
}

impl ByBusyness {
    /// The scheduler.
    pub fn new() -> Self {
        ByBusyness::default()
    }
}

/// The byrequests counters (`lbstatus`) of [`ByBusyness`], one per member.
#[derive(Debug)]
pub struct BusyState(Mutex<Vec<i64>>);

impl Scheduler for ByBusyness {
    type State = BusyState;

    fn prepare(&self, members: &[Arc<Member>]) -> BusyState {
        BusyState(Mutex::new(vec![0; members.len()]))
    }

    fn pick(&self, state: &BusyState, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        // mod_lbmethod_bybusyness.c, find_best_bybusyness: every usable worker's lbstatus
        // grows by its lbfactor; the least busy wins, ties to the highest lbstatus; the
        // winner's lbstatus drops by the total factor.
        let mut lbstatus = state.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<(usize, u32)> = None;
        for i in c.eligible() {
            let m = c.member(i);
            let Some(status) = lbstatus.get_mut(i) else {
                continue;
            };
            *status += i64::from(m.backend().weight());
            total += i64::from(m.backend().weight());
            let busy = m.state().active();
            let better = match best {
                None => true,
                Some((b, bbusy)) => busy < bbusy || (busy == bbusy && *status > lbstatus[b]),
            };
            if better {
                best = Some((i, busy));
            }
        }
        let (b, _) = best?;
        lbstatus[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PickContext;
    use crate::scheduler::testing::{assert_proportional, balancer, count_picks, index};

    /// Holds every lease: the steady state of long connections.
    fn held<S: Scheduler>(lb: &crate::Balancer<S>, n: usize) -> (Vec<usize>, Vec<crate::Lease>) {
        let mut counts = vec![0; lb.members().len()];
        let leases: Vec<_> = (0..n)
            .map(|_| {
                let l = lb.pick(&PickContext::new()).unwrap();
                counts[index(&l)] += 1;
                l
            })
            .collect();
        (counts, leases)
    }

    #[test]
    fn least_conn_balances_held_connections_and_rotates_ties() {
        let lb = balancer(LeastConn::new(), &[1, 5, 1]);
        let (counts, _leases) = held(&lb, 300);
        assert_eq!(counts, [100, 100, 100], "weights are ignored");
        // With nothing held every member ties: the ties rotate.
        let lb = balancer(LeastConn::new(), &[1, 1, 1]);
        assert_eq!(count_picks(&lb, 300), [100, 100, 100]);
    }

    #[test]
    fn wlc_holds_connections_in_proportion_to_weight() {
        let weights = [1, 2, 3, 4];
        let lb = balancer(WeightedLeastConn::new(), &weights);
        let (counts, _leases) = held(&lb, 1000);
        assert_eq!(counts, [100, 200, 300, 400]);
    }

    #[test]
    fn sed_and_nq_hold_connections_by_weight() {
        let weights = [1, 3];
        let lb = balancer(ShortestExpectedDelay::new(), &weights);
        let (counts, _l) = held(&lb, 400);
        assert_proportional(&counts, &weights, 0.01);
        // sed sends the first two clients to the heavy member ((0+1)/3 < (0+1)/1, then
        // (1+1)/3 < 1/1); nq gives the idle light member its first client at once.
        let lb = balancer(ShortestExpectedDelay::new(), &weights);
        let (first, _l) = held(&lb, 2);
        assert_eq!(first, [0, 2]);
        let lb = balancer(NeverQueue::new(), &weights);
        let (first, _l) = held(&lb, 2);
        assert_eq!(first, [1, 1]);
        let (counts, _l2) = held(&lb, 398);
        assert_proportional(&counts, &weights, 0.02);
    }

    #[test]
    fn bybusyness_prefers_idle_then_byrequests() {
        let lb = balancer(ByBusyness::new(), &[3, 1]);
        // Nothing held: all tie on busyness, byrequests decides (3:1 exactly).
        assert_eq!(count_picks(&lb, 400), [300, 100]);
        // Held: busyness decides, each takes turns at equal busyness.
        let (counts, _l) = held(&lb, 100);
        assert_eq!(counts, [50, 50]);
    }
}
