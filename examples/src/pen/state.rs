//! The running lb-pen: the proxy, its client table, the server list in pen's order, and
//! the penctl commands that read and change them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lb_core::clock::now_ms;
use lb_core::health::PassiveConfig;
use lb_core::{Address, BackendId};
use lb_tcp::xff::XffScope;
use lb_tcp::{ConnectionEvent, TcpProxy};
use tokio::sync::{Notify, watch};

use lb_core::persistence::{ClientTable, ClientTableConfig};

use lb_examples::ha::status_line;

use super::modes::Modes;
use super::spec;

/// What pen remembers about a recent client (penctl `recent`).
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    last_ms: u64,
    connects: u64,
    sx: u64,
    rx: u64,
}

/// Most clients kept for `recent`.
const RECENT_MAX: usize = 10_000;

/// The running balancer and everything penctl can see.
pub(crate) struct Pen {
    pub(crate) proxy: TcpProxy,
    /// The client table the balancer consults; replaced (entries carried over) when
    /// `clients_max` or `tracking` changes. A watch, so HA state sync follows the
    /// replacement.
    table: watch::Sender<Arc<ClientTable>>,
    /// The HA node's status, when lb-pen runs as one.
    ha: Mutex<Option<watch::Receiver<lb_ha::protocol::Status>>>,
    /// pen's selection flags; each change installs the scheduler they select.
    modes: Mutex<Modes>,
    /// pen's server numbers, in command-line order.
    servers: Mutex<Vec<BackendId>>,
    blacklist: Mutex<Duration>,
    roundrobin: AtomicBool,
    pub(crate) exit_allowed: bool,
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) listen: String,
    pub(crate) control: Mutex<String>,
    recent: Mutex<HashMap<IpAddr, Recent>>,
    log: Mutex<Option<(PathBuf, std::fs::File)>>,
    pub(crate) webstats: Option<PathBuf>,
    pub(crate) debug: AtomicU8,
    /// Signalled by the control port's `exit`.
    pub(crate) exit: Notify,
    pub(crate) cmdline: String,
}

impl std::fmt::Debug for Pen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pen")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds from a penctl argument.
fn secs(v: &str, what: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("bad {what} {v:?}: expected seconds"))
}

fn num(v: &str, what: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("bad {what} {v:?}: expected a number"))
}

/// A UTC timestamp `YYYY-MM-DD HH:MM:SS` (Howard Hinnant's civil-from-days).
pub(crate) fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((now / 86_400) as i64, now % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Settings lb-pen starts with (from the command line).
#[derive(Debug)]
pub(crate) struct PenInit {
    pub(crate) servers: Vec<BackendId>,
    pub(crate) modes: Modes,
    pub(crate) blacklist: Duration,
    pub(crate) roundrobin: bool,
    pub(crate) exit_allowed: bool,
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) listen: String,
    pub(crate) log: Option<PathBuf>,
    pub(crate) webstats: Option<PathBuf>,
    pub(crate) debug: u8,
    pub(crate) cmdline: String,
}

impl Pen {
    pub(crate) fn new(
        proxy: TcpProxy,
        table: Arc<ClientTable>,
        init: PenInit,
    ) -> Result<Arc<Pen>, String> {
        let log = match init.log {
            Some(path) => Some((path.clone(), open_log(&path)?)),
            None => None,
        };
        let pen = Arc::new(Pen {
            proxy,
            table: watch::channel(table).0,
            ha: Mutex::new(None),
            modes: Mutex::new(init.modes),
            servers: Mutex::new(init.servers),
            blacklist: Mutex::new(init.blacklist),
            roundrobin: AtomicBool::new(init.roundrobin),
            exit_allowed: init.exit_allowed,
            config_file: init.config_file,
            listen: init.listen,
            control: Mutex::new(String::new()),
            recent: Mutex::new(HashMap::new()),
            log: Mutex::new(log),
            webstats: init.webstats,
            debug: AtomicU8::new(init.debug),
            exit: Notify::new(),
            cmdline: init.cmdline,
        });
        let weak = Arc::downgrade(&pen);
        pen.proxy
            .set_observer(Some(Arc::new(move |event: &ConnectionEvent| {
                if let Some(pen) = weak.upgrade() {
                    pen.observe(event);
                }
            })));
        Ok(pen)
    }

