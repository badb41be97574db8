//! Balancer members as mod_proxy_balancer describes them: a URL and `key=value` settings
//! (`BalancerMember http://host:port route=a loadfactor=3 ...`), turned into lb-core
//! [`Backend`]s.
//!
//! The HTTP-only settings travel as backend labels (see the `LABEL_*` constants) so the
//! balancer's member set stays the single source of truth; [`Members`] keeps the parsed form
//! per member for the hot path.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::{Address, Backend, BackendId, Member, Role};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::proxy::{MemberUrls, Target};

/// Label with the member URL.
pub const LABEL_URL: &str = "url";
/// Label with the member's `retry` seconds (time in error after a failure).
pub const LABEL_RETRY: &str = "retry";
/// Label with the member's `max` concurrent requests.
pub const LABEL_MAX: &str = "max";
/// Label with the member's response `timeout` seconds.
pub const LABEL_TIMEOUT: &str = "timeout";
/// Label with the member's `acquire` milliseconds (the wait for a slot at its `max`).
pub const LABEL_ACQUIRE: &str = "acquire";
/// Label set to `1` when the member is stopped (`S`) rather than disabled (`D`).
pub const LABEL_STOPPED: &str = "stopped";
/// Label prefix for health-check settings (`hc.method`, `hc.uri`, ...).
pub const LABEL_HC: &str = "hc.";

/// Apache's status flags that can be given at configuration time or set from the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFlags {
    /// `D`: disabled, takes no request.
    pub disabled: bool,
    /// `N`: draining, takes only requests already routed to it.
    pub drain: bool,
    /// `H`: hot standby, used only when no other member of its set is usable.
    pub hot_standby: bool,
    /// `I`: ignore errors (always considered usable by passive health).
    pub ignore_errors: bool,
    /// `S`: stopped by the administrator.
    pub stopped: bool,
}

impl StatusFlags {
    /// Applies `+X` / `-X` changes such as `+H-D` (Apache's `status=` syntax).
    pub fn apply(&mut self, spec: &str) -> Result<()> {
        let bad = |reason: &str| Error::Value {
            key: "status".into(),
            value: spec.into(),
            reason: reason.into(),
        };
        let mut on = true;
        if spec.is_empty() {
            return Err(bad("empty"));
        }
        for c in spec.chars() {
            match c {
                '+' => on = true,
                '-' => on = false,
                'D' | 'd' => self.disabled = on,
                'N' | 'n' => self.drain = on,
                'H' | 'h' => self.hot_standby = on,
                'I' | 'i' => self.ignore_errors = on,
                'S' | 's' => self.stopped = on,
                _ => return Err(bad("flags are +D +N +H +I +S")),
            }
        }
        Ok(())
    }

    /// The admin state these flags mean: D or S maintenance, N drain, else ready.
    pub fn admin_state(&self) -> lb_core::AdminState {
        if self.disabled || self.stopped {
            lb_core::AdminState::Maintenance
        } else if self.drain {
            lb_core::AdminState::Drain
        } else {
            lb_core::AdminState::Ready
        }
    }

    /// The flags member `m` has now, as the balancer manager shows them.
    pub fn of(m: &lb_core::Member) -> StatusFlags {
        let s = m.state();
        let stopped = m
            .backend()
            .labels()
            .get(LABEL_STOPPED)
            .is_some_and(|v| v == "1");
        StatusFlags {
            disabled: s.admin() == lb_core::AdminState::Maintenance && !stopped,
            drain: s.admin() == lb_core::AdminState::Drain,
            hot_standby: m.backend().role() == Role::HotStandby,
            ignore_errors: s.ignores_errors(),
            stopped,
        }
    }

    /// Gives member `id` of `balancer` these flags: its admin state, whether errors count,
    /// the stopped mark and the hot-standby role.
    pub fn set_on<S: lb_core::scheduler::Scheduler>(
        &self,
        balancer: &lb_core::Balancer<S>,
        id: BackendId,
    ) -> lb_core::Result<()> {
        let mut edit = balancer.edit();
        self.set_in(&mut edit, id)?;
        edit.commit();
        Ok(())
    }

