//! The balancer: a backend set, a scheduler and the selection pipeline around them.
//!
//! A pick runs the pipeline:
//!
//! 1. **sticky route**: a route from the request (an HTTP cookie or URL parameter) selects
//!    the member with that route name, if it can take a returning client;
//! 2. **persistence**: the client table's entry for this client, with the same test (the
//!    hard connection limit applies to returning clients, pen's `hard`);
//! 3. **tiers**: each `lbset` in ascending order (its normal members, then its hot
//!    standbys), then the backups; the first tier with an eligible member is used;
//! 4. **scheduler**: chooses within the tier among eligible members (ready, up, not in
//!    error, weight above 0, below the soft limit, not already tried by this request);
//! 5. **failover**: [`Attempts`] picks again excluding what was tried, up to
//!    `max_attempts`; then the **emergency** backend; then [`Error::NoBackend`].
//!
//! Reads go through an immutable [`Snapshot`](snapshot) swapped with `arc-swap`, so picks
//! take no lock; changes (add, remove, re-weight, drain) build a new snapshot. Live
//! counters live in [`BackendState`] shared by every snapshot and every [`Lease`], so a
//! change never disturbs connections in flight.

mod config;
mod edit;
mod shared;
mod snapshot;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use config::PipelineConfig;
pub use edit::Edit;
pub(crate) use shared::Shared;
use snapshot::Snapshot;

use crate::backend::{AdminState, Backend, BackendId, BackendState, Health, LazyNow, Member};
use crate::clock;
use crate::context::PickContext;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind, Subscription};
use crate::health::PassiveConfig;
use crate::lease::Lease;
use crate::persistence::ClientKey;
use crate::scheduler::{AnyScheduler, Candidates, Scheduler};
use crate::stats::{BackendStats, Stats};

/// A load balancer: backends, a scheduler and the selection pipeline.
///
/// Cheap to clone (a handle); every clone sees the same members.
///
/// ```
/// use lb_core::{Backend, Balancer, PickContext};
///
/// let lb = Balancer::builder()
///     .backend(Backend::new("127.0.0.1:8001".parse::<std::net::SocketAddr>().unwrap()))
///     .backend(Backend::new("127.0.0.1:8002".parse::<std::net::SocketAddr>().unwrap()))
///     .build()
///     .unwrap();
/// let a = lb.pick(&PickContext::new()).unwrap();
/// let b = lb.pick(&PickContext::new()).unwrap();
/// assert_ne!(a.id(), b.id()); // round robin by default
/// ```
#[derive(Debug)]
pub struct Balancer<S: Scheduler = AnyScheduler> {
    inner: Arc<Inner<S>>,
}

