//! lb-balancer: mod_proxy_balancer's model as a standalone reverse proxy, built from lb-http.
//!
//! `run` builds a [`Plan`]: one lb-core balancer per configured balancer with its lb-http
//! settings. It serves the plan from `workers` threads, each a single-threaded tokio runtime
//! with its own `SO_REUSEPORT` listener, its own [`Site`] stacks and connection pools (so a
//! request never changes threads), all sharing the same balancers. A control thread runs the
//! health checks, the balancer manager and the signals: on SIGHUP it reads the configuration
//! file again and hands the new plan to every worker, which swaps its routing table
//! (connections and requests in flight are not touched; a bad file is reported and the
//! running configuration kept). Balancers that stay keep their counters, health and
//! manager changes ([`reload`]).
//!
//! With HA (`--ha-config` / `--ha-toml`) the listeners are bound with IP_FREEBIND and the
//! control thread also runs the Heartbeat node: its status is a section of the balancer
//! manager, and on SIGTERM/SIGINT it demotes (and tells the peer) before the workers stop.

pub(crate) mod config;
pub(crate) mod demo;
mod reload;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::Balancer;
use lb_http::admin::{Manager, ManagerConfig};
use lb_http::balance::BalanceConfig;
use lb_http::hcheck::{HealthChecks, HealthRunner};
use lb_http::headers::ForwardedHeaders;
use lb_http::proxy::ProxyConfig;
use lb_http::retry::RetryConfig;
use lb_http::router::{Router, SharedRouter, Site, SiteConfig};
use lb_http::server::{ServerConfig, serve};
use tokio::net::TcpListener;
use tokio::sync::watch;

use config::{BalancerConf, Config, ConfigError, resolve_lbmethod};
use lb_examples::ha::{HaPlan, log_events};

/// Builds the lb-core balancer of one configured balancer.
pub(crate) fn build_balancer(c: &BalancerConf) -> Result<Balancer, String> {
    let (scheduler, note) = resolve_lbmethod(&c.lbmethod)?;
    if let Some(n) = note {
        eprintln!("lb-balancer: warning: {n}");
    }
    let mut builder = Balancer::builder()
        .scheduler(scheduler)
        .max_attempts(c.max_attempts())
        .stubborn(c.nofailover)
        // Passive health is lb-http's (failonstatus, retry per member); keep lb-core's
        // counters but not its own ejection.
        .passive(lb_core::health::PassiveConfig::off());
    let mut flags = Vec::new();
    for m in &c.members {
        builder = builder.backend(m.to_backend().map_err(|e| e.to_string())?);
        flags.push(m.status);
    }
    let b = builder
        .build()
        .map_err(|e| format!("balancer {}: {e}", c.name))?;
    b.update_config(|p| p.force_recovery = c.forcerecovery)
        .map_err(|e| e.to_string())?;
    for (m, f) in b.members().iter().zip(flags) {
        f.set_on(&b, m.id()).map_err(|e| e.to_string())?;
    }
    Ok(b)
}

/// What the workers serve: the balancers (shared) and how to build each site's stack.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    sites: Vec<(String, Balancer, SiteConfig)>,
    /// What each site's balancer was built from, for the next reload.
    confs: Vec<BalancerConf>,
}

impl Plan {
    /// A router with fresh stacks (and connection pools) over the plan's balancers.
    fn router(&self) -> Router {
        Router::new(
            self.sites
                .iter()
                .map(|(mount, b, c)| Site::new(mount, b.clone(), c.clone()))
                .collect(),
        )
    }

    fn balancers(&self) -> Vec<(String, Balancer)> {
        self.sites
            .iter()
            .map(|(_, b, c)| (c.balance.name.clone(), b.clone()))
            .collect()
    }
}