    /// As [`set_on`](Self::set_on), as part of an [`Edit`](lb_core::Edit).
    pub fn set_in<S: lb_core::scheduler::Scheduler>(
        &self,
        edit: &mut lb_core::Edit<'_, S>,
        id: BackendId,
    ) -> lb_core::Result<()> {
        edit.update(id, |be| self.mark(be))?;
        edit.set_admin(id, self.admin_state())?;
        edit.set_ignore_errors(id, self.ignore_errors)
    }

    /// What of these flags lives on the backend itself: the stopped mark and the
    /// hot-standby role.
    pub(crate) fn mark(&self, be: &mut Backend) {
        if self.stopped {
            be.labels_mut().insert(LABEL_STOPPED.into(), "1".into());
        } else {
            be.labels_mut().remove(LABEL_STOPPED);
        }
        match (self.hot_standby, be.role()) {
            (true, Role::Normal) => be.set_role(Role::HotStandby),
            (false, Role::HotStandby) => be.set_role(Role::Normal),
            _ => {}
        }
    }
}

/// One member as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSpec {
    /// The member URL (`http://host:port[/path]`).
    pub url: String,
    /// `route`: the sticky route name.
    pub route: Option<String>,
    /// `loadfactor`: weight, 1 to 100 (default 1; 0 is accepted and means sticky only).
    pub loadfactor: u32,
    /// `lbset`: the tier, lower sets are used first.
    pub lbset: u32,
    /// `status`: initial flags.
    pub status: StatusFlags,
    /// `retry`: time in error after a failure (default 60 s).
    pub retry: Duration,
    /// `max`: most concurrent requests. A request routed to the member by its session
    /// waits for a slot up to `acquire`, then gets 503; another goes to a member of the same
    /// tier with a free slot, and waits for the first freed only when every member of the
    /// tier is at its `max` (see [`Balance`](crate::balance::Balance)).
    pub max: Option<u32>,
    /// `acquire`: how long a request waits for a slot at `max`, in milliseconds as in
    /// Apache (0: not at all); `None`: the balancer's queue timeout (1 s).
    pub acquire: Option<Duration>,
    /// `timeout`: response timeout for this member.
    pub timeout: Option<Duration>,
    /// Health-check settings: `hcmethod`, `hcuri`, `hcinterval`, `hcpasses`, `hcfails`,
    /// `hcexpr` (expected statuses), `hcbody`.
    pub hc: Vec<(String, String)>,
}

impl MemberSpec {
    /// A member at `url` with the defaults.
    pub fn new(url: impl Into<String>) -> MemberSpec {
        MemberSpec {
            url: url.into(),
            route: None,
            loadfactor: 1,
            lbset: 0,
            status: StatusFlags::default(),
            retry: Duration::from_secs(60),
            max: None,
            acquire: None,
            timeout: None,
            hc: Vec::new(),
        }
    }

