//! State every backend of one balancer shares: the event channel and passive health.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::backend::{BackendId, BackendState, Failure};
use crate::event::{Event, EventKind};
use crate::health::PassiveConfig;

/// Shared by the balancer and every [`BackendState`] it made.
pub(crate) struct Shared {
    events: broadcast::Sender<Event>,
    passive: ArcSwap<PassiveConfig>,
    /// Live state of every current member, for "is this the last usable one?".
    states: ArcSwap<Vec<Arc<BackendState>>>,
    ewma_decay_ms: std::sync::atomic::AtomicU64,
    /// The scheduler reads the latency EWMA (see [`crate::Scheduler::uses_latency`]).
    latency_wanted: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("passive", &self.passive.load())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(passive: PassiveConfig, ewma_decay: Duration) -> Self {
        let (events, _) = broadcast::channel(1024);
        Shared {
            events,
            passive: ArcSwap::from_pointee(passive),
            states: ArcSwap::from_pointee(Vec::new()),
            ewma_decay_ms: (ewma_decay.as_millis() as u64).into(),
            latency_wanted: false.into(),
        }
    }

    pub(crate) fn emit(&self, backend: BackendId, kind: EventKind) {
        // No subscriber is not an error.
        let _ = self.events.send(Event { backend, kind });
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn set_states(&self, states: Vec<Arc<BackendState>>) {
        self.states.store(Arc::new(states));
    }

    pub(crate) fn set_passive(&self, passive: PassiveConfig) {
        self.passive.store(Arc::new(passive));
    }

    pub(crate) fn passive(&self) -> PassiveConfig {
        PassiveConfig::clone(&self.passive.load())
    }

    pub(crate) fn ewma_decay(&self) -> Duration {
        Duration::from_millis(
            self.ewma_decay_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub(crate) fn latency_wanted(&self) -> bool {
        self.latency_wanted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_latency_wanted(&self, wanted: bool) {
        self.latency_wanted
            .store(wanted, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn set_ewma_decay(&self, decay: Duration) {
        self.ewma_decay_ms.store(
            decay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether a failure streak ejects `state`, and until when.
    pub(crate) fn passive_verdict(
        &self,
        state: &BackendState,
        streak: u32,
        _failure: Failure,
    ) -> Option<u64> {
        let cfg = self.passive.load();
        if cfg.failures == 0 || streak < cfg.failures {
            return None;
        }
        let mut now = crate::backend::LazyNow::default();
        if state.in_error(&mut now) {
            return None;
        }
        if !cfg.eject_last {
            let others = self
                .states
                .load()
                .iter()
                .filter(|s| s.id() != state.id())
                .any(|s| s.ready_and_up() && !s.in_error(&mut now));
            if !others {
                tracing::warn!(backend = %state.id(), "not ejecting the last usable backend");
                return None;
            }
        }
        let backoff = cfg.backoff(state.ejections());
        Some(now.get().saturating_add(backoff.as_millis() as u64))
    }
}
