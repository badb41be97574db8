//! lb-balancer's configuration: the command line and the TOML file share one vocabulary,
//! mod_proxy_balancer's (`lbmethod`, `stickysession`, `maxattempts`, `nofailover`,
//! `failonstatus`, `failontimeout`, `forcerecovery`, `timeout`, `preservehost`) plus the
//! members' `key=value` settings.
//!
//! The file:
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! manager = "127.0.0.1:8081"
//! manager_hosts = ["lb1.example.net"]   # names the manager answers to, besides IPs and localhost
//!
//! [[balancer]]
//! name = "app"
//! path = "/app"                 # ProxyPass /app balancer://app/
//! lbmethod = "byrequests"
//! stickysession = "ROUTEID"
//! members = [
//!   "http://127.0.0.1:9001,route=a,loadfactor=3",
//!   "http://127.0.0.1:9002,route=b",
//! ]
//! ```
//!
//! A balancer's route cookie is set with its `path` (`ROUTEID=.a; Path=/app`), so balancers
//! on separate paths (`/app`, `/api`) may use one cookie name; on nested paths (`/` and
//! `/app`) one name is refused (see `check_shared_cookies`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_core::scheduler::AnyScheduler;
use lb_http::balance::HashKey;
use lb_http::guard::GuardConfig;
use lb_http::member::MemberSpec;
use lb_http::sticky::{InsertCookie, StickyConfig};
use serde::Deserialize;
use toml::Spanned;

/// A configuration error, already worded for the user.
#[derive(Debug)]
pub(crate) struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One balancer.
#[derive(Debug, Clone)]
pub(crate) struct BalancerConf {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) lbmethod: String,
    pub(crate) scheduler_note: Option<String>,
    pub(crate) hashkey: Option<HashKey>,
    pub(crate) sticky: Option<StickyConfig>,
    /// Apache's `maxattempts`: failovers after the first member; `None`: every member once.
    pub(crate) maxattempts: Option<usize>,
    pub(crate) nofailover: bool,
    pub(crate) failonstatus: Vec<u16>,
    pub(crate) failontimeout: bool,
    pub(crate) forcerecovery: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) preservehost: bool,
    pub(crate) forwarded: bool,
    pub(crate) retry_on: Vec<u16>,
    pub(crate) members: Vec<MemberSpec>,
}

impl BalancerConf {
    /// lb-core's `max_attempts` (members tried per request, 0: every one once) for Apache's
    /// `maxattempts` (failovers after the first member: `maxattempts=1` tries two members,
    /// 0 one).
    pub(crate) fn max_attempts(&self) -> usize {
        self.maxattempts.map_or(0, |n| n + 1)
    }

    /// Whether `spec` may join the members so far: not at another member's address (lb-core
    /// would refuse it at start), and not with another member's route (sticky sessions
    /// would always go to the first of them).
    pub(crate) fn clash(&self, spec: &MemberSpec) -> Result<(), String> {
        let address = spec
            .to_backend()
            .map_err(|e| e.to_string())?
            .address()
            .clone();
        for other in &self.members {
            if other.to_backend().is_ok_and(|o| *o.address() == address) {
                return Err(format!(
                    "duplicate backend address {address} (also member {})",
                    other.url
                ));
            }
            if spec.route.is_some() && other.route == spec.route {
                return Err(format!(
                    "duplicate route {:?} (also member {}): sticky sessions would all go to one of them",
                    spec.route.as_deref().unwrap_or_default(),
                    other.url
                ));
            }
        }
        Ok(())
    }

    /// A `hashkey` needs an lbmethod that hashes it: the others would ignore it.
    pub(crate) fn check_hashkey(&self) -> Result<(), String> {
        use lb_core::scheduler::Scheduler;
        if self.hashkey.is_some() && !resolve_lbmethod(&self.lbmethod)?.0.uses_key() {
            return Err(format!(
                "lbmethod {} does not hash a key and would ignore it: use maglev or ketama",
                self.lbmethod
            ));
        }
        Ok(())
    }