/// Builds the plan of a configuration; with the `running` plan, balancers of the same name
/// are kept with the file's changes applied ([`reload`]).
pub(crate) fn build_plan(config: &Config, running: Option<&Plan>) -> Result<Plan, String> {
    // The changes to running balancers are made in edits, held until every balancer of the
    // file is known to build: a bad file changes no running balancer, and a manager action
    // cannot land between a balancer's check and its change (it waits for the commit).
    let mut edits = Vec::new();
    let mut sites = Vec::new();
    for c in &config.balancers {
        let balancer = match running.and_then(|p| reload::running(p, &c.name)) {
            Some((b, old)) => {
                // The file's balancer must build on its own too (it would at a restart).
                build_balancer(c)?;
                edits.push(reload::edit(b, old, c)?);
                b.clone()
            }
            None => build_balancer(c)?,
        };
        let mut proxy = ProxyConfig {
            preserve_host: c.preservehost,
            connect_timeout: c.connect_timeout,
            ..Default::default()
        };
        proxy.forwarded = ForwardedHeaders {
            x_forwarded: true,
            forwarded: c.forwarded,
        };
        if let Some(t) = c.timeout {
            proxy.response_timeout = t;
        }
        // A client silent in the middle of a request body is timed as one that takes no byte
        // of its response (the guard's write stall): HAProxy's `timeout client`.
        proxy.client_body_timeout = config.limits.client_timeout_or_idle();
        let site = SiteConfig {
            proxy,
            balance: BalanceConfig {
                name: c.name.clone(),
                key: c.hashkey.clone(),
                failonstatus: c.failonstatus.clone(),
                failontimeout: c.failontimeout,
                ..Default::default()
            },
            sticky: c.sticky.clone(),
            retry: (!c.retry_on.is_empty()).then(|| RetryConfig {
                statuses: c.retry_on.clone(),
                client_body_timeout: config.limits.client_timeout_or_idle(),
                ..Default::default()
            }),
        };
        sites.push((c.path.clone(), balancer, site));
    }
    for e in edits {
        e.commit();
    }
    // The manager shows the lbmethod as the file names it (byrequests, not lb-core's wrr);
    // one lb-core lacks (heartbeat) runs another scheduler, which is named instead.
    for ((_, b, _), c) in sites.iter().zip(&config.balancers) {
        if c.scheduler_note.is_none() {
            lb_http::admin::set_lbmethod_name(b, &c.lbmethod);
        }
    }
    for c in &config.balancers {
        // Accepted (0 is lb's quiescent member), but likely a mistake: say what it does.
        // Every member disabled or stopped: started as configured (the manager can enable
        // one), but every request gets 503 until then.
        if !c.members.is_empty()
            && c.members
                .iter()
                .all(|m| m.status.disabled || m.status.stopped)
        {
            eprintln!(
                "lb-balancer: warning: balancer {}: every member is disabled (+D) or stopped \
                 (+S); requests get 503 until one is enabled",
                c.name
            );
        }
        if !c.members.is_empty() && c.members.iter().all(|m| m.loadfactor == 0) {
            eprintln!(
                "lb-balancer: warning: balancer {}: every member has loadfactor 0, which takes \
                 sticky sessions only; requests without a route get 503",
                c.name
            );
        }
    }
    Ok(Plan {
        sites,
        confs: config.balancers.clone(),
    })
}

/// The health checks of every balancer of `plan`, by balancer name; dropping a handle stops
/// its monitors. A balancer that `running` already checks keeps its checks (they follow
/// member changes, and a new monitor would reset every member's health). A balancer whose
/// checks cannot start is reported and left unchecked (its settings were validated when the
/// plan was built, so this is not expected).
fn spawn_health(
    plan: &Plan,
    mut running: Vec<(String, HealthChecks)>,
) -> Vec<(String, HealthChecks)> {
    let mut handles = Vec::new();
    for (path, b, c) in &plan.sites {
        let name = &c.balance.name;
        if let Some(i) = running.iter().position(|(n, _)| n == name) {
            handles.push(running.swap_remove(i));
            continue;
        }
        match HealthRunner::new(b.clone(), Duration::from_secs(5)).spawn() {
            Ok(h) => handles.push((name.clone(), h)),
            Err(e) => eprintln!("lb-balancer: health checks of {path} not started: {e}"),
        }
    }
    handles
}

/// How long a connection may wait in the kernel for its first bytes before it is accepted.
const DEFER_ACCEPT: std::time::Duration = std::time::Duration::from_secs(10);

/// A listener on `addr` that other workers can bind too (`SO_REUSEPORT`); with
/// `freebind`, `addr` need not be on the host yet (a virtual IP). Accepted sockets inherit
/// TCP_NODELAY from it (Linux), even those queued before a worker serves. HTTP clients
/// speak first: a connection is accepted once its request has arrived (as Apache does by
/// default), which saves a read that finds nothing and a wake-up; a client that connects
/// and waits is accepted after [`DEFER_ACCEPT`] anyway.
fn reuseport_listener(addr: SocketAddr, freebind: bool) -> lb_tcp::Result<std::net::TcpListener> {
    let mut options = lb_tcp::SocketOptions::default();
    options.keepalive = None;
    lb_tcp::ListenerConfig::new(addr)
        .with_reuse_port(true)
        .with_freebind(freebind)
        // As the kernel's default: `[::]` takes IPv4 clients too.
        .with_v6_only(false)
        .with_socket_options(options)
        .with_defer_accept(DEFER_ACCEPT)
        .bind_std()
}

