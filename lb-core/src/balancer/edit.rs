//! Several changes to a balancer that land together or not at all: [`Edit`].

use std::sync::{Arc, MutexGuard};

use super::{Balancer, PipelineConfig, Write, check_new, position, validate_config};
use crate::backend::{Address, AdminState, Backend, BackendId, BackendState, Member};
use crate::error::Result;
use crate::event::EventKind;
use crate::scheduler::Scheduler;

/// Changes to a [`Balancer`] made on the side and published together by
/// [`commit`](Edit::commit); dropped without a commit, none of them happens.
///
/// An edit holds the balancer's write lock from [`Balancer::edit`] until it is committed or
/// dropped: other changes of configuration (from any clone of the balancer, such as a
/// manager page's) wait meanwhile, so what the edit read of the configuration is still true
/// when it lands. Picks are not held up: they read the published members, which change only
/// at the commit.
///
/// Members' configuration, the scheduler and the pipeline settings change in one step at
/// the commit. Admin states and "ignore errors" live with each member's counters: a member
/// the edit added has them from the start, and the others get them just after the
/// commit, still under the lock. The events of every change follow, in the order the edit
/// made them. Until the commit, an existing member's state read through the edit is as it
/// was before the edit.
///
/// What waits for an open edit is every change of configuration: the methods of
/// [`Balancer`] that an edit also has, from any clone of the balancer. Health and error
/// states ([`Balancer::set_health`], [`Balancer::set_error_for`], passive health) do not
/// wait: they may change while an edit is open. A thread that holds an edit and calls one
/// of the waiting methods of the same balancer waits for itself for ever (or panics, as a
/// std `Mutex` may): make the change through the edit.
///
/// ```
/// use lb_core::{AdminState, Backend, Balancer};
///
/// let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
/// let lb = Balancer::builder().backend(Backend::new(addr("127.0.0.1:8001"))).build().unwrap();
/// let old = lb.members()[0].id();
///
/// // A refused step leaves the balancer as it was.
/// let mut edit = lb.edit();
/// edit.remove(old).unwrap();
/// edit.add(Backend::new(addr("127.0.0.1:8002"))).unwrap();
/// assert!(edit.add(Backend::new(addr("127.0.0.1:8002"))).is_err()); // already a member
/// drop(edit);
/// assert_eq!(lb.members().len(), 1);
/// assert_eq!(lb.members()[0].id(), old);
///
/// // A committed edit lands whole.
/// let mut edit = lb.edit();
/// let new = edit.add(Backend::new(addr("127.0.0.1:8002"))).unwrap();
/// edit.set_admin(new, AdminState::Drain).unwrap();
/// edit.remove(old).unwrap();
/// edit.commit();
/// assert_eq!(lb.members().len(), 1);
/// assert_eq!(lb.members()[0].state().admin(), AdminState::Drain);
/// ```
#[derive(Debug)]
#[must_use = "an edit changes nothing until it is committed"]
pub struct Edit<'a, S: Scheduler> {
    balancer: &'a Balancer<S>,
    lock: MutexGuard<'a, Write<S>>,
    members: Vec<Arc<Member>>,
    scheduler: Arc<S>,
    config: PipelineConfig,
    next_id: u32,
    /// Whether anything published (members, scheduler, settings) changed.
    changed: bool,
    /// What happens after the members are published, in the order the edit made it.
    after: Vec<After>,
}

#[derive(Debug)]
enum After {
    Emit(BackendId, EventKind),
    Admin(Arc<BackendState>, AdminState),
    IgnoreErrors(Arc<BackendState>, bool),
}

impl<S: Scheduler> Balancer<S> {
    /// Starts an [`Edit`]: changes that land together at its commit, or not at all. Other
    /// changes of this balancer's configuration wait until the edit is committed or
    /// dropped (see [`Edit`] for which).
    pub fn edit(&self) -> Edit<'_, S> {
        let lock = self.lock();
        Edit {
            balancer: self,
            members: lock.members.clone(),
            scheduler: lock.scheduler.clone(),
            config: lock.config.clone(),
            next_id: lock.next_id,
            lock,
            changed: false,
            after: Vec::new(),
        }
    }
}

