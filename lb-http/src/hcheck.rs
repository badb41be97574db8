//! HTTP health checks as Apache's mod_proxy_hcheck has them.
//!
//! A member with `hcmethod` set is checked every `hcinterval` seconds (default 30): `TCP`
//! opens a connection; `OPTIONS`, `HEAD` and `GET` send that request for `hcuri` (default
//! `/`) on a fresh connection and expect a status in `hcexpr` (default `200-399`; a list
//! such as `200,204` or ranges `200-299`) and, when `hcbody` is set, a body containing that
//! text. `hcfails` consecutive failures take the member down, `hcpasses` consecutive
//! successes bring it back (defaults 1 and 1, as Apache's).
//!
//! [`HttpCheck`] implements lb-core's [`HealthCheck`]; [`HealthRunner`] runs the checks of
//! every member that has them on lb-core's [`Monitor`], which owns the interval and the
//! thresholds and calls [`Balancer::set_health`].

use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lb_core::health::{CheckError, HealthCheck, Monitor, MonitorConfig, MonitorHandle};
use lb_core::{Backend, Balancer};
use tokio::net::TcpStream;

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
    /// `hcbody`: text the body must contain (GET only).
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
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| CheckError::Connect(format!("{authority}: {e}")))?;
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
                // Bounded: a check reads at most 1 MiB of body.
                let limited = http_body_util::Limited::new(resp.into_body(), 1 << 20);
                let body = limited
                    .collect()
                    .await
                    .map_err(|e| CheckError::Unexpected(e.to_string()))?
                    .to_bytes();
                if !String::from_utf8_lossy(&body).contains(want.as_str()) {
                    return Err(CheckError::Unexpected(format!("body lacks {want:?}")));
                }
            }
            Ok(())
        }
        .await;
        conn.abort();
        result
    }
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

fn schedule_of(spec: &HttpCheckSpec) -> Schedule {
    (spec.interval, spec.passes, spec.fails)
}

/// The check one [`Monitor`] runs: the member's own [`HttpCheck`] when its settings have
/// this monitor's schedule. Any other member passes without being contacted, so this
/// monitor never changes its health (a monitor acts only on failures of an up member or
/// successes of one it took down itself).
#[derive(Debug)]
struct ScheduledCheck {
    schedule: Schedule,
}

impl ScheduledCheck {
    async fn run(&self, backend: &Backend) -> std::result::Result<(), CheckError> {
        let spec = match HttpCheckSpec::from_backend(backend) {
            Ok(Some(spec)) if schedule_of(&spec) == self.schedule => spec,
            _ => return Ok(()),
        };
        let member =
            crate::member::MemberHttp::of(backend).map_err(|e| CheckError::Setup(e.to_string()))?;
        HttpCheck::new(spec, member.target).run().await
    }
}

impl HealthCheck for ScheduledCheck {
    fn check(
        &self,
        target: &Backend,
    ) -> impl std::future::Future<Output = std::result::Result<(), CheckError>> + Send {
        self.run(target)
    }
}

/// Runs the checks of every member of a balancer that has `hcmethod` set on lb-core's
/// [`Monitor`]: `hcinterval` is the monitor's interval, `hcpasses` its rise and `hcfails`
/// its fall. Members with different settings get one monitor per distinct
/// (`hcinterval`, `hcpasses`, `hcfails`), each checking only its own members.
///
/// The monitors are chosen from the members present at [`spawn`](Self::spawn); a member
/// added later is checked when its settings match one of them, and otherwise not checked
/// (lb-core's monitor cannot be restricted to some members, and a monitor started later
/// would reset every member's health). lb-balancer builds a new runner on every reload.
#[derive(Debug)]
pub struct HealthRunner {
    balancer: Balancer,
    timeout: Duration,
}

impl HealthRunner {
    /// A runner for `balancer`; each check has `timeout` to finish.
    pub fn new(balancer: Balancer, timeout: Duration) -> Self {
        HealthRunner { balancer, timeout }
    }

    /// Starts the monitors; they run until their handles are shut down or dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Value`] when a member has a bad health-check setting, or a setting lb-core's
    /// monitor refuses.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn spawn(self) -> Result<Vec<MonitorHandle>> {
        let mut schedules: Vec<Schedule> = Vec::new();
        for m in self.balancer.members() {
            if let Some(spec) = HttpCheckSpec::from_backend(m.backend())? {
                let s = schedule_of(&spec);
                if !schedules.contains(&s) {
                    schedules.push(s);
                }
            }
        }
        let mut handles = Vec::with_capacity(schedules.len());
        for schedule @ (interval, passes, fails) in schedules.iter().copied() {
            let config = MonitorConfig::default()
                .with_interval(interval)
                .with_timeout(self.timeout)
                .with_thresholds(passes, fails);
            let monitor = Monitor::new(self.balancer.clone(), ScheduledCheck { schedule }, config)
                .map_err(|e| Error::Value {
                    key: "hcinterval".into(),
                    value: format!("{interval:?}"),
                    reason: e.to_string(),
                })?;
            handles.push(monitor.spawn());
        }
        Ok(handles)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

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
