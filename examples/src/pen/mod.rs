//! lb-pen: pen's command line on lb-core and lb-tcp.
//!
//! The pieces: [`cli`] (pen's options), [`spec`] (pen's address and server syntax),
//! [`modes`] (pen's selection modes on lb-core's schedulers), [`state`] (the running balancer and the penctl commands), [`control`] (the
//! control port).

pub(crate) mod cli;
mod control;
mod modes;
mod spec;
mod state;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lb_core::persistence::{ClientTable, ClientTableConfig};
use lb_core::{Backend, BalancerBuilder, Role};
use lb_examples::ha::{EXIT_CONFIG, HaPlan, log_events, start_failure_status};
use lb_ha::client_table::ClientTableSync;
use lb_tcp::proxy_protocol::{IpNet, TrustedSources};
use lb_tcp::relay::{RelayConfig, RelayMode};
use lb_tcp::xff::XffScope;
use lb_tcp::{Listener, ListenerConfig, ProxyConfig, TcpProxy, WhenFull};
use tokio::signal::unix::{SignalKind, signal};

use cli::Args;
use modes::Modes;
use spec::ListenSpec;
use state::{Pen, PenInit, passive};

/// Why lb-pen stopped with an error, and its exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) status: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, status: 1 }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Removes the pid file when lb-pen ends.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn listener_config(
    listen: ListenSpec,
    args: &Args,
    trusted: Option<TrustedSources>,
) -> Vec<ListenerConfig> {
    // Several workers each listen on the same address (SO_REUSEPORT).
    let reuse_port = args.reuse_port || args.workers() > 1;
    // With HA the listen address is usually the virtual IP, which only the active node
    // holds: bind it before it arrives.
    let freebind = args.freebind || args.ha.enabled();
    let tune = |c: ListenerConfig| {
        let c = c
            .with_backlog(args.backlog)
            .with_freebind(freebind)
            .with_reuse_port(reuse_port);
        match &trusted {
            Some(t) => c.with_accept_proxy(t.clone()),
            None => c,
        }
    };
    match listen {
        // All addresses: dual stack, or IPv4 only where the host has no IPv6.
        ListenSpec::Port(port) => vec![
            tune(ListenerConfig::dual_stack(port)),
            tune(ListenerConfig::new(SocketAddr::from(([0, 0, 0, 0], port)))),
        ],
        // `[::]:port` means every address, IPv4 included (explicitly not V6ONLY).
        ListenSpec::Addr(a) if a.ip() == Ipv6Addr::UNSPECIFIED => {
            vec![tune(ListenerConfig::new(a).with_v6_only(false))]
        }
        ListenSpec::Addr(a) => vec![tune(ListenerConfig::new(a))],
    }
}

#[cfg(unix)]
fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{Uid, User, setgid, setgroups, setuid};
    let u = User::from_name(user)
        .map_err(|e| format!("cannot look up user {user:?}: {e}"))?
        .ok_or_else(|| format!("no such user {user:?}"))?;
    if Uid::effective() == u.uid {
        return Ok(());
    }
    setgroups(&[u.gid]).map_err(|e| format!("cannot drop groups for user {user:?}: {e}"))?;
    setgid(u.gid).map_err(|e| format!("cannot switch to group of {user:?}: {e}"))?;
    setuid(u.uid).map_err(|e| format!("cannot switch to user {user:?}: {e}"))?;
    Ok(())
}

