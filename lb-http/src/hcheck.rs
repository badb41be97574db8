//! HTTP health checks as Apache's mod_proxy_hcheck has them.
//!
//! A member with `hcmethod` set is checked every `hcinterval` seconds (default 30): `TCP`
//! opens a connection; `OPTIONS`, `HEAD` and `GET` send that request for `hcuri` (default
//! `/`) on a fresh connection and expect a status in `hcexpr` (default `200-399`; a list
//! such as `200,204` or ranges `200-299`) and, when `hcbody` is set, a body containing that
//! text within its first MiB (read until the text is found). `hcfails` consecutive failures
//! take the member down, `hcpasses` consecutive successes bring it back (defaults 1 and 1,
//! as Apache's).
//!
//! [`HttpCheck`] implements lb-core's [`HealthCheck`]; [`HealthRunner`] runs the checks of
//! every member that has them on lb-core's [`Monitor`], which owns the interval and the
//! thresholds and calls [`Balancer::set_health`].

use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lb_core::health::{
    CheckError, HealthCheck, Monitor, MonitorConfig, MonitorGroup, MonitorHandle,
};
use lb_core::{Backend, Balancer};

use crate::error::{Error, Result};
use crate::member::LABEL_HC;
use crate::proxy::Target;

/// `hcmethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HcMethod {
    /// Connect only.
    Tcp,
    /// `OPTIONS`.
    Options,
    /// `HEAD`.
    Head,
    /// `GET`.
    Get,
}

/// One member's check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheckSpec {
    /// `hcmethod`.
    pub method: HcMethod,
    /// `hcuri` (default `/`).
    pub uri: String,
    /// `hcinterval` (default 30 s).
    pub interval: Duration,
    /// `hcpasses` (default 1).
    pub passes: u32,
    /// `hcfails` (default 1).
    pub fails: u32,
    /// `hcexpr`: accepted statuses (default 200-399).
    pub expect: Vec<RangeInclusive<u16>>,
    /// `hcbody`: text the body must contain within its first MiB (GET only).
    pub body: Option<String>,
}

impl HttpCheckSpec {
    /// Checks one setting's value without building a spec.
    pub fn validate(key: &str, value: &str) -> Result<()> {
        let mut spec = HttpCheckSpec::new(HcMethod::Tcp);
        spec.set(key, value)
    }

    /// Defaults for `method`.
    pub fn new(method: HcMethod) -> HttpCheckSpec {
        HttpCheckSpec {
            method,
            uri: "/".into(),
            interval: Duration::from_secs(30),
            passes: 1,
            fails: 1,
            expect: vec![200..=399],
            body: None,
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |reason: &str| Error::Value {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        };
        let count = || value.parse::<u32>().ok().filter(|n| (1..=1000).contains(n));
        match key {
            "hcmethod" => {
                self.method = match value.to_ascii_uppercase().as_str() {
                    "TCP" => HcMethod::Tcp,
                    "OPTIONS" => HcMethod::Options,
                    "HEAD" => HcMethod::Head,
                    "GET" => HcMethod::Get,
                    _ => return Err(bad("expected TCP, OPTIONS, HEAD or GET")),
                }
            }
            "hcuri" => {
                if !value.starts_with('/') || value.parse::<http::uri::PathAndQuery>().is_err() {
                    return Err(bad("expected a path starting with /"));
                }
                self.uri = value.into();
            }
            "hcinterval" => {
                let ms = parse_interval(value)
                    .ok_or_else(|| bad("expected seconds (or NNNms), at least 10ms"))?;
                self.interval = ms;
            }
            "hcpasses" => self.passes = count().ok_or_else(|| bad("expected 1 to 1000"))?,
            "hcfails" => self.fails = count().ok_or_else(|| bad("expected 1 to 1000"))?,
            "hcexpr" => {
                self.expect = parse_statuses(value)
                    .ok_or_else(|| bad("expected statuses like 200,204 or 200-299"))?
            }
            "hcbody" => self.body = Some(value.into()),
            _ => return Err(bad("unknown health-check setting")),
        }
        Ok(())
    }

    /// The spec in a backend's labels, when it has `hcmethod`.
    pub fn from_backend(backend: &Backend) -> Result<Option<HttpCheckSpec>> {
        let labels = backend.labels();
        let Some(method) = labels.get(&format!("{LABEL_HC}hcmethod")) else {
            return Ok(None);
        };
        let mut spec = HttpCheckSpec::new(HcMethod::Tcp);
        spec.set("hcmethod", method)?;
        for (k, v) in labels.range(LABEL_HC.to_string()..) {
            let Some(key) = k.strip_prefix(LABEL_HC) else {
                break;
            };
            if key != "hcmethod" {
                spec.set(key, v)?;
            }
        }
        Ok(Some(spec))
    }
}

fn parse_interval(v: &str) -> Option<Duration> {
    let d = match v.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().ok()?),
        None => Duration::from_secs(v.parse().ok()?),
    };
    (d >= Duration::from_millis(10)).then_some(d)
}