    /// Sets one `key=value` setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |reason: &str| Error::Value {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        };
        let num = |max: u64| -> Result<u64> {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| bad(&format!("expected a whole number up to {max}")))
        };
        match key {
            "route" => {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                {
                    return Err(bad("a route is letters, digits, '-' and '_'"));
                }
                self.route = Some(value.into());
            }
            "loadfactor" => self.loadfactor = num(100)? as u32,
            "lbset" => self.lbset = num(99)? as u32,
            "status" => self.status.apply(value)?,
            "retry" => self.retry = Duration::from_secs(num(86_400)?),
            "max" => self.max = Some(num(1_000_000)? as u32).filter(|n| *n > 0),
            "acquire" => self.acquire = Some(Duration::from_millis(num(3_600_000)?)),
            // As the balancer's `timeout`, and Apache's: a response timeout of 0 would fail
            // every request.
            "timeout" => match num(86_400)? {
                0 => return Err(bad("expected seconds (1 to 86400)")),
                n => self.timeout = Some(Duration::from_secs(n)),
            },
            "hcmethod" | "hcuri" | "hcinterval" | "hcpasses" | "hcfails" | "hcexpr" | "hcbody" => {
                crate::hcheck::HttpCheckSpec::validate(key, value)?;
                self.hc.retain(|(k, _)| k != key);
                self.hc.push((key.into(), value.into()));
            }
            _ => {
                return Err(Error::UnknownSetting {
                    key: key.into(),
                    known: "route, loadfactor, lbset, status, retry, max, acquire, timeout, \
                            hcmethod, hcuri, hcinterval, hcpasses, hcfails, hcexpr, hcbody",
                });
            }
        }
        Ok(())
    }

    /// The lb-core backend for this member.
    pub fn to_backend(&self) -> Result<Backend> {
        self.check_hc()?;
        let target = Target::from_url(&self.url)?;
        let address = authority_address(&target)?;
        let mut b = Backend::new(address)
            .with_weight(self.loadfactor)
            .with_lbset(self.lbset)
            .with_label(LABEL_URL, self.url.clone())
            .with_label(LABEL_RETRY, self.retry.as_secs().to_string());
        if let Some(r) = &self.route {
            b = b.with_route(r.clone());
        }
        if self.status.hot_standby {
            b = b.with_role(Role::HotStandby);
        }
        if let Some(m) = self.max {
            b = b.with_label(LABEL_MAX, m.to_string());
        }
        if let Some(t) = self.timeout {
            b = b.with_label(LABEL_TIMEOUT, t.as_secs().to_string());
        }
        if let Some(a) = self.acquire {
            b = b.with_label(LABEL_ACQUIRE, a.as_millis().to_string());
        }
        if self.status.stopped {
            b = b.with_label(LABEL_STOPPED, "1");
        }
        for (k, v) in &self.hc {
            b = b.with_label(format!("{LABEL_HC}{k}"), v.clone());
        }
        Ok(b)
    }
}

