//! A backend as a balancer holds it: its id, its configuration and its live state.

use std::sync::Arc;

use super::{Backend, BackendId, BackendState};

/// A backend in a balancer: an immutable configuration beside live state.
///
/// Changing a backend's configuration makes a new `Member` that shares the same
/// [`BackendState`], so counters and health survive every change.
#[derive(Debug)]
pub struct Member {
    backend: Backend,
    state: Arc<BackendState>,
}

impl Member {
    pub(crate) fn new(backend: Backend, state: Arc<BackendState>) -> Self {
        Member { backend, state }
    }

    /// The backend's id.
    pub fn id(&self) -> BackendId {
        self.state.id()
    }

    /// The configuration.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The live state.
    pub fn state(&self) -> &BackendState {
        &self.state
    }

    pub(crate) fn state_arc(&self) -> &Arc<BackendState> {
        &self.state
    }
}