    pub(crate) fn new(name: &str) -> Self {
        BalancerConf {
            name: name.into(),
            path: "/".into(),
            lbmethod: "byrequests".into(),
            scheduler_note: None,
            hashkey: None,
            sticky: None,
            maxattempts: None,
            nofailover: false,
            failonstatus: Vec::new(),
            failontimeout: false,
            forcerecovery: true,
            timeout: None,
            connect_timeout: Duration::from_secs(5),
            preservehost: false,
            forwarded: false,
            retry_on: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Sets one balancer option from its text form.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let bool_of = |v: &str| match v.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            _ => Err(format!("expected on or off, got {v:?}")),
        };
        let secs = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .map(Duration::from_secs)
                .ok_or_else(|| format!("expected seconds (1 to 86400), got {v:?}"))
        };
        let statuses = |v: &str| -> Result<Vec<u16>, String> {
            v.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<u16>()
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .ok_or_else(|| format!("bad status code {s:?}"))
                })
                .collect()
        };
        match key {
            "name" => {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(format!("bad balancer name {value:?}"));
                }
                self.name = value.into();
            }
            "path" => {
                lb_http::router::check_mount(value)?;
                self.path = value.into();
            }
            "lbmethod" => {
                let (_, note) = resolve_lbmethod(value)?;
                self.lbmethod = value.into();
                self.scheduler_note = note;
            }
            "hashkey" => self.hashkey = Some(value.parse::<HashKey>().map_err(|e| e.to_string())?),
            "stickysession" => {
                let mut s = StickyConfig::apache(value).map_err(|e| e.to_string())?;
                if let Some(old) = &self.sticky {
                    s.scolonpathdelim = old.scolonpathdelim;
                }
                self.sticky = Some(s);
            }
            "scolonpathdelim" => {
                let on = bool_of(value)?;
                match &mut self.sticky {
                    Some(s) => s.scolonpathdelim = on,
                    None => return Err("scolonpathdelim needs stickysession first".into()),
                }
            }
            "cookie" => {
                // HAProxy: "NAME insert indirect nocache httponly secure maxage 3600"
                let mut words = value.split_whitespace();
                let name = words.next().ok_or("expected a cookie name")?;
                let mut o = InsertCookie::default();
                let mut insert = false;
                while let Some(w) = words.next() {
                    match w {
                        "insert" => insert = true,
                        "indirect" => o.indirect = true,
                        "nocache" => o.nocache = true,
                        "httponly" => o.httponly = true,
                        "secure" => o.secure = true,
                        "maxage" => {
                            let n = words
                                .next()
                                .and_then(|n| n.parse().ok())
                                .ok_or("maxage needs seconds")?;
                            o.max_age = Some(n);
                        }
                        other => return Err(format!("unknown cookie option {other:?}")),
                    }
                }
                if !insert {
                    return Err("only the insert mode is supported: NAME insert [options]".into());
                }
                self.sticky = Some(StickyConfig::insert(name, o).map_err(|e| e.to_string())?);
            }
            "maxattempts" => {
                self.maxattempts = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n <= 100)
                        .ok_or_else(|| format!("expected 0 to 100, got {value:?}"))?,
                )
            }
            "nofailover" => self.nofailover = bool_of(value)?,
            "failonstatus" => self.failonstatus = statuses(value)?,
            "failontimeout" => self.failontimeout = bool_of(value)?,
            "forcerecovery" => self.forcerecovery = bool_of(value)?,
            "timeout" => self.timeout = Some(secs(value)?),
            "connecttimeout" => self.connect_timeout = secs(value)?,
            "preservehost" => self.preservehost = bool_of(value)?,
            "forwarded" => self.forwarded = bool_of(value)?,
            "retryon" => self.retry_on = statuses(value)?,
            _ => return Err("unknown balancer option".into()),
        }
        Ok(())
    }
}

