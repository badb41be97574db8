//! The members a scheduler may choose from, with the eligibility test of this pick.

use std::cell::Cell;
use std::sync::Arc;

use crate::backend::{BackendId, LazyNow, Member};

/// The members of one tier, as a scheduler sees them for one pick.
///
/// A scheduler returns an index into this list. It must only return an index for which
/// [`is_eligible`](Self::is_eligible) is true: eligibility folds in health, admin state,
/// weight 0 (quiescent), the soft connection limit, the error state and the backends this
/// request already tried.
#[derive(Debug)]
pub struct Candidates<'a> {
    members: &'a [Arc<Member>],
    tried: &'a [BackendId],
    ignore_errors: bool,
    now: Cell<u64>,
}

impl<'a> Candidates<'a> {
    /// Candidates with nothing tried, as when a request starts.
    pub fn new(members: &'a [Arc<Member>]) -> Self {
        Candidates::with_tried(members, &[])
    }

    /// Candidates excluding the backends already tried.
    pub fn with_tried(members: &'a [Arc<Member>], tried: &'a [BackendId]) -> Self {
        Candidates {
            members,
            tried,
            ignore_errors: false,
            now: Cell::new(0),
        }
    }

    pub(crate) fn ignoring_errors(mut self) -> Self {
        self.ignore_errors = true;
        self
    }

    /// How many members (eligible or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members at all.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member at `index`.
    pub fn member(&self, index: usize) -> &'a Member {
        &self.members[index]
    }

    /// All members.
    pub fn members(&self) -> &'a [Arc<Member>] {
        self.members
    }

    /// Whether the member at `index` may take a new client now.
    #[inline]
    pub fn is_eligible(&self, index: usize) -> bool {
        let Some(m) = self.members.get(index) else {
            return false;
        };
        let b = m.backend();
        if b.weight() == 0 {
            return false;
        }
        let usable = if self.ignore_errors {
            m.state().usable_ignoring_errors(b)
        } else {
            let mut now = LazyNow::from_cell(&self.now);
            let ok = m.state().usable_for_new(b, &mut now);
            now.store(&self.now);
            ok
        };
        usable && (self.tried.is_empty() || !self.tried.contains(&m.id()))
    }

    /// Indices of the eligible members, in order.
    pub fn eligible(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.is_eligible(i))
    }
}