/// Checks that no other socket holds `addr` and returns it with the port filled in.
/// `SO_REUSEPORT` lets any socket of the same user that sets it too share a port: a second
/// lb-balancer started on the same address would bind, start and take part of the
/// connections. A socket bound without it fails as any program's would ("address already in
/// use") when something listens there, lb-balancer included; it is closed at once, and the
/// workers' sockets bind in its place.
fn probe_listen(addr: SocketAddr, freebind: bool) -> lb_tcp::Result<SocketAddr> {
    let probe = lb_tcp::ListenerConfig::new(addr)
        .with_freebind(freebind)
        .with_v6_only(false)
        .bind_std()?;
    probe
        .local_addr()
        .map_err(|source| lb_tcp::Error::Bind { addr, source })
}

/// Serves `config` with `workers` worker threads until ctrl-c or SIGTERM; with `ha`, as
/// a node of that pair.
pub(crate) fn run(config: Config, workers: usize, ha: Option<HaPlan>) -> Result<(), ConfigError> {
    let plan = build_plan(&config, None).map_err(ConfigError)?;
    let freebind = ha.is_some();
    let local = probe_listen(config.listen, freebind).map_err(|e| ConfigError(e.to_string()))?;
    // The first listener takes the port (the probe's, when the configured one is 0); the
    // others join it.
    let first = reuseport_listener(local, freebind).map_err(|e| ConfigError(e.to_string()))?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners
            .push(reuseport_listener(local, freebind).map_err(|e| ConfigError(e.to_string()))?);
    }
    let server_config = ServerConfig {
        guard: config.limits,
        abort_on_close: config.abort_on_close,
        ..Default::default()
    };
    let (plan_tx, plan_rx) = watch::channel(Arc::new(plan));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut threads = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let plan_rx = plan_rx.clone();
        let server_config = server_config.clone();
        let stop_rx = stop_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("lb-worker-{i}"))
            .spawn(move || worker(server_config, l, plan_rx, stop_rx))
            .map_err(|e| ConfigError(format!("cannot start a worker thread: {e}")))?;
        threads.push(t);
    }
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConfigError(format!("cannot start the runtime: {e}")))?;
    let result = control.block_on(control_loop(
        config, ha, local, plan_tx, plan_rx, stop_tx, stop_rx,
    ));
    for t in threads {
        let _ = t.join();
    }
    result
}