fn parse_statuses(v: &str) -> Option<Vec<RangeInclusive<u16>>> {
    let mut out = Vec::new();
    for part in v.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
        if !(100..=599).contains(&a) || !(a..=599).contains(&b) {
            return None;
        }
        out.push(a..=b);
    }
    (!out.is_empty()).then_some(out)
}

/// An HTTP (or TCP) check of one member.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    spec: HttpCheckSpec,
    target: Target,
}

impl HttpCheck {
    /// A check of the member at `target`.
    pub fn new(spec: HttpCheckSpec, target: Target) -> Self {
        HttpCheck { spec, target }
    }

    async fn run(&self) -> std::result::Result<(), CheckError> {
        let authority = self.target.authority.as_str();
        // As the proxy connects: a URL without a port means the scheme's (80).
        let stream = crate::proxy::pool::open(&self.target.authority)
            .await
            .map_err(|e| CheckError::connect(&authority, &e))?;
        let method = match self.spec.method {
            HcMethod::Tcp => return Ok(()),
            HcMethod::Options => http::Method::OPTIONS,
            HcMethod::Head => http::Method::HEAD,
            HcMethod::Get => http::Method::GET,
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CheckError::Connect(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let uri = format!("{}{}", self.target.path, self.spec.uri);
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, "lb-http-hcheck")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| CheckError::Setup(e.to_string()))?;
        let result = async {
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| CheckError::Unexpected(e.to_string()))?;
            let status = resp.status().as_u16();
            if !self.spec.expect.iter().any(|r| r.contains(&status)) {
                return Err(CheckError::Unexpected(format!("status {status}")));
            }
            if let Some(want) = &self.spec.body {
                return body_has(resp.into_body(), want.as_bytes()).await;
            }
            Ok(())
        }
        .await;
        conn.abort();
        result
    }
}

/// How much of a body `hcbody` is looked for in.
const BODY_LIMIT: usize = 1 << 20;

/// Reads `body` until `want` is found in it (the check passes there, whatever follows), it
/// ends, or [`BODY_LIMIT`] bytes were read without it.
async fn body_has<B>(mut body: B, want: &[u8]) -> Result<(), CheckError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if want.is_empty() {
        return Ok(());
    }
    // Linear in the body whatever the text (a naive search of a 4 KiB text in 1 MiB is
    // billions of comparisons).
    let finder = memchr::memmem::Finder::new(want);
    // The bytes not looked through in full yet: the end of what was read, where `want` may
    // begin and continue in the next frame.
    let mut held: Vec<u8> = Vec::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CheckError::Unexpected(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let data = &data[..data.len().min(BODY_LIMIT - read)];
        read += data.len();
        held.extend_from_slice(data);
        if finder.find(&held).is_some() {
            return Ok(());
        }
        if read == BODY_LIMIT {
            return Err(CheckError::Unexpected(format!(
                "body lacks {:?} in its first MiB",
                String::from_utf8_lossy(want)
            )));
        }
        let keep = held.len().min(want.len() - 1);
        held.drain(..held.len() - keep);
    }
    Err(CheckError::Unexpected(format!(
        "body lacks {:?}",
        String::from_utf8_lossy(want)
    )))
}

impl HealthCheck for HttpCheck {
    fn check(
        &self,
        _target: &Backend,
    ) -> impl std::future::Future<Output = std::result::Result<(), CheckError>> + Send {
        self.run()
    }
}

