//! The monitor: runs a health check per backend with intervals, timeout, jitter and the
//! rise/fall thresholds, and sets each backend's health.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::{CheckError, HealthCheck};
use crate::backend::{Backend, BackendId, Health};
use crate::balancer::Balancer;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::scheduler::{AnyScheduler, Scheduler};

/// Settings of a [`Monitor`]; the defaults are HAProxy's (`inter 2s rise 2 fall 3`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// Time between the end of one check and the start of the next while the backend is
    /// steady (HAProxy `inter`, Apache `hcinterval`).
    pub interval: Duration,
    /// A check not finished after this long failed with [`CheckError::Timeout`].
    pub timeout: Duration,
    /// Each wait is scaled by a random factor in `1 ± jitter` (0.0 ≤ jitter < 1.0), and the
    /// first check of a backend waits a random part of `jitter × interval`, so checks of
    /// many backends spread out (HAProxy `spread-checks`).
    pub jitter: f64,
    /// The seed of the jitter's random numbers (each backend's generator is derived from it
    /// and the backend's id), for reproducible runs.
    pub seed: u64,
    /// Consecutive successes that bring a down backend up (HAProxy `rise`, Apache
    /// `hcpasses`).
    pub rise: u32,
    /// Consecutive failures that take an up backend down (HAProxy `fall`, Apache `hcfails`).
    pub fall: u32,
    /// The interval while a backend is changing state: up with failures below `fall`, or
    /// down with successes below `rise` (HAProxy `fastinter`); `None`: `interval`.
    pub fast_interval: Option<Duration>,
    /// The interval while a backend is down and not recovering (HAProxy `downinter`);
    /// `None`: `interval`.
    pub down_interval: Option<Duration>,
    /// The health the monitor gives a backend when it starts checking it (at spawn, or when
    /// the backend is added); `Down` keeps new backends out of traffic until they pass
    /// `rise` checks. [`Balancer::add`](crate::Balancer::add) makes a backend up, and the
    /// monitor applies this as soon as it sees the addition event, so a pick in between
    /// may reach it; build the balancer with
    /// [`initial_health`](crate::BalancerBuilder::initial_health) for the backends known at
    /// start.
    pub initial: Health,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            jitter: 0.0,
            seed: 0,
            rise: 2,
            fall: 3,
            fast_interval: None,
            down_interval: None,
            initial: Health::Up,
        }
    }
}

impl MonitorConfig {
    /// Sets the interval.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the jitter fraction and its seed.
    pub fn with_jitter(mut self, jitter: f64, seed: u64) -> Self {
        self.jitter = jitter;
        self.seed = seed;
        self
    }

    /// Sets the rise and fall thresholds.
    pub fn with_thresholds(mut self, rise: u32, fall: u32) -> Self {
        self.rise = rise;
        self.fall = fall;
        self
    }

    /// Sets the interval while changing state.
    pub fn with_fast_interval(mut self, interval: Duration) -> Self {
        self.fast_interval = Some(interval);
        self
    }

    /// Sets the interval while down.
    pub fn with_down_interval(mut self, interval: Duration) -> Self {
        self.down_interval = Some(interval);
        self
    }

    /// Sets the initial health.
    pub fn with_initial(mut self, initial: Health) -> Self {
        self.initial = initial;
        self
    }

    fn validate(&self) -> Result<()> {
        let durations = [
            ("interval", Some(self.interval)),
            ("timeout", Some(self.timeout)),
            ("fast_interval", self.fast_interval),
            ("down_interval", self.down_interval),
        ];
        for (name, d) in durations {
            if d == Some(Duration::ZERO) {
                return Err(Error::InvalidConfig {
                    name,
                    value: "0s".into(),
                    reason: "must be above zero",
                });
            }
        }
        for (name, n) in [("rise", self.rise), ("fall", self.fall)] {
            if n == 0 {
                return Err(Error::InvalidConfig {
                    name,
                    value: "0".into(),
                    reason: "at least one check is needed to change state",
                });
            }
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(Error::InvalidConfig {
                name: "jitter",
                value: self.jitter.to_string(),
                reason: "must be at least 0.0 and below 1.0",
            });
        }
        Ok(())
    }
}

/// The state of one backend's checks, for status pages (serializable as JSON; the error
/// as its message).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CheckStatus {
    /// The backend.
    pub backend: BackendId,
    /// The health the monitor last set or assumed.
    pub health: Health,
    /// Whether the last check passed; `None` before the first check finished. A check that
    /// could not be made ([`CheckError::Local`]) leaves it as it was.
    pub last_ok: Option<bool>,
    /// The error of the most recent check that failed or could not be made (kept after
    /// later successes).
    #[serde(serialize_with = "error_message")]
    pub last_error: Option<CheckError>,
    /// How long the last check took.
    pub last_duration: Option<Duration>,
    /// Consecutive successes up to now.
    pub successes: u32,
    /// Consecutive failures up to now.
    pub failures: u32,
    /// Checks run so far.
    pub checks: u64,
}

impl CheckStatus {
    fn new(backend: BackendId, health: Health) -> Self {
        CheckStatus {
            backend,
            health,
            last_ok: None,
            last_error: None,
            last_duration: None,
            successes: 0,
            failures: 0,
            checks: 0,
        }
    }
}

