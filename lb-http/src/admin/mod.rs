//! The admin service: Apache's balancer-manager page, a JSON API with the same data and
//! actions, and Prometheus metrics. Mount it anywhere (it only looks at the path after
//! [`ManagerConfig::prefix`]):
//!
//! | path | what |
//! |---|---|
//! | `/` (GET) | the HTML page: balancers, members (route, factor, set, status flags, elected, busy, bytes, health), a form per member and one to add a member |
//! | `/` (POST) | a form submission; answers `303 See Other` back to the page |
//! | `/api` (GET) | the same data as JSON |
//! | `/api` (POST) | a JSON action: `{"nonce", "balancer", "member", "loadfactor", "lbset", "route", "status", "add"}` (`member`: the id as `/api` lists it, or the URL) |
//! | `/metrics` | Prometheus text format: per member (labels `balancer`, `member`) requests, busy, bytes, up, usable, loadfactor; `lb_member_info` carries the route and lbset |
//!
//! An action is checked whole before anything is applied: one refused value changes nothing,
//! and the error names the field (the form's, such as `lf`, or the JSON key) and the value.
//!
//! Changes must carry the manager's nonce (Apache's balancer-manager does the same against
//! cross-site request forgery): the page puts it in each form, the JSON API returns it.
//! Only loopback clients are served unless [`ManagerConfig::allow_remote`] is set, and
//! whatever the client, only requests naming an IP address, `localhost` or one of
//! [`ManagerConfig::hosts`] in their `Host` header (403 otherwise), against DNS rebinding: a
//! web page whose name was pointed at the manager's address would be same-origin with it,
//! read the nonce and post changes. For the same reason a POST must come from the page's
//! own origin (an `Origin` header, when sent, must match the `Host`), and its body must be
//! `application/x-www-form-urlencoded` for the form and `application/json` for `/api`
//! (415 otherwise), which a cross-site page cannot send without the browser asking first.
//!
//! A program can add read-only sections of its own status with
//! [`Manager::with_section`] (lb-balancer shows its high-availability node's role this
//! way): each is a table on the page and a key of the `/api` object.
//!
//! Status flags are Apache's: `D` disabled, `N` drain (sticky traffic only), `H` hot standby,
//! `I` ignore errors, `S` stopped; `E` (in error) and health are shown, not set.

mod html;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use lb_core::{BackendId, Balancer, Health};
use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::body::{ProxyBody, full};
pub use crate::error::AdminError;
use crate::headers::ClientInfo;
use crate::member::{LABEL_URL, MemberSpec};

/// Where the manager finds the balancers it shows (called per request, so reloads show).
pub type Source = Arc<dyn Fn() -> Vec<(String, Balancer)> + Send + Sync>;

/// Where a section added with [`Manager::with_section`] gets its data (called per
/// request). An object is shown on the page as one row per field.
pub type SectionSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A read-only section of status from outside the balancers.
#[derive(Clone)]
struct Section {
    key: String,
    title: String,
    source: SectionSource,
}

/// Settings of the [`Manager`].
#[derive(Debug, Clone, Default)]
pub struct ManagerConfig {
    /// The path the manager is mounted on (`""` for `/`, or e.g. `/balancer-manager`).
    pub prefix: String,
    /// Serve clients that are not on loopback.
    pub allow_remote: bool,
    /// Host names the manager answers to besides IP addresses and `localhost` (compared
    /// without case, port or trailing dot), e.g. `lb1.example.net`. Whatever the client's
    /// address, a request naming another host in its `Host` header is refused: against DNS
    /// rebinding, where a web page the operator opens gives its own name the manager's
    /// address and could then read the nonce and post changes as a same-origin page.
    pub hosts: Vec<String>,
}

/// The admin service. Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    source: Source,
    config: Arc<ManagerConfig>,
    nonce: Arc<str>,
    sections: Arc<Vec<Section>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One member as shown by the manager and the JSON API.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// Member id in its balancer.
    pub id: u32,
    /// The member URL.
    pub url: String,
    /// Route name.
    pub route: String,
    /// Load factor (weight).
    pub loadfactor: u32,
    /// lbset.
    pub lbset: u32,
    /// Status flags, Apache style (`Ok`, `Dis`, `Drn`, `Stby`, `Ign`, `Stop`, `Err`, `HcFl`,
    /// and `Lf0` for loadfactor 0: sticky sessions only).
    pub status: String,
    /// Individual flags.
    pub flags: Flags,
    /// Requests sent (Apache "Elected").
    pub elected: u64,
    /// Requests in flight (Apache "Busy").
    pub busy: u32,
    /// Bytes sent to the member.
    pub bytes_to: u64,
    /// Bytes received from the member.
    pub bytes_from: u64,
    /// Health: `up` or `down`, and the check method if any.
    pub health: String,
    /// Seconds the member stays in error, if it is.
    pub error_for: Option<f64>,
}

/// The settable flags.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Flags {
    /// D.
    pub disabled: bool,
    /// N.
    pub drain: bool,
    /// H.
    pub hot_standby: bool,
    /// I.
    pub ignore_errors: bool,
    /// S.
    pub stopped: bool,
}

/// Checks a name for [`ManagerConfig::hosts`]: a DNS name (letters, digits, hyphens and
/// dots), without scheme, port or path, which a `Host` header could never match.
pub fn check_host_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(AdminError::HostName(name.to_string()))
    }
}

/// The lbmethod name a balancer was configured with, and lb-core's name of the scheduler
/// it named then (see [`set_lbmethod_name`]).
#[derive(Debug, Default)]
struct LbMethodName(std::sync::Mutex<Option<(String, String)>>);

/// Names the lbmethod of `balancer` as its configuration does (`byrequests`): the manager
/// page and the JSON show that name instead of lb-core's name for the scheduler (`wrr`),
/// for as long as the balancer keeps the scheduler it has now.
pub fn set_lbmethod_name(balancer: &Balancer, name: &str) {
    let named = balancer.attached(LbMethodName::default);
    let mut named = named.0.lock().unwrap_or_else(|e| e.into_inner());
    *named = Some((name.to_string(), balancer.scheduler().name().to_string()));
}

