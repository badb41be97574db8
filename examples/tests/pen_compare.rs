//! The same command lines under pen and lb-pen: the backends must see the same thing.
//! Skips (with a message) where pen is not installed.

mod pen_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use pen_support::*;

/// pen, killed and reaped on drop.
struct Pen(std::process::Child);

impl Drop for Pen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pen_installed() -> bool {
    Command::new("pen")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

async fn start_pen(args: &[String], port: u16) -> Pen {
    let child = Command::new("pen")
        .arg("-f")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pen");
    let pen = Pen(child);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(lo(port)).await.is_ok() {
            return pen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pen did not listen on {port}");
}

/// Runs `flags port servers` under both, asks `n` times from `sources`, returns the
/// per-backend tallies and the X-Forwarded-For headers seen.
async fn both(flags: &[&str], sources: &[&str], n: usize) -> [(Vec<usize>, Vec<String>); 2] {
    let mut out = Vec::new();
    for lb_pen in [false, true] {
        let backends = [
            Backend::start("a", Mode::Http).await,
            Backend::start("b", Mode::Http).await,
            Backend::start("c", Mode::Http).await,
        ];
        let port = free_port();
        let mut args = strings(flags);
        args.push(port.to_string());
        args.extend(backends.iter().map(Backend::spec));
        let _pen_guard;
        let _lb_guard;
        if lb_pen {
            _lb_guard = Some(LbPen::start(&args, lo(port)).await);
        } else {
            _pen_guard = Some(start_pen(&args, port).await);
        }
        for i in 0..n {
            let src = sources[i % sources.len()];
            assert!(
                ask_from(src, lo(port)).await.is_some(),
                "lb_pen={lb_pen} request {i} from {src}"
            );
        }
        // Count only connections that carried a request (both tools' start probes are empty).
        let counts = backends
            .iter()
            .map(|b| b.seen().iter().filter(|s| !s.heads.is_empty()).count())
            .collect();
        let xff = backends
            .iter()
            .flat_map(|b| b.seen())
            .flat_map(|s| s.heads)
            .filter_map(|h| {
                h.lines()
                    .find(|l| l.starts_with("X-Forwarded-For"))
                    .map(str::to_string)
            })
            .collect();
        out.push((counts, xff));
    }
    let lb = out.pop().unwrap();
    let pen = out.pop().unwrap();
    [pen, lb]
}

#[tokio::test]
async fn round_robin_matches_pen() {
    if !pen_installed() {
        eprintln!("skipped: pen is not installed");
        return;
    }
    let [pen, lb] = both(&["-r"], &["127.0.0.1"], 12).await;
    assert_eq!(pen.0, vec![4, 4, 4]);
    assert_eq!(lb.0, pen.0);
}

#[tokio::test]
async fn client_tracking_matches_pen() {
    if !pen_installed() {
        eprintln!("skipped: pen is not installed");
        return;
    }
    // Three clients, four connections each: every client stays on one server, and the
    // three clients use three different servers (round robin for the first visit).
    let [pen, lb] = both(&[], &["127.0.0.31", "127.0.0.32", "127.0.0.33"], 12).await;
    let mut p = pen.0.clone();
    p.sort();
    let mut l = lb.0.clone();
    l.sort();
    assert_eq!(p, vec![4, 4, 4]);
    assert_eq!(l, p);
}

#[tokio::test]
async fn x_forwarded_for_matches_pen_on_the_first_request() {
    if !pen_installed() {
        eprintln!("skipped: pen is not installed");
        return;
    }
    let [pen, lb] = both(&["-H"], &["127.0.0.44"], 3).await;
    assert_eq!(pen.1, vec!["X-Forwarded-For: 127.0.0.44"; 3]);
    assert_eq!(lb.1, pen.1);
}