fn error_message<Z: serde::Serializer>(
    e: &Option<CheckError>,
    s: Z,
) -> std::result::Result<Z::Ok, Z::Error> {
    match e {
        Some(e) => s.serialize_some(&e.to_string()),
        None => s.serialize_none(),
    }
}

type Statuses = Arc<Mutex<BTreeMap<BackendId, CheckStatus>>>;

fn lock(s: &Statuses) -> MutexGuard<'_, BTreeMap<BackendId, CheckStatus>> {
    // Status entries are plain values, each written whole: a poisoned lock is still valid.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a [`HealthCheck`] for every backend of a balancer.
///
/// The monitor follows the balancer's membership: backends added at run time are checked
/// from then on, removed ones no longer. Each backend is checked by its own task; a check
/// uses the backend's configuration as it is at that moment.
///
/// ```
/// use std::time::Duration;
/// use lb_core::health::{Monitor, MonitorConfig, TcpCheck};
/// use lb_core::{Backend, Balancer, Health};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let lb = Balancer::builder()
///     .backend(Backend::new(listener.local_addr().unwrap()))
///     .initial_health(Health::Down)
///     .build()
///     .unwrap();
/// let mut events = lb.subscribe();
/// let config = MonitorConfig::default()
///     .with_interval(Duration::from_millis(100))
///     .with_thresholds(1, 1)
///     .with_initial(Health::Down);
/// let monitor = Monitor::new(lb.clone(), TcpCheck::new(), config).unwrap().spawn();
/// while let Some(e) = events.recv().await {
///     if e.kind == lb_core::EventKind::Health(Health::Up) {
///         break; // the listener accepted the check's connection
///     }
/// }
/// assert_eq!(monitor.status()[0].last_ok, Some(true));
/// monitor.shutdown().await;
/// # }
/// ```
pub struct Monitor<C: HealthCheck, S: Scheduler = AnyScheduler> {
    balancer: Balancer<S>,
    check: Arc<C>,
    config: Arc<MonitorConfig>,
    filter: Option<Filter>,
    /// The group it is in, and its number there.
    group: Option<(MonitorGroup, u64)>,
}

/// Which backends a [`Monitor`] checks: see [`Monitor::only`].
type Filter = Arc<dyn Fn(&Backend) -> bool + Send + Sync>;

/// Filtered monitors of one balancer that hand backends over to each other: a backend
/// whose settings move it from one monitor's filter to another's keeps its health (a down
/// backend stays down until its new monitor's checks bring it up) instead of starting again
/// from the initial health. See [`Monitor::in_group`].
#[derive(Clone)]
pub struct MonitorGroup(Arc<Mutex<GroupState>>);

struct GroupState {
    /// Whether some monitor of the group checks a backend like this, or will (one started
    /// on demand for it).
    covers: Filter,
    next: u64,
    /// The monitor checking each backend.
    owners: HashMap<BackendId, u64>,
    /// Backends a monitor let go of that another is to take, with their health as it is.
    handed: HashSet<BackendId>,
}

impl fmt::Debug for MonitorGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.lock();
        f.debug_struct("MonitorGroup")
            .field("owners", &g.owners)
            .field("handed", &g.handed)
            .finish_non_exhaustive()
    }
}