/// The scheduler of an `lbmethod`: Apache's names (`byrequests`, `bybusyness`,
/// `bytraffic`) and lb-core's, as lb-core parses them; with a note when the name had to fall
/// back to a scheduler that does not do what was asked (`heartbeat`: lb-core has no
/// mod_heartmonitor data to balance on).
pub(crate) fn resolve_lbmethod(name: &str) -> Result<(AnyScheduler, Option<String>), String> {
    match name.parse::<AnyScheduler>() {
        Ok(s) => Ok((s, None)),
        Err(_) if name.trim().eq_ignore_ascii_case("heartbeat") => {
            let s = AnyScheduler::default();
            let note = format!(
                "lbmethod {name}: lb-core has no such scheduler yet, using {}",
                s.name()
            );
            Ok((s, Some(note)))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) manager: Option<SocketAddr>,
    pub(crate) manager_remote: bool,
    /// Host names the manager answers to besides IP addresses and `localhost`.
    pub(crate) manager_hosts: Vec<String>,
    pub(crate) balancers: Vec<BalancerConf>,
    pub(crate) file: Option<PathBuf>,
    /// Client-side limits: head deadline, idle and client timeouts, header count and size.
    pub(crate) limits: GuardConfig,
    /// Give up a request when its client closes (HAProxy's `option abortonclose`).
    pub(crate) abort_on_close: bool,
    /// What the command line set over the file's values, for the reloads.
    pub(crate) overrides: Overrides,
}

/// What the command line sets over a file's values: `--manager` replaces its `manager`,
/// `--manager-remote` and `--abortonclose` turn on its `manager_remote` and
/// `abort_on_close`, `--manager-host` adds to its `manager_hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Overrides {
    pub(crate) manager: Option<SocketAddr>,
    pub(crate) manager_remote: bool,
    pub(crate) manager_hosts: Vec<String>,
    pub(crate) abort_on_close: bool,
}

impl Config {
    /// The configuration with the command line's `overrides` applied (and kept, so that a
    /// reload of the file applies them again).
    pub(crate) fn with_overrides(mut self, overrides: Overrides) -> Config {
        if overrides.manager.is_some() {
            self.manager = overrides.manager;
        }
        self.manager_remote |= overrides.manager_remote;
        self.manager_hosts
            .extend(overrides.manager_hosts.iter().cloned());
        self.abort_on_close |= overrides.abort_on_close;
        self.overrides = overrides;
        self
    }
}

/// Sets one client-side limit (`head_timeout`, `idle_timeout`, `client_timeout` in seconds;
/// `max_headers`; `max_head_size` in bytes). A `client_timeout` not set is the
/// `idle_timeout`.
pub(crate) fn set_limit(limits: &mut GuardConfig, key: &str, value: u64) -> Result<(), String> {
    let range = |lo: u64, hi: u64| {
        if (lo..=hi).contains(&value) {
            Ok(value)
        } else {
            Err(format!("expected {lo} to {hi}, got {value}"))
        }
    };
    match key {
        "head_timeout" => limits.head_timeout = Duration::from_secs(range(1, 3600)?),
        "idle_timeout" => limits.idle_timeout = Duration::from_secs(range(1, 86_400)?),
        "client_timeout" => limits.client_timeout = Some(Duration::from_secs(range(1, 86_400)?)),
        "max_headers" => limits.max_headers = range(8, 1000)? as usize,
        "max_head_size" => limits.max_head = range(1024, 1 << 20)? as usize,
        _ => return Err("unknown limit".into()),
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    // Values are read as any TOML value and checked here, so that a value of the wrong type
    // is reported with its key.
    listen: Option<Spanned<toml::Value>>,
    manager: Option<Spanned<toml::Value>>,
    manager_remote: Option<Spanned<toml::Value>>,
    manager_hosts: Option<Spanned<toml::Value>>,
    head_timeout: Option<Spanned<toml::Value>>,
    idle_timeout: Option<Spanned<toml::Value>>,
    client_timeout: Option<Spanned<toml::Value>>,
    max_headers: Option<Spanned<toml::Value>>,
    max_head_size: Option<Spanned<toml::Value>>,
    abort_on_close: Option<Spanned<toml::Value>>,
    #[serde(default)]
    balancer: Vec<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn value_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(if *b { "on".into() } else { "off".into() }),
        toml::Value::Array(a) => {
            let parts: Option<Vec<String>> = a.iter().map(value_text).collect();
            parts.map(|p| p.join(","))
        }
        _ => None,
    }
}