impl<S: Scheduler> Clone for Balancer<S> {
    fn clone(&self) -> Self {
        Balancer {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<S: Scheduler> {
    snapshot: ArcSwap<Snapshot<S>>,
    write: Mutex<Write<S>>,
    shared: Arc<Shared>,
    /// What layers above keep per balancer ([`Balancer::attached`]).
    attached: Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
}

#[derive(Debug)]
struct Write<S> {
    members: Vec<Arc<Member>>,
    scheduler: Arc<S>,
    config: PipelineConfig,
    next_id: u32,
    initial_health: Health,
}

/// Builds a [`Balancer`].
#[derive(Debug)]
pub struct BalancerBuilder<S: Scheduler = AnyScheduler> {
    scheduler: S,
    backends: Vec<Backend>,
    config: PipelineConfig,
    passive: PassiveConfig,
    initial_health: Health,
    ewma_decay: Duration,
}

impl Balancer<AnyScheduler> {
    /// A builder with round robin, no persistence and pen's passive health.
    pub fn builder() -> BalancerBuilder<AnyScheduler> {
        BalancerBuilder::with_scheduler(AnyScheduler::default())
    }
}

impl<S: Scheduler> BalancerBuilder<S> {
    /// A builder with this scheduler.
    pub fn with_scheduler(scheduler: S) -> Self {
        BalancerBuilder {
            scheduler,
            backends: Vec::new(),
            config: PipelineConfig::default(),
            passive: PassiveConfig::default(),
            initial_health: Health::Up,
            ewma_decay: Duration::from_secs(10),
        }
    }

    /// Replaces the scheduler, keeping everything else.
    pub fn scheduler<T: Scheduler>(self, scheduler: T) -> BalancerBuilder<T> {
        BalancerBuilder {
            scheduler,
            backends: self.backends,
            config: self.config,
            passive: self.passive,
            initial_health: self.initial_health,
            ewma_decay: self.ewma_decay,
        }
    }

    /// Adds a backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backends.push(backend);
        self
    }

    /// Adds backends.
    pub fn backends(mut self, backends: impl IntoIterator<Item = Backend>) -> Self {
        self.backends.extend(backends);
        self
    }

    /// Sets the persistence table.
    pub fn persistence(mut self, p: Arc<dyn crate::persistence::Persistence>) -> Self {
        self.config.persistence = Some(p);
        self
    }

    /// Sets the pipeline settings as a whole.
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets `max_attempts` (0: every member once).
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// Sets stubborn persistence (pen `-s`, Apache `nofailover`).
    pub fn stubborn(mut self, on: bool) -> Self {
        self.config.stubborn = on;
        self
    }

    /// Skips persistence (pen `-r`).
    pub fn bypass_persistence(mut self, on: bool) -> Self {
        self.config.bypass_persistence = on;
        self
    }

    /// Uses all backups, not only the first.
    pub fn all_backups(mut self, on: bool) -> Self {
        self.config.all_backups = on;
        self
    }

    /// Sets passive health.
    pub fn passive(mut self, passive: PassiveConfig) -> Self {
        self.passive = passive;
        self
    }

    /// The health state backends start in (checks then move them).
    pub fn initial_health(mut self, health: Health) -> Self {
        self.initial_health = health;
        self
    }

    /// The decay time of the peak EWMA latency (10 s by default).
    pub fn ewma_decay(mut self, decay: Duration) -> Self {
        self.ewma_decay = decay;
        self
    }

    /// Builds the balancer, checking the backends.
    pub fn build(self) -> Result<Balancer<S>> {
        validate_config(&self.config)?;
        let shared = Arc::new(Shared::new(self.passive, self.ewma_decay));
        let mut write = Write {
            members: Vec::with_capacity(self.backends.len()),
            scheduler: Arc::new(self.scheduler),
            config: self.config,
            next_id: 0,
            initial_health: self.initial_health,
        };
        for b in self.backends {
            check_new(&write.members, &b)?;
            let id = BackendId(write.next_id);
            write.next_id += 1;
            let state = Arc::new(BackendState::new(id, shared.clone(), self.initial_health));
            write.members.push(Arc::new(Member::new(b, state)));
        }
        let snapshot = Snapshot::build(
            write.members.clone(),
            write.scheduler.clone(),
            write.config.clone(),
        );
        shared.set_states(ejection_peers(&write.members));
        shared.set_latency_wanted(write.scheduler.uses_latency());
        Ok(Balancer {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(snapshot),
                write: Mutex::new(write),
                shared,
                attached: Mutex::default(),
            }),
        })
    }
}

fn validate_config(c: &PipelineConfig) -> Result<()> {
    if let Some(t) = c.panic_threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(Error::InvalidConfig {
            name: "panic_threshold",
            value: t.to_string(),
            reason: "must be between 0.0 and 1.0",
        });
    }
    Ok(())
}

fn check_new(members: &[Arc<Member>], b: &Backend) -> Result<()> {
    if members.iter().any(|m| m.backend().address() == b.address()) {
        return Err(Error::DuplicateAddress(b.address().to_string()));
    }
    if let (Some(soft), Some(hard)) = (b.max_conns(), b.hard_conns())
        && hard < soft
    {
        return Err(Error::InvalidConfig {
            name: "hard_conns",
            value: hard.to_string(),
            reason: "the hard limit is below the soft limit (max_conns)",
        });
    }
    Ok(())
}

impl<S: Scheduler> Balancer<S> {
    /// Picks a backend for one connection or request; see the module docs for the
    /// pipeline. For failover over several attempts use [`attempts`](Self::attempts).
    pub fn pick(&self, ctx: &PickContext<'_>) -> Result<Lease> {
        let snap = self.inner.snapshot.load();
        self.select(&snap, ctx, &[], true)
    }

