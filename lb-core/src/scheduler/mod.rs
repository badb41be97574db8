//! Schedulers: how a balancer chooses among the eligible members of a tier.
//!
//! A [`Scheduler`] is synchronous and takes `&self`: picks run concurrently on every thread
//! without locks. Whatever it can precompute from the member set (a hash ring, a Maglev
//! table, a weighted sequence) it builds in [`Scheduler::prepare`], which the balancer calls
//! whenever members are added, removed or re-configured; the result lives in the balancer's
//! snapshot beside the members it was built from, so a pick never sees a table from another
//! generation.
//!
//! Selection is a pipeline and the scheduler is one stage of it: persistence and sticky
//! routes come first, then the usable filter (folded into [`Candidates::is_eligible`]), then
//! tiers (`lbset`, hot standby, backup), then the scheduler, then failover and the emergency
//! backend. See [`Balancer`](crate::Balancer).
//!
//! [`AnyScheduler`] holds any built-in scheduler, chosen by name at run time.

mod any;
mod candidates;
mod round_robin;

use std::fmt;
use std::sync::Arc;

pub use any::{AnyScheduler, AnyState, KNOWN};
pub use candidates::Candidates;
pub use round_robin::RoundRobin;

use crate::backend::Member;
use crate::context::PickContext;

/// Chooses one member among candidates.
pub trait Scheduler: Send + Sync + fmt::Debug + 'static {
    /// What the scheduler precomputes from a member set.
    type State: Send + Sync + fmt::Debug + 'static;

    /// Precomputes state for a member set (one tier of a balancer).
    fn prepare(&self, members: &[Arc<Member>]) -> Self::State;

    /// Picks an eligible candidate's index, or `None` when none is eligible.
    fn pick(
        &self,
        state: &Self::State,
        candidates: &Candidates<'_>,
        ctx: &PickContext<'_>,
    ) -> Option<usize>;
}