/// The name [`set_lbmethod_name`] gave, while the scheduler is the one it named; else
/// lb-core's.
fn lbmethod_name(balancer: &Balancer) -> String {
    let scheduler = balancer.scheduler().name().to_string();
    let named = balancer.attached(LbMethodName::default);
    let named = named.0.lock().unwrap_or_else(|e| e.into_inner());
    match &*named {
        Some((name, of)) if *of == scheduler => name.clone(),
        _ => scheduler,
    }
}

/// One balancer as shown.
#[derive(Debug, Clone, Serialize)]
pub struct BalancerView {
    /// Its name.
    pub name: String,
    /// Its scheduler.
    pub lbmethod: String,
    /// Its members.
    pub members: Vec<MemberView>,
}

/// A change, from a form or the JSON API. It is checked whole before anything is applied:
/// a refused value leaves every member as it was. An unknown field is refused too: a
/// misspelt one (`wieght`) would otherwise change nothing and still report success.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The nonce (missing is refused like a wrong one).
    #[serde(default)]
    pub nonce: String,
    /// The balancer's name.
    pub balancer: String,
    /// The member id (as `/api` lists it: in JSON a number or a string) or URL.
    #[serde(default, deserialize_with = "member_id")]
    pub member: Option<String>,
    /// New load factor.
    #[serde(default)]
    pub loadfactor: Option<u32>,
    /// New lbset.
    #[serde(default)]
    pub lbset: Option<u32>,
    /// New route (empty clears it).
    #[serde(default)]
    pub route: Option<String>,
    /// Flag changes such as `+D-N`.
    #[serde(default)]
    pub status: Option<String>,
    /// A member to add: `URL[,key=value...]`.
    #[serde(default)]
    pub add: Option<String>,
}

impl Manager {
    /// A manager over the balancers `source` returns.
    pub fn new(source: Source, config: ManagerConfig) -> Manager {
        let mut nonce = String::new();
        for b in rand::random::<[u8; 16]>() {
            let _ = write!(nonce, "{b:02x}");
        }
        Manager {
            source,
            config: Arc::new(config),
            nonce: nonce.into(),
            sections: Arc::new(Vec::new()),
        }
    }

    /// Adds a read-only section: on the page a table titled `title` (one row per field
    /// of the object `source` returns; `id="section-KEY"`), in `/api` the value under
    /// `key`. The keys `nonce` and `balancers` are the manager's own and are refused.
    pub fn with_section(
        mut self,
        key: impl Into<String>,
        title: impl Into<String>,
        source: SectionSource,
    ) -> Result<Manager, AdminError> {
        let key = key.into();
        if key == "nonce" || key == "balancers" || self.sections.iter().any(|s| s.key == key) {
            return Err(AdminError::Section(key));
        }
        Arc::make_mut(&mut self.sections).push(Section {
            key,
            title: title.into(),
            source,
        });
        Ok(self)
    }

    /// The sections' current data: `(key, title, value)`.
    fn sections(&self) -> Vec<(String, String, serde_json::Value)> {
        self.sections
            .iter()
            .map(|s| (s.key.clone(), s.title.clone(), (s.source)()))
            .collect()
    }

    /// The nonce changes must carry.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The current data.
    pub fn view(&self) -> Vec<BalancerView> {
        (self.source)()
            .into_iter()
            .map(|(name, b)| BalancerView {
                name,
                lbmethod: lbmethod_name(&b),
                members: b.members().iter().map(|m| member_view(m)).collect(),
            })
            .collect()
    }