    fn observe(&self, event: &ConnectionEvent) {
        match event {
            ConnectionEvent::Opened { client, .. } => {
                let mut recent = lock(&self.recent);
                if recent.len() >= RECENT_MAX && !recent.contains_key(&client.ip()) {
                    if let Some(oldest) = recent
                        .iter()
                        .min_by_key(|(_, r)| r.last_ms)
                        .map(|(ip, _)| *ip)
                    {
                        recent.remove(&oldest);
                    }
                }
                let r = recent.entry(client.ip().to_canonical()).or_default();
                r.last_ms = now_ms();
                r.connects += 1;
            }
            ConnectionEvent::Closed {
                client,
                backend,
                bytes_in,
                bytes_out,
                duration,
                ..
            } => {
                if let Some(r) = lock(&self.recent).get_mut(&client.ip().to_canonical()) {
                    r.sx += bytes_in;
                    r.rx += bytes_out;
                }
                let mut log = lock(&self.log);
                if let Some((_, file)) = log.as_mut() {
                    let server = self
                        .proxy
                        .balancer()
                        .get(*backend)
                        .map(|m| m.backend().address().to_string())
                        .unwrap_or_default();
                    let _ = writeln!(
                        file,
                        "{} {client} {server} sx {bytes_in} rx {bytes_out} {:.3}s",
                        timestamp(),
                        duration.as_secs_f64()
                    );
                }
            }
            ConnectionEvent::Failed { client, reason } => {
                if self.debug.load(Relaxed) > 0 {
                    eprintln!("lb-pen: {client}: {reason}");
                }
                self.log_line(&format!("{} {client} failed: {reason}", timestamp()));
            }
            _ => {}
        }
    }

