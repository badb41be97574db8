//! Events: every change of a backend's membership, health, admin state or weight.
//!
//! [`Balancer::subscribe`](crate::Balancer::subscribe) returns a [`Subscription`] that first
//! yields the current state of every backend (so a subscriber never has to read state
//! separately), then live changes as they happen.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::backend::{Address, AdminState, BackendId, Health};

/// One change of one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The backend it concerns.
    pub backend: BackendId,
    /// What changed.
    pub kind: EventKind,
}

/// What changed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The backend joined the balancer (also delivered for each backend at subscription).
    Added(Address),
    /// The backend left the balancer.
    Removed,
    /// The admin state changed (at subscription: the current one).
    Admin(AdminState),
    /// The health-check state changed (at subscription: the current one).
    Health(Health),
    /// Passive health put the backend in error for this long.
    InError(Duration),
    /// The backend left the error state.
    Recovered,
    /// The weight changed (at subscription: the current one).
    Weight(u32),
    /// Another configuration field changed (address, limits, priority, lbset, route, role).
    Updated,
}

/// A stream of [`Event`]s: the state at subscription first, then changes.
#[derive(Debug)]
pub struct Subscription {
    initial: VecDeque<Event>,
    rx: broadcast::Receiver<Event>,
    missed: u64,
}

impl Subscription {
    pub(crate) fn new(initial: VecDeque<Event>, rx: broadcast::Receiver<Event>) -> Self {
        Subscription {
            initial,
            rx,
            missed: 0,
        }
    }

    /// The next event; `None` once the balancer is gone.
    ///
    /// A subscriber that falls more than 1024 events behind skips the oldest ones; the
    /// count is in [`missed`](Self::missed).
    pub async fn recv(&mut self) -> Option<Event> {
        if let Some(e) = self.initial.pop_front() {
            return Some(e);
        }
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        if let Some(e) = self.initial.pop_front() {
            return Some(e);
        }
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.missed += n,
                Err(_) => return None,
            }
        }
    }

    /// How many events were skipped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}