    /// Applies an action: every value is checked first, so a refused one changes nothing.
    pub fn apply(&self, a: &Action) -> Result<(), AdminError> {
        if a.nonce != *self.nonce {
            return Err(AdminError::Nonce);
        }
        let balancers = (self.source)();
        let (_, b) = balancers
            .iter()
            .find(|(n, _)| *n == a.balancer)
            .ok_or_else(|| AdminError::NoBalancer(a.balancer.clone()))?;
        let add = match a.add.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(spec) => {
                let spec: MemberSpec = spec.parse()?;
                let backend = spec.to_backend()?;
                Some((spec, backend))
            }
            None => None,
        };
        // Every step in one lb-core edit: other changes (a reload, another action) wait for
        // it, and a refused step (an address already a member's, a member a reload removed
        // meanwhile) leaves the balancer as it was.
        let mut edit = b.edit();
        let change = match a.member.as_deref().filter(|m| !m.is_empty()) {
            Some(member) => {
                let m = edit
                    .members()
                    .iter()
                    .find(|m| {
                        member.parse::<u32>().ok() == Some(m.id().0)
                            || m.backend().labels().get(LABEL_URL).map(String::as_str)
                                == Some(member)
                    })
                    .ok_or_else(|| AdminError::NoMember(member.to_string()))?;
                Some((member, m.id(), Change::check(a, m)?))
            }
            None => None,
        };
        let added = match add {
            Some((spec, backend)) => {
                let id = edit.add(backend)?;
                spec.status.set_in(&mut edit, id)?;
                Some((spec.url, id))
            }
            None => None,
        };
        if let Some((_, id, change)) = &change {
            change.apply(&mut edit, *id)?;
        }
        // Routes are checked in the edit, under the balancer's write lock: no other change
        // can give a member the same route between this check and the commit.
        let added_id = added.as_ref().map(|(_, id)| *id);
        for id in change.iter().map(|(_, id, _)| *id).chain(added_id) {
            check_route_unique(edit.members(), id)?;
        }
        let added = added.map(|(url, _)| url);
        edit.commit();
        if let Some((member, _, _)) = change {
            tracing::info!("manager: changed member {member} of {}", a.balancer);
        }
        if let Some(url) = added {
            tracing::info!("manager: added member {url} to {}", a.balancer);
        }
        Ok(())
    }

    /// Prometheus text.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let views = self.view();
        let series: [Series; 7] = [
            (
                "lb_member_requests_total",
                "counter",
                "Requests sent to the member.",
                |m| m.elected as f64,
            ),
            (
                "lb_member_busy",
                "gauge",
                "Requests in flight on the member.",
                |m| f64::from(m.busy),
            ),
            (
                "lb_member_bytes_to_total",
                "counter",
                "Bytes sent to the member.",
                |m| m.bytes_to as f64,
            ),
            (
                "lb_member_bytes_from_total",
                "counter",
                "Bytes received from the member.",
                |m| m.bytes_from as f64,
            ),
            (
                "lb_member_up",
                "gauge",
                "1 when the member's health is up.",
                |m| if m.health.starts_with("up") { 1.0 } else { 0.0 },
            ),
            (
                "lb_member_usable",
                "gauge",
                "1 when the member takes new requests (a hot standby as a standby).",
                |m| if usable(m) { 1.0 } else { 0.0 },
            ),
            (
                "lb_member_loadfactor",
                "gauge",
                "The member's load factor.",
                |m| f64::from(m.loadfactor),
            ),
        ];
        for (name, kind, help, f) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for b in &views {
                for m in &b.members {
                    let _ = writeln!(
                        out,
                        "{name}{{balancer=\"{}\",member=\"{}\"}} {}",
                        prom_escape(&b.name),
                        prom_escape(&m.url),
                        f(m)
                    );
                }
            }
        }
        // The route is an attribute that the manager can change: in a label of every
        // series it would start new series (and restart the counters) when it changes. It
        // goes in an info series to join on instead, as Prometheus exporters do.
        let name = "lb_member_info";
        let _ = writeln!(
            out,
            "# HELP {name} The member's route and lbset (always 1).\n# TYPE {name} gauge"
        );
        for b in &views {
            for m in &b.members {
                let _ = writeln!(
                    out,
                    "{name}{{balancer=\"{}\",member=\"{}\",route=\"{}\",lbset=\"{}\"}} 1",
                    prom_escape(&b.name),
                    prom_escape(&m.url),
                    prom_escape(&m.route),
                    m.lbset
                );
            }
        }
        out
    }

    async fn handle(self, req: Request<ProxyBody>) -> Response<ProxyBody> {
        let client_ok = self.config.allow_remote
            || req
                .extensions()
                .get::<ClientInfo>()
                .is_some_and(|c| c.addr.ip().is_loopback() || is_mapped_loopback(c.addr.ip()));
        if !client_ok {
            return text(
                StatusCode::FORBIDDEN,
                "the manager is reachable from loopback only\n",
            );
        }
        if let Err(why) = self.check_host(&req) {
            return text_owned(StatusCode::FORBIDDEN, format!("{why}\n"));
        }
        let path = req.uri().path();
        let Some(rest) = path.strip_prefix(self.config.prefix.as_str()) else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let rest = rest.trim_matches('/');
        let page_path = if self.config.prefix.is_empty() {
            "/".to_string()
        } else {
            format!("{}/", self.config.prefix)
        };
        match (req.method().clone(), rest) {
            (Method::GET | Method::HEAD, "") => {
                let msg = req
                    .uri()
                    .query()
                    .and_then(|q| crate::balance::query_param(q, "msg"));
                let body = html::page(&self.view(), &self.sections(), &self.nonce, msg.as_deref());
                let mut r = Response::new(full(body));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-store"),
                );
                r
            }
            (Method::POST, "") => {
                if let Some(r) = wrong_content_type(&req, "application/x-www-form-urlencoded") {
                    return r;
                }
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let msg = match self.form_action(&body).and_then(|a| self.apply(&a)) {
                    Ok(()) => "updated".to_string(),
                    Err(AdminError::Nonce) => {
                        return text(StatusCode::FORBIDDEN, "bad or missing nonce\n");
                    }
                    // Not a value a person typed in the page (which sends no such field)
                    // but a request the page could not have made: refused outright.
                    Err(AdminError::Unknown(u)) => {
                        return text_owned(StatusCode::BAD_REQUEST, format!("{u}\n"));
                    }
                    Err(e) => e.to_string(),
                };
                let loc: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("msg", &msg)
                    .finish();
                let mut r = Response::new(full(""));
                *r.status_mut() = StatusCode::SEE_OTHER;
                if let Ok(v) = header::HeaderValue::from_str(&format!("{page_path}?{loc}")) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            (Method::GET, "api") => {
                let mut body = serde_json::Map::new();
                body.insert("nonce".into(), serde_json::Value::from(&*self.nonce));
                body.insert(
                    "balancers".into(),
                    serde_json::to_value(self.view()).unwrap_or_default(),
                );
                for (key, _, value) in self.sections() {
                    body.insert(key, value);
                }
                json(StatusCode::OK, &body)
            }
            (Method::POST, "api") => {
                // A cross-site page can post text/plain without asking the browser first
                // (no CORS preflight); application/json it cannot.
                if let Some(r) = wrong_content_type(&req, "application/json") {
                    return r;
                }
                let body = match read_body(req).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let value: serde_json::Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({"error": format!("the body is not JSON: {e}")}),
                        );
                    }
                };
                // The cross-site request forgery check comes before any other complaint.
                if value.get("nonce").and_then(serde_json::Value::as_str) != Some(&*self.nonce) {
                    return json(
                        StatusCode::FORBIDDEN,
                        &serde_json::json!({"error": "bad or missing nonce"}),
                    );
                }
                let action = match Action::deserialize(&value) {
                    Ok(a) => a,
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({"error": json_error(&value, e)}),
                        );
                    }
                };
                match self.apply(&action) {
                    Ok(()) => json(StatusCode::OK, &serde_json::json!({"ok": true})),
                    Err(AdminError::Nonce) => json(
                        StatusCode::FORBIDDEN,
                        &serde_json::json!({"error": "bad or missing nonce"}),
                    ),
                    Err(e) => json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": e.to_string()}),
                    ),
                }
            }
            (Method::GET, "metrics") => {
                let mut r = Response::new(full(self.metrics()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl Manager {
    /// Refuses a request naming a host the manager does not answer to (in `Host` or in an
    /// absolute request target), and a POST whose `Origin` is not that host: see
    /// [`ManagerConfig::hosts`]. A request with neither (HTTP/1.0) names no host and passes.
    fn check_host<B>(&self, req: &Request<B>) -> Result<(), String> {
        let header = match req.headers().get(header::HOST) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| "the Host header is not text".to_string())?,
            ),
            None => None,
        };
        let header = header
            .map(|h| {
                h.parse::<Authority>()
                    .map_err(|_| format!("the Host header {h:?} is not a host"))
            })
            .transpose()?;
        let uri = req.uri().authority();
        for authority in header.iter().chain(uri) {
            let host = authority.host();
            if !self.host_allowed(host) {
                return Err(format!(
                    "the manager does not answer to host {host:?}: use its IP address, \
                     localhost, or a host name configured for it"
                ));
            }
        }
        if req.method() == Method::POST
            && let Some(origin) = req.headers().get(header::ORIGIN)
        {
            let tls = req.extensions().get::<ClientInfo>().is_some_and(|c| c.tls);
            let ours = header
                .as_ref()
                .or(uri)
                .map(|a| site(if tls { "https" } else { "http" }, a));
            let theirs = origin.to_str().ok().and_then(|o| {
                let u: http::Uri = o.parse().ok()?;
                let scheme = u.scheme_str()?;
                let scheme = ["http", "https"]
                    .into_iter()
                    .find(|s| s.eq_ignore_ascii_case(scheme))?;
                Some(site(scheme, u.authority()?))
            });
            if ours.is_none() || theirs != ours {
                return Err(format!(
                    "a change from origin {:?} is refused: only the manager's own page may post",
                    String::from_utf8_lossy(origin.as_bytes())
                ));
            }
        }
        Ok(())
    }

    /// Whether the manager answers to `host` (an authority's, without its port).
    fn host_allowed(&self, host: &str) -> bool {
        let norm = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
        let host = norm(host.trim_start_matches('[').trim_end_matches(']'));
        host.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || self.config.hosts.iter().any(|h| norm(h) == host)
    }
}