    /// Failover iteration for one connection or request: each [`Attempts::next`] picks a
    /// backend not tried yet.
    pub fn attempts<'a>(&'a self, ctx: PickContext<'a>) -> Attempts<'a, S> {
        Attempts {
            balancer: self,
            ctx,
            tried: Vec::new(),
            last: None,
            count: 0,
            emergency_done: false,
        }
    }

    fn select(
        &self,
        snap: &Snapshot<S>,
        ctx: &PickContext<'_>,
        tried: &[BackendId],
        allow_emergency: bool,
    ) -> Result<Lease> {
        let cfg = &snap.config;
        let mut now = LazyNow::default();
        let not_tried = |m: &Member| !tried.contains(&m.id());

        // 1. Sticky route.
        if let Some(route) = ctx.route()
            && let Some(&i) = snap.by_route.get(route)
        {
            let m = &snap.members[i];
            if not_tried(m) && m.state().usable_for_sticky(m.backend(), &mut now) {
                return Ok(Lease::new(m.clone(), true));
            }
            if cfg.stubborn {
                return Err(Error::StickyUnavailable(m.id()));
            }
        }

        // 2. Persistence.
        let key = persistence_key(snap, ctx);
        if let (Some(p), Some(key)) = (&cfg.persistence, &key)
            && let Some(id) = p.lookup(key.as_bytes())
        {
            match snap.get(id) {
                Some(m) if not_tried(m) && m.state().usable_for_sticky(m.backend(), &mut now) => {
                    return Ok(Lease::new(m.clone(), true));
                }
                Some(m) if cfg.stubborn && not_tried(m) => {
                    return Err(Error::StickyUnavailable(id));
                }
                _ => {}
            }
        }

        // 3 and 4. Tiers and the scheduler; then forced recovery.
        let found = self.schedule(snap, ctx, tried, false).or_else(|| {
            cfg.force_recovery
                .then(|| self.schedule(snap, ctx, tried, true))
                .flatten()
        });
        if let Some(m) = found {
            if let (Some(p), Some(key)) = (&cfg.persistence, &key) {
                p.record(key.as_bytes(), m.id());
            }
            return Ok(Lease::new(m, false));
        }

        // 5. Emergency.
        if allow_emergency
            && let Some(m) = snap
                .emergency
                .iter()
                .find(|m| not_tried(m) && m.state().usable_for_new(m.backend(), &mut now))
        {
            return Ok(Lease::new(m.clone(), false));
        }
        Err(Error::NoBackend {
            tried: tried.len(),
            members: snap.members.len(),
        })
    }

    fn schedule(
        &self,
        snap: &Snapshot<S>,
        ctx: &PickContext<'_>,
        tried: &[BackendId],
        ignore_errors: bool,
    ) -> Option<Arc<Member>> {
        for tier in &snap.tiers {
            let mut c = Candidates::with_tried(&tier.members, tried);
            if ignore_errors {
                c = c.ignoring_errors();
            } else if let Some(threshold) = snap.config.panic_threshold {
                // The share of the tier that is usable, as its members' states say: the
                // members this request tried are usable still, only not again for it.
                let usable = Candidates::new(&tier.members).eligible().count();
                if (usable as f32) < threshold * tier.members.len() as f32 {
                    c = Candidates::with_tried(&tier.members, tried).ignoring_errors();
                }
            }
            let i = if tier.first_only {
                c.eligible().next()
            } else {
                snap.scheduler.pick(&tier.state, &c, ctx)
            };
            // (No check that `i` is still eligible: an admin change or a health check may
            // land between the scheduler's reading and ours, and the pick stands.)
            if let Some(i) = i {
                return Some(tier.members[i].clone());
            }
        }
        None
    }

    // ----- Runtime changes -----