/// The settings a [`Monitor`] owns: `hcinterval`, `hcpasses`, `hcfails`.
type Schedule = (Duration, u32, u32);

/// The shortest time a check is given, whatever its interval.
const CHECK_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

fn schedule_of(spec: &HttpCheckSpec) -> Schedule {
    (spec.interval, spec.passes, spec.fails)
}

/// A member's schedule; `None` without checks or with settings that do not parse.
fn backend_schedule(backend: &Backend) -> Option<Schedule> {
    HttpCheckSpec::from_backend(backend)
        .ok()
        .flatten()
        .map(|s| schedule_of(&s))
}

/// The check of one member: its own [`HttpCheck`], built from its labels at every run so
/// that `hcuri`, `hcexpr`, `hcbody` and address changes apply at the next check.
#[derive(Debug)]
struct MemberCheck;

impl MemberCheck {
    async fn run(backend: &Backend) -> std::result::Result<(), CheckError> {
        let spec = match HttpCheckSpec::from_backend(backend) {
            Ok(Some(spec)) => spec,
            Ok(None) => return Ok(()),
            Err(e) => return Err(CheckError::Setup(e.to_string())),
        };
        let member =
            crate::member::MemberHttp::of(backend).map_err(|e| CheckError::Setup(e.to_string()))?;
        HttpCheck::new(spec, member.target).run().await
    }
}

impl HealthCheck for MemberCheck {
    fn check(
        &self,
        target: &Backend,
    ) -> impl std::future::Future<Output = std::result::Result<(), CheckError>> + Send {
        MemberCheck::run(target)
    }
}

/// Runs the checks of every member of a balancer that has `hcmethod` set on lb-core's
/// [`Monitor`]: `hcinterval` is the monitor's interval, `hcpasses` its rise and `hcfails`
/// its fall. Members with different settings get one monitor per distinct
/// (`hcinterval`, `hcpasses`, `hcfails`), each [restricted](Monitor::only) to its own
/// members; a member added or changed later (balancer manager, reload) joins the monitor of
/// its settings, started on demand. A member whose settings move it to another monitor keeps
/// its health: a down member stays down until its new monitor's checks bring it up.
#[derive(Debug)]
pub struct HealthRunner {
    balancer: Balancer,
    timeout: Duration,
    group: MonitorGroup,
}

