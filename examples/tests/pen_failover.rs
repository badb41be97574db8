//! lb-pen through the binary: refusing servers, blacklisting, the emergency server, -x.

mod pen_support;

use std::time::Duration;

use pen_support::*;

/// A loopback address where nothing listens.
fn refusing() -> String {
    lo(free_port()).to_string()
}

#[tokio::test]
async fn refused_connect_goes_to_the_next_server_in_the_same_connection() {
    // pen 0.34 -r with one refusing server loses about half the connections.
    let good = Backend::start("good", Mode::Http).await;
    let port = free_port();
    let args = strings(&[
        "-r",
        &port.to_string(),
        &refusing(),
        &good.spec(),
        &refusing(),
    ]);
    let _pen = LbPen::start(&args, lo(port)).await;
    for i in 0..20 {
        assert_eq!(
            ask_new(lo(port)).await.as_deref(),
            Some("good"),
            "connection {i}"
        );
    }
}

#[tokio::test]
async fn blacklisted_server_comes_back_after_the_blacklist_time() {
    let a = Backend::start("a", Mode::Http).await;
    let dead_port = free_port();
    let port = free_port();
    let args = strings(&[
        "-r",
        "-b",
        "1",
        &port.to_string(),
        &a.spec(),
        &lo(dead_port).to_string(),
    ]);
    let _pen = LbPen::start(&args, lo(port)).await;
    for _ in 0..4 {
        assert_eq!(ask_new(lo(port)).await.as_deref(), Some("a"));
    }
    // The second server starts; once its blacklist time is over it gets traffic again.
    let _b = Backend::start_on(lo(dead_port), "b", Mode::Http).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(ask_new(lo(port)).await);
    }
    let t = tally(&answers);
    assert_eq!(t.get("b"), Some(&3), "{t:?}");
}

#[tokio::test]
async fn emergency_server_answers_the_first_client() {
    // pen 0.34 uses -e only after every server has been blacklisted.
    let emergency = Backend::start("emergency", Mode::Http).await;
    let port = free_port();
    let args = strings(&[
        "-e",
        &emergency.spec(),
        &port.to_string(),
        &refusing(),
        &refusing(),
    ]);
    let _pen = LbPen::start(&args, lo(port)).await;
    for _ in 0..3 {
        assert_eq!(ask_new(lo(port)).await.as_deref(), Some("emergency"));
    }
}

#[tokio::test]
async fn connection_limit_refuses_the_extra_client() {
    let a = Backend::start("a", Mode::Http).await;
    let port = free_port();
    let args = strings(&["-x", "1", &port.to_string(), &a.spec()]);
    let _pen = LbPen::start(&args, lo(port)).await;
    let mut held = tokio::net::TcpStream::connect(lo(port)).await.unwrap();
    assert_eq!(ask(&mut held).await.as_deref(), Some("a"));
    assert_eq!(
        ask_new(lo(port)).await,
        None,
        "second connection should be closed over -x 1"
    );
    drop(held);
    // The slot is free again (the proxy notices the close asynchronously).
    let mut ok = None;
    for _ in 0..100 {
        ok = ask_new(lo(port)).await;
        if ok.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ok.as_deref(), Some("a"));
}

#[tokio::test]
async fn bad_command_lines_fail_with_one_line() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["8080", "127.0.0.1:notaport"], "notaport"),
        (
            &[&format!("127.0.0.1:{busy_port}"), "127.0.0.1:1"],
            &busy_port,
        ),
        (
            &["-F", "/nonexistent/pen.cfg", "8080", "127.0.0.1:1"],
            "/nonexistent/pen.cfg",
        ),
        (&["-U", "8080", "127.0.0.1:1"], "-U"),
        (&["-C", "192.0.2.1:9", "8080", "127.0.0.1:1"], "192.0.2.1:9"),
    ];
    for (args, needle) in cases {
        let (code, err) = run_failing(args).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