/// The 415 answer, naming both types, for a POST body that is not of media type `want`
/// (parameters such as `charset` aside); `None` when it is.
/// A web origin as compared: scheme, host in lower case, port (the scheme's default when
/// none is written).
fn site(scheme: &'static str, a: &Authority) -> (&'static str, String, u16) {
    let default = if scheme == "https" { 443 } else { 80 };
    (
        scheme,
        a.host().to_ascii_lowercase(),
        a.port_u16().unwrap_or(default),
    )
}

fn wrong_content_type<B>(req: &Request<B>, want: &str) -> Option<Response<ProxyBody>> {
    let got = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let media = got
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim);
    if media.is_some_and(|m| m.eq_ignore_ascii_case(want)) {
        return None;
    }
    Some(text_owned(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        match got {
            Some(got) => format!("expected Content-Type: {want}, got {got:?}\n"),
            None => format!("expected Content-Type: {want}, got none\n"),
        },
    ))
}

/// One metric: name, type, help, value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&MemberView) -> f64,
);

fn is_mapped_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        _ => false,
    }
}

fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    text_owned(status, body.to_string())
}

fn text_owned(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn json(status: StatusCode, v: &impl Serialize) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn read_body(req: Request<ProxyBody>) -> Result<Bytes, Response<ProxyBody>> {
    // Forms and actions are small: refuse more than 64 KiB.
    let limited = http_body_util::Limited::new(req.into_body(), 64 * 1024);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )),
    }
}

impl Manager {
    /// A form submission: `b`, `w`, `lf`, `ls`, `wr`, `nonce`, `flags=1` with checkboxes
    /// `D N H I S`, `add`. A wrong nonce is refused first; then a bad value, named by its
    /// form field (an empty `lf` or `ls` leaves the value as it is).
    fn form_action(&self, body: &[u8]) -> Result<Action, AdminError> {
        let mut a = Action::default();
        let mut has_flags = false;
        let mut flags = String::new();
        let mut bad = None;
        let mut unknown = None;
        for (k, v) in form_urlencoded::parse(body) {
            let mut check = |key: &str| match form_value(&k, key, &v) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    bad.get_or_insert(e);
                    None
                }
            };
            match &*k {
                "nonce" => a.nonce = v.into_owned(),
                "b" => a.balancer = v.into_owned(),
                "w" => a.member = Some(v.into_owned()),
                "lf" => a.loadfactor = check("loadfactor").flatten().map(|s| s.loadfactor),
                "ls" => a.lbset = check("lbset").flatten().map(|s| s.lbset),
                "wr" => {
                    check("route");
                    a.route = Some(v.into_owned());
                }
                "add" => a.add = Some(v.into_owned()),
                "flags" => has_flags = true,
                "D" | "N" | "H" | "I" | "S" => flags.push_str(&k),
                // The page sends none other: a misspelt field or flag would change nothing
                // (and an unknown flag box would clear every flag) while saying "updated".
                k if k.len() == 1 && k.bytes().all(|c| c.is_ascii_alphabetic()) => {
                    unknown.get_or_insert_with(|| {
                        format!("unknown flag {k:?}: the flags are D N H I S")
                    });
                }
                k => {
                    unknown.get_or_insert_with(|| {
                        format!(
                            "unknown form field {k:?}: the fields are nonce b w lf ls wr flags D N H I S add"
                        )
                    });
                }
            }
        }
        if a.nonce != *self.nonce {
            return Err(AdminError::Nonce);
        }
        if let Some(u) = unknown {
            return Err(AdminError::Unknown(u));
        }
        if let Some(e) = bad {
            return Err(e.into());
        }
        if has_flags {
            // Checkboxes send only what is ticked: everything else is off.
            let mut s = String::from("-DNHIS+");
            s.push_str(&flags);
            if flags.is_empty() {
                s.pop();
            }
            a.status = Some(s);
        }
        Ok(a)
    }
}

