//! What the binaries share when they run highly available (`--ha-config` / `--ha-toml`):
//! reading the configuration with the right exit status, logging role changes, and a
//! one-line status.

use lb_ha::protocol::{EventKind, Status};
use lb_ha::{HaArgs, HaHandle};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Exit status for a configuration the user has to fix (a bad file, line or value).
pub const EXIT_CONFIG: u8 = 2;

/// The HA configuration and this node's name, read before anything is bound, so a bad
/// file gives one line (naming the file, line and directive) and [`EXIT_CONFIG`].
#[derive(Debug)]
pub struct HaPlan {
    /// The configuration.
    pub config: lb_ha::config::HaConfig,
    /// This node's name.
    pub name: String,
    /// The state-sync port.
    pub sync_port: u16,
}

impl HaPlan {
    /// Reads what `args` name; `Ok(None)` when HA was not asked for.
    pub fn load(args: &HaArgs) -> Result<Option<HaPlan>, String> {
        let Some(config) = args.load().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let name = args.node_name().map_err(|e| e.to_string())?;
        Ok(Some(HaPlan {
            config,
            name,
            sync_port: args.ha_sync_port,
        }))
    }
}

/// The exit status for a failure to start the node: [`EXIT_CONFIG`] when the
/// configuration is at fault (it names the file or the value), 1 otherwise.
pub fn start_failure_status(e: &lb_ha::Error) -> u8 {
    match e {
        lb_ha::Error::Config { .. }
        | lb_ha::Error::Invalid(_)
        | lb_ha::Error::ScriptNotFound(_)
        | lb_ha::Error::Read { .. }
        | lb_ha::Error::Duration(_) => EXIT_CONFIG,
        _ => 1,
    }
}

/// One line: `NODE: STATE (REASON); peer PEER: STATE, alive|dead, last beat N ms ago`.
pub fn status_line(s: &Status) -> String {
    let report = s.report(tokio::time::Instant::now());
    let mut line = format!("{}: {}", report.name, report.state);
    if let Some(r) = &report.reason {
        line += &format!(" ({r})");
    }
    line += &format!(
        "; peer {}: {}, {}",
        report.peer_name,
        report.peer_state.as_deref().unwrap_or("unknown"),
        if report.peer_alive { "alive" } else { "dead" }
    );
    if let Some(ms) = report.peer_last_beat_ms {
        line += &format!(", last beat {ms} ms ago");
    }
    line
}

/// Prints every role change on standard output as lb-heartbeat does (`NODE: STATE
/// (REASON)`, `NODE: peer up|dead|late`), from the node's start: the first call gets the
/// events a peer's beat may already have caused; a later call starts from the state the node
/// is in now.
pub fn log_events(handle: &HaHandle) -> JoinHandle<()> {
    let (mut events, name) = match handle.events_since_start() {
        Some(events) => (events, handle.status().borrow().name.clone()),
        None => {
            // Subscribe first, then read the current state: a change in between is
            // printed twice, none is missed.
            let events = handle.events();
            let status = handle.status().borrow().clone();
            match &status.reason {
                Some(r) => println!("{}: {} ({r})", status.name, status.state),
                None => println!("{}: {}", status.name, status.state),
            }
            (events, status.name)
        }
    };
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => match ev.kind {
                    EventKind::State { to, reason, .. } => println!("{name}: {to} ({reason})"),
                    EventKind::PeerUp => println!("{name}: peer up"),
                    EventKind::PeerDead => println!("{name}: peer dead"),
                    EventKind::PeerLate { silence } => {
                        println!("{name}: peer late ({silence:?})");
                    }
                    _ => {}
                },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    })
}
