//! lb-pen's command line: pen's, parsed with clap.

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use lb_tcp::proxy_protocol::ProxyVersion;

const AFTER_HELP: &str = "\
lb-pen stays in the foreground (pen's -f is accepted and implied); run it under a
service manager. Signals: TERM/INT stop accepting and drain connections (up to
--drain seconds), HUP re-reads the -F file and reopens the -l log, USR1 prints
statistics to stderr and writes the -w file.

Unlike pen 0.34, a server that refuses or times out is skipped within the same client
connection (then the -e emergency server is tried at once), and bad server specs are
refused at start. Not implemented (refused if given): -U (UDP), -j (chroot), -a, -P,
-m, -E/-K/-G/-A/-Z/-R/-L (SSL), -i; Unix socket listen addresses.

Examples:
  lb-pen 8080 10.0.0.1:80 10.0.0.2:80        round robin with client tracking
  lb-pen [::]:8080 127.0.0.1:80               IPv6-enable an IPv4 service
  lb-pen ::1:8080 127.0.0.1:80                the same, in pen's bare IPv6 form
  lb-pen -r -C 8888 8080 a:80 b:80:10:20:3    penctl control on 127.0.0.1:8888
  lb-pen --ha-config /etc/ha.d/ha.cf 10.0.0.100:80 a:80 b:80
                                              highly available on a virtual IP

High availability: with --ha-config (Heartbeat's ha.cf, haresources and authkeys, as
lb-heartbeat reads them) or --ha-toml, lb-pen runs the node itself: its resources (the
virtual IP) move with the active role, the client table is streamed to the passive node
(TCP --ha-sync-port, authenticated with authkeys) so clients keep their servers after a
failover, role changes are printed on stdout as `NODE: STATE (REASON)`, and TERM/INT
hand the resources to the peer before the connections drain. Both nodes need the same
servers in the same order. penctl `ha` shows the node's state, `clients` the table.
A bad HA configuration exits with status 2.";

/// pen's command line.
#[derive(Debug, Parser)]
#[command(
    name = "lb-pen",
    about = "A drop-in for pen: a TCP load balancer built on lb",
    override_usage = "lb-pen [options] [host:]port h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2...]",
    disable_help_flag = true,
    disable_version_flag = true,
    after_help = AFTER_HELP
)]
pub(crate) struct Args {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Round robin without client tracking.
    #[arg(short = 'r')]
    pub(crate) roundrobin: bool,
    /// Stubborn: if the chosen server is unavailable, close the client connection.
    #[arg(short = 's')]
    pub(crate) stubborn: bool,
    /// Hash the client address for the initial server selection.
    #[arg(short = 'h')]
    pub(crate) hash: bool,
    /// Use weights for server selection.
    #[arg(short = 'W')]
    pub(crate) weight: bool,
    /// Add X-Forwarded-For to HTTP requests (every request of a connection; see --xff-first-only).
    #[arg(short = 'H')]
    pub(crate) http: bool,
    /// Only the first request of each connection gets X-Forwarded-For (pen's behaviour).
    #[arg(long)]
    pub(crate) xff_first_only: bool,
    /// Max simultaneous connections.
    #[arg(short = 'x', value_name = "N", default_value_t = 500)]
    pub(crate) conn_max: usize,
    /// Max number of tracked clients.
    #[arg(short = 'c', value_name = "N", default_value_t = 2048)]
    pub(crate) clients_max: usize,
    /// Track clients for this many seconds (0: forever).
    #[arg(short = 'T', value_name = "SEC", default_value_t = 0)]
    pub(crate) tracking: u64,
    /// Blacklist unresponsive servers for this many seconds.
    #[arg(short = 'b', value_name = "SEC", default_value_t = 30)]
    pub(crate) blacklist: u64,
    /// Connect timeout in seconds.
    #[arg(short = 't', value_name = "SEC", default_value_t = 5)]
    pub(crate) timeout: u64,
    /// Emergency server, used when no other server can take a connection.
    #[arg(short = 'e', value_name = "HOST:PORT")]
    pub(crate) emergency: Option<String>,
    /// Write the process id to this file.
    #[arg(short = 'p', value_name = "FILE")]
    pub(crate) pidfile: Option<PathBuf>,
    /// Stay in the foreground (always the case).
    #[arg(short = 'f')]
    pub(crate) foreground: bool,
    /// Debugging (repeat for more).
    #[arg(short = 'd', action = ArgAction::Count)]
    pub(crate) debug: u8,
    /// Control port: [addr:]port (loopback unless an address is given) or /path/to/socket.
    #[arg(short = 'C', value_name = "[ADDR:]PORT")]
    pub(crate) control: Option<String>,
    /// Allow a control port on a non-loopback address.
    #[arg(long)]
    pub(crate) control_any_address: bool,
    /// Allow the control command `exit`.
    #[arg(short = 'X')]
    pub(crate) exit_cmd: bool,
    /// Configuration file of penctl commands, read at start and on HUP.
    #[arg(short = 'F', value_name = "FILE")]
    pub(crate) config_file: Option<PathBuf>,
    /// Write the HTML status page to this file on USR1.
    #[arg(short = 'w', value_name = "FILE")]
    pub(crate) webstats: Option<PathBuf>,
    /// Log every connection to this file.
    #[arg(short = 'l', value_name = "FILE")]
    pub(crate) logfile: Option<PathBuf>,
    /// Run as this user after binding (needs root).
    #[arg(short = 'u', value_name = "USER")]
    pub(crate) user: Option<String>,
    /// A penctl command to run at start (repeatable).
    #[arg(short = 'o', value_name = "CMD", action = ArgAction::Append)]
    pub(crate) option: Vec<String>,
    /// A penctl command to run at start (repeatable; pen's -O).
    #[arg(short = 'O', value_name = "CMD", action = ArgAction::Append)]
    pub(crate) command: Vec<String>,
    /// Listen backlog.
    #[arg(short = 'q', value_name = "N", default_value_t = 1024)]
    pub(crate) backlog: u32,
    /// Send a PROXY protocol header to the servers.
    #[arg(long, value_name = "v1|v2")]
    pub(crate) proxy_protocol: Option<ProxyVersion>,
    /// Expect a PROXY protocol header (v1 or v2) on every client connection, and accept
    /// connections only from these networks (comma separated, e.g. 10.0.0.0/8,::1).
    #[arg(long, value_name = "NETS", value_delimiter = ',')]
    pub(crate) accept_proxy_from: Vec<String>,
    /// Worker threads, each with its own listening socket (SO_REUSEPORT) and event loop;
    /// a connection stays on the thread that accepted it (default: one per core).
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    /// Copy through buffers instead of splice(2).
    #[arg(long)]
    pub(crate) no_splice: bool,
    /// When the -x limit or every server's limit is reached, wait this long for a slot
    /// instead of closing the client at once.
    #[arg(long, value_name = "SEC")]
    pub(crate) wait_when_full: Option<u64>,
    /// Close connections idle for this many seconds (0: never).
    #[arg(long, value_name = "SEC", default_value_t = 0)]
    pub(crate) idle_timeout: u64,
    /// Seconds to let connections finish after TERM/INT.
    #[arg(long, value_name = "SEC", default_value_t = 30)]
    pub(crate) drain: u64,
    /// Allow binding an address not (yet) on this host (IP_FREEBIND).
    #[arg(long)]
    pub(crate) freebind: bool,
    /// Set SO_REUSEPORT on the listener (always on with more than one worker thread, whose
    /// sockets share the address; then another program of the same user that also sets it
    /// can bind the port too).
    #[arg(long)]
    pub(crate) reuse_port: bool,
    /// High availability: with --ha-config (or --ha-toml) lb-pen runs a Heartbeat node
    /// next to the balancer, binds its listener with IP_FREEBIND (the virtual IP may
    /// arrive later) and streams its client table to the passive node.
    #[command(flatten)]
    pub(crate) ha: lb_ha::HaArgs,