    fn log_line(&self, line: &str) {
        if let Some((_, file)) = lock(&self.log).as_mut() {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Reopens the log file (after rotation; pen does this on HUP).
    pub(crate) fn reopen_log(&self) -> Result<(), String> {
        let mut log = lock(&self.log);
        if let Some((path, file)) = log.as_mut() {
            *file = open_log(path)?;
        }
        Ok(())
    }

    fn server_id(&self, n: &str) -> Result<BackendId, String> {
        let i: usize = n.parse().map_err(|_| format!("bad server number {n:?}"))?;
        lock(&self.servers)
            .get(i)
            .copied()
            .ok_or_else(|| format!("no server {i}"))
    }

    /// Runs one penctl command line; returns the reply (possibly empty).
    pub(crate) fn command(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let lb = self.proxy.balancer();
        let flag = |set: fn(&mut Modes, bool), on: bool| {
            self.set_mode(set, on);
            Ok(String::new())
        };
        match words.as_slice() {
            [] => Ok(String::new()),
            [c, ..] if c.starts_with('#') => Ok(String::new()),
            ["servers"] => Ok(self.servers_text()),
            ["server", n, rest @ ..] => self.server_command(n, rest),
            ["mode"] => Ok(self.mode_text() + "\n"),
            ["status"] => Ok(self.status_html()),
            ["hash"] => flag(|m, on| m.hash = on, true),
            ["no", "hash"] => flag(|m, on| m.hash = on, false),
            ["weight"] => flag(|m, on| m.weight = on, true),
            ["no", "weight"] => flag(|m, on| m.weight = on, false),
            ["prio"] => flag(|m, on| m.prio = on, true),
            ["no", "prio"] => flag(|m, on| m.prio = on, false),
            ["roundrobin"] => {
                self.roundrobin.store(true, Relaxed);
                lb.update_config(|c| c.bypass_persistence = true)
                    .map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            ["no", "roundrobin"] => {
                self.roundrobin.store(false, Relaxed);
                lb.update_config(|c| c.bypass_persistence = false)
                    .map_err(|e| e.to_string())?;
                Ok(String::new())
            }
            ["stubborn"] => self.set_stubborn(true),
            ["no", "stubborn"] => self.set_stubborn(false),
            ["http"] => {
                self.proxy
                    .update_config(|c| c.xff = Some(XffScope::EveryRequest));
                Ok(String::new())
            }
            ["no", "http"] => {
                self.proxy.update_config(|c| c.xff = None);
                Ok(String::new())
            }
            ["tracking"] => Ok(format!("{}\n", self.table().config().tracking.as_secs())),
            ["tracking", n] => {
                let t = Duration::from_secs(secs(n, "tracking time")?);
                self.reconfigure_table(|c| c.with_tracking(t))?;
                Ok(String::new())
            }
            ["blacklist"] => Ok(format!("{}\n", lock(&self.blacklist).as_secs())),
            ["blacklist", n] => {
                let t = Duration::from_secs(secs(n, "blacklist time")?);
                *lock(&self.blacklist) = t;
                lb.set_passive(passive(t));
                Ok(String::new())
            }
            ["clients_max"] => Ok(format!("{}\n", self.table().config().slots)),
            ["clients_max", n] => {
                let slots = (num(n, "clients_max")? as usize).max(1);
                self.reconfigure_table(|c| c.with_slots(slots))?;
                Ok(format!("{}\n", self.table().config().slots))
            }
            ["conn_max"] => Ok(format!("{}\n", self.proxy.config().max_conns)),
            ["conn_max", n] => {
                let n = num(n, "conn_max")? as usize;
                self.proxy.update_config(|c| c.max_conns = n);
                Ok(format!("{n}\n"))
            }
            ["timeout"] => Ok(format!(
                "{}\n",
                self.proxy.config().connect_timeout.as_secs()
            )),
            ["timeout", n] => {
                let t = Duration::from_secs(secs(n, "timeout")?.max(1));
                self.proxy.update_config(|c| c.connect_timeout = t);
                Ok(String::new())
            }
            ["idle_timeout", n] => {
                let t = secs(n, "idle timeout")?;
                let t = (t > 0).then(|| Duration::from_secs(t));
                self.proxy
                    .update_config(|c| c.relay = c.relay.clone().with_idle_timeout(t));
                Ok(String::new())
            }
            ["clients"] => Ok(self.clients_text()),
            ["ha"] => match &*lock(&self.ha) {
                Some(status) => Ok(format!("{}\n", status_line(&status.borrow()))),
                None => Err("ha: lb-pen runs without --ha-config or --ha-toml".to_string()),
            },
            ["recent"] => Ok(self.recent_text(300)),
            ["recent", n] => Ok(self.recent_text(secs(n, "recent time")?)),
            ["write"] => match &self.config_file {
                Some(path) => self.write_config(path),
                None => Err("write: no file given and no -F file".to_string()),
            },
            ["write", file] => self.write_config(&PathBuf::from(file)),
            ["include", file] => self.include(&PathBuf::from(file)),
            ["pid"] => Ok(format!("{}\n", std::process::id())),
            ["listen"] => Ok(format!("{}\n", self.listen)),
            ["control"] => Ok(format!("{}\n", lock(&self.control))),
            ["debug"] => Ok(format!("{}\n", self.debug.load(Relaxed))),
            ["debug", n] => {
                self.debug
                    .store(num(n, "debug level")?.min(255) as u8, Relaxed);
                Ok(String::new())
            }
            ["exit"] if self.exit_allowed => {
                self.exit.notify_one();
                Ok(String::new())
            }
            ["exit"] => Err("exit is only allowed when lb-pen runs with -X".to_string()),
            [c, ..] => Err(format!("ignoring unknown or unsupported command {c:?}")),
        }
    }

    /// The client table in use.
    pub(crate) fn table(&self) -> Arc<ClientTable> {
        self.table.borrow().clone()
    }

    /// The client table in use now and after every replacement (for HA state sync).
    pub(crate) fn tables(&self) -> watch::Receiver<Arc<ClientTable>> {
        self.table.subscribe()
    }

    /// Shows the HA node's status in `ha` and on the status page.
    pub(crate) fn set_ha(&self, status: watch::Receiver<lb_ha::protocol::Status>) {
        *lock(&self.ha) = Some(status);
    }

    /// Sets one selection flag and installs the scheduler the flags now select.
    fn set_mode(&self, set: fn(&mut Modes, bool), on: bool) {
        let mut modes = lock(&self.modes);
        set(&mut modes, on);
        self.proxy.balancer().set_scheduler(modes.scheduler());
    }

    /// Replaces the client table with one of changed settings, carrying the remembered
    /// clients over (the least recently used go first when there are fewer slots; entries
    /// older than a new tracking time expire), and hands it to the balancer.
    fn reconfigure_table(
        &self,
        change: impl FnOnce(ClientTableConfig) -> ClientTableConfig,
    ) -> Result<(), String> {
        let mut result = Ok(());
        // Under the watch's lock, so two control sessions cannot interleave; receivers
        // (the HA sync) see the new table only once the balancer uses it.
        self.table.send_if_modified(|current| {
            let config = change(current.config().clone());
            let table = match ClientTable::new(config) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    result = Err(e.to_string());
                    return false;
                }
            };
            table.import(current.export());
            let persistence: Arc<dyn lb_core::persistence::Persistence> = table.clone();
            if let Err(e) = self
                .proxy
                .balancer()
                .update_config(|c| c.persistence = Some(persistence))
            {
                result = Err(e.to_string());
                return false;
            }
            *current = table;
            true
        });
        result
    }

    fn set_stubborn(&self, on: bool) -> Result<String, String> {
        self.proxy
            .balancer()
            .update_config(|c| {
                c.stubborn = on;
                c.max_attempts = if on { 1 } else { 0 };
            })
            .map_err(|e| e.to_string())?;
        Ok(String::new())
    }

    fn server_command(&self, n: &str, rest: &[&str]) -> Result<String, String> {
        let id = self.server_id(n)?;
        let lb = self.proxy.balancer();
        if rest.is_empty() || rest.len() % 2 != 0 {
            return Err(format!(
                "server {n}: expected pairs like 'weight 2' after the number"
            ));
        }
        let err = |e: lb_core::Error| e.to_string();
        for pair in rest.chunks(2) {
            let (key, value) = (pair[0], pair[1]);
            match key {
                "weight" => lb
                    .set_weight(id, num(value, "weight")?.max(1))
                    .map_err(err)?,
                "max" => {
                    let m = num(value, "max")?;
                    lb.update(id, |b| b.set_max_conns((m > 0).then_some(m)))
                        .map_err(err)?
                }
                "hard" => {
                    let h = num(value, "hard")?;
                    lb.update(id, |b| b.set_hard_conns((h > 0).then_some(h)))
                        .map_err(err)?
                }
                "prio" => {
                    let p = num(value, "prio")?;
                    lb.update(id, |b| b.set_priority(p)).map_err(err)?
                }
                "blacklist" => {
                    let t = secs(value, "blacklist time")?;
                    if t == 0 {
                        lb.clear_error(id).map_err(err)?
                    } else {
                        lb.set_error_for(id, Duration::from_secs(t)).map_err(err)?
                    }
                }
                "address" => {
                    let port = lb
                        .get(id)
                        .and_then(|m| m.backend().address().port())
                        .unwrap_or(0);
                    let addr = spec::parse_server(value, port)?.addr;
                    let addr = SocketAddr::new(addr.ip(), port);
                    lb.update(id, |b| b.set_address(Address::Socket(addr)))
                        .map_err(err)?;
                    self.table().forget_backend(id);
                }
                "port" => {
                    let port = spec::parse_port(value, "server command")?;
                    let addr = lb
                        .get(id)
                        .map(|m| m.backend().address().with_port(port))
                        .ok_or_else(|| format!("no server {n}"))?;
                    lb.update(id, |b| b.set_address(addr)).map_err(err)?;
                    self.table().forget_backend(id);
                }
                other => {
                    return Err(format!(
                        "server {n}: unknown or unsupported setting {other:?}"
                    ));
                }
            }
        }
        Ok(String::new())
    }

    fn servers_text(&self) -> String {
        let lb = self.proxy.balancer();
        let mut out = String::new();
        for (i, id) in lock(&self.servers).iter().enumerate() {
            let Some(m) = lb.get(*id) else { continue };
            let b = m.backend();
            let s = m.state();
            let (ip, port) = match b.address() {
                Address::Socket(a) => (a.ip().to_string(), a.port()),
                other => (other.to_string(), other.port().unwrap_or(0)),
            };
            let _ = writeln!(
                out,
                "{i} addr {ip} port {port} conn {} max {} hard {} weight {} prio {} sx {} rx {}",
                s.active(),
                b.max_conns().unwrap_or(0),
                b.hard_conns().unwrap_or(0),
                b.weight(),
                b.priority(),
                s.bytes_in(),
                s.bytes_out()
            );
        }
        out
    }

    /// pen's `mode` line.
    pub(crate) fn mode_text(&self) -> String {
        let modes = *lock(&self.modes);
        let stubborn = self.proxy.balancer().config().stubborn;
        let w = |on: bool, name: &str| {
            if on {
                name.to_string()
            } else {
                format!("no {name}")
            }
        };
        [
            w(modes.hash, "hash"),
            w(self.roundrobin.load(Relaxed), "roundrobin"),
            w(stubborn, "stubborn"),
            w(modes.weight, "weight"),
            w(modes.prio, "prio"),
        ]
        .join(" ")
    }

    /// The client table (lb-pen's `clients`): `ADDRESS server N age SECONDS`, most
    /// recently used first.
    fn clients_text(&self) -> String {
        let servers = lock(&self.servers).clone();
        let mut out = String::new();
        for e in self.table().entries() {
            let client = match e.client_ip() {
                Some(ip) => ip.to_string(),
                None => e.key.iter().map(|b| format!("{b:02x}")).collect(),
            };
            let server = servers
                .iter()
                .position(|id| *id == e.backend)
                .map_or_else(|| "emergency".to_string(), |i| i.to_string());
            let _ = writeln!(out, "{client} server {server} age {}", e.age.as_secs());
        }
        out
    }

    fn recent_text(&self, within: u64) -> String {
        let now = now_ms();
        let window = within.saturating_mul(1000);
        let recent = lock(&self.recent);
        let mut rows: Vec<_> = recent
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.last_ms) <= window)
            .collect();
        rows.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_ms));
        rows.iter()
            .map(|(ip, r)| format!("{ip} connects {} sx {} rx {}\n", r.connects, r.sx, r.rx))
            .collect()
    }

    /// The configuration in penctl format (pen's `write`).
    pub(crate) fn config_text(&self) -> String {
        let lb = self.proxy.balancer();
        let cfg = self.proxy.config();
        let modes = *lock(&self.modes);
        let on = |b: bool, name: &str| {
            if b {
                format!("{name}\n")
            } else {
                format!("no {name}\n")
            }
        };
        let mut out = format!(
            "# Generated by lb-pen {}\n# {}\n",
            timestamp(),
            self.cmdline
        );
        let _ = writeln!(out, "blacklist {}", lock(&self.blacklist).as_secs());
        out += &on(modes.hash, "hash");
        out += &on(cfg.xff.is_some(), "http");
        out += &on(self.roundrobin.load(Relaxed), "roundrobin");
        for (i, id) in lock(&self.servers).iter().enumerate() {
            let Some(m) = lb.get(*id) else { continue };
            let b = m.backend();
            let (ip, port) = match b.address() {
                Address::Socket(a) => (a.ip().to_string(), a.port()),
                other => (other.to_string(), other.port().unwrap_or(0)),
            };
            let _ = writeln!(
                out,
                "server {i} address {ip} port {port} max {} hard {} weight {} prio {}",
                b.max_conns().unwrap_or(0),
                b.hard_conns().unwrap_or(0),
                b.weight(),
                b.priority()
            );
        }
        out += &on(lb.config().stubborn, "stubborn");
        let _ = writeln!(out, "timeout {}", cfg.connect_timeout.as_secs());
        let _ = writeln!(out, "tracking {}", self.table().config().tracking.as_secs());
        let _ = writeln!(out, "clients_max {}", self.table().config().slots);
        let _ = writeln!(out, "conn_max {}", cfg.max_conns);
        out += &on(modes.weight, "weight");
        out += &on(modes.prio, "prio");
        out
    }

    fn write_config(&self, path: &PathBuf) -> Result<String, String> {
        std::fs::write(path, self.config_text())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(String::new())
    }

    /// Runs every command of a penctl-format file; the first bad line is an error naming it.
    pub(crate) fn include(&self, path: &PathBuf) -> Result<String, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut out = String::new();
        for (n, line) in text.lines().enumerate() {
            out += &self
                .command(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        }
        Ok(out)
    }

    /// Statistics as pen prints them on USR1 (plain text).
    pub(crate) fn stats_text(&self) -> String {
        let stats = self.proxy.balancer().stats();
        let mut out = format!(
            "{} lb-pen statistics: {} connections active, {} total, {} clients tracked; mode: {}\n",
            timestamp(),
            self.proxy.active(),
            stats.total,
            self.table().len(),
            self.mode_text()
        );
        out += &self.servers_text();
        out
    }

    /// pen's HTML status page (`status`, `-w`).
    pub(crate) fn status_html(&self) -> String {
        let stats = self.proxy.balancer().stats();
        let mut out = String::from(
            "<html><head><title>lb-pen status</title></head><body>\n<h1>lb-pen status</h1>\n",
        );
        let _ = writeln!(
            out,
            "<p>{} | listen {} | mode: {} | active {} / {} | clients {} / {}</p>",
            timestamp(),
            html(&self.listen),
            self.mode_text(),
            self.proxy.active(),
            self.proxy.config().max_conns,
            self.table().len(),
            self.table().config().slots
        );
        if let Some(status) = &*lock(&self.ha) {
            let _ = writeln!(
                out,
                "<p id=\"ha\">ha: {}</p>",
                html(&status_line(&status.borrow()))
            );
        }
        out += "<table border=1>\n<tr><th>server</th><th>address</th><th>role</th><th>state</th><th>conn</th><th>max</th><th>hard</th><th>weight</th><th>prio</th><th>total</th><th>failures</th><th>sx</th><th>rx</th></tr>\n";
        let servers = lock(&self.servers).clone();
        for b in &stats.backends {
            let n = servers
                .iter()
                .position(|id| *id == b.id)
                .map_or_else(|| "emergency".to_string(), |i| i.to_string());
            let state = match b.in_error_for {
                Some(t) => format!("blacklisted {}s", t.as_secs()),
                None => "ok".to_string(),
            };
            let _ = writeln!(
                out,
                "<tr><td>{n}</td><td>{}</td><td>{:?}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&b.address),
                b.role,
                b.active,
                b.max_conns.unwrap_or(0),
                b.hard_conns.unwrap_or(0),
                b.weight,
                b.priority,
                b.total,
                b.failures,
                b.bytes_in,
                b.bytes_out
            );
        }
        out += "</table>\n</body></html>\n";
        out
    }

    /// USR1: statistics to stderr, and the HTML page to the `-w` file.
    pub(crate) fn dump_stats(&self) {
        eprint!("{}", self.stats_text());
        if let Some(path) = &self.webstats {
            if let Err(e) = std::fs::write(path, self.status_html()) {
                eprintln!("lb-pen: cannot write {}: {e}", path.display());
            }
        }
    }
}

