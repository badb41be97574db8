//! lb-balancer: a reverse proxy on Apache mod_proxy_balancer's model, built from lb-http.
//!
//! ```text
//! lb-balancer --listen 127.0.0.1:8080 \
//!     --member http://127.0.0.1:9001,route=mysite1 --member http://127.0.0.1:9002,route=mysite2 \
//!     --stickysession ROUTEID --manager 127.0.0.1:8081
//! lb-balancer --config balancer.toml      # several balancers on path prefixes; SIGHUP reloads
//! lb-balancer                             # a built-in demo
//! lb-balancer --config balancer.toml --ha-config /etc/ha.d/ha.cf   # highly available
//! ```
//!
//! With `--ha-config` (Heartbeat's ha.cf, haresources, authkeys) or `--ha-toml`,
//! lb-balancer runs a Heartbeat node itself: the listener is bound with IP_FREEBIND (the
//! virtual IP arrives when the node becomes active), role changes are printed as
//! `NODE: STATE (REASON)`, the manager shows the node's role, peer and last beat (page
//! and `/api` key `ha`), and SIGTERM/SIGINT hand the resources to the peer before
//! exiting. A bad HA configuration exits with status 2.
#![forbid(unsafe_code)]
// Doc comments here are clap help text written in the tools' own notation ("[addr:]port"),
// not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

#[path = "../balancer/mod.rs"]
mod balancer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lb_http::member::MemberSpec;

use balancer::config::{self, BalancerConf, Config};

/// mimalloc rather than glibc's allocator. A new client connection allocates hyper's
/// buffers and the connection's task, larger than glibc's per-thread cache takes and
/// aligned (tokio's task cells), which glibc serves from its slower paths. Measured
/// against glibc's with `wrk -t2 -c50`, four interleaved rounds of 5 s: CPU per request
/// 4.9% lower with a new connection per request, 0.8% lower with keep-alive; resident
/// memory 19 MiB against 10 MiB at rest after the runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flags whose settings a `--config` file holds (its `listen`, `[[balancer]]` keys and
/// limits): given with `--config` they would be ignored, so clap refuses them.
const FILE_ONLY: [&str; 22] = [
    "listen",
    "member",
    "lbmethod",
    "hashkey",
    "stickysession",
    "scolonpathdelim",
    "cookie",
    "maxattempts",
    "nofailover",
    "failonstatus",
    "failontimeout",
    "forcerecovery",
    "timeout",
    "connecttimeout",
    "preservehost",
    "forwarded",
    "retryon",
    "headtimeout",
    "idletimeout",
    "clienttimeout",
    "maxheaders",
    "maxheadsize",
];

