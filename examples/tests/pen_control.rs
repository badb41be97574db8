//! lb-pen through the binary: the penctl control port, signals, the -F file.

mod pen_support;

use std::time::Duration;

use pen_support::*;

#[tokio::test]
async fn control_commands_change_behaviour() {
    let a = Backend::start("a", Mode::Http).await;
    let b = Backend::start("b", Mode::Http).await;
    let (port, cport) = (free_port(), free_port());
    let args = strings(&[
        "-X",
        "-C",
        &cport.to_string(),
        &port.to_string(),
        &a.spec(),
        &b.spec(),
    ]);
    let mut pen = LbPen::start(&args, lo(port)).await;
    let ctl = lo(cport);

    assert_eq!(
        penctl(ctl, "mode").await,
        "no hash no roundrobin no stubborn no weight no prio\n"
    );
    // Client tracking (the default): one client stays on its server.
    let first = ask_from("127.0.0.20", lo(port)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            ask_from("127.0.0.20", lo(port)).await.as_deref(),
            Some(first.as_str())
        );
    }
    // `roundrobin` turns tracking off: the same client now alternates.
    assert_eq!(penctl(ctl, "roundrobin").await, "");
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(ask_from("127.0.0.20", lo(port)).await);
    }
    assert_eq!(tally(&seen).len(), 2, "{seen:?}");

    // `server 0 blacklist 60` sends everything to server 1.
    assert_eq!(penctl(ctl, "server 0 blacklist 60").await, "");
    for _ in 0..4 {
        assert_eq!(ask_new(lo(port)).await.as_deref(), Some("b"));
    }
    // `server 1 port` moves server 1 to another backend, c (server 0 is still out).
    let c = Backend::start("c", Mode::Http).await;
    assert_eq!(
        penctl(ctl, &format!("server 1 port {}", c.addr.port())).await,
        ""
    );
    for _ in 0..4 {
        assert_eq!(ask_new(lo(port)).await.as_deref(), Some("c"));
    }
    // `server 0 blacklist 0` lifts the blacklist: round robin over a and c again.
    penctl(ctl, "server 0 blacklist 0").await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(ask_new(lo(port)).await);
    }
    let t = tally(&seen);
    assert_eq!((t.get("a"), t.get("c")), (Some(&2), Some(&2)), "{t:?}");
    let servers = penctl(ctl, "servers").await;
    assert!(
        servers.contains(&format!("1 addr 127.0.0.1 port {} conn ", c.addr.port())),
        "{servers}"
    );
    assert_eq!(servers.lines().count(), 2, "{servers}");

    assert_eq!(penctl(ctl, "conn_max 7").await, "7\n");
    assert_eq!(penctl(ctl, "conn_max").await, "7\n");
    assert_eq!(penctl(ctl, "clients_max 10").await, "10\n");
    penctl(ctl, "tracking 5").await;
    assert_eq!(penctl(ctl, "tracking").await, "5\n");
    assert!(penctl(ctl, "recent").await.contains("127.0.0.20 connects "));
    assert!(penctl(ctl, "status").await.contains("<table"));
    assert!(penctl(ctl, "no such command").await.contains("\"no\""));

    let dir = std::env::temp_dir().join(format!("lb-pen-write-{}", std::process::id()));
    penctl(ctl, &format!("write {}", dir.display())).await;
    let written = std::fs::read_to_string(&dir).unwrap();
    let _ = std::fs::remove_file(&dir);
    assert!(
        written.contains("\nroundrobin\n") && written.contains("tracking 5\n"),
        "{written}"
    );

    // `exit` (allowed by -X) stops lb-pen cleanly.
    penctl(ctl, "exit").await;
    assert_eq!(pen.wait_exit().await, Some(0));
}

#[tokio::test]
async fn exit_is_refused_without_x() {
    let a = Backend::start("a", Mode::Http).await;
    let (port, cport) = (free_port(), free_port());
    let args = strings(&[
        "-C",
        &format!("127.0.0.1:{cport}"),
        &port.to_string(),
        &a.spec(),
    ]);
    let mut pen = LbPen::start(&args, lo(port)).await;
    assert!(penctl(lo(cport), "exit").await.contains("-X"));
    assert!(pen.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn term_drains_open_connections_and_hup_rereads_the_config_file() {
    let a = Backend::start("a", Mode::Http).await;
    let b = Backend::start("b", Mode::Http).await;
    let cfg = std::env::temp_dir().join(format!("lb-pen-cfg-{}", std::process::id()));
    std::fs::write(&cfg, "# start with tracking off\nroundrobin\n").unwrap();
    let pidfile = std::env::temp_dir().join(format!("lb-pen-pid-{}", std::process::id()));
    let port = free_port();
    let args = strings(&[
        "-F",
        &cfg.display().to_string(),
        "-p",
        &pidfile.display().to_string(),
        &port.to_string(),
        &a.spec(),
        &b.spec(),
    ]);
    let mut pen = LbPen::start(&args, lo(port)).await;
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pen.pid().to_string()
    );

    // HUP: the file now blacklists server 0.
    std::fs::write(&cfg, "server 0 blacklist 60\n").unwrap();
    pen.signal("HUP");
    let mut only_b = false;
    for _ in 0..100 {
        let answers = [ask_new(lo(port)).await, ask_new(lo(port)).await];
        if answers.iter().all(|a| a.as_deref() == Some("b")) {
            only_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(only_b, "HUP did not apply the -F file");

    // USR1 writes statistics to stderr (checked after exit).
    pen.signal("USR1");
    let mut open = tokio::net::TcpStream::connect(lo(port)).await.unwrap();
    assert!(ask(&mut open).await.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    pen.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still draining: the open connection keeps working, new ones are not accepted.
    assert!(pen.child.try_wait().unwrap().is_none());
    assert!(ask(&mut open).await.is_some());
    assert!(tokio::net::TcpStream::connect(lo(port)).await.is_err());
    drop(open);
    assert_eq!(pen.wait_exit().await, Some(0));
    let err = stderr_of(&mut pen.child);
    assert!(err.contains("lb-pen statistics"), "{err}");
    assert!(!pidfile.exists(), "pid file left behind");
    let _ = std::fs::remove_file(&cfg);
}

#[tokio::test]
async fn user_option_drops_privileges_after_binding() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    if uid.split_whitespace().nth(1).is_none_or(|u| u != "0") {
        eprintln!("skipped: -u needs root");
        return;
    }
    let a = Backend::start("a", Mode::Http).await;
    let port = free_port();
    let pen = LbPen::start(
        &strings(&["-u", "nobody", &port.to_string(), &a.spec()]),
        lo(port),
    )
    .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pen.pid())).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        !uid_line.split_whitespace().skip(1).any(|u| u == "0"),
        "{uid_line}"
    );
    assert_eq!(ask_new(lo(port)).await.as_deref(), Some("a"));
}