/// Checks the form field `field` as the member setting `key`: `None` when it is empty
/// (unchanged, or for a route cleared), the errors naming the form's field.
fn form_value(field: &str, key: &str, value: &str) -> Result<Option<MemberSpec>, crate::Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let mut spec = MemberSpec::new("http://x");
    match spec.set(key, value) {
        Ok(()) => Ok(Some(spec)),
        Err(crate::Error::Value { value, reason, .. }) => Err(crate::Error::Value {
            key: field.into(),
            value,
            reason,
        }),
        Err(e) => Err(e),
    }
}

/// The error for a JSON action that does not deserialize, naming the field at fault
/// (serde's message alone names only the expected type).
fn json_error(value: &serde_json::Value, e: serde_json::Error) -> String {
    const FIELDS: [&str; 8] = [
        "nonce",
        "balancer",
        "member",
        "loadfactor",
        "lbset",
        "route",
        "status",
        "add",
    ];
    for key in value.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !FIELDS.contains(&key.as_str()) {
            return format!(
                "unknown field {key:?}: the fields are {}",
                FIELDS.join(", ")
            );
        }
    }
    for (key, v) in value.as_object().into_iter().flatten() {
        let mut probe = serde_json::Map::new();
        probe.insert("balancer".into(), "".into());
        probe.insert(key.clone(), v.clone());
        if let Err(e) = Action::deserialize(&serde_json::Value::Object(probe)) {
            return format!("invalid value {v} for {key}: {e}");
        }
    }
    e.to_string()
}

/// Deserializes a member as `/api` lists it (a number) or as a string (an id or a URL).
fn member_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Member;
    impl serde::de::Visitor<'_> for Member {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a member id (a whole number, as /api lists it) or a member URL")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Member)
}

/// Refuses member `id`'s route when another of `members` has it, as lb-balancer's
/// configuration does: sticky sessions to that route would all go to the first of them.
fn check_route_unique(members: &[Arc<lb_core::Member>], id: BackendId) -> Result<(), AdminError> {
    let Some(m) = members.iter().find(|m| m.id() == id) else {
        return Ok(());
    };
    let Some(route) = m.backend().route().filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    match members
        .iter()
        .find(|o| o.id() != id && o.backend().route() == Some(route))
    {
        Some(other) => Err(AdminError::DuplicateRoute {
            route: route.to_string(),
            other: member_view(other).url,
        }),
        None => Ok(()),
    }
}

/// The changes an action makes to one member, checked.
struct Change {
    weight: Option<u32>,
    lbset: Option<u32>,
    route: Option<Option<String>>,
    flags: Option<crate::member::StatusFlags>,
}

impl Change {
    /// Checks every value of `a` for member `m`, before any is applied.
    fn check(a: &Action, m: &lb_core::Member) -> Result<Change, AdminError> {
        let mut spec = MemberSpec::new("http://x");
        if let Some(lf) = a.loadfactor {
            spec.set("loadfactor", &lf.to_string())?;
        }
        if let Some(ls) = a.lbset {
            spec.set("lbset", &ls.to_string())?;
        }
        let route = match a.route.as_deref().map(str::trim) {
            Some("") => Some(None),
            Some(r) => {
                spec.set("route", r)?;
                Some(Some(r.to_string()))
            }
            None => None,
        };
        let flags = match a.status.as_deref().filter(|s| !s.is_empty()) {
            Some(status) => {
                let mut flags = crate::member::StatusFlags::of(m);
                flags.apply(status)?;
                Some(flags)
            }
            None => None,
        };
        Ok(Change {
            weight: a.loadfactor,
            lbset: a.lbset,
            route,
            flags,
        })
    }

    /// Applies the changes to member `id`: its settings in one update, then its admin
    /// state.
    fn apply<S: lb_core::scheduler::Scheduler>(
        &self,
        edit: &mut lb_core::Edit<'_, S>,
        id: BackendId,
    ) -> Result<(), AdminError> {
        edit.update(id, |be| {
            if let Some(w) = self.weight {
                be.set_weight(w);
            }
            if let Some(ls) = self.lbset {
                be.set_lbset(ls);
            }
            if let Some(r) = &self.route {
                be.set_route(r.clone());
            }
            if let Some(f) = &self.flags {
                f.mark(be);
            }
        })?;
        if let Some(f) = &self.flags {
            edit.set_admin(id, f.admin_state())?;
            edit.set_ignore_errors(id, f.ignore_errors)?;
        }
        Ok(())
    }
}

/// Whether the scheduler may give `m` new requests: lb-core's
/// [`BackendStats::is_usable`](lb_core::stats::BackendStats::is_usable) (not disabled,
/// stopped or draining, not in error, passing its health checks), and a loadfactor above 0,
/// which that leaves aside (a member of weight 0 takes sticky sessions only). Ignoring
/// errors changes nothing here; a hot standby counts, as it is usable as a standby (it takes
/// requests when the other members of its set are not usable).
fn usable(m: &MemberView) -> bool {
    let f = &m.flags;
    !(f.disabled || f.stopped || f.drain)
        && m.loadfactor > 0
        && m.error_for.is_none()
        && m.health.starts_with("up")
}