impl MonitorGroup {
    /// A group whose monitors, together, check the backends `covers` accepts: a backend
    /// that leaves one monitor's filter while `covers` still accepts it is left as it is
    /// for another monitor to take (one may be started for it later); one that `covers` no
    /// longer accepts is made up, as without a group.
    pub fn new(covers: impl Fn(&Backend) -> bool + Send + Sync + 'static) -> MonitorGroup {
        MonitorGroup(Arc::new(Mutex::new(GroupState {
            covers: Arc::new(covers),
            next: 0,
            owners: HashMap::new(),
            handed: HashSet::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        // Plain sets, each change made whole: a poisoned lock is still valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: HealthCheck, S: Scheduler> fmt::Debug for Monitor<C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("check", &self.check)
            .field("config", &self.config)
            .field("filtered", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

/// A running [`Monitor`]: its status, and the way to stop it. Dropping the handle stops
/// the monitor too (its tasks are aborted; checks in flight are dropped).
#[derive(Debug)]
pub struct MonitorHandle {
    statuses: Statuses,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl<C: HealthCheck, S: Scheduler> Monitor<C, S> {
    /// A monitor of `balancer`'s backends with `check`; refuses zero intervals, timeouts and
    /// thresholds and a jitter outside `0.0..1.0`.
    pub fn new(balancer: Balancer<S>, check: C, config: MonitorConfig) -> Result<Self> {
        config.validate()?;
        Ok(Monitor {
            balancer,
            check: Arc::new(check),
            config: Arc::new(config),
            filter: None,
            group: None,
        })
    }

    /// Puts the monitor in `group`, with the other filtered monitors of the same balancer
    /// (see [`MonitorGroup`]). A monitor without a filter ([`only`](Self::only)) checks
    /// every backend and has nothing to hand over.
    #[must_use]
    pub fn in_group(mut self, group: &MonitorGroup) -> Self {
        let n = {
            let mut g = group.lock();
            g.next += 1;
            g.next
        };
        self.group = Some((group.clone(), n));
        self
    }

    /// Checks only the backends `filter` accepts; the others are neither checked nor given
    /// the initial health, so several monitors with different settings can share a
    /// balancer, each with its own members (HAProxy's per-server `inter`/`rise`/`fall`).
    /// The filter is applied again when backends are added, removed or updated (weight
    /// included): a backend that starts matching is checked from the initial health on; one
    /// that stops matching is no longer checked and is made up, since without a check there
    /// is no health verdict (a member whose check was removed must not stay down for
    /// good). When it starts matching another monitor's filter in the same change, that
    /// monitor gives it its initial health: give monitors that share backends this way the
    /// same [`initial`](MonitorConfig::initial) health, as the order of the two is not
    /// defined. Monitors in one [`MonitorGroup`] ([`in_group`](Self::in_group)) hand such
    /// a backend over with its health instead.
    #[must_use]
    pub fn only(mut self, filter: impl Fn(&Backend) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Starts checking.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (as [`tokio::spawn`]).
    pub fn spawn(self) -> MonitorHandle {
        let statuses = Statuses::default();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(self.run(statuses.clone(), stopped));
        MonitorHandle {
            statuses,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn run(self, statuses: Statuses, mut stopped: oneshot::Receiver<()>) {
        let mut events = self.balancer.subscribe();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut running: HashMap<BackendId, AbortHandle> = HashMap::new();
        self.reconcile(&statuses, &mut tasks, &mut running);
        let mut missed = 0;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                event = events.recv() => match event {
                    None => break,
                    Some(e) if matches!(e.kind, EventKind::Added(_) | EventKind::Removed) => {
                        self.reconcile(&statuses, &mut tasks, &mut running);
                    }
                    Some(e)
                        if self.filter.is_some()
                            && matches!(e.kind, EventKind::Updated | EventKind::Weight(_)) =>
                    {
                        self.reconcile(&statuses, &mut tasks, &mut running);
                    }
                    Some(_) if events.missed() != missed => {
                        missed = events.missed();
                        self.reconcile(&statuses, &mut tasks, &mut running);
                    }
                    Some(_) => {}
                },
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        self.restart_panicked(e.id(), &statuses, &mut tasks, &mut running);
                    }
                }
            }
        }
        tasks.shutdown().await;
    }

    /// A check that panicked is a bug in the check; its backend is checked again after an
    /// interval (not at once, so a check that always panics cannot spin) and the status
    /// shows the failure. Health is left as it was.
    fn restart_panicked(
        &self,
        task: tokio::task::Id,
        statuses: &Statuses,
        tasks: &mut JoinSet<()>,
        running: &mut HashMap<BackendId, AbortHandle>,
    ) {
        let Some(id) = running
            .iter()
            .find_map(|(id, h)| (h.id() == task).then_some(*id))
        else {
            return;
        };
        tracing::error!(backend = %id, "health check panicked; checking again after an interval");
        if let Some(s) = lock(statuses).get_mut(&id) {
            s.last_ok = Some(false);
            s.last_error = Some(CheckError::Setup("the health check panicked".into()));
        }
        if self.balancer.get(id).is_some() {
            running.insert(id, tasks.spawn(self.checker(id, statuses, true).run()));
        } else {
            running.remove(&id);
        }
    }

    fn checker(&self, id: BackendId, statuses: &Statuses, delay_first: bool) -> Checker<C, S> {
        Checker {
            balancer: self.balancer.clone(),
            check: self.check.clone(),
            config: self.config.clone(),
            statuses: statuses.clone(),
            id,
            delay_first,
        }
    }

    /// Starts tasks for new (or newly matching) members and stops those of removed (or no
    /// longer matching) ones; a member that no longer matches is made up.
    fn reconcile(
        &self,
        statuses: &Statuses,
        tasks: &mut JoinSet<()>,
        running: &mut HashMap<BackendId, AbortHandle>,
    ) {
        let mut members = self.balancer.members();
        if let Some(f) = &self.filter {
            members.retain(|m| f(m.backend()));
        }
        let mut group = self.group.as_ref().map(|(g, n)| (g.lock(), *n));
        running.retain(|id, task| {
            let keep = members.iter().any(|m| m.id() == *id);
            if !keep {
                task.abort();
                lock(statuses).remove(id);
                // Still a member but no longer checked here: this monitor's verdict goes,
                // unless another monitor of the group takes the backend over (or has
                // already). A removed backend is refused.
                let up = match &mut group {
                    Some((g, n)) => {
                        let ours = g.owners.get(id) == Some(&*n);
                        if ours {
                            g.owners.remove(id);
                        }
                        let covered = self
                            .balancer
                            .get(*id)
                            .is_some_and(|m| (g.covers)(m.backend()));
                        if ours && covered {
                            g.handed.insert(*id);
                        }
                        ours && !covered
                    }
                    None => self.filter.is_some(),
                };
                if up {
                    let _ = self.balancer.set_health(*id, Health::Up);
                }
            }
            keep
        });
        if let Some((g, _)) = &mut group {
            // Handed over to no one: the backend changed again, or left. Made up, as a
            // backend no monitor checks.
            let balancer = &self.balancer;
            let covers = g.covers.clone();
            g.handed.retain(|id| {
                let Some(m) = balancer.get(*id) else {
                    return false;
                };
                let keep = covers(m.backend());
                if !keep {
                    let _ = balancer.set_health(*id, Health::Up);
                }
                keep
            });
        }
        for m in members {
            let id = m.id();
            if running.contains_key(&id) {
                continue;
            }
            // Taken over from another monitor of the group: its health as it is.
            let taken = group.as_mut().is_some_and(|(g, n)| {
                let from = g.owners.insert(id, *n);
                g.handed.remove(&id) || from.is_some_and(|o| o != *n)
            });
            let health = if taken {
                m.state().health()
            } else {
                let initial = self.config.initial;
                // The backend may have been removed since `members()`; then its task ends
                // at once.
                let _ = self.balancer.set_health(id, initial);
                initial
            };
            lock(statuses).insert(id, CheckStatus::new(id, health));
            running.insert(id, tasks.spawn(self.checker(id, statuses, false).run()));
        }
    }
}

/// One backend's check loop.
struct Checker<C, S: Scheduler> {
    balancer: Balancer<S>,
    check: Arc<C>,
    config: Arc<MonitorConfig>,
    statuses: Statuses,
    id: BackendId,
    /// Wait an interval before the first check (after a restart).
    delay_first: bool,
}

impl<C: HealthCheck, S: Scheduler> Checker<C, S> {
    async fn run(self) {
        let cfg = &*self.config;
        let mut rng = SmallRng::seed_from_u64(
            cfg.seed ^ u64::from(self.id.0).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        if self.delay_first {
            tokio::time::sleep(cfg.interval).await;
        } else if cfg.jitter > 0.0 {
            let first = cfg.interval.mul_f64(rng.random_range(0.0..cfg.jitter));
            tokio::time::sleep(first).await;
        }
        // The monitor's view starts from the backend's state: the initial health it was
        // just given, or whatever it was when a panicked check was restarted.
        let Some(mut health) = self.balancer.get(self.id).map(|m| m.state().health()) else {
            return;
        };
        let (mut successes, mut failures) = (0u32, 0u32);
        // Checks are failing for want of local resources (said once when it starts and
        // once when it ends, not at every check).
        let mut short = false;
        loop {
            let Some(member) = self.balancer.get(self.id) else {
                return;
            };
            let started = Instant::now();
            let result =
                match tokio::time::timeout(cfg.timeout, self.check.probe(member.backend())).await {
                    Ok(r) => r,
                    Err(_) => Err(CheckError::Timeout),
                };
            let took = started.elapsed();
            if self.balancer.get(self.id).is_none() {
                return;
            }
            // Health set by someone else meanwhile (the embedder, or the check of a monitor
            // that handed the backend over finishing late): this check counts from there,
            // so that passing checks can still bring a backend set down back up.
            let current = member.state().health();
            if current != health {
                (health, successes, failures) = (current, 0, 0);
            }
            let mut error = None;
            let mut transition = None;
            let mut new_weight = None;
            let local = matches!(result, Err(CheckError::Local(_)));
            if local != short {
                short = local;
                match &result {
                    Err(e) if local => tracing::warn!(
                        backend = %self.id,
                        error = %e,
                        "health check: not counted, the backend's health is left as it was"
                    ),
                    _ => tracing::info!(backend = %self.id, "health check: can be made again"),
                }
            }
            match result {
                // Says nothing of the backend: neither a pass nor a failure.
                Err(e @ CheckError::Local(_)) => error = Some(e),
                Ok(report) => {
                    successes = successes.saturating_add(1);
                    failures = 0;
                    if health == Health::Down && successes >= cfg.rise {
                        transition = Some(Health::Up);
                    }
                    new_weight = report.weight.filter(|&w| w != member.backend().weight());
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    successes = 0;
                    if health == Health::Up && failures >= cfg.fall {
                        transition = Some(Health::Down);
                    }
                    error = Some(e);
                }
            }
            health = transition.unwrap_or(health);
            // The status first, so that whoever reacts to the health event reads it.
            if let Some(s) = lock(&self.statuses).get_mut(&self.id) {
                s.health = health;
                if !local {
                    s.last_ok = Some(error.is_none());
                }
                s.successes = successes;
                s.failures = failures;
                s.checks += 1;
                s.last_duration = Some(took);
                if let Some(e) = &error {
                    s.last_error = Some(e.clone());
                }
            }
            if let Some(h) = transition {
                let _ = self.balancer.set_health(self.id, h);
                // Named by address, as the other warnings name a member; both ways, since an
                // operator who saw one go down looks for when it came back.
                let address = self
                    .balancer
                    .get(self.id)
                    .map(|m| m.backend().address().to_string())
                    .unwrap_or_default();
                match &error {
                    Some(e) => tracing::warn!(
                        backend = %address, id = %self.id, error = %e, "health check: down"
                    ),
                    None => tracing::warn!(backend = %address, id = %self.id, "health check: up"),
                }
            }
            if let Some(w) = new_weight {
                let _ = self.balancer.set_weight(self.id, w);
            }
            let changing = match health {
                Health::Up => failures > 0,
                Health::Down => successes > 0,
            };
            let base = if changing {
                cfg.fast_interval.unwrap_or(cfg.interval)
            } else if health == Health::Down {
                cfg.down_interval.unwrap_or(cfg.interval)
            } else {
                cfg.interval
            };
            let wait = if cfg.jitter > 0.0 {
                base.mul_f64(1.0 + rng.random_range(-cfg.jitter..=cfg.jitter))
            } else {
                base
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl MonitorHandle {
    /// The check status of every backend being checked, by id.
    pub fn status(&self) -> Vec<CheckStatus> {
        lock(&self.statuses).values().cloned().collect()
    }

    /// The check status of one backend.
    pub fn status_of(&self, id: BackendId) -> Option<CheckStatus> {
        lock(&self.statuses).get(&id).cloned()
    }

    /// Stops the monitor and waits until every check task has ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Whether the monitor stopped.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::health::CheckReport;
    use crate::{Backend, Event};

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        Pass,
        Fail,
        Hang,
        Weight(u32),
        PanicOnce,
        Short,
    }

    /// A check whose outcome per backend port the test sets, recording when it ran.
    #[derive(Debug)]
    struct Scripted {
        modes: Mutex<HashMap<u16, Mode>>,
        calls: Mutex<Vec<(u16, u64)>>,
        origin: Instant,
    }

    impl Scripted {
        fn new() -> Arc<Self> {
            Arc::new(Scripted {
                modes: Mutex::default(),
                calls: Mutex::default(),
                origin: Instant::now(),
            })
        }
        fn set(&self, port: u16, mode: Mode) {
            self.modes.lock().unwrap().insert(port, mode);
        }
        /// Seconds (since the test started) at which `port` was checked.
        fn times(&self, port: u16) -> Vec<f64> {
            let calls = self.calls.lock().unwrap();
            calls
                .iter()
                .filter(|c| c.0 == port)
                .map(|c| c.1 as f64 / 1000.0)
                .collect()
        }
        async fn at(&self, secs: f64) {
            tokio::time::sleep_until(self.origin + Duration::from_secs_f64(secs)).await;
        }
    }

    #[derive(Debug, Clone)]
    struct Shared(Arc<Scripted>);

    impl HealthCheck for Shared {
        async fn check(&self, target: &Backend) -> Result<(), CheckError> {
            self.probe(target).await.map(drop)
        }
        async fn probe(&self, target: &Backend) -> Result<CheckReport, CheckError> {
            let port = target.address().port().unwrap();
            let ms = self.0.origin.elapsed().as_millis() as u64;
            self.0.calls.lock().unwrap().push((port, ms));
            let mode = *self
                .0
                .modes
                .lock()
                .unwrap()
                .get(&port)
                .unwrap_or(&Mode::Pass);
            match mode {
                Mode::Pass => Ok(CheckReport::default()),
                Mode::Fail => Err(CheckError::Unexpected("scripted failure".into())),
                Mode::Short => Err(CheckError::Local("too many open files".into())),
                Mode::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(CheckReport::default())
                }
                Mode::Weight(w) => Ok(CheckReport::with_weight(w)),
                Mode::PanicOnce => {
                    self.0.set(port, Mode::Pass);
                    panic!("a buggy check");
                }
            }
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn balancer(ports: &[u16]) -> Balancer {
        Balancer::builder()
            .backends(ports.iter().map(|&p| Backend::new(addr(p))))
            .build()
            .unwrap()
    }

    fn id_of(lb: &Balancer, port: u16) -> BackendId {
        lb.find(&crate::Address::Socket(addr(port))).unwrap().id()
    }

    fn health(lb: &Balancer, port: u16) -> Health {
        lb.get(id_of(lb, port)).unwrap().state().health()
    }

    fn config() -> MonitorConfig {
        MonitorConfig::default()
            .with_interval(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(1))
    }

    /// A check that could not be made for want of local resources (the balancer out of file
    /// descriptors) neither takes a backend down nor brings it up, nor breaks a run of
    /// passes.
    #[tokio::test(start_paused = true)]
    async fn checks_that_cannot_be_made_here_do_not_count() {
        let lb = balancer(&[1, 2]);
        let up = id_of(&lb, 1);
        let s = Scripted::new();
        s.set(1, Mode::Short);
        s.set(2, Mode::Short);
        let m = Monitor::new(
            lb.clone(),
            Shared(s.clone()),
            config().with_thresholds(2, 1),
        )
        .unwrap()
        .spawn();
        s.at(45.0).await; // five checks each, none made
        assert_eq!((health(&lb, 1), health(&lb, 2)), (Health::Up, Health::Up));
        let st = m.status_of(up).unwrap();
        assert_eq!((st.checks, st.failures, st.successes), (5, 0, 0));
        assert_eq!(st.last_ok, None);
        assert_eq!(
            st.last_error,
            Some(CheckError::Local("too many open files".into()))
        );
        // A real failure still counts (fall 1).
        s.set(2, Mode::Fail);
        s.at(55.0).await; // failed at 50
        assert_eq!(health(&lb, 2), Health::Down);
        // A pass, a check not made, a pass: two passes in a row (rise 2).
        s.set(2, Mode::Pass);
        s.at(65.0).await; // passed at 60
        s.set(2, Mode::Short);
        s.at(75.0).await; // not made at 70
        assert_eq!(health(&lb, 2), Health::Down);
        s.set(2, Mode::Pass);
        s.at(85.0).await; // passed at 80
        assert_eq!(health(&lb, 2), Health::Up);
        assert_eq!(
            s.times(2),
            vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
        );
        m.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_exactly_at_fall_and_rise_with_one_event_each() {
        let lb = balancer(&[1]);
        let id = id_of(&lb, 1);
        let mut events = lb.subscribe();
        for _ in 0..4 {
            events.recv().await.unwrap(); // the initial state
        }
        let s = Scripted::new();
        s.set(1, Mode::Fail);
        let cfg = config().with_thresholds(3, 2);
        let m = Monitor::new(lb.clone(), Shared(s.clone()), cfg)
            .unwrap()
            .spawn();

        s.at(5.0).await; // checked at 0: 1 failure of 2
        assert_eq!(health(&lb, 1), Health::Up);
        let st = m.status_of(id).unwrap();
        assert_eq!((st.failures, st.last_ok, st.checks), (1, Some(false), 1));
        s.at(15.0).await; // checked at 10: 2 failures
        assert_eq!(health(&lb, 1), Health::Down);
        assert_eq!(
            m.status_of(id).unwrap().last_error,
            Some(CheckError::Unexpected("scripted failure".into()))
        );
        s.set(1, Mode::Pass);
        s.at(35.0).await; // passed at 20 and 30: 2 of 3
        assert_eq!(health(&lb, 1), Health::Down);
        assert_eq!(m.status_of(id).unwrap().successes, 2);
        s.at(45.0).await; // passed at 40
        assert_eq!(health(&lb, 1), Health::Up);
        let st = m.status_of(id).unwrap();
        assert_eq!((st.health, st.successes, st.failures), (Health::Up, 3, 0));
        assert!(st.last_error.is_some(), "the last error stays visible");
        assert_eq!(s.times(1), vec![0.0, 10.0, 20.0, 30.0, 40.0]);

        // The balancer's subscribers saw exactly one event per transition.
        let health = |kind| Event {
            backend: id,
            kind: EventKind::Health(kind),
        };
        assert_eq!(events.try_recv(), Some(health(Health::Down)));
        assert_eq!(events.try_recv(), Some(health(Health::Up)));
        assert_eq!(events.try_recv(), None);
        m.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn fast_interval_while_changing_and_down_interval_while_down() {
        let lb = balancer(&[1]);
        let s = Scripted::new();
        let cfg = config()
            .with_thresholds(2, 2)
            .with_fast_interval(Duration::from_secs(2))
            .with_down_interval(Duration::from_secs(30));
        let _m = Monitor::new(lb.clone(), Shared(s.clone()), cfg)
            .unwrap()
            .spawn();
        s.at(5.0).await;
        s.set(1, Mode::Fail); // fails at 10 (going down), 12 (down)
        s.at(50.0).await; // down: 42, 72
        assert_eq!(health(&lb, 1), Health::Down);
        s.set(1, Mode::Pass); // passes at 72 (going up), 74 (up)
        s.at(90.0).await;
        assert_eq!(health(&lb, 1), Health::Up);
        assert_eq!(s.times(1), vec![0.0, 10.0, 12.0, 42.0, 72.0, 74.0, 84.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_a_failure() {
        let lb = balancer(&[1, 2]);
        let s = Scripted::new();
        s.set(1, Mode::Hang);
        let cfg = config().with_thresholds(1, 1);
        let m = Monitor::new(lb.clone(), Shared(s.clone()), cfg)
            .unwrap()
            .spawn();
        s.at(0.5).await;
        assert_eq!(health(&lb, 1), Health::Up, "still waiting");
        s.at(1.5).await;
        assert_eq!(health(&lb, 1), Health::Down);
        assert_eq!(health(&lb, 2), Health::Up);
        let st = m.status_of(id_of(&lb, 1)).unwrap();
        assert_eq!(st.last_error, Some(CheckError::Timeout));
        assert_eq!(st.last_duration, Some(Duration::from_secs(1)));
        s.at(12.0).await;
        assert_eq!(
            s.times(1),
            vec![0.0, 11.0],
            "next check an interval after the timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn follows_members_added_and_removed_at_run_time() {
        let lb = balancer(&[1, 2]);
        let s = Scripted::new();
        let cfg = config().with_initial(Health::Down).with_thresholds(1, 1);
        let m = Monitor::new(lb.clone(), Shared(s.clone()), cfg)
            .unwrap()
            .spawn();
        s.at(5.0).await;
        assert_eq!(health(&lb, 1), Health::Up, "initial down, then one pass");
        lb.remove(id_of(&lb, 2)).unwrap();
        s.at(15.0).await;
        let new = lb.add(Backend::new(addr(3))).unwrap();
        tokio::task::yield_now().await;
        s.at(15.5).await;
        assert_eq!(s.times(3), vec![15.0], "checked as soon as added");
        s.at(59.0).await;
        assert_eq!(s.times(2), vec![0.0], "removed at 5: never checked again");
        assert_eq!(s.times(1), vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(s.times(3), vec![15.0, 25.0, 35.0, 45.0, 55.0]);
        let ids: Vec<_> = m.status().iter().map(|st| st.backend).collect();
        assert_eq!(ids, vec![id_of(&lb, 1), new]);
    }

    #[tokio::test(start_paused = true)]
    async fn checks_use_the_current_configuration() {
        let lb = balancer(&[1]);
        let s = Scripted::new();
        let _m = Monitor::new(lb.clone(), Shared(s.clone()), config())
            .unwrap()
            .spawn();
        s.at(5.0).await;
        lb.update(id_of(&lb, 1), |b| {
            b.set_address(crate::Address::Socket(addr(9)))
        })
        .unwrap();
        s.at(15.0).await;
        assert_eq!(s.times(1), vec![0.0]);
        assert_eq!(
            s.times(9),
            vec![10.0],
            "the same backend, at its new address"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_and_drop_stop_checking() {
        let lb = balancer(&[1]);
        let s = Scripted::new();
        let m = Monitor::new(lb.clone(), Shared(s.clone()), config())
            .unwrap()
            .spawn();
        s.at(15.0).await;
        m.shutdown().await;
        s.at(100.0).await;
        assert_eq!(s.times(1), vec![0.0, 10.0]);

        let s = Scripted::new();
        let m = Monitor::new(lb.clone(), Shared(s.clone()), config())
            .unwrap()
            .spawn();
        s.at(15.0).await;
        assert!(!m.is_finished());
        drop(m);
        s.at(100.0).await;
        assert_eq!(s.times(1), vec![0.0, 10.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_is_bounded_and_reproducible_with_a_seed() {
        async fn run(seed: u64) -> Vec<f64> {
            let lb = balancer(&[1]);
            let s = Scripted::new();
            let cfg = config().with_jitter(0.5, seed);
            let m = Monitor::new(lb, Shared(s.clone()), cfg).unwrap().spawn();
            s.at(200.0).await;
            m.shutdown().await;
            s.times(1)
        }
        let a = run(7).await;
        assert_eq!(a, run(7).await, "same seed, same times");
        assert_ne!(a, run(8).await, "another seed, other times");
        assert!(a[0] <= 5.0, "first check within jitter × interval: {a:?}");
        let gaps: Vec<f64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (5.0..=15.0).contains(g)), "{gaps:?}");
        assert!(gaps.iter().any(|&g| g != 10.0), "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reported_weights_are_applied() {
        let lb = balancer(&[1]);
        let s = Scripted::new();
        s.set(1, Mode::Weight(3));
        let _m = Monitor::new(lb.clone(), Shared(s.clone()), config())
            .unwrap()
            .spawn();
        s.at(5.0).await;
        let id = id_of(&lb, 1);
        assert_eq!(lb.get(id).unwrap().backend().weight(), 3);
        let mut events = lb.subscribe();
        for _ in 0..4 {
            events.recv().await.unwrap();
        }
        s.at(25.0).await;
        assert_eq!(
            events.try_recv(),
            None,
            "an unchanged weight is not set again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_check_is_restarted_after_an_interval() {
        let lb = balancer(&[1]);
        let s = Scripted::new();
        s.set(1, Mode::PanicOnce);
        let m = Monitor::new(lb.clone(), Shared(s.clone()), config())
            .unwrap()
            .spawn();
        s.at(5.0).await;
        let st = m.status_of(id_of(&lb, 1)).unwrap();
        assert_eq!(st.last_ok, Some(false));
        assert_eq!(
            st.last_error,
            Some(CheckError::Setup("the health check panicked".into()))
        );
        s.at(25.0).await;
        assert_eq!(s.times(1), vec![0.0, 10.0, 20.0]);
        assert_eq!(m.status_of(id_of(&lb, 1)).unwrap().last_ok, Some(true));
        assert_eq!(health(&lb, 1), Health::Up);
    }

    #[test]
    fn bad_settings_are_refused_naming_the_value() {
        let lb = balancer(&[1]);
        let s = Scripted::new();
        let err = |cfg: MonitorConfig| {
            Monitor::new(lb.clone(), Shared(s.clone()), cfg)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(config().with_thresholds(0, 3)),
            "invalid configuration rise=\"0\": at least one check is needed to change state"
        );
        assert!(err(config().with_interval(Duration::ZERO)).contains("interval=\"0s\""));
        assert!(err(config().with_timeout(Duration::ZERO)).contains("timeout="));
        assert!(err(config().with_jitter(1.0, 0)).contains("jitter=\"1\""));
        assert!(err(config().with_jitter(f64::NAN, 0)).contains("jitter=\"NaN\""));
        assert!(err(config().with_fast_interval(Duration::ZERO)).contains("fast_interval"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_filtered_monitor_checks_and_changes_only_its_members() {
        let lb = balancer(&[1, 2]);
        lb.update(id_of(&lb, 1), |b| {
            b.labels_mut().insert("checked".into(), "yes".into());
        })
        .unwrap();
        let script = Scripted::new();
        script.set(1, Mode::Fail);
        script.set(2, Mode::Fail);
        // Backend 2 is down by some other means; a monitor that does not own it must not
        // bring it up (its initial health is Up) nor check it.
        lb.set_health(id_of(&lb, 2), Health::Down).unwrap();
        let handle = Monitor::new(
            lb.clone(),
            Shared(script.clone()),
            config().with_thresholds(1, 1),
        )
        .unwrap()
        .only(|b| b.labels().contains_key("checked"))
        .spawn();
        script.at(25.0).await;
        assert_eq!(health(&lb, 1), Health::Down);
        assert_eq!(health(&lb, 2), Health::Down);
        assert_eq!(script.times(1).len(), 3, "checked at 0, 10 and 20 s");
        assert!(script.times(2).is_empty());
        assert!(handle.status_of(id_of(&lb, 2)).is_none());

        // Backend 2 starts matching: checked from the initial health on, at once.
        script.set(2, Mode::Pass);
        lb.update(id_of(&lb, 2), |b| {
            b.labels_mut().insert("checked".into(), "yes".into());
        })
        .unwrap();
        script.at(26.0).await;
        assert_eq!(script.times(2), vec![25.0]);
        assert_eq!(health(&lb, 2), Health::Up);
        // Backend 1 stops matching: no longer checked, and up (no check, no verdict).
        lb.update(id_of(&lb, 1), |b| {
            b.labels_mut().remove("checked");
        })
        .unwrap();
        script.at(60.0).await;
        assert_eq!(script.times(1).len(), 3);
        assert_eq!(health(&lb, 1), Health::Up);
        assert!(handle.status_of(id_of(&lb, 1)).is_none());

        // Backend 2 stops matching in a change that is also a weight change: the same.
        script.set(2, Mode::Fail);
        script.at(80.0).await;
        assert_eq!(health(&lb, 2), Health::Down);
        lb.update(id_of(&lb, 2), |b| {
            b.labels_mut().remove("checked");
            b.set_weight(7);
        })
        .unwrap();
        script.at(90.0).await;
        assert_eq!(health(&lb, 2), Health::Up);
        assert!(handle.status_of(id_of(&lb, 2)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn health_set_from_outside_is_where_the_checks_count_from() {
        let lb = balancer(&[1]);
        let script = Scripted::new();
        let _m = Monitor::new(
            lb.clone(),
            Shared(script.clone()),
            config().with_thresholds(2, 1),
        )
        .unwrap()
        .spawn();
        script.at(5.0).await;
        assert_eq!(health(&lb, 1), Health::Up);
        lb.set_health(id_of(&lb, 1), Health::Down).unwrap();
        script.at(15.0).await;
        assert_eq!(health(&lb, 1), Health::Down, "one pass of two");
        script.at(25.0).await;
        assert_eq!(
            health(&lb, 1),
            Health::Up,
            "two passes since it was set down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_moved_between_monitors_of_a_group_keeps_its_health() {
        moved_between_monitors(true).await;
    }

    /// The same with the monitors started the other way round: on this current-thread
    /// runtime, the one whose task subscribed first sees a change first.
    #[tokio::test(start_paused = true)]
    async fn a_backend_moved_between_monitors_of_a_group_keeps_its_health_either_order() {
        moved_between_monitors(false).await;
    }

    async fn moved_between_monitors(a_first: bool) {
        let lb = balancer(&[1, 2]);
        let set = |port: u16, to: Option<&str>| {
            lb.update(id_of(&lb, port), |b| match to {
                Some(v) => {
                    b.labels_mut().insert("set".into(), v.into());
                }
                None => {
                    b.labels_mut().remove("set");
                }
            })
            .unwrap();
        };
        set(1, Some("a"));
        set(2, Some("a"));
        let script = Scripted::new();
        script.set(1, Mode::Fail);
        let group = MonitorGroup::new(|b| b.labels().contains_key("set"));
        let monitor = |set: &'static str, rise: u32| {
            Monitor::new(
                lb.clone(),
                Shared(script.clone()),
                config().with_thresholds(rise, 1),
            )
            .unwrap()
            .only(move |b| b.labels().get("set").map(String::as_str) == Some(set))
            .in_group(&group)
            .spawn()
        };
        let (a, b) = if a_first {
            let a = monitor("a", 1);
            (a, monitor("b", 2))
        } else {
            let b = monitor("b", 2);
            (monitor("a", 1), b)
        };
        script.at(5.0).await;
        assert_eq!(
            health(&lb, 1),
            Health::Down,
            "failed its first check under a"
        );

        // Moved to b, whose first check passes: one pass of b's two is not enough.
        script.set(1, Mode::Pass);
        set(1, Some("b"));
        script.at(6.0).await;
        assert_eq!(health(&lb, 1), Health::Down, "reset by the move");
        assert!(a.status_of(id_of(&lb, 1)).is_none());
        assert_eq!(b.status_of(id_of(&lb, 1)).unwrap().health, Health::Down);
        script.at(16.0).await;
        assert_eq!(health(&lb, 1), Health::Up, "two passes under b");

        // Moved to a set no monitor has yet: kept as it is until one starts.
        script.set(2, Mode::Fail);
        script.at(30.0).await;
        assert_eq!(health(&lb, 2), Health::Down);
        set(2, Some("c"));
        script.at(40.0).await;
        assert_eq!(
            health(&lb, 2),
            Health::Down,
            "no monitor has it, none made it up"
        );
        script.set(2, Mode::Pass);
        let c = monitor("c", 1);
        script.at(41.0).await;
        assert_eq!(
            health(&lb, 2),
            Health::Up,
            "checked by c from its health on"
        );

        // Out of the group's cover: no monitor will check it, so it is up.
        script.set(2, Mode::Fail);
        script.at(60.0).await;
        assert_eq!(health(&lb, 2), Health::Down);
        set(2, None);
        script.at(61.0).await;
        assert_eq!(health(&lb, 2), Health::Up);
        assert!(c.status_of(id_of(&lb, 2)).is_none());
        drop((a, b, c));
    }
}
