//! End-to-end HA tests through `lb-heartbeat`, in network namespaces.
//!
//! A bridge joins a client (198.18.0.1) and two nodes, `lb0` (198.18.0.2, preferred) and
//! `lb1` (198.18.0.3); the virtual IP is 198.18.0.100. Each node runs `lb-heartbeat` with
//! keepalive 200 ms, deadtime 1 s, and an HTTP backend answering with its name. "A node
//! dies" means its `lb-heartbeat` gets SIGKILL and its link goes down at once.
//!
//! Needs root (CI runs as root); skips with a printed reason otherwise.
#![allow(clippy::disallowed_methods)]

#[path = "support/ha.rs"]
mod ha;

use std::time::Duration;

use ha::{CLIENT, Net, VIP, wait_until};
use lb_ha::protocol::{Beat, Key, NodeState};

const LIMIT: Duration = Duration::from_secs(15);

macro_rules! require_namespaces {
    () => {
        if let Some(reason) = ha::skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

fn start_pair(tag: &str, auto_failback: bool) -> (Net, Vec<ha::Proc>, ha::Proc, ha::Proc) {
    let net = Net::new(tag);
    net.write_node_files("lb0", auto_failback);
    net.write_node_files("lb1", auto_failback);
    let www = vec![net.start_backend("lb0"), net.start_backend("lb1")];
    let hb0 = net.start_heartbeat("lb0", 1);
    let hb1 = net.start_heartbeat("lb1", 1);
    let took = wait_until(LIMIT, || net.holds_vip("lb0"))
        .unwrap_or_else(|| panic!("lb0 never took the vip; lb0 said:\n{}", hb0.output()));
    eprintln!("lb0 (preferred) holds the vip {took:?} after start");
    (net, www, hb0, hb1)
}

/// The client's lines without the latency: `attempts body`.
fn answers(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

fn svc_log(net: &Net, host: &str) -> String {
    std::fs::read_to_string(net.dir.join(host).join("svc.log")).unwrap_or_default()
}

/// Kills `host`'s lb-heartbeat with SIGKILL and sets its link down in the same instant.
fn node_dies(net: &Net, hb: &mut ha::Proc, host: &str) {
    let _ = hb.child.kill();
    net.link(host, false);
    let _ = hb.child.wait();
}

/// Restarts a dead node: a new lb-heartbeat cleans up the address the killed one left,
/// then the link comes back (as a rebooted machine would).
fn node_returns(net: &Net, host: &str, run_no: u32) -> ha::Proc {
    let hb = net.start_heartbeat(host, run_no);
    wait_until(LIMIT, || !net.holds_vip(host)).expect("the new lb-heartbeat removes the stale vip");
    net.link(host, true);
    hb
}

#[test]
fn takeover_within_deadtime_client_follows_and_failback() {
    require_namespaces!();
    let _serial = ha::serial();
    let (net, _www, mut hb0, hb1) = start_pair("f", true);
    assert!(!net.holds_vip("lb1"));
    wait_until(LIMIT, || svc_log(&net, "lb0") == "stop\nstart\n").unwrap_or_else(|| {
        panic!(
            "lb0's svc: cleanup at start, then start after the vip: {:?}",
            svc_log(&net, "lb0")
        )
    });

    // The client reaches the backend through the virtual IP.
    let out = net.exec("client", &["python3", "-c", CLIENT, VIP, "8080", "3"]);
    assert_eq!(
        answers(&out),
        ["1 lb0", "1 lb0", "1 lb0"],
        "client through the vip"
    );
    let mac0 = net.mac("lb0");
    let mac1 = net.mac("lb1");
    assert_eq!(net.client_neigh().as_deref(), Some(mac0.as_str()));

    // A client busy sending while the active node dies.
    let mut client = net.spawn(
        "client",
        "client",
        &["python3", "-c", CLIENT, VIP, "8080", "80"],
    );
    // Kill once the client is well under way (python may start slowly on a busy machine).
    wait_until(Duration::from_secs(30), || {
        client.output().lines().count() >= 8
    })
    .expect("the client sends requests");
    let killed = std::time::SystemTime::now();
    node_dies(&net, &mut hb0, "lb0");
    let since_kill = || killed.elapsed().unwrap_or_default().as_secs_f64();
    wait_until(LIMIT, || net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("lb1 never took over; it said:\n{}", hb1.output()));
    let vip_s = since_kill();
    wait_until(LIMIT, || {
        net.client_neigh().as_deref() == Some(mac1.as_str())
    })
    .expect("the client's neighbour entry follows the gratuitous arp");
    let neigh_s = since_kill();
    eprintln!(
        "FIGURE takeover (keepalive 200ms, deadtime 1s): vip on lb1 {vip_s:.3}s after the kill, \
         client neighbour entry on lb1's mac {neigh_s:.3}s after the kill"
    );
    let done = wait_until(Duration::from_secs(60), || {
        matches!(client.child.try_wait(), Ok(Some(_)))
    });
    assert!(done.is_some(), "client finished");
    let lines = client.output();
    let results: Vec<(u32, String, u64)> = lines
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some((
                w.next()?.parse().ok()?,
                w.next()?.to_owned(),
                w.next()?.parse().ok()?,
            ))
        })
        .collect();
    assert_eq!(results.len(), 80, "client output:\n{lines}");
    let failed = results.iter().filter(|(_, b, _)| b == "FAIL").count();
    let retried = results.iter().filter(|(t, _, _)| *t == 2).count();
    let by_lb1 = results.iter().filter(|(_, b, _)| b == "lb1").count();
    let slowest = results.iter().map(|(_, _, ms)| *ms).max().unwrap_or(0);
    eprintln!(
        "FIGURE client retrying once: {} requests, {failed} failed, {retried} needed the retry, {by_lb1} served by lb1, slowest {slowest} ms",
        results.len()
    );
    assert!(by_lb1 > 0, "lb1 served after the takeover:\n{lines}");
    assert!(
        results.len() - by_lb1 >= 8,
        "lb0 served before the kill:\n{lines}"
    );
    assert_eq!(
        failed, 0,
        "a client that retries once loses no request:\n{lines}"
    );
    assert!(
        hb1.output().contains("lb1: active (resources promoted)"),
        "{}",
        hb1.output()
    );

    // auto_failback on: lb0 returns and gets the resources back; never both.
    let mut hb0 = node_returns(&net, "lb0", 2);
    let mut both = false;
    wait_until(LIMIT, || {
        both |= net.holds_vip("lb0") && net.holds_vip("lb1");
        net.holds_vip("lb0") && !net.holds_vip("lb1")
    })
    .unwrap_or_else(|| {
        panic!(
            "no failback; lb0:\n{}\nlb1:\n{}",
            hb0.output(),
            hb1.output()
        )
    });
    assert!(!both, "both held the vip during failback");
    wait_until(LIMIT, || {
        net.client_neigh().as_deref() == Some(mac0.as_str())
    })
    .expect("the client's neighbour entry follows the failback");
    assert!(hb1.output().contains("auto_failback"), "{}", hb1.output());
    assert_eq!(
        svc_log(&net, "lb1"),
        "stop\nstart\nstop\n",
        "lb1: cleanup, takeover, failback"
    );

    // SIGTERM: lb0 demotes, tells lb1, exits 0; lb1 takes over without waiting deadtime.
    net.stop_cleanly("lb0", &mut hb0);
    wait_until(LIMIT, || net.holds_vip("lb1")).expect("lb1 takes over after a clean shutdown");
    assert!(hb1.output().contains("peer shut down"), "{}", hb1.output());
}

#[test]
fn auto_failback_off_keeps_the_resources_on_the_survivor() {
    require_namespaces!();
    let _serial = ha::serial();
    let (net, _www, mut hb0, hb1) = start_pair("o", false);
    node_dies(&net, &mut hb0, "lb0");
    wait_until(LIMIT, || net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("no takeover:\n{}", hb1.output()));
    let hb0 = node_returns(&net, "lb0", 2);
    wait_until(LIMIT, || hb0.output().contains("lb0: standby"))
        .unwrap_or_else(|| panic!("lb0 never joined:\n{}", hb0.output()));
    // Several beats and more than a deadtime later, nothing moved.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(net.holds_vip("lb1") && !net.holds_vip("lb0"));
    assert!(!hb0.output().contains("promoting"), "{}", hb0.output());
}

#[test]
fn healed_partition_leaves_one_holder() {
    require_namespaces!();
    let _serial = ha::serial();
    let (net, _www, _hb0, hb1) = start_pair("s", true);
    // The client learns the vip's address (a gratuitous ARP only updates an existing entry).
    let out = net.exec("client", &["python3", "-c", CLIENT, VIP, "8080", "1"]);
    assert_eq!(answers(&out), ["1 lb0"]);
    // Cut lb0 off at the bridge; its process lives on and keeps the vip.
    net.bridge_port("lb0", false);
    wait_until(LIMIT, || net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("no takeover:\n{}", hb1.output()));
    assert!(net.holds_vip("lb0"), "split brain while partitioned");
    net.bridge_port("lb0", true);
    let healed = wait_until(LIMIT, || !(net.holds_vip("lb0") && net.holds_vip("lb1")))
        .expect("one holder after healing");
    eprintln!(
        "FIGURE split brain resolved {:.3}s after healing",
        healed.as_secs_f64()
    );
    // The preferred node keeps the resources; it stays that way.
    for _ in 0..20 {
        assert!(
            net.holds_vip("lb0") && !net.holds_vip("lb1"),
            "lb0 keeps the vip, lb1 not"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mac0 = net.mac("lb0");
    wait_until(LIMIT, || {
        net.client_neigh().as_deref() == Some(mac0.as_str())
    })
    .expect("the client's neighbour entry points at the winner");
    assert!(hb1.output().contains("split brain"), "{}", hb1.output());
}

fn send_beat(net: &Net, beat: &Beat, key: &str, to: &str) {
    let hex: String = beat
        .encode(&Key::new(key))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    net.exec(
        "client",
        &[
            "python3",
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range(10): s.sendto(bytes.fromhex(sys.argv[1]),(sys.argv[2],694))",
            &hex,
            to,
        ],
    );
}

#[test]
fn forged_and_replayed_beats_change_nothing() {
    require_namespaces!();
    let _serial = ha::serial();
    let (net, _www, hb0, hb1) = start_pair("r", true);
    wait_until(LIMIT, || hb1.output().contains("lb1: standby")).expect("lb1 standby");
    let stopped = |node: &str, epoch: u64, seq: u64| Beat {
        node: node.into(),
        epoch,
        seq,
        state: NodeState::Stopped,
        ping_ok: 0,
        ping_total: 0,
    };
    // Forged: "lb0 stopped" with a wrong key, far in the future, to lb1.
    send_beat(
        &net,
        &stopped("lb0", u64::MAX, 1),
        "wrong key",
        "198.18.0.3",
    );
    // Replayed: a correctly signed but stale beat (an old epoch) to lb1.
    send_beat(&net, &stopped("lb0", 1, 1), "lb-ha-test-key", "198.18.0.3");
    // Forged "lb1 active" to lb0.
    let mut active = stopped("lb1", u64::MAX, 1);
    active.state = NodeState::Active;
    send_beat(&net, &active, "wrong key", "198.18.0.2");
    // Two deadtimes later nothing changed.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(net.holds_vip("lb0") && !net.holds_vip("lb1"));
    assert!(!hb1.output().contains("promoting"), "{}", hb1.output());
    assert!(!hb0.output().contains("demoting"), "{}", hb0.output());
    let err1 = std::fs::read_to_string(net.dir.join("lb1-hb1.err")).unwrap_or_default();
    assert_eq!(
        err1.matches("failed authentication").count(),
        1,
        "key mismatch logged once:\n{err1}"
    );

    // The control: a beat signed with the real key and a fresh epoch does move lb1,
    // so the checks above could have failed.
    send_beat(
        &net,
        &stopped("lb0", u64::MAX, 1),
        "lb-ha-test-key",
        "198.18.0.3",
    );
    wait_until(LIMIT, || net.holds_vip("lb1")).expect("a validly signed beat is obeyed");
}

#[test]
fn ipv6_vip_with_toml_config_and_multicast_beats() {
    require_namespaces!();
    let _serial = ha::serial();
    const VIP6: &str = "2001:2::100";
    let net = Net::new("6");
    for (host, a) in [
        ("client", "2001:2::1"),
        ("lb0", "2001:2::2"),
        ("lb1", "2001:2::3"),
    ] {
        net.exec(
            host,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        );
    }
    let res = format!("IPv6addr::{VIP6}/64/eth0");
    net.write_node_toml("lb0", &[&res]);
    net.write_node_toml("lb1", &[&res]);
    let mut hb0 = net.start_heartbeat_toml("lb0", 1);
    let hb1 = net.start_heartbeat_toml("lb1", 1);
    wait_until(LIMIT, || net.holds("lb0", VIP6))
        .unwrap_or_else(|| panic!("lb0 never took the v6 vip:\n{}", hb0.output()));
    // Beats went over multicast: lb1 heard lb0 and stands by.
    wait_until(LIMIT, || hb1.output().contains("lb1: standby (peer heard)"))
        .unwrap_or_else(|| panic!("lb1 never heard lb0 over multicast:\n{}", hb1.output()));
    // The client resolves the vip (neighbour discovery), then lb0 dies.
    let poke = format!(
        "import socket\ns=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.sendto(b'x', ('{VIP6}', 9))"
    );
    net.exec("client", &["python3", "-c", &poke]);
    let (mac0, mac1) = (net.mac("lb0"), net.mac("lb1"));
    wait_until(LIMIT, || {
        net.client_neigh_of(VIP6).as_deref() == Some(mac0.as_str())
    })
    .expect("the client resolves the v6 vip to lb0");
    let killed = std::time::SystemTime::now();
    node_dies(&net, &mut hb0, "lb0");
    wait_until(LIMIT, || net.holds("lb1", VIP6))
        .unwrap_or_else(|| panic!("lb1 never took the v6 vip:\n{}", hb1.output()));
    let vip_s = killed.elapsed().unwrap_or_default().as_secs_f64();
    wait_until(LIMIT, || {
        net.client_neigh_of(VIP6).as_deref() == Some(mac1.as_str())
    })
    .expect("the client's neighbour entry follows the unsolicited neighbour advertisement");
    let neigh_s = killed.elapsed().unwrap_or_default().as_secs_f64();
    eprintln!(
        "FIGURE ipv6 takeover (keepalive 200ms, deadtime 1s, multicast beats): vip on lb1 {vip_s:.3}s, \
         client neighbour entry {neigh_s:.3}s after the kill"
    );
}

#[test]
fn ipfail_moves_the_vip_to_the_node_that_still_reaches_its_ping_node() {
    require_namespaces!();
    let _serial = ha::serial();
    let net = Net::new("p");
    for host in ["lb0", "lb1"] {
        let d = net.write_node_files(host, true);
        let mut cf = std::fs::read_to_string(d.join("ha.cf")).expect("ha.cf");
        cf.push_str("ping 198.18.0.1\n");
        std::fs::write(d.join("ha.cf"), cf).expect("ha.cf");
    }
    let _hb0 = net.start_heartbeat("lb0", 1);
    let hb1 = net.start_heartbeat("lb1", 1);
    wait_until(LIMIT, || net.holds_vip("lb0")).expect("lb0 takes the vip");
    // lb0 loses its way to the ping node (the client) but still hears lb1.
    net.exec("lb0", &["ip", "route", "add", "blackhole", "198.18.0.1/32"]);
    let moved = wait_until(LIMIT, || net.holds_vip("lb1") && !net.holds_vip("lb0"))
        .unwrap_or_else(|| panic!("ipfail did not move the vip:\n{}", hb1.output()));
    eprintln!(
        "FIGURE ipfail: vip moved {:.3}s after lb0 lost its ping node",
        moved.as_secs_f64()
    );
    // Reachability back: auto_failback returns the vip to the preferred node.
    net.exec("lb0", &["ip", "route", "del", "blackhole", "198.18.0.1/32"]);
    wait_until(LIMIT, || net.holds_vip("lb0") && !net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("no failback after ping recovery:\n{}", hb1.output()));
}

#[test]
fn failed_promote_faults_rolls_back_and_the_peer_takes_over() {
    require_namespaces!();
    let _serial = ha::serial();
    let net = Net::new("x");
    for host in ["lb0", "lb1"] {
        net.write_node_files(host, true);
    }
    // lb0's service cannot start.
    let svc = net.dir.join("lb0/resource.d/svc");
    let log = net.dir.join("lb0/svc.log");
    std::fs::write(
        &svc,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\n[ \"$1\" = start ] && exit 1\nexit 0\n",
            log.display()
        ),
    )
    .expect("failing svc");
    let hb0 = net.start_heartbeat("lb0", 1);
    let hb1 = net.start_heartbeat("lb1", 1);
    wait_until(LIMIT, || {
        hb0.output().contains("lb0: fault (promote failed")
    })
    .unwrap_or_else(|| panic!("lb0 did not fault:\n{}", hb0.output()));
    wait_until(LIMIT, || net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("lb1 did not take over from a faulty lb0:\n{}", hb1.output()));
    assert!(
        hb1.output().contains("peer reported a fault"),
        "{}",
        hb1.output()
    );
    // lb0 gave up what it had started: the vip (promoted before svc) is gone again, and
    // svc was stopped in the rollback after its failed start.
    assert!(!net.holds_vip("lb0"));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.ends_with("start\nstop\n"), "svc log: {log:?}");

    // The operator fixes the service and clears the fault (SIGUSR1): lb0 stands by, and
    // with auto_failback on the preferred node gets the resources back.
    let log_path = net.dir.join("lb0/svc.log");
    std::fs::write(
        &svc,
        format!("#!/bin/sh\necho \"$1\" >> {}\nexit 0\n", log_path.display()),
    )
    .expect("fixed svc");
    ha::run("kill", &["-USR1", &hb0.child.id().to_string()]);
    wait_until(LIMIT, || net.holds_vip("lb0") && !net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("no failback after clearing the fault:\n{}", hb0.output()));
    assert!(
        hb0.output().contains("lb0: standby (fault cleared)"),
        "{}",
        hb0.output()
    );
}