    fn lock(&self) -> MutexGuard<'_, Write<S>> {
        // A panic while holding the lock cannot leave `Write` half-changed: every change
        // builds its new value first and assigns it last.
        self.inner.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, w: &Write<S>) {
        let snap = Snapshot::build(w.members.clone(), w.scheduler.clone(), w.config.clone());
        self.inner.shared.set_states(ejection_peers(&w.members));
        self.inner
            .shared
            .set_latency_wanted(w.scheduler.uses_latency());
        self.inner.snapshot.store(Arc::new(snap));
    }

    /// Adds a backend; it takes new traffic at once.
    pub fn add(&self, backend: Backend) -> Result<BackendId> {
        let mut e = self.edit();
        let id = e.add(backend)?;
        e.commit();
        Ok(id)
    }

    /// Removes a backend. Its leases in flight finish and release normally.
    pub fn remove(&self, id: BackendId) -> Result<Backend> {
        let mut e = self.edit();
        let backend = e.remove(id)?;
        e.commit();
        Ok(backend)
    }

    /// Changes any part of a backend's configuration; the change applies to new picks.
    pub fn update(&self, id: BackendId, change: impl FnOnce(&mut Backend)) -> Result<()> {
        let mut e = self.edit();
        e.update(id, change)?;
        e.commit();
        Ok(())
    }

    /// Changes a backend's weight (0: quiescent, sticky clients only).
    pub fn set_weight(&self, id: BackendId, weight: u32) -> Result<()> {
        self.update(id, |b| b.set_weight(weight))
    }

    /// Changes a backend's admin state. Like every change of configuration, it waits for
    /// an open [`Edit`].
    pub fn set_admin(&self, id: BackendId, admin: AdminState) -> Result<()> {
        let mut e = self.edit();
        e.set_admin(id, admin)?;
        e.commit();
        Ok(())
    }

    /// Sets a backend's health (what active checks call).
    pub fn set_health(&self, id: BackendId, health: Health) -> Result<()> {
        self.state(id)?.set_health(health);
        Ok(())
    }

    /// Puts a backend in error for `duration` (pen's blacklist, Apache's `retry`).
    pub fn set_error_for(&self, id: BackendId, duration: Duration) -> Result<()> {
        self.state(id)?
            .set_error_until(clock::deadline_ms(duration));
        Ok(())
    }

    /// Takes a backend out of the error state.
    pub fn clear_error(&self, id: BackendId) -> Result<()> {
        self.state(id)?.clear_error();
        Ok(())
    }

    /// Sets Apache's `I` flag: passive health never ejects the backend.
    pub fn set_ignore_errors(&self, id: BackendId, ignore: bool) -> Result<()> {
        let mut e = self.edit();
        e.set_ignore_errors(id, ignore)?;
        e.commit();
        Ok(())
    }

    /// A value of type `T` kept with this balancer, made by `init` the first time it is asked
    /// for: every clone of the balancer, so every thread serving it, gets the same one. For
    /// what the layers above keep per balancer rather than per thread, such as lb-http's
    /// per-member concurrency limits.
    pub fn attached<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let mut list = self
            .inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(found) = list.iter().find_map(|v| v.clone().downcast::<T>().ok()) {
            return found;
        }
        let made = Arc::new(init());
        list.push(made.clone());
        made
    }

    /// Replaces the scheduler; new picks use it at once.
    pub fn set_scheduler(&self, scheduler: S) {
        let mut e = self.edit();
        e.set_scheduler(scheduler);
        e.commit();
    }

    /// Changes the pipeline settings.
    pub fn update_config(&self, change: impl FnOnce(&mut PipelineConfig)) -> Result<()> {
        let mut e = self.edit();
        e.update_config(change)?;
        e.commit();
        Ok(())
    }

    /// Changes passive health settings.
    pub fn set_passive(&self, passive: PassiveConfig) {
        self.inner.shared.set_passive(passive);
    }

    /// Changes the decay time of the peak EWMA latency.
    pub fn set_ewma_decay(&self, decay: Duration) {
        self.inner.shared.set_ewma_decay(decay);
    }

    // ----- Reading -----

    fn state(&self, id: BackendId) -> Result<Arc<BackendState>> {
        let snap = self.inner.snapshot.load();
        snap.get(id)
            .map(|m| m.state_arc().clone())
            .ok_or(Error::UnknownBackend(id))
    }

    /// The current members, in the order they were added.
    pub fn members(&self) -> Vec<Arc<Member>> {
        self.inner.snapshot.load().members.clone()
    }

    /// One member.
    pub fn get(&self, id: BackendId) -> Option<Arc<Member>> {
        self.inner.snapshot.load().get(id).cloned()
    }

    /// The first member at this address.
    pub fn find(&self, address: &crate::backend::Address) -> Option<Arc<Member>> {
        self.inner
            .snapshot
            .load()
            .members
            .iter()
            .find(|m| m.backend().address() == address)
            .cloned()
    }

    /// The current pipeline settings.
    pub fn config(&self) -> PipelineConfig {
        self.inner.snapshot.load().config.clone()
    }

    /// The current scheduler.
    pub fn scheduler(&self) -> Arc<S> {
        self.inner.snapshot.load().scheduler.clone()
    }

    /// The current passive health settings.
    pub fn passive(&self) -> PassiveConfig {
        self.inner.shared.passive()
    }

    /// Counters and states of every member.
    pub fn stats(&self) -> Stats {
        let snap = self.inner.snapshot.load();
        Stats::new(snap.members.iter().map(|m| BackendStats::of(m)).collect())
    }

    /// Events: first the current state of every member, then every change.
    pub fn subscribe(&self) -> Subscription {
        let rx = self.inner.shared.subscribe();
        let snap = self.inner.snapshot.load();
        let mut initial = VecDeque::new();
        for m in &snap.members {
            let id = m.id();
            let s = m.state();
            let mut ev = |kind| initial.push_back(Event { backend: id, kind });
            ev(EventKind::Added(m.backend().address().clone()));
            ev(EventKind::Weight(m.backend().weight()));
            ev(EventKind::Admin(s.admin()));
            ev(EventKind::Health(s.health()));
            if let Some(left) = s.in_error_for() {
                ev(EventKind::InError(left));
            }
        }
        Subscription::new(initial, rx)
    }
}