/// Reads a TOML file.
pub(crate) fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display();
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{shown}: cannot read: {e}")))?;
    let file: FileToml = toml::from_str(&src).map_err(|e| {
        let line = e.span().map(|s| line_of(&src, s.start)).unwrap_or(0);
        let message = e.message().trim();
        // toml's messages do not always name what they are about ("duplicate key"): the text
        // at the error, when it is one short line, does.
        let at = e
            .span()
            .and_then(|s| src.get(s))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 60 && !t.contains('\n'));
        let mut text = match at {
            Some(at) if !message.contains(at) => format!("{message} (at `{at}`)"),
            _ => message.to_string(),
        };
        // A balancer written as a table: the one mistake that message does not explain.
        if message.contains("expected a sequence")
            && at.is_some_and(|t| t.starts_with("[balancer]"))
        {
            text.push_str("; balancers are an array of tables: write [[balancer]]");
        }
        ConfigError(format!("{shown}:{line}: {text}"))
    })?;
    let err = |span: std::ops::Range<usize>, key: &str, msg: &str| {
        ConfigError(format!(
            "{shown}:{}: {key}: {msg}",
            line_of(&src, span.start)
        ))
    };
    let addr = |v: &Spanned<toml::Value>, key: &str| {
        v.get_ref()
            .as_str()
            .and_then(|s| s.parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                err(
                    v.span(),
                    key,
                    &format!("expected \"ADDRESS:PORT\", got {}", v.get_ref()),
                )
            })
    };
    let flag = |v: &Option<Spanned<toml::Value>>, key: &str| match v {
        None => Ok(false),
        Some(v) => v.get_ref().as_bool().ok_or_else(|| {
            err(
                v.span(),
                key,
                &format!("expected true or false, got {}", v.get_ref()),
            )
        }),
    };
    let manager_remote = flag(&file.manager_remote, "manager_remote")?;
    let mut manager_hosts = Vec::new();
    if let Some(v) = &file.manager_hosts {
        let names = v.get_ref().as_array().ok_or_else(|| {
            err(
                v.span(),
                "manager_hosts",
                &format!("expected a list of host names, got {}", v.get_ref()),
            )
        })?;
        for name in names {
            let name = name.as_str().ok_or_else(|| {
                err(
                    v.span(),
                    "manager_hosts",
                    &format!("expected a host name in quotes, got {name}"),
                )
            })?;
            lb_http::admin::check_host_name(name)
                .map_err(|e| err(v.span(), "manager_hosts", &e.to_string()))?;
            manager_hosts.push(name.to_string());
        }
    }
    let abort_on_close = flag(&file.abort_on_close, "abort_on_close")?;
    let listen = match &file.listen {
        Some(v) => addr(v, "listen")?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let manager = file
        .manager
        .as_ref()
        .map(|v| addr(v, "manager"))
        .transpose()?;
    let mut limits = GuardConfig::default();
    for (key, v) in [
        ("head_timeout", &file.head_timeout),
        ("idle_timeout", &file.idle_timeout),
        ("client_timeout", &file.client_timeout),
        ("max_headers", &file.max_headers),
        ("max_head_size", &file.max_head_size),
    ] {
        if let Some(v) = v {
            let n = v
                .get_ref()
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    err(
                        v.span(),
                        key,
                        &format!("expected a whole number, got {}", v.get_ref()),
                    )
                })?;
            set_limit(&mut limits, key, n).map_err(|e| err(v.span(), key, &e))?;
        }
    }
    let mut balancers = Vec::new();
    // Where each balancer's name and path are given (its first key when they are not).
    let mut places: Vec<(usize, usize)> = Vec::new();
    // Which sticky key each balancer uses, and where.
    let mut sticky_places: Vec<(&str, usize)> = Vec::new();
    for (i, table) in file.balancer.iter().enumerate() {
        let mut b = BalancerConf::new(&format!("balancer{i}"));
        let first = table.keys().map(|k| k.span().start).min().unwrap_or(0);
        let key_at = |name: &str| {
            table
                .keys()
                .find(|k| k.get_ref() == name)
                .map_or(first, |k| k.span().start)
        };
        places.push((key_at("name"), key_at("path")));
        let sticky_key = ["stickysession", "cookie"]
            .into_iter()
            .find(|n| table.keys().any(|k| k.get_ref() == n))
            .unwrap_or("stickysession");
        sticky_places.push((sticky_key, key_at(sticky_key)));
        // Two ways of sticky sessions: one would silently replace the other (the command
        // line refuses --cookie with --stickysession too).
        let sticky = table.keys().find(|k| k.get_ref() == "stickysession");
        let cookie = table.keys().find(|k| k.get_ref() == "cookie");
        if let (Some(sticky), Some(cookie)) = (sticky, cookie) {
            let (first, second) = if sticky.span().start < cookie.span().start {
                (sticky, cookie)
            } else {
                (cookie, sticky)
            };
            return Err(err(
                second.span(),
                second.get_ref(),
                &format!(
                    "cannot be combined with {} (line {}): use one of stickysession and cookie",
                    first.get_ref(),
                    line_of(&src, first.span().start)
                ),
            ));
        }
        // name and stickysession first: other keys refer to them.
        let mut keys: Vec<_> = table.iter().collect();
        keys.sort_by_key(|(k, _)| match k.get_ref().as_str() {
            "name" => 0,
            "stickysession" => 1,
            _ => 2,
        });
        for (k, v) in keys {
            let key = k.get_ref().as_str();
            if key == "members" {
                let toml::Value::Array(items) = v.get_ref() else {
                    return Err(err(k.span(), key, "expected a list of member strings"));
                };
                // Where to look for the next element's text in the list.
                let mut from = v.span().start;
                for item in items {
                    // The element's own line: find its text inside the list (a string's
                    // contents, else the value as TOML writes it).
                    let shown = match item {
                        toml::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    let at = src[from..v.span().end]
                        .find(&shown)
                        .map(|o| from + o)
                        .unwrap_or(from);
                    from = at + shown.len();
                    let bad = |msg: &str| err(at..at, "members", msg);
                    let Some(text) = item.as_str() else {
                        return Err(bad(&format!(
                            "expected a member string (\"http://host:port,key=value...\"), got {shown}"
                        )));
                    };
                    let m: MemberSpec = text
                        .parse()
                        .map_err(|e: lb_http::Error| bad(&e.to_string()))?;
                    b.clash(&m).map_err(|e| bad(&e))?;
                    b.members.push(m);
                }
                continue;
            }
            let Some(text) = value_text(v.get_ref()) else {
                return Err(err(
                    k.span(),
                    key,
                    &format!(
                        "expected a string, a whole number or a boolean, got {}",
                        v.get_ref()
                    ),
                ));
            };
            b.set(key, &text).map_err(|e| err(k.span(), key, &e))?;
        }
        if let Err(e) = b.check_hashkey() {
            let at = key_at("hashkey");
            return Err(err(at..at, "hashkey", &e));
        }
        if b.members.is_empty() {
            let start = table.keys().next().map(|k| k.span()).unwrap_or(0..0);
            return Err(err(
                start,
                "members",
                &format!("balancer {:?} has no members", b.name),
            ));
        }
        balancers.push(b);
    }
    if balancers.is_empty() {
        return Err(ConfigError(format!(
            "{shown}:1: balancer: no [[balancer]] defined"
        )));
    }
    // Balancer names and paths must be unique.
    for (i, a) in balancers.iter().enumerate() {
        for (j, b) in balancers[..i].iter().enumerate() {
            if a.name == b.name {
                let (at, first) = (places[i].0, places[j].0);
                return Err(err(
                    at..at,
                    "name",
                    &format!(
                        "balancer name {:?} used twice (first at line {})",
                        a.name,
                        line_of(&src, first)
                    ),
                ));
            }
            if a.path.trim_end_matches('/') == b.path.trim_end_matches('/') {
                let (at, first) = (places[i].1, places[j].1);
                return Err(err(
                    at..at,
                    "path",
                    &format!(
                        "path {:?} used by {:?} (line {}) and {:?}",
                        a.path,
                        b.name,
                        line_of(&src, first),
                        a.name
                    ),
                ));
            }
        }
    }
    check_shared_cookies(&balancers).map_err(|(i, j, msg)| {
        let (key, at) = sticky_places[i];
        err(
            at..at,
            key,
            &format!(
                "{msg} (the other's is at line {})",
                line_of(&src, sticky_places[j].1)
            ),
        )
    })?;
    Ok(Config {
        listen,
        manager,
        manager_remote,
        manager_hosts,
        balancers,
        file: Some(path.to_path_buf()),
        limits,
        abort_on_close,
        overrides: Overrides::default(),
    })
}