/// Load-balancing reverse proxy on mod_proxy_balancer's model.
#[derive(Debug, Parser)]
#[command(
    name = "lb-balancer",
    version,
    about,
    after_help = "Logging: warnings by default (each failed try at a member, naming it; a member \
                  put in error; a request no member could take) on stderr. LB_LOG sets the \
                  filter, as tracing's EnvFilter reads it: LB_LOG=info, LB_LOG=lb_http=debug."
)]
struct Cli {
    /// TOML configuration (several balancers on path prefixes); SIGHUP reloads it. The
    /// file holds the listen address, the balancers and the limits: the flags that set them
    /// cannot be given with it (only --manager, --manager-remote, --manager-host,
    /// --abortonclose, --workers and the HA flags can).
    #[arg(long, short = 'c', conflicts_with_all = FILE_ONLY)]
    config: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A member: URL[,key=value...] with keys route, loadfactor, lbset, status (+H +D +N +I +S),
    /// retry, max, acquire (ms), timeout, hcmethod, hcuri, hcinterval, hcpasses, hcfails,
    /// hcexpr, hcbody. A value with a comma goes in double quotes: hcbody="ok, ready".
    #[arg(long = "member", short = 'm')]
    member: Vec<String>,
    /// byrequests, bytraffic, bybusyness, or any lb-core scheduler name.
    #[arg(long)]
    lbmethod: Option<String>,
    /// Hash key for hashing schedulers: hdr:NAME, cookie:NAME, path or param:NAME.
    #[arg(long)]
    hashkey: Option<String>,
    /// Sticky session cookie NAME, or NAME|urlparam. NAME must be a cookie token (no
    /// spaces, ;, =, quotes). The route cookie lb sets (NAME=.route) has Path=/, or the
    /// balancer's path in a --config file, where balancers on separate paths may share NAME.
    #[arg(long)]
    stickysession: Option<String>,
    /// Also read ;param=value path parameters as routes.
    #[arg(long)]
    scolonpathdelim: bool,
    /// HAProxy inserted cookie: "NAME insert [indirect] [nocache] [httponly] [secure] [maxage N]".
    /// NAME must be a cookie token; the cookie's Path is set as for --stickysession.
    #[arg(long, conflicts_with = "stickysession")]
    cookie: Option<String>,
    /// Failovers per request after the first member, as Apache's maxattempts (0: none;
    /// default: every member once).
    #[arg(long)]
    maxattempts: Option<usize>,
    /// Never move a routed session to another member: 503 instead.
    #[arg(long)]
    nofailover: bool,
    /// Status codes that put a member in error, e.g. 500,503.
    #[arg(long)]
    failonstatus: Option<String>,
    /// A response timeout (head late, body stalled) puts the member in error.
    #[arg(long)]
    failontimeout: bool,
    /// Use members in error when none is usable (on/off; default on).
    #[arg(long)]
    forcerecovery: Option<String>,
    /// Backend response timeout in seconds: for the head, counted from the last piece of the
    /// request sent or of the head read (an upgrade's, from the request's start), then for
    /// each wait of the response body; a tunnel (WebSocket) idle this long either way is
    /// closed (default 60).
    #[arg(long)]
    timeout: Option<String>,
    /// Backend connect timeout in seconds (default 5).
    #[arg(long)]
    connecttimeout: Option<String>,
    /// Keep the client's Host header.
    #[arg(long)]
    preservehost: bool,
    /// Also add the RFC 7239 Forwarded header.
    #[arg(long)]
    forwarded: bool,
    /// Retry idempotent requests on another member when the answer has one of these
    /// statuses: a member's, or lb's own 502/504 for a member that closed without answering
    /// or answered too late.
    #[arg(long)]
    retryon: Option<String>,
    /// Serve the balancer manager here (with --config: instead of the file's `manager`).
    #[arg(long)]
    manager: Option<SocketAddr>,
    /// Let non-loopback clients use the manager (with --config: as well as the file's
    /// `manager_remote`).
    #[arg(long)]
    manager_remote: bool,
    /// A host name the manager answers to, besides IP addresses and localhost (repeat for
    /// more; with --config: as well as the file's `manager_hosts`). Requests naming any
    /// other host in their Host header are refused (403), against DNS rebinding.
    #[arg(long, value_name = "NAME", value_parser = manager_host)]
    manager_host: Vec<String>,
    /// Worker threads, each with its own listener (SO_REUSEPORT) and connection pools
    /// (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds a client has to send a whole request head once it started (default 20) -> 408;
    /// and an HTTP/2 client to close after the idle timeout's GOAWAY.
    #[arg(long)]
    headtimeout: Option<u64>,
    /// Seconds a connection may stay idle between requests before it is closed, the
    /// keep-alive timeout (default 60). An idle HTTP/2 client gets GOAWAY, and is closed if
    /// still there --headtimeout later.
    #[arg(long)]
    idletimeout: Option<u64>,
    /// Seconds a client may stay silent in the middle of an exchange: taking no byte of a
    /// response (the connection is closed) or sending none of a request body it started
    /// (408) (default: the idle timeout).
    #[arg(long)]
    clienttimeout: Option<u64>,
    /// Most header fields in a request (default 100) -> 431.
    #[arg(long)]
    maxheaders: Option<u64>,
    /// Largest request head in bytes (default 65536) -> 431; 414 when the request line alone
    /// is that long.
    #[arg(long)]
    maxheadsize: Option<u64>,
    /// Give up a request when its client closes the connection (HAProxy's `option
    /// abortonclose`). Without it a client may shut its sending side down after a request
    /// and still get the response.
    #[arg(long)]
    abortonclose: bool,
    #[command(flatten)]
    ha: lb_ha::HaArgs,
}

