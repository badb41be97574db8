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

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::{Candidates, Scheduler};
use crate::backend::{BackendState, LazyNow, Member};
use crate::context::PickContext;

/// What the connection-count schedulers keep per tier: a rotating start and a compact
/// table of each member's live state, weight and soft limit, so a scan follows one pointer
/// per member (to its live state) instead of two.
pub struct ConnTable {
    rotor: AtomicUsize,
    slots: Box<[Slot]>,
}

struct Slot {
    state: Arc<BackendState>,
    weight: u32,
    max_conns: Option<u32>,
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("members", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ConnTable {
    pub(crate) fn new(members: &[Arc<Member>]) -> Self {
        ConnTable {
            rotor: AtomicUsize::new(0),
            slots: members
                .iter()
                .map(|m| Slot {
                    state: m.state_arc().clone(),
                    weight: m.backend().weight(),
                    max_conns: m.backend().max_conns(),
                })
                .collect(),
        }
    }

    /// The next rotating start in `0..n` (`n > 0`).
    #[inline]
    pub(crate) fn rotate(&self, n: usize) -> usize {
        self.rotor.fetch_add(1, Relaxed) % n
    }

    /// Calls `f(index, state, weight)` for every eligible member, from `start` round to
    /// `start - 1`. Takes the compact table when eligibility is the plain usable test (the
    /// same test as [`Candidates::is_eligible`]), else asks the candidates.
    #[inline]
    pub(crate) fn for_each_eligible(
        &self,
        c: &Candidates<'_>,
        start: usize,
        mut f: impl FnMut(usize, &BackendState, u32),
    ) {
        self.visit_eligible(c, start, |i, s, w| {
            f(i, s, w);
            true
        });
    }

    /// As [`for_each_eligible`](Self::for_each_eligible), stopping when `f` returns false.
    #[inline]
    fn visit_eligible(
        &self,
        c: &Candidates<'_>,
        start: usize,
        mut f: impl FnMut(usize, &BackendState, u32) -> bool,
    ) {
        let n = c.len();
        if c.is_plain() && self.slots.len() == n {
            let mut now = LazyNow::default();
            let mut visit = |lo: usize, hi: usize| {
                for (k, s) in self.slots[lo..hi].iter().enumerate() {
                    if s.weight != 0
                        && s.state.usable_below(s.max_conns, &mut now)
                        && !f(lo + k, &s.state, s.weight)
                    {
                        return false;
                    }
                }
                true
            };
            if visit(start, n) {
                visit(0, start);
            }
        } else {
            for i in (start..n).chain(0..start) {
                if c.is_eligible(i) {
                    let m = c.member(i);
                    if !f(i, m.state(), m.backend().weight()) {
                        return;
                    }
                }
            }
        }
    }

    /// The first eligible member minimising `load(active, weight)` (a fraction `num / den`
    /// compared by cross-multiplication), scanning from a rotating start.
    ///
    /// On the compact table a member's load is compared before its eligibility is read: one
    /// that would not beat the best so far cannot be the answer whether it is usable or
    /// not. A load of zero cannot be beaten and the first minimum wins ties, so the scan
    /// stops at the first usable idle member.
    #[inline]
    fn scan_min(&self, c: &Candidates<'_>, load: impl Fn(u32, u32) -> (u64, u64)) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        let start = self.rotate(n);
        let mut best = usize::MAX;
        let (mut bn, mut bd) = (0u64, 0u64);
        // num ≤ 2^32 (active + 1) and den < 2^32 (a weight): the products fit in u64.
        if c.is_plain() && self.slots.len() == n {
            let mut now = LazyNow::default();
            let mut visit = |lo: usize, hi: usize| {
                for (k, s) in self.slots[lo..hi].iter().enumerate() {
                    if s.weight == 0 {
                        continue;
                    }
                    let (num, den) = load(s.state.active(), s.weight);
                    if (best == usize::MAX || num * bd < bn * den)
                        && s.state.usable_below(s.max_conns, &mut now)
                    {
                        best = lo + k;
                        bn = num;
                        bd = den;
                        if num == 0 {
                            return false;
                        }
                    }
                }
                true
            };
            if visit(start, n) {
                visit(0, start);
            }
        } else {
            self.visit_eligible(c, start, |i, state, weight| {
                let (num, den) = load(state.active(), weight);
                if best == usize::MAX || num * bd < bn * den {
                    best = i;
                    bn = num;
                    bd = den;
                }
                num != 0
            });
        }
        (best != usize::MAX).then_some(best)
    }
}

macro_rules! conn_scheduler {
    ($(#[$doc:meta])* $name:ident, |$a:ident, $w:ident| $load:expr) => {
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
            type State = ConnTable;

            fn prepare(&self, members: &[Arc<Member>]) -> ConnTable {
                ConnTable::new(members)
            }

            #[inline]
            fn pick(&self, t: &ConnTable, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
                t.scan_min(c, |$a: u32, $w: u32| $load)
            }
        }
    };
}

conn_scheduler!(
    /// Least connections (IPVS `lc`, HAProxy `leastconn`): the member with the fewest
    /// active leases; weights are ignored.
    LeastConn, |a, _w| (u64::from(a), 1)
);

conn_scheduler!(
    /// Weighted least connections (IPVS `wlc`, pen `-W`): the least active leases per unit
    /// of weight.
    WeightedLeastConn, |a, w| (u64::from(a), u64::from(w))
);

conn_scheduler!(
    /// Shortest expected delay (IPVS `sed`): the least `(active + 1) / weight`.
    ShortestExpectedDelay, |a, w| (u64::from(a) + 1, u64::from(w))
);

conn_scheduler!(
    /// Never queue (IPVS `nq`): an idle member if there is one (the first from the
    /// rotating start, whatever its weight), else as [`ShortestExpectedDelay`].
    NeverQueue, |a, w| match a {
        0 => (0, 1),
        a => (u64::from(a) + 1, u64::from(w)),
    }
);

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

/// The byrequests counters (`lbstatus`) of [`ByBusyness`], one per member, beside the
/// members' compact table.
#[derive(Debug)]
pub struct BusyState {
    table: ConnTable,
    lbstatus: Mutex<Vec<i64>>,
}

impl Scheduler for ByBusyness {
    type State = BusyState;

    fn prepare(&self, members: &[Arc<Member>]) -> BusyState {
        BusyState {
            table: ConnTable::new(members),
            lbstatus: Mutex::new(vec![0; members.len()]),
        }
    }

    fn pick(&self, state: &BusyState, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        // mod_lbmethod_bybusyness.c, find_best_bybusyness: every usable worker's lbstatus
        // grows by its lbfactor; the least busy wins, ties to the highest lbstatus; the
        // winner's lbstatus drops by the total factor.
        let mut lbstatus = state.lbstatus.lock().unwrap_or_else(|e| e.into_inner());
        if lbstatus.len() != c.len() {
            return None;
        }
        let mut total = 0i64;
        let mut best: Option<(usize, u32, i64)> = None;
        state.table.for_each_eligible(c, 0, |i, s, weight| {
            let status = &mut lbstatus[i];
            *status += i64::from(weight);
            total += i64::from(weight);
            let busy = s.active();
            let better = match best {
                None => true,
                Some((_, bbusy, bstatus)) => busy < bbusy || (busy == bbusy && *status > bstatus),
            };
            if better {
                best = Some((i, busy, *status));
            }
        });
        let (b, _, _) = best?;
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

    #[test]
    fn an_unusable_member_with_the_least_load_is_passed_over() {
        // Member 1 would win (idle, and first on many rotations) but is in maintenance;
        // member 2 is idle too and wins every time, member 0 never (it is busy).
        let lb = balancer(WeightedLeastConn::new(), &[1, 1, 1]);
        let ids: Vec<_> = lb.members().iter().map(|m| m.id()).collect();
        let _busy = lb
            .attempts(PickContext::new())
            .exclude([ids[1], ids[2]])
            .next()
            .unwrap();
        lb.set_admin(ids[1], crate::AdminState::Maintenance)
            .unwrap();
        for _ in 0..9 {
            assert_eq!(index(&lb.pick(&PickContext::new()).unwrap()), 2);
        }
        // No usable member idle: 0 and 2 hold one lease each, 1 (unusable) none. The
        // minima 0 and 2 share the picks by the rotating start (per cycle of three starts:
        // 0 from start 0, 2 from starts 1 and 2); 1 is never picked.
        let _on_two = lb.pick(&PickContext::new()).unwrap();
        assert_eq!(index(&_on_two), 2);
        let mut seen = [0; 3];
        for _ in 0..9 {
            seen[index(&lb.pick(&PickContext::new()).unwrap())] += 1;
        }
        assert_eq!(seen, [3, 0, 6]);
    }
}