    // pen options lb-pen does not implement: accepted by the parser, then refused.
    #[arg(short = 'U', hide = true)]
    udp: bool,
    #[arg(short = 'P', hide = true)]
    poll: bool,
    #[arg(short = 'a', hide = true)]
    ascii: bool,
    #[arg(short = 'Z', hide = true)]
    ssl_compat: bool,
    #[arg(short = 'R', hide = true)]
    ssl_require: bool,
    #[arg(short = 'j', hide = true)]
    chroot: Option<String>,
    #[arg(short = 'm', hide = true)]
    multi_accept: Option<String>,
    #[arg(short = 'E', hide = true)]
    cert: Option<String>,
    #[arg(short = 'K', hide = true)]
    key: Option<String>,
    #[arg(short = 'G', hide = true)]
    cacert: Option<String>,
    #[arg(short = 'A', hide = true)]
    cadir: Option<String>,
    #[arg(short = 'L', hide = true)]
    ssl_protocol: Option<String>,
    #[arg(short = 'i', hide = true)]
    service: Option<String>,

    /// [host:]port to listen on, then the servers.
    #[arg(value_name = "ADDRESSES", num_args = 1.., required = true, allow_hyphen_values = false)]
    pub(crate) addresses: Vec<String>,
}

impl Args {
    /// Refuses pen options that lb-pen does not implement.
    pub(crate) fn refuse_unsupported(&self) -> Result<(), String> {
        let refused: [(bool, &str); 13] = [
            (self.udp, "-U (UDP balancing)"),
            (
                self.poll,
                "-P (poll event loop; lb-pen uses epoll through tokio)",
            ),
            (self.ascii, "-a (communication dumps)"),
            (self.ssl_compat, "-Z (SSL)"),
            (self.ssl_require, "-R (SSL)"),
            (self.chroot.is_some(), "-j (chroot)"),
            (self.multi_accept.is_some(), "-m (multi accept)"),
            (self.cert.is_some(), "-E (SSL certificate)"),
            (self.key.is_some(), "-K (SSL key)"),
            (self.cacert.is_some(), "-G (SSL CA certificate)"),
            (self.cadir.is_some(), "-A (SSL CA directory)"),
            (self.ssl_protocol.is_some(), "-L (SSL protocol)"),
            (self.service.is_some(), "-i (Windows service)"),
        ];
        match refused.iter().find(|(given, _)| *given) {
            Some((_, what)) => Err(format!("pen option {what} is not supported by lb-pen")),
            None => Ok(()),
        }
    }
}

impl Args {
    /// How many worker threads serve connections: `--threads`, else one per core.
    pub(crate) fn workers(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 256)
    }

    /// A pen-like rendering of the command line, for `write`.
    pub(crate) fn cmdline() -> String {
        std::env::args().collect::<Vec<_>>().join(" ")
    }
}