fn from_cli(cli: &Cli) -> Result<Config, String> {
    let mut b = BalancerConf::new("default");
    let mut set = |k: &str, v: &str| b.set(k, v).map_err(|e| format!("--{k} {v}: {e}"));
    let options: [(&str, Option<&String>); 9] = [
        ("lbmethod", cli.lbmethod.as_ref()),
        ("hashkey", cli.hashkey.as_ref()),
        ("stickysession", cli.stickysession.as_ref()),
        ("cookie", cli.cookie.as_ref()),
        ("failonstatus", cli.failonstatus.as_ref()),
        ("forcerecovery", cli.forcerecovery.as_ref()),
        ("timeout", cli.timeout.as_ref()),
        ("connecttimeout", cli.connecttimeout.as_ref()),
        ("retryon", cli.retryon.as_ref()),
    ];
    for (k, v) in options {
        if let Some(v) = v {
            set(k, v)?;
        }
    }
    if let Some(n) = cli.maxattempts {
        set("maxattempts", &n.to_string())?;
    }
    for (k, on) in [
        ("scolonpathdelim", cli.scolonpathdelim),
        ("nofailover", cli.nofailover),
        ("failontimeout", cli.failontimeout),
        ("preservehost", cli.preservehost),
        ("forwarded", cli.forwarded),
    ] {
        if on {
            set(k, "on")?;
        }
    }
    let mut limits = lb_http::guard::GuardConfig::default();
    for (key, flag, v) in [
        ("head_timeout", "headtimeout", cli.headtimeout),
        ("idle_timeout", "idletimeout", cli.idletimeout),
        ("client_timeout", "clienttimeout", cli.clienttimeout),
        ("max_headers", "maxheaders", cli.maxheaders),
        ("max_head_size", "maxheadsize", cli.maxheadsize),
    ] {
        if let Some(v) = v {
            config::set_limit(&mut limits, key, v).map_err(|e| format!("--{flag} {v}: {e}"))?;
        }
    }
    if let Some(key) = &cli.hashkey {
        b.check_hashkey()
            .map_err(|e| format!("--hashkey {key}: {e}"))?;
    }
    for m in &cli.member {
        let spec: MemberSpec = m.parse().map_err(|e| format!("--member {m}: {e}"))?;
        b.clash(&spec).map_err(|e| format!("--member {m}: {e}"))?;
        b.members.push(spec);
    }
    Ok(Config {
        listen: cli.listen,
        manager: cli.manager,
        manager_remote: cli.manager_remote,
        manager_hosts: cli.manager_host.clone(),
        balancers: vec![b],
        file: None,
        limits,
        abort_on_close: cli.abortonclose,
        overrides: Default::default(),
    })
}

/// `--manager-host`: a DNS name.
fn manager_host(name: &str) -> Result<String, String> {
    lb_http::admin::check_host_name(name).map_err(|e| e.to_string())?;
    Ok(name.to_string())
}

fn main() -> ExitCode {
    let demo = std::env::args_os().len() == 1;
    let cli = Cli::parse();
    let filter = match std::env::var("LB_LOG") {
        Err(_) => tracing_subscriber::EnvFilter::new("warn"),
        Ok(v) => match tracing_subscriber::EnvFilter::try_new(&v) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("lb-balancer: LB_LOG={v:?}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = lb_examples::limits::raise_nofile_limit() {
        tracing::warn!("{e}");
    }
    // Read the HA files first: a bad one is one line naming it, and exit status 2.
    let ha = match lb_examples::ha::HaPlan::load(&cli.ha) {
        Ok(ha) => ha,
        Err(e) => {
            eprintln!("lb-balancer: {e}");
            return ExitCode::from(lb_examples::ha::EXIT_CONFIG);
        }
    };
    // This runtime reads the configuration and, for the demo, runs the demo backends; the
    // proxy itself runs on its own worker threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lb-balancer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = cli
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256);
    let config = runtime.block_on(async {
        let config = if demo {
            let c = balancer::demo::config().await?;
            print!("{}", balancer::demo::banner());
            c
        } else if let Some(path) = &cli.config {
            config::load_file(path)?.with_overrides(config::Overrides {
                manager: cli.manager,
                manager_remote: cli.manager_remote,
                manager_hosts: cli.manager_host.clone(),
                abort_on_close: cli.abortonclose,
            })
        } else {
            let mut c = from_cli(&cli).map_err(config::ConfigError)?;
            if c.balancers[0].members.is_empty() {
                return Err(config::ConfigError(
                    "no --member given (or use --config FILE; no arguments runs the demo)".into(),
                ));
            }
            c.file = None;
            c
        };
        Ok(config)
    });
    let result = config.and_then(|c| balancer::run(c, workers, ha));
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-balancer: {e}");
            ExitCode::from(2)
        }
    }
}