impl MemberSpec {
    /// The health-check settings together: each was checked alone by [`set`](Self::set).
    /// Settings that could never take effect are refused rather than ignored.
    fn check_hc(&self) -> Result<()> {
        let get = |key: &str| self.hc.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let Some(method) = get("hcmethod") else {
            return match self.hc.first() {
                Some((key, value)) => Err(Error::Value {
                    key: key.clone(),
                    value: value.clone(),
                    reason: "no health checks without hcmethod (TCP, OPTIONS, HEAD or GET)".into(),
                }),
                None => Ok(()),
            };
        };
        if method.eq_ignore_ascii_case("TCP") {
            if let Some((key, value)) = self
                .hc
                .iter()
                .find(|(k, _)| ["hcuri", "hcexpr", "hcbody"].contains(&k.as_str()))
            {
                return Err(Error::Value {
                    key: key.clone(),
                    value: value.clone(),
                    reason: "a TCP check only connects: it sends no request and reads no answer"
                        .into(),
                });
            }
        }
        if let Some(body) = get("hcbody") {
            if !method.eq_ignore_ascii_case("GET") {
                return Err(Error::Value {
                    key: "hcbody".into(),
                    value: body.clone(),
                    reason: format!(
                        "needs hcmethod=GET: a {method} check reads no body, and would never pass"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl FromStr for MemberSpec {
    type Err = Error;

    /// Parses `URL[,key=value...]`, the command-line form. A value with a comma is written
    /// in double quotes (`hcbody="ok, ready"`), in which `\"` and `\\` stand for `"` and
    /// `\`; it is taken as written, spaces included.
    fn from_str(s: &str) -> Result<MemberSpec> {
        let (url, settings) = match s.split_once(',') {
            Some((url, settings)) => (url, Some(settings)),
            None => (s, None),
        };
        let url = url.trim();
        Target::from_url(url)?;
        let mut spec = MemberSpec::new(url);
        if let Some(settings) = settings {
            for (k, v) in settings_of(settings)? {
                spec.set(&k, &v)?;
            }
        }
        Ok(spec)
    }
}

/// The `key=value` settings of a member, split at the commas outside double-quoted values.
/// A value is quoted when it is one double-quoted string up to the next comma (or the end);
/// any other value, quotes and all, is taken as written up to the next comma, as before
/// quoting was read (`hcbody="status":"up"`).
fn settings_of(s: &str) -> Result<Vec<(String, String)>> {
    let bad = |part: &str, reason: &str| Error::Value {
        key: "member".into(),
        value: part.trim().into(),
        reason: reason.into(),
    };
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if rest.trim().is_empty() {
            return Err(bad("", "a setting is missing after the last comma"));
        }
        let (key, after) = match rest.split_once('=') {
            Some((k, a)) if !k.contains(',') => (k, a),
            _ => {
                let part = rest.split(',').next().unwrap_or(rest);
                return Err(bad(
                    part,
                    "expected key=value (a value with a comma is written in double quotes: \
                     hcbody=\"ok, ready\")",
                ));
            }
        };
        let key = key.trim().to_string();
        let (value, next) = match quoted(after) {
            Some((value, next)) => (value, next),
            None => {
                let (v, next) = match after.split_once(',') {
                    Some((v, next)) => (v, Some(next)),
                    None => (after, None),
                };
                (v.trim().to_string(), next)
            }
        };
        out.push((key, value));
        match next {
            Some(next) => rest = next,
            None => return Ok(out),
        }
    }
}

/// `text` read as a double-quoted value (`\"` and `\\` escape a quote and a backslash)
/// and what follows its comma, if any: `None` unless the quoted string is followed by a
/// comma or the end (spaces aside).
fn quoted(text: &str) -> Option<(String, Option<&str>)> {
    let inner = text.trim_start().strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = inner.char_indices();
    let end = loop {
        let (i, c) = chars.next()?;
        match c {
            '"' => break i + 1,
            '\\' => match chars.next()? {
                (_, e @ ('"' | '\\')) => value.push(e),
                (_, other) => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    };
    let after = inner[end..].trim_start();
    if after.is_empty() {
        Some((value, None))
    } else {
        after.strip_prefix(',').map(|next| (value, Some(next)))
    }
}

fn authority_address(target: &Target) -> Result<Address> {
    let port = target.authority.port_u16().unwrap_or(80);
    let host = target
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(Address::Socket(std::net::SocketAddr::new(ip, port))),
        Err(_) => Ok(Address::Host {
            host: host.to_string(),
            port,
        }),
    }
}

/// What the HTTP layer needs per member, parsed once from the backend's labels.
#[derive(Debug)]
pub struct MemberHttp {
    /// Where requests go.
    pub target: Target,
    /// Time in error after a failure.
    pub retry: Duration,
    /// Concurrency limit (`max`), if any.
    pub slots: Option<Arc<Semaphore>>,
    /// The wait for a slot (`acquire`), if set.
    pub acquire: Option<Duration>,
}

impl MemberHttp {
    /// Parses a backend's labels. Its `max` gets a semaphore of its own: see
    /// [`Members::shared`] for limits that hold across the threads serving a balancer.
    pub fn of(backend: &Backend) -> Result<MemberHttp> {
        MemberHttp::parse(backend, None)
    }

    fn parse(backend: &Backend, slots: Option<(&Slots, BackendId)>) -> Result<MemberHttp> {
        let labels = backend.labels();
        let mut target = target_of(backend)?;
        let secs = |k: &str| {
            labels
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        target.response_timeout = secs(LABEL_TIMEOUT);
        let max = labels
            .get(LABEL_MAX)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0);
        let slots = max.map(|n| match slots {
            Some((shared, id)) => shared.get(id, n),
            None => Arc::new(Semaphore::new(n)),
        });
        Ok(MemberHttp {
            target,
            retry: secs(LABEL_RETRY).unwrap_or(Duration::from_secs(60)),
            slots,
            acquire: labels
                .get(LABEL_ACQUIRE)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
        })
    }
}

/// Where requests to `backend` go: its URL label, or else its address.
pub(crate) fn target_of(backend: &Backend) -> Result<Target> {
    match backend.labels().get(LABEL_URL) {
        Some(url) => Target::from_url(url),
        None => {
            let url = match backend.address() {
                Address::Socket(a) => format!("http://{a}"),
                Address::Host { host, port } => format!("http://{host}:{port}"),
                Address::Unix(p) => {
                    return Err(Error::MemberUrl {
                        url: p.display().to_string(),
                        reason: "unix sockets are not supported for http".into(),
                    });
                }
            };
            Target::from_url(&url)
        }
    }
}

/// The `max` semaphores of one balancer's members, one per member whatever the number of
/// threads (each with its own [`Members`]) serving the balancer. A member whose `max`
/// changes gets a new one; requests holding a slot of the old one finish on it.
#[derive(Debug, Default)]
pub(crate) struct Slots(Mutex<HashMap<BackendId, (usize, Arc<Semaphore>), Fnvs>>);

type Fnvs = BuildHasherDefault<Fnv>;

impl Slots {
    fn get(&self, id: BackendId, max: usize) -> Arc<Semaphore> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some((n, sem)) if *n == max => sem.clone(),
            _ => {
                let sem = Arc::new(Semaphore::new(max));
                map.insert(id, (max, sem.clone()));
                sem
            }
        }
    }
}

/// A cache of [`MemberHttp`] per backend id, refreshed when a member's address or labels
/// change.
#[derive(Debug, Default)]
pub struct Members {
    /// Read on every request without taking a lock; replaced whole when an entry changes.
    map: ArcSwap<Map>,
    /// Serializes those replacements, so that threads meeting a new member at once make one
    /// entry, and one `max` semaphore, between them.
    write: Mutex<()>,
    /// Where the `max` semaphores come from: this cache's own, or a balancer's.
    slots: Arc<Slots>,
    /// The balancer's members, put on every target for ProxyPassReverse (one per cache,
    /// so per worker thread: its reference count is not shared between cores).
    urls: Option<Arc<MemberUrls>>,
}

type Map = HashMap<BackendId, Entry, Fnvs>;

#[derive(Debug, Clone)]
struct Entry {
    http: Arc<MemberHttp>,
    /// The hash of the settings `http` was parsed from ([`label_hash`]).
    hash: u64,
    /// The balancer's member it was last checked against. A member's configuration never
    /// changes in place (a change makes a new `Member`), so while the balancer still hands
    /// out this very `Arc`, nothing needs hashing; and held here, its address cannot be
    /// reused by another.
    seen: Option<Arc<Member>>,
}

/// FNV-1a: this hash only tells whether a member's settings changed since its entry was
/// made (it runs on every request; SipHash showed in profiles), not a table keyed by input
/// from clients.
#[derive(Debug, Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The labels [`MemberHttp::parse`] reads: a change to any of them makes a new
/// [`MemberHttp`].
const HTTP_LABELS: [&str; 5] = [
    LABEL_URL,
    LABEL_RETRY,
    LABEL_MAX,
    LABEL_TIMEOUT,
    LABEL_ACQUIRE,
];

fn label_hash(b: &Backend) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = Fnv::default();
    b.address().hash(&mut h);
    for (k, v) in b.labels() {
        if HTTP_LABELS.contains(&k.as_str()) {
            k.hash(&mut h);
            v.hash(&mut h);
        }
    }
    h.finish()
}

impl Members {
    /// A cache whose members' `max` limits are those of `balancer`, shared with every other
    /// cache made this way for it: each worker thread of a server keeps its own cache (no
    /// state passed between cores per request), while a member's `max` still counts the
    /// requests of all of them. Its targets carry the balancer's [`MemberUrls`], so that
    /// ProxyPassReverse rewrites the address of any member in a response, not only that of
    /// the member that sent it.
    pub fn shared(balancer: &lb_core::Balancer) -> Members {
        Members {
            slots: balancer.attached(Slots::default),
            urls: Some(Arc::new(MemberUrls::new(balancer.clone()))),
            ..Members::default()
        }
    }

    /// The HTTP view of member `id` whose configuration is `backend`.
    pub fn get(&self, id: BackendId, backend: &Backend) -> Result<Arc<MemberHttp>> {
        self.lookup(id, backend, None)
    }

    /// The HTTP view of a balancer's `member` (as a [`Lease`](lb_core::Lease) shares it).
    /// While the balancer hands out the same `Arc`, this costs a map lookup; a new one
    /// (its configuration changed) is checked as [`get`](Members::get) checks a backend.
    pub fn get_member(&self, member: &Arc<Member>) -> Result<Arc<MemberHttp>> {
        let id = member.id();
        if let Some(e) = self.map.load().get(&id)
            && e.seen
                .as_ref()
                .is_some_and(|seen| Arc::ptr_eq(seen, member))
        {
            return Ok(e.http.clone());
        }
        self.lookup(id, member.backend(), Some(member))
    }

    fn lookup(
        &self,
        id: BackendId,
        backend: &Backend,
        seen: Option<&Arc<Member>>,
    ) -> Result<Arc<MemberHttp>> {
        let hash = label_hash(backend);
        let current = |map: &Map| map.get(&id).filter(|e| e.hash == hash).cloned();
        if seen.is_none()
            && let Some(e) = current(&self.map.load())
        {
            return Ok(e.http);
        }
        let _writing = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let map = self.map.load_full();
        let http = match current(&map) {
            // Another thread made it meanwhile, or only the member to remember is new.
            Some(e)
                if seen.is_none()
                    || e.seen
                        .as_ref()
                        .zip(seen)
                        .is_some_and(|(a, b)| Arc::ptr_eq(a, b)) =>
            {
                return Ok(e.http);
            }
            Some(e) => e.http,
            None => {
                let mut http = MemberHttp::parse(backend, Some((&self.slots, id)))?;
                if let Some(urls) = &self.urls {
                    http.target = http.target.with_member_urls(urls.clone());
                }
                Arc::new(http)
            }
        };
        let mut next = Map::clone(&map);
        let entry = Entry {
            http: http.clone(),
            hash,
            seen: seen.cloned(),
        };
        next.insert(id, entry);
        self.map.store(Arc::new(next));
        Ok(http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry per member, made once even when threads meet the member at the same time
    /// (so its `max` is one semaphore), and made again when its settings change.
    #[test]
    fn members_are_cached_until_their_settings_change() {
        let backend = |spec: &str| spec.parse::<MemberSpec>().unwrap().to_backend().unwrap();
        let members = Arc::new(Members::default());
        let first = backend("http://127.0.0.1:9001,max=2");
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let made: Vec<Arc<MemberHttp>> = (0..8)
            .map(|_| {
                let (members, first, barrier) = (members.clone(), first.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    members.get(BackendId(0), &first).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(made.iter().all(|m| Arc::ptr_eq(m, &made[0])));
        assert_eq!(made[0].slots.as_ref().unwrap().available_permits(), 2);
        let again = members.get(BackendId(0), &first).unwrap();
        assert!(Arc::ptr_eq(&again, &made[0]));
        let changed = members
            .get(BackendId(0), &backend("http://127.0.0.1:9001,max=3"))
            .unwrap();
        assert!(!Arc::ptr_eq(&changed, &made[0]));
        assert_eq!(changed.slots.as_ref().unwrap().available_permits(), 3);
        let other = members.get(BackendId(1), &first).unwrap();
        assert!(!Arc::ptr_eq(&other, &changed));
    }

    /// A balancer's member is looked up by the `Arc` its lease shares: the same `Arc` finds
    /// the same entry; a new one with the same HTTP settings (a weight change) keeps it; a
    /// new one with other settings gets a new entry.
    #[test]
    fn a_lease_member_is_cached_until_its_settings_change() {
        let backend = |spec: &str| spec.parse::<MemberSpec>().unwrap().to_backend().unwrap();
        let lb = lb_core::Balancer::builder()
            .backend(backend("http://127.0.0.1:9001,max=2"))
            .build()
            .unwrap();
        let members = Members::shared(&lb);
        let pick = || lb.pick(&lb_core::PickContext::new()).unwrap();
        let lease = pick();
        let first = members.get_member(lease.shared_member()).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &members.get_member(pick().shared_member()).unwrap()
        ));
        let id = lease.id();
        // The same settings for HTTP under a new Member.
        lb.update(id, |b| b.set_weight(5)).unwrap();
        let reweighted = pick();
        assert!(!Arc::ptr_eq(
            reweighted.shared_member(),
            lease.shared_member()
        ));
        assert!(Arc::ptr_eq(
            &first,
            &members.get_member(reweighted.shared_member()).unwrap()
        ));
        assert!(Arc::ptr_eq(
            &first,
            &members.get_member(reweighted.shared_member()).unwrap()
        ));
        // Other settings: a new entry, with its own `max`, also for `get`.
        lb.update(id, |b| {
            b.labels_mut()
                .insert(LABEL_MAX.to_string(), "3".to_string());
        })
        .unwrap();
        let changed = members.get_member(pick().shared_member()).unwrap();
        assert!(!Arc::ptr_eq(&changed, &first));
        assert_eq!(changed.slots.as_ref().unwrap().available_permits(), 3);
        let by_backend = members.get(id, pick().backend()).unwrap();
        assert!(Arc::ptr_eq(&changed, &by_backend));
        // Each setting the HTTP layer reads is seen when changed: `acquire` too (review 7:
        // the cached settings were kept).
        lb.update(id, |b| {
            b.labels_mut()
                .insert(LABEL_ACQUIRE.to_string(), "0".to_string());
        })
        .unwrap();
        let changed = members.get_member(pick().shared_member()).unwrap();
        assert_eq!(changed.acquire, Some(Duration::ZERO));
    }

    #[test]
    fn parses_command_line_members() {
        let m: MemberSpec =
            "http://127.0.0.1:9001,route=a,loadfactor=3,lbset=1,status=+H,retry=5,max=2,timeout=7"
                .parse()
                .unwrap();
        assert_eq!(m.route.as_deref(), Some("a"));
        assert_eq!(m.loadfactor, 3);
        assert_eq!(m.lbset, 1);
        assert!(m.status.hot_standby);
        assert_eq!(m.retry, Duration::from_secs(5));
        let b = m.to_backend().unwrap();
        assert_eq!(b.weight(), 3);
        assert_eq!(b.role(), Role::HotStandby);
        assert_eq!(b.route(), Some("a"));
        let h = MemberHttp::of(&b).unwrap();
        assert_eq!(h.target.response_timeout, Some(Duration::from_secs(7)));
        assert_eq!(h.slots.as_ref().unwrap().available_permits(), 2);
        assert_eq!(h.acquire, None);
        // `acquire` in milliseconds, as Apache's; 0 is no wait.
        for (spec, wait) in [("acquire=250", 250), ("acquire=0", 0)] {
            let m: MemberSpec = format!("http://127.0.0.1:9001,max=1,{spec}")
                .parse()
                .unwrap();
            let h = MemberHttp::of(&m.to_backend().unwrap()).unwrap();
            assert_eq!(h.acquire, Some(Duration::from_millis(wait)), "{spec}");
        }
    }

    #[test]
    fn a_value_with_a_comma_is_written_in_double_quotes() {
        let m: MemberSpec = r#"http://127.0.0.1:9001,hcmethod=GET,hcbody="ok, ready",route=a"#
            .parse()
            .unwrap();
        assert_eq!(m.route.as_deref(), Some("a"));
        assert!(m.hc.contains(&("hcbody".into(), "ok, ready".into())));
        // Taken as written, spaces and escapes included; JSON with its quotes.
        let m: MemberSpec = r#"http://127.0.0.1:9001,hcmethod=GET,hcbody=" {\"a\":1,\"b\":2} \\ ""#
            .parse()
            .unwrap();
        assert!(
            m.hc.contains(&("hcbody".into(), r#" {"a":1,"b":2} \ "#.into())),
            "{:?}",
            m.hc
        );
        // A value that is not one quoted string is taken as written, as before quoting
        // was read: JSON fields in quotes, a quote inside.
        for (value, want) in [
            (r#""status":"up""#, r#""status":"up""#),
            (r#""ok" x"#, r#""ok" x"#),
            (r#"a"b"#, r#"a"b"#),
        ] {
            let m: MemberSpec =
                format!("http://127.0.0.1:9001,hcmethod=GET,hcbody={value},route=a")
                    .parse()
                    .unwrap();
            assert!(
                m.hc.contains(&("hcbody".into(), want.into())),
                "{value}: {:?}",
                m.hc
            );
            assert_eq!(m.route.as_deref(), Some("a"));
        }
        // An unquoted value is trimmed as before.
        let m: MemberSpec = "http://127.0.0.1:9001, route = a ,max=2".parse().unwrap();
        assert_eq!((m.route.as_deref(), m.max), (Some("a"), Some(2)));
        for (bad, says) in [
            (
                "http://127.0.0.1:9001,hcmethod=GET,hcbody=ok, ready",
                r#"invalid value "ready" for member: expected key=value (a value with a comma is written in double quotes"#,
            ),
            // Not one quoted string: read as written, up to the comma, as before.
            (
                r#"http://127.0.0.1:9001,hcbody="ok, ready"#,
                r#"invalid value "ready" for member: expected key=value"#,
            ),
            (
                "http://127.0.0.1:9001,route=a,",
                "a setting is missing after the last comma",
            ),
            (
                "http://127.0.0.1:9001,",
                "a setting is missing after the last comma",
            ),
            (
                "http://127.0.0.1:9001, ",
                "a setting is missing after the last comma",
            ),
        ] {
            let e = bad.parse::<MemberSpec>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_bad_members() {
        for bad in [
            "ftp://x:1",
            "http://127.0.0.1:9001,loadfactor=101",
            "http://127.0.0.1:9001,route=a b",
            "http://127.0.0.1:9001,status=+X",
            "http://127.0.0.1:9001,colour=red",
            "http://127.0.0.1:9001,retry",
            // A response timeout of 0 would fail every request (it was taken as 1 s).
            "http://127.0.0.1:9001,timeout=0",
            "http://127.0.0.1:9001,acquire=-1",
        ] {
            assert!(bad.parse::<MemberSpec>().is_err(), "{bad}");
        }
        // A misspelt key is named as the problem, not its value.
        let e = "http://127.0.0.1:9001,lodfactor=3"
            .parse::<MemberSpec>()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("unknown setting \"lodfactor\" (known: route, loadfactor,"),
            "{e}"
        );
        // Health-check settings that could never take effect.
        let refused = |spec: &str| {
            spec.parse::<MemberSpec>()
                .unwrap()
                .to_backend()
                .unwrap_err()
                .to_string()
        };
        let e = refused("http://127.0.0.1:9001,hcmethod=HEAD,hcbody=ok");
        assert!(
            e.contains("hcbody") && e.contains("needs hcmethod=GET"),
            "{e}"
        );
        let e = refused("http://127.0.0.1:9001,hcinterval=5,hcfails=3");
        assert!(
            e.contains("hcinterval") && e.contains("without hcmethod"),
            "{e}"
        );
        let e = refused("http://127.0.0.1:9001,hcmethod=TCP,hcuri=/health");
        assert!(e.contains("hcuri") && e.contains("only connects"), "{e}");
        let ok = "http://127.0.0.1:9001,hcmethod=get,hcbody=ok,hcinterval=5";
        assert!(ok.parse::<MemberSpec>().unwrap().to_backend().is_ok());
    }

    #[test]
    fn flags_apply_in_order() {
        let mut f = StatusFlags::default();
        f.apply("+DN-D").unwrap();
        assert!(!f.disabled && f.drain);
    }
}