fn worker(
    server_config: ServerConfig,
    listener: std::net::TcpListener,
    mut plan_rx: watch::Receiver<Arc<Plan>>,
    stop_rx: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lb-balancer: worker runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("lb-balancer: worker listener: {e}");
                return;
            }
        };
        let router = SharedRouter::new(plan_rx.borrow_and_update().router());
        let r = router.clone();
        let reload = tokio::spawn(async move {
            while plan_rx.changed().await.is_ok() {
                let plan = plan_rx.borrow_and_update().clone();
                r.replace(plan.router());
            }
        });
        serve(listener, router, server_config, stopped(stop_rx)).await;
        reload.abort();
    });
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn control_loop(
    config: Config,
    ha: Option<HaPlan>,
    local: SocketAddr,
    plan_tx: watch::Sender<Arc<Plan>>,
    plan_rx: watch::Receiver<Arc<Plan>>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Result<(), ConfigError> {
    let health = Arc::new(Mutex::new(spawn_health(&plan_rx.borrow(), Vec::new())));
    // Signals first: a SIGHUP right after the lines below (which tell that the balancer
    // serves) must find its handler, and a TERM during the node's start still demotes it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ConfigError(format!("cannot watch SIGTERM: {e}")))?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| ConfigError(format!("cannot watch SIGHUP: {e}")))?;
    for (mount, _, c) in &plan_rx.borrow().sites {
        println!(
            "lb-balancer: balancer://{} on http://{local}{}",
            c.balance.name,
            if mount.is_empty() { "/" } else { mount }
        );
    }
    let ha = match ha {
        Some(plan) => {
            let handle = lb_ha::start(&plan.config, &plan.name, Vec::new(), None, plan.sync_port)
                .await
                .map_err(|e| ConfigError(e.to_string()))?;
            let logger = log_events(&handle);
            Some((handle, logger, plan.name))
        }
        None => None,
    };
    let mut tasks = Vec::new();
    if let Some(addr) = config.manager {
        let ml = TcpListener::bind(addr)
            .await
            .map_err(|e| ConfigError(format!("manager {addr}: {e}")))?;
        let mlocal = ml.local_addr().map_err(|e| ConfigError(e.to_string()))?;
        let rx = plan_rx.clone();
        let source: lb_http::admin::Source = Arc::new(move || rx.borrow().balancers());
        let mut manager = Manager::new(
            source,
            ManagerConfig {
                prefix: String::new(),
                allow_remote: config.manager_remote,
                hosts: config.manager_hosts.clone(),
            },
        );
        if let Some((handle, _, _)) = &ha {
            let status = handle.status();
            manager = manager
                .with_section(
                    "ha",
                    "High availability",
                    Arc::new(move || {
                        serde_json::to_value(status.borrow().report(tokio::time::Instant::now()))
                            .unwrap_or_default()
                    }),
                )
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        println!("lb-balancer: manager on http://{mlocal}/");
        if let Some(note) = manager_note(mlocal, config.manager_remote) {
            eprintln!("lb-balancer: warning: {note}");
        }
        tasks.push(tokio::spawn(serve(
            ml,
            manager,
            ServerConfig::default(),
            stopped(stop_rx.clone()),
        )));
    }

    // SIGHUP: reload the file. Without one (--member, the demo) there is nothing to read
    // again, but the signal must not end the process as its default action would.
    {
        let health = health.clone();
        let file = config.file.clone();
        let listen = config.listen;
        let client_side = (config.limits, config.abort_on_close);
        let manager_side = (
            config.manager,
            config.manager_remote,
            config.manager_hosts.clone(),
        );
        let overrides = config.overrides.clone();
        let plan_rx = plan_rx.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(path) = &file else {
                    eprintln!(
                        "lb-balancer: SIGHUP: nothing to reload (no --config file); keeping the running configuration"
                    );
                    continue;
                };
                let fresh = config::load_file(path).and_then(|c| {
                    // The command line's values win over the file's at every reload too.
                    let mut c = c.with_overrides(overrides.clone());
                    if c.listen != listen {
                        eprintln!("lb-balancer: reload: listen address changes need a restart; keeping {listen}");
                    }
                    if (c.manager, c.manager_remote, c.manager_hosts.clone()) != manager_side {
                        eprintln!("lb-balancer: reload: manager, manager_remote and manager_hosts changes need a restart; keeping the running ones");
                    }
                    if (c.limits, c.abort_on_close) != client_side {
                        eprintln!("lb-balancer: reload: head_timeout, idle_timeout, client_timeout, max_headers, max_head_size and abort_on_close changes need a restart; keeping the running ones");
                        // The proxies take the client timeout for request bodies from them.
                        (c.limits, c.abort_on_close) = client_side;
                    }
                    let running = plan_rx.borrow().clone();
                    build_plan(&c, Some(&running)).map_err(ConfigError)
                });
                match fresh {
                    Ok(plan) => {
                        if let Ok(mut h) = health.lock() {
                            // Checks of balancers that left stop with their handles.
                            let running = std::mem::take(&mut *h);
                            *h = spawn_health(&plan, running);
                        }
                        let _ = plan_tx.send(Arc::new(plan));
                        println!("lb-balancer: reloaded {}", path.display());
                    }
                    Err(e) => eprintln!(
                        "lb-balancer: reload failed, keeping the running configuration: {e}"
                    ),
                }
            }
        });
    }

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("lb-balancer: shutting down");
    // Hand the resources over first: the peer takes the virtual IP at once.
    if let Some((handle, logger, name)) = ha {
        if let Err(e) = handle.shutdown().await {
            eprintln!("lb-balancer: ha shutdown: {e}");
        }
        logger.abort();
        println!("{name}: stopped");
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    if let Ok(mut h) = health.lock() {
        h.clear();
    }
    Ok(())
}

/// What to say at start about a manager on `addr`: one bound where other hosts can reach it,
/// but not opened to them (`remote`), answers them 403; said at once rather than found on
/// the first remote visit.
fn manager_note(addr: std::net::SocketAddr, remote: bool) -> Option<&'static str> {
    (!addr.ip().to_canonical().is_loopback() && !remote).then_some(
        "the manager answers clients on loopback only; --manager-remote (manager_remote = \
         true) lets others in",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_beyond_loopback_and_not_opened_says_so() {
        let note = |a: &str, remote| manager_note(a.parse().unwrap(), remote).is_some();
        for wide in [
            "0.0.0.0:8081",
            "[::]:8081",
            "192.0.2.1:8081",
            "[2001:db8::1]:8081",
        ] {
            assert!(note(wide, false), "{wide}");
            assert!(!note(wide, true), "{wide} with --manager-remote");
        }
        for local in [
            "127.0.0.1:8081",
            "127.0.0.2:8081",
            "[::1]:8081",
            "[::ffff:127.0.0.1]:8081",
        ] {
            assert!(!note(local, false), "{local}");
        }
    }
}