/// The members that count as "another usable backend" when passive health decides whether
/// ejecting one would leave none: the emergency backend is a last resort, not a peer.
fn ejection_peers(members: &[Arc<Member>]) -> Vec<Arc<BackendState>> {
    members
        .iter()
        .filter(|m| m.backend().role() != crate::backend::Role::Emergency)
        .map(|m| m.state_arc().clone())
        .collect()
}

fn position(members: &[Arc<Member>], id: BackendId) -> Result<usize> {
    members
        .iter()
        .position(|m| m.id() == id)
        .ok_or(Error::UnknownBackend(id))
}

enum Key<'a> {
    Bytes(&'a [u8]),
    Client(ClientKey),
}

impl Key<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Bytes(b) => b,
            Key::Client(k) => k.as_bytes(),
        }
    }
}

/// Failover iteration over one connection or request; see [`Balancer::attempts`].
///
/// ```
/// use lb_core::{Backend, Balancer, Failure, PickContext};
/// # let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
/// let lb = Balancer::builder()
///     .backend(Backend::new(addr("127.0.0.1:8001")))
///     .backend(Backend::new(addr("127.0.0.1:8002")))
///     .build()
///     .unwrap();
/// let mut attempts = lb.attempts(PickContext::new());
/// let first = attempts.next().unwrap();
/// first.failure(Failure::Connect); // say the connect was refused
/// let second = attempts.next().unwrap();
/// assert_ne!(first.id(), second.id());
/// assert!(attempts.next().is_err()); // both tried, no emergency backend
/// ```
#[derive(Debug)]
pub struct Attempts<'a, S: Scheduler = AnyScheduler> {
    balancer: &'a Balancer<S>,
    ctx: PickContext<'a>,
    tried: Vec<BackendId>,
    last: Option<BackendId>,
    count: usize,
    emergency_done: bool,
}

