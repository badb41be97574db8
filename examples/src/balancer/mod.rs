//! lb-balancer: mod_proxy_balancer's model as a standalone reverse proxy, built from lb-http.
//!
//! `run` builds one [`Site`] per configured balancer (lb-core balancer + lb-http stack),
//! serves them behind a [`SharedRouter`], runs the members' health checks, serves the
//! balancer manager, and on SIGHUP reads the configuration file again and swaps the routing
//! table (connections and requests in flight are not touched; a bad file is reported and the
//! running configuration kept).

pub(crate) mod config;
pub(crate) mod demo;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{AdminState, Balancer};
use lb_http::admin::{Manager, ManagerConfig};
use lb_http::balance::BalanceConfig;
use lb_http::hcheck::HealthRunner;
use lb_http::headers::ForwardedHeaders;
use lb_http::proxy::ProxyConfig;
use lb_http::retry::RetryConfig;
use lb_http::router::{Router, SharedRouter, Site, SiteConfig};
use lb_http::server::{ServerConfig, serve};
use tokio::net::TcpListener;

use config::{BalancerConf, Config, ConfigError, resolve_lbmethod};

/// Builds the lb-core balancer of one configured balancer.
pub(crate) fn build_balancer(c: &BalancerConf) -> Result<Balancer, String> {
    let (scheduler, note) = resolve_lbmethod(&c.lbmethod)?;
    if let Some(n) = note {
        eprintln!("lb-balancer: warning: {n}");
    }
    let mut builder = Balancer::builder()
        .scheduler(scheduler)
        .max_attempts(c.maxattempts)
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
        let admin = if f.disabled || f.stopped {
            AdminState::Maintenance
        } else if f.drain {
            AdminState::Drain
        } else {
            AdminState::Ready
        };
        b.set_admin(m.id(), admin).map_err(|e| e.to_string())?;
        b.set_ignore_errors(m.id(), f.ignore_errors)
            .map_err(|e| e.to_string())?;
    }
    Ok(b)
}

/// Builds the sites of a configuration.
pub(crate) fn build_sites(config: &Config) -> Result<Vec<Site>, String> {
    let mut sites = Vec::new();
    for c in &config.balancers {
        let balancer = build_balancer(c)?;
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
                ..Default::default()
            }),
        };
        sites.push(Site::new(&c.path, balancer, site));
    }
    Ok(sites)
}

fn spawn_health(sites: &[Site]) -> Vec<tokio::task::JoinHandle<()>> {
    sites
        .iter()
        .map(|s| HealthRunner::new(s.balancer.clone(), Duration::from_secs(5)).spawn())
        .collect()
}

/// Serves `config` until ctrl-c or SIGTERM.
pub(crate) async fn run(config: Config) -> Result<(), ConfigError> {
    let sites = build_sites(&config).map_err(ConfigError)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConfigError(format!("listen {}: {e}", config.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| ConfigError(e.to_string()))?;
    let health = Arc::new(Mutex::new(spawn_health(&sites)));
    let router = SharedRouter::new(Router::new(sites));
    for s in router.load().sites() {
        println!(
            "lb-balancer: balancer://{} on http://{local}{}",
            s.name,
            if s.mount.is_empty() { "/" } else { &s.mount }
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let mut tasks = Vec::new();
    if let Some(addr) = config.manager {
        let ml = TcpListener::bind(addr)
            .await
            .map_err(|e| ConfigError(format!("manager {addr}: {e}")))?;
        let mlocal = ml.local_addr().map_err(|e| ConfigError(e.to_string()))?;
        let r = router.clone();
        let source: lb_http::admin::Source = Arc::new(move || {
            r.load()
                .sites()
                .iter()
                .map(|s| (s.name.clone(), s.balancer.clone()))
                .collect()
        });
        let manager = Manager::new(
            source,
            ManagerConfig {
                prefix: String::new(),
                allow_remote: config.manager_remote,
            },
        );
        println!("lb-balancer: manager on http://{mlocal}/");
        tasks.push(tokio::spawn(serve(
            ml,
            manager,
            ServerConfig::default(),
            stopped(stop_rx.clone()),
        )));
    }

    // SIGHUP: reload the file.
    if let Some(path) = config.file.clone() {
        let router = router.clone();
        let health = health.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| ConfigError(format!("cannot watch SIGHUP: {e}")))?;
        let listen = config.listen;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let fresh = config::load_file(&path).and_then(|c| {
                    if c.listen != listen {
                        eprintln!("lb-balancer: reload: listen address changes need a restart; keeping {listen}");
                    }
                    build_sites(&c).map_err(ConfigError)
                });
                match fresh {
                    Ok(sites) => {
                        let new_health = spawn_health(&sites);
                        if let Ok(mut h) = health.lock() {
                            for t in h.drain(..) {
                                t.abort();
                            }
                            *h = new_health;
                        }
                        router.replace(Router::new(sites));
                        println!("lb-balancer: reloaded {}", path.display());
                    }
                    Err(e) => eprintln!(
                        "lb-balancer: reload failed, keeping the running configuration: {e}"
                    ),
                }
            }
        });
    }

    let main = tokio::spawn(serve(
        listener,
        router,
        ServerConfig::default(),
        stopped(stop_rx),
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ConfigError(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("lb-balancer: shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), main).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    if let Ok(mut h) = health.lock() {
        for t in h.drain(..) {
            t.abort();
        }
    }
    Ok(())
}
