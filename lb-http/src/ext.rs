//! Request and response extensions the layers use to talk to each other.

use std::sync::{Arc, Mutex};

use lb_core::BackendId;

/// The sticky route of a request, found by [`Sticky`](crate::sticky::Sticky) in a cookie or
/// URL and used by [`Balance`](crate::balance::Balance) to find the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route(pub String);

/// Members already tried for this request (by an outer [`Retry`](crate::retry::Retry));
/// [`Balance`](crate::balance::Balance) does not pick them again and adds the one it picks.
#[derive(Debug, Clone, Default)]
pub struct Tried(pub Arc<Mutex<Vec<BackendId>>>);

impl Tried {
    /// True when `id` was tried.
    pub fn contains(&self, id: BackendId) -> bool {
        self.0.lock().map(|v| v.contains(&id)).unwrap_or(false)
    }

    /// Every member tried so far.
    pub fn ids(&self) -> Vec<BackendId> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Records `id` as tried.
    pub fn push(&self, id: BackendId) {
        if let Ok(mut v) = self.0.lock() {
            v.push(id);
        }
    }
}

/// Which member served a response; put in the response's extensions by
/// [`Balance`](crate::balance::Balance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The member.
    pub id: BackendId,
    /// Its route name, if it has one.
    pub route: Option<String>,
    /// True when it was chosen because of the request's route (or persistence).
    pub sticky: bool,
}

/// Put by [`Proxy`](crate::proxy::Proxy) on a `101` response whose connections it joined:
/// what is kept in it lives as long as the tunnel (the member's lease and `max` slot, kept
/// by [`Balance`](crate::balance::Balance)), so an open WebSocket counts as busy.
#[derive(Clone, Default)]
pub(crate) struct TunnelHold(Arc<Mutex<Vec<Box<dyn std::any::Any + Send>>>>);

impl TunnelHold {
    /// Keeps `value` until the tunnel closes (and this response is gone).
    pub(crate) fn keep<T: Send + 'static>(&self, value: T) {
        if let Ok(mut kept) = self.0.lock() {
            kept.push(Box::new(value));
        }
    }
}

impl std::fmt::Debug for TunnelHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelHold")
    }
}
