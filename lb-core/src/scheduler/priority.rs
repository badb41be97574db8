//! The failover family: priority, overflow and first.
//!
//! - [`Priority`] (pen's `prio`, IPVS `fo`'s idea of a preferred server): the members with
//!   the lowest priority value that have an eligible member take all new clients, shared
//!   among them by smooth weighted round robin; the next priority takes over only when none
//!   of them is eligible.
//! - [`Overflow`] (IPVS `ovf`, ip_vs_ovf.c): the eligible member with the highest weight
//!   (the first of equals, in member order) while its active connections are below its
//!   weight; then the next one. As in IPVS, when every eligible member is at or above its
//!   weight there is no backend (the weight is the member's capacity).
//! - [`First`] (HAProxy `balance first`): the first eligible member in member order; with
//!   `max_conns` set (HAProxy `maxconn`) a member is not eligible at its limit, so clients
//!   fill the first member, then the next, which lets the others be switched off.

use std::sync::Arc;

use super::weighted_round_robin::SmoothSeq;
use super::{Candidates, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;

/// Priority groups with weighted round robin inside each (pen `prio`, IPVS `fo`).
#[derive(Debug, Default)]
pub struct Priority {
    _private: (),
}

impl Priority {
    /// The scheduler.
    pub fn new() -> Self {
        Priority::default()
    }
}

/// The groups of [`Priority`], by ascending priority.
#[derive(Debug)]
pub struct PriorityGroups(Box<[SmoothSeq]>);

impl Scheduler for Priority {
    type State = PriorityGroups;

    fn prepare(&self, members: &[Arc<Member>]) -> PriorityGroups {
        let mut prios: Vec<u32> = members.iter().map(|m| m.backend().priority()).collect();
        prios.sort_unstable();
        prios.dedup();
        PriorityGroups(
            prios
                .into_iter()
                .map(|p| {
                    SmoothSeq::new(
                        members
                            .iter()
                            .enumerate()
                            .filter(|(_, m)| m.backend().priority() == p)
                            .map(|(i, m)| (i, m.backend().weight())),
                    )
                })
                .collect(),
        )
    }

    fn pick(
        &self,
        groups: &PriorityGroups,
        c: &Candidates<'_>,
        _ctx: &PickContext<'_>,
    ) -> Option<usize> {
        groups.0.iter().find_map(|g| g.pick(c))
    }
}

/// IPVS `ovf`: the heaviest member until its active connections reach its weight.
#[derive(Debug, Default)]
pub struct Overflow {
    _private: (),
}

impl Overflow {
    /// The scheduler.
    pub fn new() -> Self {
        Overflow::default()
    }
}

/// Member indices by descending weight, for [`Overflow`].
#[derive(Debug)]
pub struct ByWeight(Box<[u32]>);

impl Scheduler for Overflow {
    type State = ByWeight;

    fn prepare(&self, members: &[Arc<Member>]) -> ByWeight {
        let mut order: Vec<u32> = (0..members.len() as u32).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(members[i as usize].backend().weight()));
        ByWeight(order.into())
    }

    fn pick(&self, order: &ByWeight, c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        order.0.iter().map(|&i| i as usize).find(|&i| {
            c.is_eligible(i) && c.member(i).state().active() < c.member(i).backend().weight()
        })
    }
}

/// HAProxy `first`: the first eligible member, in member order.
#[derive(Debug, Default)]
pub struct First {
    _private: (),
}

impl First {
    /// The scheduler.
    pub fn new() -> Self {
        First::default()
    }
}

impl Scheduler for First {
    type State = ();

    fn prepare(&self, _members: &[Arc<Member>]) {}

    fn pick(&self, _state: &(), c: &Candidates<'_>, _ctx: &PickContext<'_>) -> Option<usize> {
        c.eligible().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{addr, count_picks, index};
    use crate::{Backend, Balancer, Health, PickContext};

    #[test]
    fn lowest_priority_group_takes_all_by_weight() {
        let lb = Balancer::builder()
            .scheduler(Priority::new())
            .backend(Backend::new(addr(0)).with_priority(2))
            .backend(Backend::new(addr(1)).with_priority(1).with_weight(3))
            .backend(Backend::new(addr(2)).with_priority(1))
            .backend(Backend::new(addr(3)).with_priority(5))
            .build()
            .unwrap();
        assert_eq!(count_picks(&lb, 400), [0, 300, 100, 0]);
        let ids: Vec<_> = lb.members().iter().map(|m| m.id()).collect();
        lb.set_health(ids[1], Health::Down).unwrap();
        assert_eq!(count_picks(&lb, 100), [0, 0, 100, 0]);
        lb.set_health(ids[2], Health::Down).unwrap();
        assert_eq!(count_picks(&lb, 100), [100, 0, 0, 0]);
        lb.set_health(ids[0], Health::Down).unwrap();
        assert_eq!(count_picks(&lb, 100), [0, 0, 0, 100]);
        lb.set_health(ids[1], Health::Up).unwrap();
        assert_eq!(count_picks(&lb, 10), [0, 10, 0, 0]);
    }

    #[test]
    fn overflow_fills_the_heaviest_then_spills() {
        let lb = crate::scheduler::testing::balancer(Overflow::new(), &[2, 5, 3]);
        let leases: Vec<_> = (0..10)
            .map(|_| lb.pick(&PickContext::new()).unwrap())
            .collect();
        let order: Vec<usize> = leases.iter().map(index).collect();
        assert_eq!(order, [1, 1, 1, 1, 1, 2, 2, 2, 0, 0]);
        assert!(lb.pick(&PickContext::new()).is_err(), "all at capacity");
        drop(leases);
        assert_eq!(count_picks(&lb, 10), [0, 10, 0]);
    }

    #[test]
    fn first_fills_in_order_up_to_max_conns() {
        let lb = Balancer::builder()
            .scheduler(First::new())
            .backends((0..3).map(|i| Backend::new(addr(i)).with_max_conns(2)))
            .build()
            .unwrap();
        let leases: Vec<_> = (0..6)
            .map(|_| lb.pick(&PickContext::new()).unwrap())
            .collect();
        let order: Vec<usize> = leases.iter().map(index).collect();
        assert_eq!(order, [0, 0, 1, 1, 2, 2]);
        drop(leases);
        assert_eq!(count_picks(&lb, 10), [10, 0, 0]);
    }
}