impl<S: Scheduler> Edit<'_, S> {
    /// The members as the edit has them so far.
    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    /// One member as the edit has it.
    pub fn get(&self, id: BackendId) -> Option<&Arc<Member>> {
        self.members.iter().find(|m| m.id() == id)
    }

    /// The first member at this address, as the edit has them.
    pub fn find(&self, address: &Address) -> Option<&Arc<Member>> {
        self.members
            .iter()
            .find(|m| m.backend().address() == address)
    }

    /// The pipeline settings as the edit has them.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Adds a backend; it takes traffic from the commit on.
    pub fn add(&mut self, backend: Backend) -> Result<BackendId> {
        check_new(&self.members, &backend)?;
        let id = BackendId(self.next_id);
        self.next_id += 1;
        let address = backend.address().clone();
        let state = Arc::new(BackendState::new(
            id,
            self.balancer.inner.shared.clone(),
            self.lock.initial_health,
        ));
        self.members.push(Arc::new(Member::new(backend, state)));
        self.changed = true;
        self.after.push(After::Emit(id, EventKind::Added(address)));
        Ok(id)
    }

    /// Removes a backend; from the commit on it takes no new traffic, and its leases in
    /// flight finish and release normally.
    pub fn remove(&mut self, id: BackendId) -> Result<Backend> {
        let i = position(&self.members, id)?;
        let m = self.members.remove(i);
        self.changed = true;
        self.after.push(After::Emit(id, EventKind::Removed));
        Ok(m.backend().clone())
    }

    /// Changes any part of a backend's configuration.
    pub fn update(&mut self, id: BackendId, change: impl FnOnce(&mut Backend)) -> Result<()> {
        let i = position(&self.members, id)?;
        let old = &self.members[i];
        let mut b = old.backend().clone();
        change(&mut b);
        if b == *old.backend() {
            return Ok(());
        }
        let others: Vec<Arc<Member>> = self
            .members
            .iter()
            .filter(|m| m.id() != id)
            .cloned()
            .collect();
        check_new(&others, &b)?;
        let kind = if b.weight() == old.backend().weight() {
            EventKind::Updated
        } else {
            EventKind::Weight(b.weight())
        };
        self.members[i] = Arc::new(Member::new(b, old.state_arc().clone()));
        self.changed = true;
        self.after.push(After::Emit(id, kind));
        Ok(())
    }

    /// Changes a backend's weight (0: quiescent, sticky clients only).
    pub fn set_weight(&mut self, id: BackendId, weight: u32) -> Result<()> {
        self.update(id, |b| b.set_weight(weight))
    }

    /// Changes a backend's admin state (at the commit). A member this edit added has it
    /// from the start: it never takes a request in the state it was added with.
    pub fn set_admin(&mut self, id: BackendId, admin: AdminState) -> Result<()> {
        let state = self.member_state(id)?;
        if self.is_added(id) {
            if state.set_admin_silently(admin) {
                self.after.push(After::Emit(id, EventKind::Admin(admin)));
            }
        } else {
            self.after.push(After::Admin(state, admin));
        }
        Ok(())
    }

    /// Sets Apache's `I` flag (at the commit): passive health never ejects the backend.
    pub fn set_ignore_errors(&mut self, id: BackendId, ignore: bool) -> Result<()> {
        let state = self.member_state(id)?;
        if self.is_added(id) {
            state.set_ignore_errors(ignore);
        } else {
            self.after.push(After::IgnoreErrors(state, ignore));
        }
        Ok(())
    }

    /// Replaces the scheduler.
    pub fn set_scheduler(&mut self, scheduler: S) {
        self.scheduler = Arc::new(scheduler);
        self.changed = true;
    }

    /// Changes the pipeline settings.
    pub fn update_config(&mut self, change: impl FnOnce(&mut PipelineConfig)) -> Result<()> {
        let mut c = self.config.clone();
        change(&mut c);
        validate_config(&c)?;
        self.config = c;
        self.changed = true;
        Ok(())
    }

    /// Whether this edit added member `id`: not published yet, so its state is set at
    /// once. Ids only grow, and the edit's start from the balancer's next one.
    fn is_added(&self, id: BackendId) -> bool {
        id.0 >= self.lock.next_id
    }

    fn member_state(&self, id: BackendId) -> Result<Arc<BackendState>> {
        let i = position(&self.members, id)?;
        Ok(self.members[i].state_arc().clone())
    }

    /// Publishes every change of the edit.
    pub fn commit(self) {
        let Edit {
            balancer,
            mut lock,
            members,
            scheduler,
            config,
            next_id,
            changed,
            after,
        } = self;
        if changed {
            lock.members = members;
            lock.scheduler = scheduler;
            lock.config = config;
            lock.next_id = next_id;
            balancer.publish(&lock);
        }
        for a in after {
            match a {
                After::Emit(id, kind) => balancer.inner.shared.emit(id, kind),
                After::Admin(state, admin) => {
                    state.set_admin(admin);
                }
                After::IgnoreErrors(state, ignore) => state.set_ignore_errors(ignore),
            }
        }
        drop(lock);
    }
}
