//! An immutable view of a balancer's members, swapped as a whole on every change.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::PipelineConfig;
use crate::backend::{BackendId, Member, Role, Tier as Place};
use crate::scheduler::Scheduler;

/// Members of one tier and what the scheduler precomputed for them.
pub(crate) struct Tier<T> {
    pub(crate) members: Vec<Arc<Member>>,
    pub(crate) state: T,
    /// Only the first eligible member is used (backups without `all_backups`).
    pub(crate) first_only: bool,
}

/// Everything a pick reads, consistent with itself.
pub(crate) struct Snapshot<S: Scheduler> {
    pub(crate) members: Vec<Arc<Member>>,
    pub(crate) tiers: Vec<Tier<S::State>>,
    pub(crate) emergency: Vec<Arc<Member>>,
    pub(crate) by_id: HashMap<BackendId, usize>,
    pub(crate) by_route: HashMap<String, usize>,
    pub(crate) scheduler: Arc<S>,
    pub(crate) config: PipelineConfig,
}

impl<S: Scheduler> fmt::Debug for Snapshot<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("members", &self.members.len())
            .field("tiers", &self.tiers.len())
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl<S: Scheduler> Snapshot<S> {
    /// Sorts members into tiers: per `lbset` ascending, the normal members then the hot
    /// standbys of that set; then the backups; the emergency members apart.
    pub(crate) fn build(
        members: Vec<Arc<Member>>,
        scheduler: Arc<S>,
        config: PipelineConfig,
    ) -> Self {
        let mut order: Vec<Place> = members
            .iter()
            .filter(|m| m.backend().role() != Role::Emergency)
            .map(|m| m.backend().tier())
            .collect();
        order.sort_unstable();
        order.dedup();
        let pick = |f: &dyn Fn(&Member) -> bool| -> Vec<Arc<Member>> {
            members.iter().filter(|m| f(m)).cloned().collect()
        };
        let mut tiers = Vec::new();
        for tier in order {
            let list = pick(&|m| m.backend().tier() == tier);
            let state = scheduler.prepare(&list);
            tiers.push(Tier {
                members: list,
                state,
                first_only: tier.is_backup() && !config.all_backups,
            });
        }
        let emergency = pick(&|m| m.backend().role() == Role::Emergency);
        let by_id = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id(), i))
            .collect();
        let by_route = members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.backend().route().map(|r| (r.to_owned(), i)))
            .collect();
        Snapshot {
            members,
            tiers,
            emergency,
            by_id,
            by_route,
            scheduler,
            config,
        }
    }

    pub(crate) fn get(&self, id: BackendId) -> Option<&Arc<Member>> {
        self.by_id.get(&id).map(|&i| &self.members[i])
    }
}