impl<S: Scheduler> Attempts<'_, S> {
    /// The next backend to try; [`Error::NoBackend`] when none is left.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Lease> {
        self.settle_last();
        let snap = self.balancer.inner.snapshot.load();
        let limit = match snap.config.max_attempts {
            0 => snap.members.len(),
            n => n,
        };
        let lease = if self.count < limit {
            self.balancer.select(&snap, &self.ctx, &self.tried, false)
        } else {
            Err(Error::NoBackend {
                tried: self.tried.len(),
                members: snap.members.len(),
            })
        };
        let lease = match lease {
            Err(Error::NoBackend { .. }) if !self.emergency_done => {
                self.emergency_done = true;
                let mut now = LazyNow::default();
                match snap.emergency.iter().find(|m| {
                    !self.tried.contains(&m.id()) && m.state().usable_for_new(m.backend(), &mut now)
                }) {
                    Some(m) => Ok(Lease::new(m.clone(), false)),
                    None => Err(Error::NoBackend {
                        tried: self.tried.len(),
                        members: snap.members.len(),
                    }),
                }
            }
            other => other,
        }?;
        self.count += 1;
        self.last = Some(lease.id());
        Ok(lease)
    }

    /// How many backends were handed out so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Gives back the lease [`next`](Self::next) just handed out, unused: its backend was at
    /// a limit the caller keeps itself (lb-http's per-member `max`). The backend is not
    /// picked again by this iteration, but the lease does not count as an attempt (against
    /// `max_attempts`), and the client is not recorded on it for persistence; the next call
    /// goes on to the other backends. It stays counted as a pick of the backend (its
    /// total), which only ever grows. [`retake`](Self::retake) takes the backend after all.
    pub fn pass_over(&mut self, lease: Lease) {
        self.give_back(&lease);
    }

    /// Gives back the lease [`next`](Self::next) just handed out, not to be used now but
    /// still to be offered later: as [`pass_over`](Self::pass_over), except that the
    /// backend is not counted as tried, so a later call may hand it out again (the caller
    /// waits for backends it passed over first, and turns to this one if they fail).
    pub fn put_back(&mut self, lease: Lease) {
        self.give_back(&lease);
        if self.last == Some(lease.id()) {
            self.last = None;
            if lease.backend().role() == crate::Role::Emergency {
                self.emergency_done = false;
            }
        }
    }

    /// The backend handed out last counts as tried from now on.
    fn settle_last(&mut self) {
        if let Some(id) = self.last.take()
            && !self.tried.contains(&id)
        {
            self.tried.push(id);
        }
    }

    fn give_back(&mut self, lease: &Lease) {
        if self.last != Some(lease.id()) {
            // Not the lease just handed out: nothing of this iteration to undo.
            return;
        }
        self.count = self.count.saturating_sub(1);
        if !lease.is_sticky() {
            // The pick recorded the client on this backend: it was not served there.
            let snap = self.balancer.inner.snapshot.load();
            if let (Some(p), Some(key)) =
                (&snap.config.persistence, persistence_key(&snap, &self.ctx))
            {
                p.forget(key.as_bytes());
            }
        }
    }

    /// A lease on `member`, a backend this iteration handed out and the caller gave back
    /// with [`pass_over`](Self::pass_over), once it can take the request after all (the
    /// caller's limit freed a place): counted as an attempt, as when first handed out, and
    /// the client recorded on it for persistence. `None` when the backend can no longer
    /// take new requests (disabled, down, in error or removed meanwhile).
    pub fn retake(&mut self, member: &Arc<Member>) -> Option<Lease> {
        let snap = self.balancer.inner.snapshot.load();
        let current = snap.get(member.id())?;
        if !current
            .state()
            .usable_for_new(current.backend(), &mut LazyNow::default())
        {
            return None;
        }
        self.settle_last();
        self.count += 1;
        self.last = Some(current.id());
        if let (Some(p), Some(key)) = (&snap.config.persistence, persistence_key(&snap, &self.ctx))
        {
            p.record(key.as_bytes(), current.id());
        }
        Some(Lease::new(current.clone(), false))
    }

    /// Skips `ids` as if they had been tried already: an outer retry (a new request after
    /// the first one failed upstream) passes the backends it used, so they are neither
    /// picked nor leased again. Unlike drawing leases and dropping them, nothing is counted
    /// on the skipped backends, and they do not use up `max_attempts`.
    #[must_use]
    pub fn exclude(mut self, ids: impl IntoIterator<Item = BackendId>) -> Self {
        for id in ids {
            if !self.tried.contains(&id) {
                self.tried.push(id);
            }
        }
        self
    }
}

/// The key `ctx` is kept under in the persistence table, if the balancer has one and uses
/// it.
fn persistence_key<'a, S: Scheduler>(snap: &Snapshot<S>, ctx: &PickContext<'a>) -> Option<Key<'a>> {
    let cfg = &snap.config;
    match (&cfg.persistence, cfg.bypass_persistence) {
        (Some(p), false) => match (ctx.key(), ctx.client()) {
            (Some(k), _) => Some(Key::Bytes(k)),
            (None, Some(c)) => Some(Key::Client(p.client_key(c.ip()))),
            (None, None) => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests;
