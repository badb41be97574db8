//! `lb-heartbeat`: runs resources the way Heartbeat v1 does, from the same files.
//!
//! ```text
//! lb-heartbeat [--ha-config /etc/ha.d/ha.cf] [--ha-resources /etc/ha.d/haresources]
//!              [--ha-authkeys /etc/ha.d/authkeys] [--ha-node NAME]
//!              [--ha-resource-dir /etc/ha.d/resource.d]...
//! lb-heartbeat --ha-toml ha.toml [--ha-node NAME]
//! ```
//!
//! The talk's `haresources` line `lb0 pen httpd` works as is: each script is run as
//! `NAME start|stop|status`, found in the resource directories, then on `PATH`. Every
//! role change is printed on standard output as `NODE: STATE (REASON)`. SIGTERM or
//! SIGINT demotes the resources, tells the peer (which takes over at once) and exits 0.
//! SIGUSR1 clears a fault (a resource failed to start) once its cause is fixed.
//! A bad configuration exits 2 with one line naming the file, line and directive.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lb_ha::HaArgs;
use lb_ha::protocol::EventKind;
use tokio::signal::unix::{SignalKind, signal};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "lb-heartbeat",
    version,
    about = "Runs resources like Heartbeat v1, from ha.cf and haresources"
)]
struct Cli {
    #[command(flatten)]
    ha: HaArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut cli = Cli::parse();
    if !cli.ha.enabled() {
        cli.ha.ha_config = Some(PathBuf::from("/etc/ha.d/ha.cf"));
    }
    // Read the files first, so a bad configuration gives one line and exit status 2.
    let config = match cli.ha.load() {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!("lb-heartbeat: no configuration given");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("lb-heartbeat: {e}");
            return ExitCode::from(2);
        }
    };
    let name = match cli.ha.node_name() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("lb-heartbeat: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut term, mut int, mut usr1) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(t), Ok(i), Ok(u)) => (t, i, u),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("lb-heartbeat: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match lb_ha::start(&config, &name, Vec::new(), None, cli.ha.ha_sync_port).await {
        Ok(h) => h,
        Err(
            e @ (lb_ha::Error::Invalid(_)
            | lb_ha::Error::ScriptNotFound(_)
            | lb_ha::Error::Config { .. }),
        ) => {
            eprintln!("lb-heartbeat: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("lb-heartbeat: {e}");
            return ExitCode::FAILURE;
        }
    };
    // From the start: a peer's beat can move the node to standby before this line.
    let mut events = handle
        .events_since_start()
        .unwrap_or_else(|| handle.events());
    println!(
        "{name}: started, peer {}",
        handle.status().borrow().peer.name
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => {
                println!("{name}: clearing the fault (SIGUSR1)");
                if let Err(e) = handle.node().clear_fault().await {
                    eprintln!("lb-heartbeat: {e}");
                }
            }
            ev = events.recv() => match ev {
                Ok(ev) => match ev.kind {
                    EventKind::State { to, reason, .. } => println!("{name}: {to} ({reason})"),
                    EventKind::PeerUp => println!("{name}: peer up"),
                    EventKind::PeerDead => println!("{name}: peer dead"),
                    EventKind::PeerLate { silence } => println!("{name}: peer late ({silence:?})"),
                    _ => {}
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    println!("{name}: shutting down");
    if let Err(e) = handle.shutdown().await {
        eprintln!("lb-heartbeat: shutdown: {e}");
        return ExitCode::FAILURE;
    }
    println!("{name}: stopped");
    ExitCode::SUCCESS
}
