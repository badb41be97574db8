//! The balancers themselves made highly available: `lb-pen` and `lb-balancer` with
//! `--ha-config`, in network namespaces.
//!
//! The network is `support/ha.rs`'s: a client (198.18.0.1, plus 198.18.0.11-15 as
//! further client addresses) and two nodes `lb0` (preferred) and `lb1` on a bridge, the
//! virtual IP 198.18.0.100. The backends run in the client's namespace (198.18.0.1:8081
//! answers `b1`, :8082 `b2`) so that both nodes reach them whichever dies. "A node dies"
//! means its balancer gets SIGKILL and its link goes down at once.
//!
//! Needs root (CI runs as root); skips with a printed reason otherwise.
#![allow(clippy::disallowed_methods)]

#[path = "support/ha.rs"]
mod ha;

use std::time::Duration;

use ha::{CLIENT, Net, VIP, wait_until};

const LIMIT: Duration = Duration::from_secs(15);
/// lb-pen's control port, on each node's loopback.
const PENCTL: u16 = 10000;

macro_rules! require_namespaces {
    () => {
        if let Some(reason) = ha::skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// The network, both nodes' Heartbeat files, and the two backends.
fn network(tag: &str) -> (Net, Vec<ha::Proc>) {
    let net = Net::new(tag);
    net.write_node_files("lb0", false);
    net.write_node_files("lb1", false);
    let www = vec![
        net.start_backend_on("client", 8081, "b1"),
        net.start_backend_on("client", 8082, "b2"),
    ];
    (net, www)
}

/// The HA options for `host`.
fn ha_args(net: &Net, host: &str) -> Vec<String> {
    let d = net.dir.join(host);
    vec![
        "--ha-config".into(),
        d.join("ha.cf").display().to_string(),
        "--ha-node".into(),
        host.into(),
        "--ha-resource-dir".into(),
        d.join("resource.d").display().to_string(),
    ]
}

fn start_pen(net: &Net, host: &str) -> ha::Proc {
    let bin = ha::example_bin("lb-pen").display().to_string();
    let mut args = vec![
        bin,
        "-C".into(),
        PENCTL.to_string(),
        "--drain".into(),
        "1".into(),
    ];
    args.extend(ha_args(net, host));
    args.extend([
        format!("{VIP}:80"),
        "198.18.0.1:8081".into(),
        "198.18.0.1:8082".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    net.spawn(host, &format!("{host}-pen"), &args)
}

fn start_balancer(net: &Net, host: &str) -> ha::Proc {
    let bin = ha::example_bin("lb-balancer").display().to_string();
    let mut args = vec![
        bin,
        "--listen".into(),
        format!("{VIP}:80"),
        "--member".into(),
        "http://198.18.0.1:8081".into(),
        "--manager".into(),
        "127.0.0.1:9000".into(),
        "--workers".into(),
        "1".into(),
    ];
    args.extend(ha_args(net, host));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    net.spawn(host, &format!("{host}-balancer"), &args)
}

/// SIGKILL to `host`'s balancer and its link down in the same instant.
fn node_dies(net: &Net, p: &mut ha::Proc, host: &str) {
    let _ = p.child.kill();
    net.link(host, false);
    let _ = p.child.wait();
}

/// Asks through the virtual IP once from each source: `(source, body)`.
fn ask(net: &Net, sources: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["python3", "-c", CLIENT, VIP, "80", "from"];
    args.extend_from_slice(sources);
    net.exec("client", &args)
        .lines()
        .filter_map(|l| {
            let (src, body) = l.split_once(' ')?;
            Some((src.to_owned(), body.to_owned()))
        })
        .collect()
}

/// penctl `clients` on `host`: `(client, server number)`, sorted.
fn clients(net: &Net, host: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = net
        .tcp_ask(host, PENCTL, "clients")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [ip, "server", n, "age", _] => Some(((*ip).to_owned(), (*n).to_owned())),
                _ => None,
            }
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn lb_pen_pair_keeps_sticky_clients_on_their_server_after_a_failover() {
    require_namespaces!();
    let _serial = ha::serial();
    let (net, _www) = network("p");
    let sources = [
        "198.18.0.11",
        "198.18.0.12",
        "198.18.0.13",
        "198.18.0.14",
        "198.18.0.15",
    ];
    for s in sources {
        net.add_addr("client", &format!("{s}/24"));
    }
    let mut pen0 = start_pen(&net, "lb0");
    let mut pen1 = start_pen(&net, "lb1");
    let took = wait_until(LIMIT, || net.holds_vip("lb0"))
        .unwrap_or_else(|| panic!("lb0 never took the vip; it said:\n{}", pen0.output()));
    eprintln!("lb0 (preferred) holds the vip {took:?} after start");
    assert!(!net.holds_vip("lb1"));
    wait_until(LIMIT, || pen0.output().contains("lb0: active"))
        .unwrap_or_else(|| panic!("lb0 logs its role:\n{}", pen0.output()));
    wait_until(LIMIT, || {
        net.tcp_ask("lb1", PENCTL, "ha")
            .is_some_and(|s| s.starts_with("lb1: standby") && s.contains("alive"))
    })
    .unwrap_or_else(|| panic!("lb1 standby: {:?}", net.tcp_ask("lb1", PENCTL, "ha")));

    // pen's default: round robin for a new client, then the client table. Four clients
    // in turn alternate; each stays on its server.
    let first = ask(&net, &sources[..4]);
    let server = |src: &str, answers: &[(String, String)]| {
        answers
            .iter()
            .find(|(s, _)| s == src)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let a = server(sources[0], &first);
    let b = server(sources[1], &first);
    assert!(
        ["b1", "b2"].contains(&a.as_str()) && ["b1", "b2"].contains(&b.as_str()) && a != b,
        "round robin over both backends: {first:?}"
    );
    assert_eq!(server(sources[2], &first), a, "{first:?}");
    assert_eq!(server(sources[3], &first), b, "{first:?}");
    assert_eq!(ask(&net, &sources[..4]), first, "sticky on lb0");

    // `clients_max` replaces lb0's table (keeping the clients): the sync follows the new
    // table, so a client recorded in it reaches lb1 too.
    assert_eq!(
        net.tcp_ask("lb0", PENCTL, "clients_max 100").as_deref(),
        Some("100\n")
    );
    let fifth = ask(&net, &sources[4..]);
    let e = server(sources[4], &fifth);
    assert!(["b1", "b2"].contains(&e.as_str()), "{fifth:?}");
    let on_lb0 = clients(&net, "lb0");
    assert_eq!(on_lb0.len(), 5, "lb0's table: {on_lb0:?}");
    wait_until(LIMIT, || clients(&net, "lb1") == on_lb0).unwrap_or_else(|| {
        panic!(
            "lb1's table mirrors lb0's {on_lb0:?}: {:?}",
            clients(&net, "lb1")
        )
    });

    node_dies(&net, &mut pen0, "lb0");
    let killed = std::time::SystemTime::now();
    wait_until(LIMIT, || net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("lb1 never took over; it said:\n{}", pen1.output()));
    eprintln!(
        "FIGURE lb-pen takeover: vip on lb1 {:.3}s after the kill",
        killed.elapsed().unwrap_or_default().as_secs_f64()
    );
    // Asked in an order a fresh round robin cannot answer the same way (it would give the
    // first two different servers): only the synced table can.
    let order = [sources[0], sources[2], sources[1], sources[3], sources[4]];
    let after = ask(&net, &order);
    let want: Vec<(String, String)> = order
        .iter()
        .zip([&a, &a, &b, &b, &e])
        .map(|(s, body)| ((*s).to_owned(), body.clone()))
        .collect();
    assert_eq!(after, want, "the same servers through lb1");
    assert!(
        pen1.output().contains("lb1: active"),
        "lb1 logs its role:\n{}",
        pen1.output()
    );
    let status = net.tcp_ask("lb1", PENCTL, "ha").unwrap_or_default();
    assert!(
        status.starts_with("lb1: active") && status.contains("peer lb0"),
        "{status}"
    );

    // TERM: lb1 gives the virtual IP up before it exits 0.
    net.stop_cleanly("lb1", &mut pen1);
    assert!(pen1.output().contains("lb1: stopped"), "{}", pen1.output());
}

/// The manager's JSON on `host`.
fn manager_api(net: &Net, host: &str) -> Option<serde_json::Value> {
    let body = net.http_get(host, "http://127.0.0.1:9000/api")?;
    serde_json::from_str(&body).ok()
}

#[test]
fn lb_balancer_pair_moves_the_vip_and_the_manager_shows_the_role() {
    require_namespaces!();
    let _serial = ha::serial();
    let (net, _www) = network("b");
    let mut lb0 = start_balancer(&net, "lb0");
    let mut lb1 = start_balancer(&net, "lb1");
    wait_until(LIMIT, || net.holds_vip("lb0"))
        .unwrap_or_else(|| panic!("lb0 never took the vip; it said:\n{}", lb0.output()));
    assert!(!net.holds_vip("lb1"));
    assert_eq!(
        ask(&net, &["198.18.0.1"]),
        [("198.18.0.1".to_owned(), "b1".to_owned())]
    );
    wait_until(LIMIT, || {
        manager_api(&net, "lb0").is_some_and(|v| v["ha"]["state"] == "active")
    })
    .unwrap_or_else(|| panic!("lb0's manager: {:?}", manager_api(&net, "lb0")));
    wait_until(LIMIT, || {
        manager_api(&net, "lb1")
            .is_some_and(|v| v["ha"]["state"] == "standby" && v["ha"]["peer_alive"] == true)
    })
    .unwrap_or_else(|| panic!("lb1's manager: {:?}", manager_api(&net, "lb1")));
    let standby = manager_api(&net, "lb1").unwrap_or_default();
    assert_eq!(standby["ha"]["peer_name"], "lb0", "{standby}");
    assert!(
        standby["ha"]["peer_last_beat_ms"].as_u64().is_some(),
        "{standby}"
    );
    assert_eq!(standby["balancers"][0]["name"], "default", "{standby}");

    node_dies(&net, &mut lb0, "lb0");
    wait_until(LIMIT, || net.holds_vip("lb1"))
        .unwrap_or_else(|| panic!("lb1 never took over; it said:\n{}", lb1.output()));
    assert_eq!(
        ask(&net, &["198.18.0.1"]),
        [("198.18.0.1".to_owned(), "b1".to_owned())],
        "served through lb1"
    );
    wait_until(LIMIT, || {
        manager_api(&net, "lb1")
            .is_some_and(|v| v["ha"]["state"] == "active" && v["ha"]["peer_alive"] == false)
    })
    .unwrap_or_else(|| panic!("lb1's manager: {:?}", manager_api(&net, "lb1")));
    let page = net
        .http_get("lb1", "http://127.0.0.1:9000/")
        .unwrap_or_default();
    assert!(
        page.contains("<table id=\"section-ha\">")
            && page.contains("<tr><th>state</th><td>active</td></tr>"),
        "{page}"
    );
    assert!(lb1.output().contains("lb1: active"), "{}", lb1.output());

    net.stop_cleanly("lb1", &mut lb1);
}