/// Refuses two balancers that share a sticky cookie name on nested paths (`/` and `/app`,
/// `/app` and `/app/v2`); returns the later one's index, the earlier one's and why.
///
/// Each balancer's cookie is set with `Path=<its path>`, so balancers on disjoint paths
/// (`/app`, `/api`) may share a name: a client sends each cookie only under its own path.
/// Under nested paths a client sends the outer balancer's cookie to the inner one too. With
/// both cookies, the inner's comes first and wins (RFC 6265 section 5.4), but before the
/// inner balancer has set its own, it reads the outer's: when that route names one of its
/// members too (the same hosts behind both, routes `a` and `b` in each), it follows it and
/// sets no cookie, so its sessions move whenever the outer's do. That cannot be told apart
/// from a request to the inner balancer alone, so the configuration is refused, naming
/// both balancers: giving one of them another cookie name removes the problem.
fn check_shared_cookies(balancers: &[BalancerConf]) -> Result<(), (usize, usize, String)> {
    let trimmed = |b: &BalancerConf| b.path.trim_end_matches('/').to_string();
    // Whether `outer` is a path prefix of `inner` (path-match, RFC 6265 section 5.1.4).
    let contains = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    for (i, a) in balancers.iter().enumerate() {
        let Some(sa) = &a.sticky else { continue };
        for (j, b) in balancers[..i].iter().enumerate() {
            let Some(sb) = &b.sticky else { continue };
            if sa.cookie != sb.cookie {
                continue;
            }
            let (pa, pb) = (trimmed(a), trimmed(b));
            let (outer, inner) = if contains(&pa, &pb) {
                (a, b)
            } else if contains(&pb, &pa) {
                (b, a)
            } else {
                continue;
            };
            // Never the root: the root contains every other path.
            let inner_path = trimmed(inner);
            return Err((
                i,
                j,
                format!(
                    "cookie {:?} is used by balancers {:?} (path {:?}) and {:?} (path {:?}): \
                     a client sends {:?}'s cookie under {inner_path:?} too, where {:?} would \
                     follow its route; give one of them another cookie name",
                    sa.cookie, b.name, b.path, a.name, a.path, outer.name, inner.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-balancer-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        // One file per call: tests run in parallel and two texts may have one length.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = dir.join(format!("c{n}-{}.toml", text.len()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_a_file() {
        let p = write(
            "listen = \"127.0.0.1:1\"\n[[balancer]]\nname = \"app\"\npath = \"/app\"\nstickysession = \"ROUTEID\"\nfailonstatus = [500, 503]\nmembers = [\n  \"http://127.0.0.1:9001,route=a\",\n  \"http://127.0.0.1:9002,route=b\",\n]\n",
        );
        let c = load_file(&p).unwrap();
        assert_eq!(c.balancers[0].name, "app");
        assert_eq!(c.balancers[0].failonstatus, vec![500, 503]);
        assert_eq!(c.balancers[0].members.len(), 2);
        assert!(!c.abort_on_close);
        let p =
            write("abort_on_close = true\n[[balancer]]\nmembers = [\"http://127.0.0.1:9001\"]\n");
        assert!(load_file(&p).unwrap().abort_on_close);
    }

    #[test]
    fn the_client_timeout_is_the_idle_one_unless_given() {
        let members = "[[balancer]]\nmembers = [\"http://127.0.0.1:9001\"]\n";
        let p = write(&format!("idle_timeout = 7\n{members}"));
        let limits = load_file(&p).unwrap().limits;
        assert_eq!(limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(limits.client_timeout_or_idle(), Duration::from_secs(7));
        let p = write(&format!(
            "idle_timeout = 7\nclient_timeout = 120\n{members}"
        ));
        let limits = load_file(&p).unwrap().limits;
        assert_eq!(limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(limits.client_timeout_or_idle(), Duration::from_secs(120));
        let p = write(&format!("\nclient_timeout = 0\n{members}"));
        let e = load_file(&p).unwrap_err().0;
        assert!(e.contains(":2: client_timeout: expected 1 to 86400"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let p = write(
            "[[balancer]]\nname = \"app\"\nmembers = [\n  \"http://127.0.0.1:9001\",\n  \"http://127.0.0.1:9002,loadfactor=500\",\n]\n",
        );
        let e = load_file(&p).unwrap_err().0;
        assert!(
            e.contains(":5: members: invalid value \"500\" for loadfactor"),
            "{e}"
        );
        let p = write(
            "[[balancer]]\nname = \"app\"\n\nmaxattempts = \"lots\"\nmembers = [\"http://127.0.0.1:9\"]\n",
        );
        let e = load_file(&p).unwrap_err().0;
        assert!(e.contains(":4: maxattempts:"), "{e}");
        let p = write("listen = \"127.0.0.1:1\"\nbogus = 1\n");
        let e = load_file(&p).unwrap_err().0;
        assert!(e.contains(":2:") && e.contains("bogus"), "{e}");
    }

    /// toml's own messages say what is wrong, not always about what: the text at the error
    /// is added, and the two mistakes QA met are explained.
    #[test]
    fn toml_errors_name_what_they_are_about() {
        let members = "members = [\"http://127.0.0.1:9\"]\n";
        let p = write(&format!("[[balancer]]\n{members}{members}"));
        let e = load_file(&p).unwrap_err().0;
        assert!(
            e.contains(":3: duplicate key") && e.contains("`members`"),
            "{e}"
        );
        let p = write(&format!("[balancer]\n{members}"));
        let e = load_file(&p).unwrap_err().0;
        assert!(e.contains("write [[balancer]]"), "{e}");
        let p = write(&format!("[[balancer]]\ntimeout = 1.5\n{members}"));
        let e = load_file(&p).unwrap_err().0;
        assert!(
            e.contains(":2: timeout: expected a string, a whole number or a boolean, got 1.5"),
            "{e}"
        );
    }

    #[test]
    fn bad_sticky_names_are_refused_naming_the_key_and_line() {
        for (value, why) in [
            ("\"\"", "a cookie name cannot be empty"),
            ("\"bad name;x\"", "' ' cannot be in a cookie name"),
            ("\"A|b|c\"", "'|' cannot be in a URL parameter name"),
            ("\"X|\"", "a URL parameter name cannot be empty"),
        ] {
            let p = write(&format!(
                "[[balancer]]\nname = \"app\"\n\nstickysession = {value}\nmembers = [\"http://127.0.0.1:9\"]\n"
            ));
            let e = load_file(&p).unwrap_err().0;
            assert!(e.contains(":4: stickysession: invalid value"), "{e}");
            assert!(e.contains(why), "{e}");
        }
        for value in ["a;b insert", "=x insert", "\"q\" insert"] {
            let p = write(&format!(
                "[[balancer]]\ncookie = {value:?}\nmembers = [\"http://127.0.0.1:9\"]\n"
            ));
            let e = load_file(&p).unwrap_err().0;
            assert!(e.contains(":2: cookie: invalid value"), "{e}");
        }
    }

    #[test]
    fn a_cookie_name_is_shared_only_by_balancers_on_disjoint_paths() {
        let two = |p1: &str, k1: &str, p2: &str, k2: &str| {
            write(&format!(
                "[[balancer]]\nname = \"one\"\npath = \"{p1}\"\n{k1}\nmembers = [\"http://127.0.0.1:9001\"]\n\
                 [[balancer]]\nname = \"two\"\npath = \"{p2}\"\n{k2}\nmembers = [\"http://127.0.0.1:9002\"]\n"
            ))
        };
        let r = "stickysession = \"ROUTEID\"";
        // Disjoint paths: each cookie is scoped to its balancer.
        load_file(&two("/app", r, "/api", r)).unwrap();
        load_file(&two("/app", r, "/apple", r)).unwrap();
        // Other names on nested paths are fine.
        load_file(&two("/", r, "/app", "stickysession = \"APPROUTE\"")).unwrap();
        for (p1, p2) in [("/", "/app"), ("/app/v2", "/app/"), ("/app", "/app/v2")] {
            let e = load_file(&two(p1, r, p2, r)).unwrap_err().0;
            assert!(
                e.contains(":9: stickysession: cookie \"ROUTEID\" is used by balancers \"one\""),
                "{e}"
            );
            assert!(e.contains("\"two\""), "{e}");
            assert!(
                e.contains("another cookie name (the other's is at line 4)"),
                "{e}"
            );
        }
        // The HAProxy cookie counts as well, whichever key sets the name.
        let e = load_file(&two("/", r, "/app", "cookie = \"ROUTEID insert\""))
            .unwrap_err()
            .0;
        assert!(e.contains(":9: cookie: cookie \"ROUTEID\""), "{e}");
    }
}