/// Runs lb-pen until TERM, INT or the control command `exit`; with `ha`, as a node of
/// that pair.
pub(crate) async fn run(args: Args, ha: Option<HaPlan>) -> Result<(), Failure> {
    let workers = args.workers();
    args.refuse_unsupported()?;
    if ha.is_some() && args.user.is_some() {
        return Err(Failure {
            message: "-u cannot be combined with --ha-config/--ha-toml: moving the virtual IP \
                      needs the privileges -u drops"
                .to_string(),
            status: EXIT_CONFIG,
        });
    }
    let (listen_arg, server_args) = args
        .addresses
        .split_first()
        .ok_or("missing listen address")?;
    let listen = spec::parse_listen(listen_arg)?;
    let default_port = match listen {
        ListenSpec::Port(p) => p,
        ListenSpec::Addr(a) => a.port(),
    };
    if server_args.is_empty() && args.config_file.is_none() {
        return Err("no servers given: expected [host:]port h1[:p1...] ...".into());
    }
    let mut backends = Vec::new();
    for s in server_args {
        let spec = spec::parse_server(s, default_port)?;
        let mut b = Backend::new(spec.addr)
            .with_weight(spec.weight)
            .with_priority(spec.prio);
        if let Some(m) = spec.max {
            b = b.with_max_conns(m);
        }
        if let Some(h) = spec.hard {
            b = b.with_hard_conns(h);
        }
        backends.push(b);
    }
    let emergency = match &args.emergency {
        Some(e) => Some(spec::parse_host_port(e, "emergency server")?),
        None => None,
    };
    let table = Arc::new(
        ClientTable::new(
            ClientTableConfig::default()
                .with_slots(args.clients_max.max(1))
                .with_tracking(Duration::from_secs(args.tracking)),
        )
        .map_err(|e| format!("-c {}: {e}", args.clients_max))?,
    );
    let modes = Modes {
        hash: args.hash,
        weight: args.weight,
        prio: false,
    };
    let blacklist = Duration::from_secs(args.blacklist);
    let mut builder = BalancerBuilder::with_scheduler(modes.scheduler())
        .persistence(table.clone())
        .bypass_persistence(args.roundrobin)
        .stubborn(args.stubborn)
        .max_attempts(usize::from(args.stubborn))
        .passive(passive(blacklist))
        .backends(backends.clone());
    if let Some(e) = emergency {
        builder = builder.backend(Backend::new(e).with_role(Role::Emergency));
    }
    let balancer = builder.build().map_err(|e| e.to_string())?;
    let server_ids: Vec<_> = balancer
        .members()
        .iter()
        .filter(|m| m.backend().role() != Role::Emergency)
        .map(|m| m.id())
        .collect();

    let mut relay = RelayConfig::default();
    if args.no_splice {
        relay = relay.with_mode(RelayMode::Copy);
    }
    if args.idle_timeout > 0 {
        relay = relay.with_idle_timeout(Some(Duration::from_secs(args.idle_timeout)));
    }
    let xff = args.http.then_some(if args.xff_first_only {
        XffScope::FirstRequest
    } else {
        XffScope::EveryRequest
    });
    let when_full = match args.wait_when_full {
        Some(s) => WhenFull::Wait(Duration::from_secs(s)),
        None => WhenFull::Refuse,
    };
    let config = ProxyConfig::default()
        .with_connect_timeout(Duration::from_secs(args.timeout.max(1)))
        .with_max_conns(args.conn_max)
        .with_relay(relay)
        .with_xff(xff)
        .with_proxy_protocol(args.proxy_protocol)
        .with_when_full(when_full);
    let proxy = TcpProxy::new(balancer, config);

    // Bind before anything else can fail late: a port in use is a one-line error.
    let mut listener = None;
    let mut first_error = None;
    let trusted = if args.accept_proxy_from.is_empty() {
        None
    } else {
        let nets = args
            .accept_proxy_from
            .iter()
            .map(|n| n.trim().parse::<IpNet>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Some(TrustedSources::new(nets))
    };
    for candidate in listener_config(listen, &args, trusted) {
        match candidate.bind() {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let listener = match (listener, first_error) {
        (Some(l), _) => l,
        (None, Some(e)) => return Err(e.to_string().into()),
        (None, None) => return Err("no listen address".into()),
    };
    // The other workers' sockets, bound now (before -u drops the privileges a low port
    // needs) on the address the first one got (its port, when 0 was asked for).
    let mut worker_sockets = Vec::new();
    if workers > 1 {
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let mut config = listener.config().clone();
        config.addr = bound;
        for _ in 1..workers {
            worker_sockets.push((
                config.bind_std().map_err(|e| e.to_string())?,
                config.clone(),
            ));
        }
    }
    let listen_shown = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen_arg.clone());

    let pen = Pen::new(
        proxy.clone(),
        table,
        PenInit {
            servers: server_ids,
            modes,
            blacklist,
            roundrobin: args.roundrobin,
            exit_allowed: args.exit_cmd,
            config_file: args.config_file.clone(),
            listen: listen_shown,
            log: args.logfile.clone(),
            webstats: args.webstats.clone(),
            debug: args.debug,
            cmdline: Args::cmdline(),
        },
    )?;
    for cmd in args.option.iter().chain(&args.command) {
        pen.command(cmd)
            .map_err(|e| format!("-o/-O {cmd:?}: {e}"))?;
    }
    if let Some(file) = &args.config_file {
        pen.include(file)?;
    }
    let control = match &args.control {
        Some(c) => {
            let addr = control::parse(c, args.control_any_address)?;
            let (control, shown) = control::Control::bind(&addr).await?;
            *pen.control.lock().unwrap_or_else(|e| e.into_inner()) = shown;
            Some(control)
        }
        None => None,
    };
    let _pidfile = match &args.pidfile {
        Some(path) => {
            std::fs::write(path, format!("{}\n", std::process::id()))
                .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
            Some(PidFile(path.clone()))
        }
        None => None,
    };
    if let Some(user) = &args.user {
        drop_privileges(user)?;
    }
    let signal_err = |e: std::io::Error| format!("cannot install signal handlers: {e}");
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(signal_err)?;

    // The node starts once the listener is bound (on the virtual IP, with FREEBIND), so
    // the resources it promotes find lb-pen ready to serve.
    let ha = match ha {
        Some(plan) => {
            let sync = Arc::new(ClientTableSync::follow(pen.tables()));
            let handle = lb_ha::start(
                &plan.config,
                &plan.name,
                Vec::new(),
                Some(sync),
                plan.sync_port,
            )
            .await
            .map_err(|e| Failure {
                message: e.to_string(),
                status: start_failure_status(&e),
            })?;
            let logger = log_events(&handle);
            pen.set_ha(handle.status());
            Some((handle, logger, plan.name))
        }
        None => None,
    };
    if let Some(control) = control {
        tokio::spawn(control.serve(pen.clone()));
    }
    let serving = proxy.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await });
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut worker_threads = Vec::new();
    for (i, (socket, config)) in worker_sockets.into_iter().enumerate() {
        let thread = spawn_worker(i + 1, proxy.clone(), socket, config, done_rx.clone())
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        worker_threads.push(thread);
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = pen.exit.notified() => break,
            _ = hup.recv() => {
                if let Err(e) = pen.reopen_log() {
                    eprintln!("lb-pen: {e}");
                }
                if let Some(file) = &pen.config_file {
                    if let Err(e) = pen.include(file) {
                        eprintln!("lb-pen: {e}");
                    }
                }
            }
            _ = usr1.recv() => pen.dump_stats(),
        }
    }
    // Hand the resources over first: the peer takes the virtual IP at once, and the
    // connections still open here drain while it does.
    if let Some((handle, logger, name)) = ha {
        println!("{name}: shutting down");
        if let Err(e) = handle.shutdown().await {
            eprintln!("lb-pen: ha shutdown: {e}");
        }
        logger.abort();
        println!("{name}: stopped");
    }
    let left = proxy.shutdown(Duration::from_secs(args.drain)).await;
    if left > 0 {
        eprintln!(
            "lb-pen: closed {left} connections still open after {}s",
            args.drain
        );
    }
    let _ = server.await;
    let _ = done_tx.send(true);
    for t in worker_threads {
        let _ = t.join();
    }
    Ok(())
}

/// A worker: its own thread and single-threaded runtime, accepting on its own socket (the
/// kernel spreads new connections over the workers' sockets) and running every connection
/// it accepts to the end on this thread, so no connection's wake-ups cross threads. It
/// stops accepting when the proxy shuts down, and keeps its runtime (and the connections
/// on it) until `done`.
fn spawn_worker(
    index: usize,
    proxy: TcpProxy,
    socket: std::net::TcpListener,
    config: ListenerConfig,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lb-pen-worker-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("lb-pen: worker {index}: cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                match Listener::from_bound(socket, config) {
                    Ok(listener) => {
                        if let Err(e) = proxy.serve(listener).await {
                            eprintln!("lb-pen: worker {index}: {e}");
                        }
                    }
                    Err(e) => eprintln!("lb-pen: worker {index}: cannot register its socket: {e}"),
                }
                let _ = done.wait_for(|d| *d).await;
            });
        })
}