/// pen's passive health: one failed connect blacklists a server for `t`.
pub(crate) fn passive(t: Duration) -> PassiveConfig {
    PassiveConfig::new(1, t).with_max_backoff(t)
}

fn open_log(path: &PathBuf) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{Backend, BalancerBuilder, PickContext};
    use lb_tcp::ProxyConfig;

    fn pen() -> Arc<Pen> {
        let table = Arc::new(ClientTable::new(ClientTableConfig::default()).unwrap());
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let lb = BalancerBuilder::with_scheduler(Modes::default().scheduler())
            .backend(Backend::new(addr(1)))
            .backend(Backend::new(addr(2)))
            .persistence(table.clone())
            .build()
            .unwrap();
        let servers = lb.members().iter().map(|m| m.id()).collect();
        let proxy = TcpProxy::new(lb, ProxyConfig::default());
        Pen::new(
            proxy,
            table,
            PenInit {
                servers,
                modes: Modes::default(),
                blacklist: Duration::from_secs(30),
                roundrobin: false,
                exit_allowed: false,
                config_file: None,
                listen: "test".into(),
                log: None,
                webstats: None,
                debug: 0,
                cmdline: "lb-pen test".into(),
            },
        )
        .unwrap()
    }

    fn client(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 4000))
    }

    #[tokio::test(start_paused = true)]
    async fn clients_max_and_tracking_swap_the_table_and_keep_recent_clients() {
        let pen = pen();
        let lb = pen.proxy.balancer();
        let mut chosen = Vec::new();
        for last in 1..=3 {
            let id = lb
                .pick(&PickContext::new().with_client(client(last)))
                .unwrap()
                .id();
            chosen.push(id);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(pen.table().len(), 3);
        assert_eq!(pen.command("clients_max 2").unwrap(), "2\n");
        assert_eq!(pen.command("clients_max").unwrap(), "2\n");
        // The least recently used client went; the others kept their servers.
        let entries = pen.table().entries();
        assert_eq!(entries.len(), 2);
        for (i, last) in [(1, 2u8), (2, 3u8)] {
            let e = entries
                .iter()
                .find(|e| e.client_ip() == Some(client(last).ip()))
                .unwrap();
            assert_eq!(e.backend, chosen[i]);
        }
        // The balancer uses the new table: a new client is recorded in it.
        let _lease = lb.pick(&PickContext::new().with_client(client(9))).unwrap();
        assert_eq!(pen.table().len(), 2);
        assert!(
            pen.table()
                .entries()
                .iter()
                .any(|e| e.client_ip() == Some(client(9).ip()))
        );
        pen.command("tracking 5").unwrap();
        assert_eq!(pen.command("tracking").unwrap(), "5\n");
        assert_eq!(pen.table().len(), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(pen.table().len(), 0);
        assert!(pen.command("clients_max x").is_err());
    }

    #[test]
    fn clients_lists_the_table_and_ha_says_when_it_is_off() {
        let pen = pen();
        let lb = pen.proxy.balancer();
        let first = lb
            .pick(&PickContext::new().with_client(client(1)))
            .unwrap()
            .id();
        let _ = lb.pick(&PickContext::new().with_client(client(2))).unwrap();
        let n = usize::from(first != lb.members()[0].id());
        // Ages are not compared: lb-core's clock origin is shared by the tests of this
        // process, each on its own paused clock.
        let mut rows: Vec<String> = pen
            .command("clients")
            .unwrap()
            .lines()
            .map(|l| l.split(" age ").next().unwrap().to_string())
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                format!("192.0.2.1 server {n}"),
                format!("192.0.2.2 server {}", 1 - n)
            ]
        );
        assert!(pen.command("ha").unwrap_err().contains("--ha-config"));
    }

    #[test]
    fn mode_commands_install_the_scheduler_in_pen_precedence() {
        let pen = pen();
        let name = || pen.proxy.balancer().scheduler().name();
        assert_eq!(name(), "roundrobin");
        pen.command("hash").unwrap();
        assert_eq!(name(), "sh");
        pen.command("weight").unwrap();
        assert_eq!(name(), "wlc");
        pen.command("prio").unwrap();
        assert_eq!(name(), "prio");
        assert_eq!(
            pen.mode_text(),
            "hash no roundrobin no stubborn weight prio"
        );
        pen.command("no prio").unwrap();
        pen.command("no weight").unwrap();
        assert_eq!(name(), "sh");
        pen.command("no hash").unwrap();
        assert_eq!(name(), "roundrobin");
    }
}