/// The running checks of a [`HealthRunner`]; dropping it stops them.
#[derive(Debug)]
pub struct HealthChecks {
    monitors: std::sync::Arc<std::sync::Mutex<Vec<(Schedule, MonitorHandle)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthChecks {
    /// The check status of member `id`, when one of the monitors checks it.
    pub fn status_of(&self, id: lb_core::BackendId) -> Option<lb_core::health::CheckStatus> {
        let monitors = self
            .monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        monitors.iter().find_map(|(_, h)| h.status_of(id))
    }

    /// How many monitors run (one per distinct `hcinterval`/`hcpasses`/`hcfails`).
    pub fn monitors(&self) -> usize {
        self.monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.task.abort();
        // The monitors stop when their handles drop with the last reference.
        self.monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl HealthRunner {
    /// A runner for `balancer`'s members; each check gives up after `timeout`, or after the
    /// member's `hcinterval` when that is shorter (but not under one second).
    pub fn new(balancer: Balancer, timeout: Duration) -> Self {
        HealthRunner {
            balancer,
            timeout,
            // Every member with checks has a monitor, or gets one.
            group: MonitorGroup::new(|b| backend_schedule(b).is_some()),
        }
    }

    fn monitor(&self, schedule: Schedule) -> Result<MonitorHandle> {
        let (interval, passes, fails) = schedule;
        // A check gives up after its interval, as HAProxy's does without `timeout check`,
        // but after no less than CHECK_TIMEOUT_FLOOR: a member that stops answering is down
        // after about `hcfails` intervals rather than `hcfails` times the runner's timeout,
        // and a healthy member whose health page takes longer than a short interval (the
        // interval is the pause between checks) is not taken down for it.
        let config = MonitorConfig::default()
            .with_interval(interval)
            .with_timeout(self.timeout.min(interval.max(CHECK_TIMEOUT_FLOOR)))
            .with_thresholds(passes, fails);
        let monitor = Monitor::new(self.balancer.clone(), MemberCheck, config)
            .map_err(|e| Error::Value {
                key: "hcinterval".into(),
                value: format!("{interval:?}"),
                reason: e.to_string(),
            })?
            .only(move |b| backend_schedule(b) == Some(schedule))
            .in_group(&self.group);
        Ok(monitor.spawn())
    }

    /// Starts a monitor for every schedule of `members` that has none yet.
    fn cover(&self, monitors: &std::sync::Mutex<Vec<(Schedule, MonitorHandle)>>) -> Result<()> {
        // A member whose settings do not parse is reported; the others are covered anyway.
        let mut wanted: Vec<Schedule> = Vec::new();
        let mut bad = None;
        for m in self.balancer.members() {
            match HttpCheckSpec::from_backend(m.backend()) {
                Ok(Some(spec)) => {
                    let s = schedule_of(&spec);
                    if !wanted.contains(&s) {
                        wanted.push(s);
                    }
                }
                Ok(None) => {}
                Err(e) => bad = bad.or(Some(e)),
            }
        }
        let mut monitors = monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in wanted {
            if !monitors.iter().any(|(have, _)| *have == s) {
                match self.monitor(s) {
                    Ok(handle) => monitors.push((s, handle)),
                    Err(e) => bad = bad.or(Some(e)),
                }
            }
        }
        bad.map_or(Ok(()), Err)
    }

    /// Starts the monitors, and a task that starts more when members with new settings
    /// appear; they run until the returned [`HealthChecks`] is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when a member has a bad health-check setting, or a setting lb-core's
    /// monitor refuses. (A member added later with a bad setting is reported in the log
    /// and left unchecked.)
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn spawn(self) -> Result<HealthChecks> {
        let monitors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        self.cover(&monitors)?;
        let mut events = self.balancer.subscribe();
        let shared = monitors.clone();
        let task = tokio::spawn(async move {
            let mut missed = 0;
            while let Some(e) = events.recv().await {
                // An update that also changes the weight is reported as `Weight` only: a
                // reload that adds a check and changes the loadfactor in one line is one.
                // Events missed (a burst of changes) may have held such a change.
                let changed = matches!(
                    e.kind,
                    lb_core::EventKind::Added(_)
                        | lb_core::EventKind::Updated
                        | lb_core::EventKind::Weight(_)
                ) || events.missed() != missed;
                missed = events.missed();
                if changed && let Err(err) = self.cover(&shared) {
                    tracing::warn!(member = %e.backend, "health check not started: {err}");
                }
            }
        });
        Ok(HealthChecks { monitors, task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: Vec<Vec<u8>>) -> impl http_body::Body<Data = Bytes, Error = String> + Unpin {
        http_body_util::StreamBody::new(futures_util::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, String>(http_body::Frame::data(Bytes::from(p)))),
        ))
    }

    #[tokio::test]
    async fn hcbody_is_looked_for_as_the_body_arrives() {
        let has = |parts: Vec<Vec<u8>>, want: &'static str| async move {
            body_has(frames(parts), want.as_bytes()).await
        };
        // Found in one frame, or split across frames.
        assert!(
            has(vec![b"status: OK-HEALTHY".to_vec()], "OK-HEALTHY")
                .await
                .is_ok()
        );
        assert!(
            has(
                vec![b"xx OK-HE".to_vec(), b"AL".to_vec(), b"THY".to_vec()],
                "OK-HEALTHY"
            )
            .await
            .is_ok()
        );
        // At the start of a page far over the limit: found without reading the rest (the
        // seventh QA pass: a 2 MiB page failed with "length limit exceeded").
        let big = vec![b"OK-HEALTHY".to_vec(), vec![b'.'; 2 << 20]];
        assert!(has(big, "OK-HEALTHY").await.is_ok());
        // Absent, or past the first MiB.
        let e = has(vec![b"no".to_vec()], "OK")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("body lacks \"OK\""), "{e}");
        let late = vec![vec![b'.'; 1 << 20], b"OK".to_vec()];
        let e = has(late, "OK").await.unwrap_err().to_string();
        assert!(e.contains("in its first MiB"), "{e}");
    }

    #[test]
    fn parses_settings() {
        let mut s = HttpCheckSpec::new(HcMethod::Tcp);
        s.set("hcmethod", "get").unwrap();
        s.set("hcexpr", "200,204-206").unwrap();
        s.set("hcinterval", "250ms").unwrap();
        assert_eq!(s.method, HcMethod::Get);
        assert_eq!(s.expect, vec![200..=200, 204..=206]);
        assert_eq!(s.interval, Duration::from_millis(250));
        for (k, v) in [
            ("hcmethod", "PUT"),
            ("hcuri", "x"),
            ("hcexpr", "99"),
            ("hcfails", "0"),
            ("hcinterval", "1ms"),
        ] {
            assert!(s.set(k, v).is_err(), "{k}={v}");
        }
    }

    /// A port nothing listens on, held bound (without listening) for as long as the socket
    /// lives: connections to it are refused, and no other test can take it meanwhile.
    fn closed_port() -> (socket2::Socket, u16) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        (s, port)
    }