fn member_view(m: &lb_core::Member) -> MemberView {
    let s = m.state();
    let b = m.backend();
    let flags = crate::member::StatusFlags::of(m);
    let error_for = s.in_error_for();
    let mut status = Vec::new();
    if flags.disabled {
        status.push("Dis");
    }
    if flags.stopped {
        status.push("Stop");
    }
    if flags.drain {
        status.push("Drn");
    }
    if flags.hot_standby {
        status.push("Stby");
    }
    if flags.ignore_errors {
        status.push("Ign");
    }
    if error_for.is_some() {
        status.push("Err");
    }
    if s.health() == Health::Down {
        status.push("HcFl");
    }
    // Weight 0 takes sticky sessions only, as draining does (HAProxy shows it as DRAIN).
    if b.weight() == 0 {
        status.push("Lf0");
    }
    let status = if status.is_empty() || status == ["Stby"] || status == ["Ign"] {
        let mut v = vec!["Ok"];
        v.extend(status);
        v.join(" ")
    } else {
        status.join(" ")
    };
    let hc = b
        .labels()
        .get(&format!("{}hcmethod", crate::member::LABEL_HC));
    let health = match (s.health(), hc) {
        (Health::Up, Some(h)) => format!("up ({h})"),
        (Health::Down, Some(h)) => format!("down ({h})"),
        (Health::Up, None) => "up".into(),
        (Health::Down, None) => "down".into(),
    };
    MemberView {
        id: m.id().0,
        url: b
            .labels()
            .get(LABEL_URL)
            .cloned()
            .unwrap_or_else(|| format!("http://{}", b.address())),
        route: b.route().unwrap_or("").to_string(),
        loadfactor: b.weight(),
        lbset: b.lbset(),
        status,
        flags: Flags {
            disabled: flags.disabled,
            drain: flags.drain,
            hot_standby: flags.hot_standby,
            ignore_errors: flags.ignore_errors,
            stopped: flags.stopped,
        },
        elected: s.total(),
        busy: s.active(),
        bytes_to: s.bytes_out(),
        bytes_from: s.bytes_in(),
        health,
        error_for: error_for.map(|d| d.as_secs_f64()),
    }
}

