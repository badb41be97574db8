//! lb-pen: a drop-in for pen's command line, built on lb-core and lb-tcp.
//!
//! `lb-pen [options] [host:]port h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] ...`;
//! `lb-pen --help` lists the options. Runs in the foreground.
// Doc comments here are clap help text written in pen's own notation ("[host:]port"),
// not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

#[path = "../pen/mod.rs"]
mod pen;

use clap::Parser;

fn main() {
    let args = pen::cli::Args::parse();
    let level = match args.debug {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = lb_examples::limits::raise_nofile_limit() {
        tracing::warn!("{e}");
    }
    // The first worker: this thread's runtime also runs the control port, the signals
    // and the HA node; `pen::run` starts the others, each on a runtime of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lb-pen: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    // Read the HA files first: a bad one is one line naming it, and exit status 2.
    let ha = match lb_examples::ha::HaPlan::load(&args.ha) {
        Ok(ha) => ha,
        Err(e) => {
            eprintln!("lb-pen: {e}");
            std::process::exit(lb_examples::ha::EXIT_CONFIG.into());
        }
    };
    if let Err(e) = runtime.block_on(pen::run(args, ha)) {
        eprintln!("lb-pen: {}", e.message);
        std::process::exit(e.status.into());
    }
}