    /// A balancer of one member at `addr`, checked with GET every 100 ms, down at 2 failures.
    fn fast_checked(addr: std::net::SocketAddr) -> (Balancer, lb_core::BackendId) {
        let mut m = crate::member::MemberSpec::new(format!("http://{addr}"));
        for (k, v) in [
            ("hcmethod", "GET"),
            ("hcinterval", "100ms"),
            ("hcfails", "2"),
        ] {
            m.set(k, v).unwrap();
        }
        let lb = Balancer::builder()
            .backend(m.to_backend().unwrap())
            .build()
            .unwrap();
        let id = lb.members()[0].id();
        (lb, id)
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_member_slower_than_its_interval_stays_up() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Answers every check with 200, after 300 ms (a health page that asks a database).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        let (lb, id) = fast_checked(addr);
        let _checks = HealthRunner::new(lb.clone(), Duration::from_secs(5))
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(lb.get(id).unwrap().state().health(), lb_core::Health::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_that_stops_answering_is_down_within_its_intervals() {
        // Connections to it complete (the kernel accepts them) and never get an answer.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (lb, id) = fast_checked(hung.local_addr().unwrap());
        let started = tokio::time::Instant::now();
        let _checks = HealthRunner::new(lb.clone(), Duration::from_secs(5))
            .spawn()
            .unwrap();
        for _ in 0..2000 {
            if lb.get(id).unwrap().state().health() == lb_core::Health::Down {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lb.get(id).unwrap().state().health(), lb_core::Health::Down);
        // Two checks of at most 1 s each (the floor), 100 ms apart; not two of 5 s.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "down after {took:?}");
        drop(hung);
    }

    #[tokio::test]
    async fn each_member_keeps_its_own_interval_and_thresholds() {
        let held = std::sync::Mutex::new(Vec::new());
        let member = |settings: &[(&str, &str)]| {
            let (socket, port) = closed_port();
            held.lock().unwrap().push(socket);
            let mut m = crate::member::MemberSpec::new(format!("http://127.0.0.1:{port}"));
            for (k, v) in settings {
                m.set(k, v).unwrap();
            }
            m.to_backend().unwrap()
        };
        // Both unreachable: the first falls at its first failed check; the second needs three
        // failures an hour apart; the third has no checks.
        let fast = member(&[
            ("hcmethod", "TCP"),
            ("hcinterval", "50ms"),
            ("hcfails", "1"),
        ]);
        let slow = member(&[
            ("hcmethod", "GET"),
            ("hcinterval", "3600"),
            ("hcfails", "3"),
        ]);
        let none = member(&[]);
        let lb = Balancer::builder()
            .backends([fast, slow, none])
            .build()
            .unwrap();
        let ids: Vec<_> = lb.members().iter().map(|m| m.id()).collect();
        let checks = HealthRunner::new(lb.clone(), Duration::from_secs(5))
            .spawn()
            .unwrap();
        assert_eq!(checks.monitors(), 2, "one monitor per distinct setting");
        let health = |i: usize| lb.get(ids[i]).unwrap().state().health();
        for _ in 0..500 {
            if health(0) == lb_core::Health::Down {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(health(0), lb_core::Health::Down);
        // The slow member's first check has failed by now, and once is not enough.
        for _ in 0..500 {
            if checks.status_of(ids[1]).is_some_and(|s| s.failures > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let slow_status = checks
            .status_of(ids[1])
            .expect("the slow member is checked");
        assert_eq!(slow_status.failures, 1);
        assert_eq!(health(1), lb_core::Health::Up);
        assert!(checks.status_of(ids[2]).is_none(), "no hcmethod, no checks");
        assert_eq!(health(2), lb_core::Health::Up);

        // A member added later with settings of its own gets a monitor of its own.
        let late = lb
            .add(member(&[
                ("hcmethod", "TCP"),
                ("hcinterval", "40ms"),
                ("hcfails", "1"),
            ]))
            .unwrap();
        for _ in 0..500 {
            if lb.get(late).unwrap().state().health() == lb_core::Health::Down {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            lb.get(late).unwrap().state().health(),
            lb_core::Health::Down
        );
        assert_eq!(checks.monitors(), 3);
        assert_eq!(health(2), lb_core::Health::Up);

        // The unchecked member given a check of its own and a new weight in one update (lb-core
        // reports it as a weight change): a monitor for its settings starts.
        let checked = member(&[
            ("hcmethod", "TCP"),
            ("hcinterval", "30ms"),
            ("hcfails", "1"),
        ]);
        lb.update(ids[2], |b| {
            for (k, v) in checked.labels().iter().filter(|(k, _)| k.starts_with("hc")) {
                b.labels_mut().insert(k.clone(), v.clone());
            }
            b.set_weight(5);
        })
        .unwrap();
        for _ in 0..500 {
            if health(2) == lb_core::Health::Down {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(checks.monitors(), 4);
        assert_eq!(health(2), lb_core::Health::Down);

        // The down fast member moved to the slow member's settings (a reload changing its
        // `hcinterval` and `hcfails`): still down after its new monitor's first failed
        // check, which alone would not take an up member down.
        lb.update(ids[0], |b| {
            b.labels_mut()
                .insert(format!("{LABEL_HC}hcinterval"), "3600".into());
            b.labels_mut()
                .insert(format!("{LABEL_HC}hcfails"), "3".into());
        })
        .unwrap();
        for _ in 0..500 {
            if checks
                .status_of(ids[0])
                .is_some_and(|s| s.checks > 0 && s.failures == 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let moved = checks
            .status_of(ids[0])
            .expect("checked by its new monitor");
        assert_eq!((moved.checks, moved.failures), (1, 1));
        assert_eq!(
            health(0),
            lb_core::Health::Down,
            "its health restarted on the move"
        );
        assert_eq!(checks.monitors(), 4);
    }

    #[tokio::test]
    async fn a_member_url_without_a_port_is_checked_on_port_80() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An address of loopback of this test's own, so that port 80 is free there.
        let listener = match tokio::net::TcpListener::bind("127.0.0.95:80").await {
            Ok(l) => l,
            Err(e) => {
                println!("skipped: cannot listen on 127.0.0.95:80: {e}");
                return;
            }
        };
        let server = tokio::spawn(async move {
            let mut hosts = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                hosts.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
                        .map(str::to_string),
                );
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
            hosts
        });
        let target = Target::from_url("http://127.0.0.95").unwrap();
        for method in [HcMethod::Tcp, HcMethod::Get] {
            let check = HttpCheck::new(HttpCheckSpec::new(method), target.clone());
            let result = tokio::time::timeout(Duration::from_secs(10), check.run()).await;
            assert!(matches!(result, Ok(Ok(()))), "{method:?}: {result:?}");
        }
        let hosts = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server saw two connections within 10 s")
            .unwrap();
        assert_eq!(hosts, ["host: 127.0.0.95"]);
    }

    #[tokio::test]
    async fn checks_a_real_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for i in 0..4 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp: &[u8] = if i % 2 == 0 {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nhealthy"
                } else {
                    b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = s.write_all(resp).await;
            }
        });
        let target = Target::from_url(&format!("http://{addr}")).unwrap();
        let mut spec = HttpCheckSpec::new(HcMethod::Get);
        spec.body = Some("healthy".into());
        let check = HttpCheck::new(spec.clone(), target.clone());
        assert!(check.run().await.is_ok());
        assert!(matches!(check.run().await, Err(CheckError::Unexpected(_))));
        spec.body = Some("nope".into());
        let check = HttpCheck::new(spec, target);
        assert!(check.run().await.is_err());
    }
}