impl<B> tower::Service<Request<B>> for Manager
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req.map(crate::body::boxed)).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remote_clients_are_refused_unless_allowed() {
        let b = lb();
        let source: Source = Arc::new(move || vec![("web".to_string(), b.clone())]);
        let req = |ip: &str| {
            let mut r = Request::get("/api").body(crate::body::empty()).unwrap();
            r.extensions_mut().insert(ClientInfo {
                addr: format!("{ip}:5000").parse().unwrap(),
                tls: false,
            });
            r
        };
        let local = Manager::new(source.clone(), ManagerConfig::default());
        assert_eq!(
            local.clone().handle(req("192.0.2.1")).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            local.clone().handle(req("127.0.0.1")).await.status(),
            StatusCode::OK
        );
        assert_eq!(local.handle(req("[::1]")).await.status(), StatusCode::OK);
        let open = Manager::new(
            source,
            ManagerConfig {
                allow_remote: true,
                ..Default::default()
            },
        );
        assert_eq!(open.handle(req("192.0.2.1")).await.status(), StatusCode::OK);
    }

    #[test]
    fn form_checkboxes_turn_unticked_flags_off() {
        let b = lb();
        let m = Manager::new(
            Arc::new(move || vec![("web".to_string(), b.clone())]),
            ManagerConfig::default(),
        );
        let n = m.nonce().to_string();
        let a = m
            .form_action(format!("nonce={n}&b=web&w=1&lf=3&flags=1&D=on").as_bytes())
            .unwrap();
        assert_eq!(a.status.as_deref(), Some("-DNHIS+D"));
        assert_eq!(a.loadfactor, Some(3));
        let a = m
            .form_action(format!("nonce={n}&b=web&w=1&flags=1").as_bytes())
            .unwrap();
        assert_eq!(a.status.as_deref(), Some("-DNHIS"));
    }

    fn lb() -> Balancer {
        let spec: MemberSpec = "http://127.0.0.1:9,route=a".parse().unwrap();
        Balancer::builder()
            .backend(spec.to_backend().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn actions_need_the_nonce_and_change_members() {
        let b = lb();
        let b2 = b.clone();
        let m = Manager::new(
            Arc::new(move || vec![("web".to_string(), b2.clone())]),
            ManagerConfig::default(),
        );
        let mut a = Action {
            balancer: "web".into(),
            member: Some("0".into()),
            status: Some("+D".into()),
            ..Default::default()
        };
        assert!(matches!(m.apply(&a), Err(AdminError::Nonce)));
        a.nonce = m.nonce().to_string();
        m.apply(&a).unwrap();
        assert_eq!(
            b.members()[0].state().admin(),
            lb_core::AdminState::Maintenance
        );
        assert!(m.view()[0].members[0].status.contains("Dis"));
        a.status = Some("-D+N".into());
        a.loadfactor = Some(7);
        a.route = Some("r2".into());
        m.apply(&a).unwrap();
        let v = &m.view()[0].members[0];
        assert_eq!(
            (
                v.loadfactor,
                v.route.as_str(),
                v.flags.drain,
                v.flags.disabled
            ),
            (7, "r2", true, false)
        );
        // The route changed from a to r2: the member's series are the same ones (a route in
        // their labels would have started new ones), and the info series has the new route.
        let metrics = m.metrics();
        assert!(
            metrics.contains(
                "lb_member_requests_total{balancer=\"web\",member=\"http://127.0.0.1:9\"} "
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains("lb_member_info{balancer=\"web\",member=\"http://127.0.0.1:9\",route=\"r2\",lbset=\"0\"} 1"),
            "{metrics}"
        );
        a.loadfactor = Some(500);
        assert!(m.apply(&a).is_err());
        let add = Action {
            nonce: m.nonce().into(),
            balancer: "web".into(),
            add: Some("http://127.0.0.1:10,route=b".into()),
            ..Default::default()
        };
        m.apply(&add).unwrap();
        assert_eq!(b.members().len(), 2);
        // An add refused (the address is a member's already) with a change of another
        // member in the same action: neither is made.
        let both = Action {
            member: Some("0".into()),
            loadfactor: Some(9),
            ..add.clone()
        };
        assert!(m.apply(&both).is_err());
        assert_eq!(m.view()[0].members[0].loadfactor, 7, "the change was made");
        assert_eq!(b.members().len(), 2);
        let metrics = m.metrics();
        assert!(metrics.contains(
            "lb_member_requests_total{balancer=\"web\",member=\"http://127.0.0.1:10\"} 0\n"
        ));
        assert!(metrics.contains(
            "lb_member_info{balancer=\"web\",member=\"http://127.0.0.1:10\",route=\"b\",lbset=\"0\"} 1\n"
        ));
    }

    /// A manager over `b` as balancer `web`.
    fn manager(b: &Balancer, config: ManagerConfig) -> Manager {
        let b = b.clone();
        Manager::new(
            Arc::new(move || vec![("web".to_string(), b.clone())]),
            config,
        )
    }

    /// `(route, loadfactor)` of each member.
    fn routes(b: &Balancer) -> Vec<(String, u32)> {
        b.members()
            .iter()
            .map(|m| {
                let be = m.backend();
                (be.route().unwrap_or("").to_string(), be.weight())
            })
            .collect()
    }

    #[test]
    fn a_route_another_member_has_is_refused_and_nothing_changes() {
        let b = lb();
        let m = manager(&b, ManagerConfig::default());
        let nonce = m.nonce().to_string();
        let act = |a: Action| {
            m.apply(&Action {
                nonce: nonce.clone(),
                balancer: "web".into(),
                ..a
            })
        };
        act(Action {
            add: Some("http://127.0.0.1:10,route=b".into()),
            ..Default::default()
        })
        .unwrap();
        let before = routes(&b);
        // Member 1 (route b) renamed to a, with a load factor in the same action.
        let e = act(Action {
            member: Some("1".into()),
            route: Some("a".into()),
            loadfactor: Some(5),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "duplicate route \"a\" (also member http://127.0.0.1:9): sticky sessions would all go to one of them"
        );
        // Added with a route a member has, through the JSON's `add` or the form's.
        let e = act(Action {
            add: Some("http://127.0.0.1:11,route=b".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("duplicate route \"b\" (also member http://127.0.0.1:10)"),
            "{e}"
        );
        let a = m
            .form_action(format!("nonce={nonce}&b=web&add=http://127.0.0.1:11,route=a").as_bytes())
            .unwrap();
        assert!(matches!(
            m.apply(&a),
            Err(AdminError::DuplicateRoute { .. })
        ));
        // A member renamed to a route added in the same action.
        let e = act(Action {
            member: Some("0".into()),
            route: Some("c".into()),
            add: Some("http://127.0.0.1:11,route=c".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("duplicate route \"c\""), "{e}");
        assert_eq!(routes(&b), before, "a refused action changed something");
        // Its own route again, another free one, a swap through a free name, no route: fine.
        act(Action {
            member: Some("0".into()),
            route: Some("a".into()),
            ..Default::default()
        })
        .unwrap();
        act(Action {
            member: Some("0".into()),
            route: Some("".into()),
            ..Default::default()
        })
        .unwrap();
        act(Action {
            member: Some("1".into()),
            route: Some("a".into()),
            add: Some("http://127.0.0.1:11,route=b".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            routes(&b),
            [
                ("".to_string(), 1),
                ("a".to_string(), 1),
                ("b".to_string(), 1)
            ]
        );
    }

    #[test]
    fn unknown_form_fields_and_json_keys_are_refused_by_name() {
        let b = lb();
        let m = manager(&b, ManagerConfig::default());
        let n = m.nonce().to_string();
        let e = m
            .form_action(format!("nonce={n}&b=web&w=0&flags=1&X=on").as_bytes())
            .unwrap_err();
        assert_eq!(e.to_string(), "unknown flag \"X\": the flags are D N H I S");
        let e = m
            .form_action(format!("nonce={n}&b=web&w=0&weight=3").as_bytes())
            .unwrap_err();
        assert!(
            e.to_string().starts_with("unknown form field \"weight\""),
            "{e}"
        );
        // The nonce is checked first, as for every other complaint.
        assert!(matches!(
            m.form_action(b"b=web&w=0&X=on"),
            Err(AdminError::Nonce)
        ));
        let v = serde_json::json!({"nonce": n, "balancer": "web", "member": 0, "wieght": 3});
        let e = Action::deserialize(&v).unwrap_err();
        assert!(
            json_error(&v, e)
                .starts_with("unknown field \"wieght\": the fields are nonce, balancer"),
        );
    }

    /// A request from loopback with these headers.
    fn request(
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Request<ProxyBody> {
        let mut r = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut r = r.body(crate::body::full(body.to_string())).unwrap();
        r.extensions_mut().insert(ClientInfo {
            addr: "127.0.0.1:5000".parse().unwrap(),
            tls: false,
        });
        r
    }

    #[tokio::test]
    async fn a_foreign_host_or_origin_is_refused_against_dns_rebinding() {
        let b = lb();
        let m = manager(
            &b,
            ManagerConfig {
                hosts: vec!["LB1.example.net".into()],
                ..Default::default()
            },
        );
        let status = |r: Request<ProxyBody>| {
            let m = m.clone();
            async move { m.handle(r).await.status() }
        };
        for host in [
            "127.0.0.1:8081",
            "[::1]:8081",
            "localhost:8081",
            "lb1.example.NET",
            "lb1.example.net.:80",
            "192.0.2.7",
        ] {
            assert_eq!(
                status(request(Method::GET, "/api", &[("host", host)], "")).await,
                StatusCode::OK,
                "{host}"
            );
        }
        for host in [
            "attacker.example:8081",
            "localhost.attacker.example",
            "lb1.example.net.evil",
        ] {
            for path in ["/api", "/", "/metrics"] {
                assert_eq!(
                    status(request(Method::GET, path, &[("host", host)], "")).await,
                    StatusCode::FORBIDDEN,
                    "{host}{path}"
                );
            }
        }
        let r = m
            .clone()
            .handle(request(
                Method::GET,
                "/api",
                &[("host", "attacker.example")],
                "",
            ))
            .await;
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("host \"attacker.example\"") && !body.contains(m.nonce()),
            "{body}"
        );
        // An absolute request target names the host too.
        assert_eq!(
            status(request(
                Method::GET,
                "http://attacker.example/api",
                &[("host", "127.0.0.1")],
                ""
            ))
            .await,
            StatusCode::FORBIDDEN
        );

        // A POST: Origin (when sent) must be the Host, the body the right type.
        let n = m.nonce().to_string();
        let action = format!(r#"{{"nonce":"{n}","balancer":"web","member":0,"status":"+D"}}"#);
        let post = |headers: Vec<(&'static str, &'static str)>| {
            let action = action.clone();
            let m = m.clone();
            async move {
                m.handle(request(Method::POST, "/api", &headers, &action))
                    .await
                    .status()
            }
        };
        let json = ("content-type", "application/json");
        let host = ("host", "127.0.0.1:8081");
        for bad in [
            vec![host, ("origin", "http://attacker.example:8081"), json],
            vec![host, ("origin", "null"), json],
            vec![host, ("origin", "http://127.0.0.1:9999"), json],
            vec![host, ("origin", "https://127.0.0.1:8081"), json],
        ] {
            assert_eq!(post(bad.clone()).await, StatusCode::FORBIDDEN, "{bad:?}");
        }
        for bad in [vec![host, ("content-type", "text/plain")], vec![host]] {
            assert_eq!(
                post(bad.clone()).await,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{bad:?}"
            );
        }
        let form = request(
            Method::POST,
            "/",
            &[host, ("content-type", "text/plain")],
            &format!("nonce={n}&b=web&w=0&flags=1&D=on"),
        );
        assert_eq!(status(form).await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            b.members()[0].state().admin(),
            lb_core::AdminState::Ready,
            "a refused post changed the member"
        );
        // The page's own origin (default port or not) and a JSON type with a charset pass.
        assert_eq!(
            post(vec![
                ("host", "localhost"),
                ("origin", "http://LOCALHOST:80"),
                ("content-type", "application/json; charset=utf-8")
            ])
            .await,
            StatusCode::OK
        );
        assert_eq!(
            b.members()[0].state().admin(),
            lb_core::AdminState::Maintenance
        );
    }

    #[test]
    fn manager_host_names_must_be_dns_names() {
        for good in ["lb1.example.net", "localhost", "lb-1", "lb1.example.net."] {
            assert!(check_host_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "http://lb1",
            "lb1:8081",
            "lb1/x",
            "-lb",
            "a..b",
            "*.example.net",
        ] {
            let e = check_host_name(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn the_lbmethod_shows_as_configured_while_its_scheduler_stays() {
        let b = lb();
        let b2 = b.clone();
        let m = Manager::new(
            Arc::new(move || vec![("web".to_string(), b2.clone())]),
            ManagerConfig::default(),
        );
        b.set_scheduler("wrr".parse().unwrap());
        assert_eq!(m.view()[0].lbmethod, "wrr");
        set_lbmethod_name(&b, "byrequests");
        assert_eq!(m.view()[0].lbmethod, "byrequests");
        b.set_scheduler("leastconn".parse().unwrap());
        assert_eq!(m.view()[0].lbmethod, "leastconn");
    }

    #[test]
    fn members_taking_requests_are_usable_in_the_metrics() {
        let members = [
            ("http://127.0.0.1:11", 1),
            ("http://127.0.0.1:12,status=+I", 1),
            ("http://127.0.0.1:13,status=+H", 1),
            ("http://127.0.0.1:14,status=+D", 0),
            ("http://127.0.0.1:15,status=+N", 0),
            ("http://127.0.0.1:16,status=+S", 0),
            ("http://127.0.0.1:17", 0),
            ("http://127.0.0.1:18", 0),
            ("http://127.0.0.1:19,loadfactor=0", 0),
        ];
        let specs = members.map(|(url, _)| url.parse::<MemberSpec>().unwrap());
        let b = Balancer::builder()
            .backends(specs.iter().map(|s| s.to_backend().unwrap()))
            .build()
            .unwrap();
        let ids: Vec<_> = b.members().iter().map(|m| m.id()).collect();
        for (spec, id) in specs.iter().zip(&ids) {
            spec.status.set_on(&b, *id).unwrap();
        }
        // The last but one in error, the last one failing its health checks.
        b.set_error_for(ids[6], std::time::Duration::from_secs(60))
            .unwrap();
        b.set_health(ids[7], Health::Down).unwrap();
        let b2 = b.clone();
        let m = Manager::new(
            Arc::new(move || vec![("web".to_string(), b2.clone())]),
            ManagerConfig::default(),
        );
        let view = &m.view()[0].members;
        assert_eq!(view[0].status, "Ok");
        assert_eq!(view[2].status, "Ok Stby");
        assert_eq!(
            view[8].status, "Lf0",
            "loadfactor 0 takes sticky sessions only"
        );
        let metrics = m.metrics();
        for (url, usable) in members {
            let url = url.split(',').next().unwrap();
            let line = format!("lb_member_usable{{balancer=\"web\",member=\"{url}\"}} {usable}\n");
            assert!(metrics.contains(&line), "{line}in\n{metrics}");
        }
    }

    #[tokio::test]
    async fn sections_show_on_the_page_and_in_the_api() {
        let b = lb();
        let source: Source = Arc::new(move || vec![("web".to_string(), b.clone())]);
        let m = Manager::new(source, ManagerConfig::default())
            .with_section(
                "ha",
                "High availability",
                Arc::new(|| serde_json::json!({"state": "active", "peer_last_beat_ms": null})),
            )
            .unwrap();
        assert!(
            m.clone()
                .with_section("nonce", "x", Arc::new(|| serde_json::Value::Null))
                .is_err()
        );
        let get = |path: &str| {
            let mut r = Request::get(path).body(crate::body::empty()).unwrap();
            r.extensions_mut().insert(ClientInfo {
                addr: "127.0.0.1:5000".parse().unwrap(),
                tls: false,
            });
            r
        };
        let body = |r: Response<ProxyBody>| async move {
            let b = r.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(b.to_vec()).unwrap()
        };
        let api: serde_json::Value =
            serde_json::from_str(&body(m.clone().handle(get("/api")).await).await).unwrap();
        assert_eq!(api["ha"]["state"], "active");
        assert_eq!(api["balancers"][0]["name"], "web");
        let page = body(m.handle(get("/")).await).await;
        assert!(page.contains("<h2>High availability</h2>"), "{page}");
        assert!(
            page.contains("<tr><th>state</th><td>active</td></tr>"),
            "{page}"
        );
        assert!(
            page.contains("<tr><th>peer_last_beat_ms</th><td>-</td></tr>"),
            "{page}"
        );
    }
}
