//! State sync across a failover, on loopback: the active node streams its table to the
//! passive one, so after the passive node takes over it already knows every client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_ha::protocol::{Key, MachineConfig, Timing};
use lb_ha::resource::{FnResource, ResourceGroup};
use lb_ha::sync::{StateSync, SyncEntry, SyncTable};
use lb_ha::{Node, NodeConfig, Role};
use tokio::sync::broadcast;

/// A sticky table: client -> backend.
#[derive(Debug)]
struct Sticky {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    tx: broadcast::Sender<SyncEntry>,
}

impl Sticky {
    fn new() -> Arc<Self> {
        Arc::new(Sticky {
            map: Mutex::new(HashMap::new()),
            tx: broadcast::channel(1024).0,
        })
    }
    fn record(&self, client: &str, backend: &str) {
        let e = SyncEntry {
            key: client.into(),
            value: backend.into(),
        };
        self.map
            .lock()
            .expect("map")
            .insert(e.key.clone(), e.value.clone());
        let _ = self.tx.send(e);
    }
    fn lookup(&self, client: &str) -> Option<String> {
        let m = self.map.lock().expect("map");
        m.get(client.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

impl SyncTable for Sticky {
    fn export(&self) -> Vec<SyncEntry> {
        let m = self.map.lock().expect("map");
        m.iter()
            .map(|(k, v)| SyncEntry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    }
    fn apply(&self, e: SyncEntry) {
        self.map.lock().expect("map").insert(e.key, e.value);
    }
    fn subscribe(&self) -> broadcast::Receiver<SyncEntry> {
        self.tx.subscribe()
    }
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
}

fn node_config(name: &str, peer: &str, me: u16, other: u16) -> NodeConfig {
    NodeConfig {
        machine: MachineConfig {
            name: name.into(),
            peer: peer.into(),
            preferred: Some("lb0".into()),
            auto_failback: false,
            timing: Timing {
                keepalive: Duration::from_millis(50),
                warntime: Duration::from_millis(200),
                deadtime: Duration::from_millis(500),
                initdead: Duration::from_secs(1),
            },
            ping_total: 0,
            epoch: if name == "lb0" { 1 } else { 2 },
        },
        key: Key::new("sync test key"),
        bind: SocketAddr::from(([127, 0, 0, 1], me)),
        bind_device: None,
        peers: vec![SocketAddr::from(([127, 0, 0, 1], other))],
        multicast: None,
        ping: vec![],
    }
}

fn nothing() -> ResourceGroup {
    ResourceGroup::new().with(FnResource::new(
        "noop",
        || async { Ok(()) },
        || async { Ok(()) },
    ))
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn sticky_clients_keep_their_backend_across_a_failover() {
    let (u0, u1) = (free_udp(), free_udp());
    let (t0, t1) = (free_tcp(), free_tcp());
    let n0 = Node::spawn(node_config("lb0", "lb1", u0, u1), nothing())
        .await
        .expect("lb0");
    let n1 = Node::spawn(node_config("lb1", "lb0", u1, u0), nothing())
        .await
        .expect("lb1");
    let (s0, s1) = (Sticky::new(), Sticky::new());
    let key = Key::new("sync test key");
    let _sync0 = StateSync::spawn(s0.clone(), n0.role(), t0, t1, key.clone())
        .await
        .expect("sync lb0");
    let _sync1 = StateSync::spawn(s1.clone(), n1.role(), t1, t0, key)
        .await
        .expect("sync lb1");
    let mut r0 = n0.role();
    tokio::time::timeout(Duration::from_secs(10), r0.wait_for(|r| *r == Role::Active))
        .await
        .expect("lb0 active in time")
        .expect("lb0 runs");

    // Clients stick to backends on the active node; one was there before sync started.
    s0.record("198.18.0.10", "backend-a");
    s0.record("198.18.0.11", "backend-b");
    eventually("the passive node to learn both clients", || {
        s1.lookup("198.18.0.10").is_some() && s1.lookup("198.18.0.11").is_some()
    })
    .await;
    s0.record("198.18.0.10", "backend-c");
    eventually("a changed assignment", || {
        s1.lookup("198.18.0.10").as_deref() == Some("backend-c")
    })
    .await;

    // Failover: lb1 takes over and already knows where every client goes.
    n0.shutdown().await.expect("lb0 shuts down");
    let mut r1 = n1.role();
    tokio::time::timeout(Duration::from_secs(10), r1.wait_for(|r| *r == Role::Active))
        .await
        .expect("lb1 active in time")
        .expect("lb1 runs");
    assert_eq!(s1.lookup("198.18.0.10").as_deref(), Some("backend-c"));
    assert_eq!(s1.lookup("198.18.0.11").as_deref(), Some("backend-b"));
    n1.shutdown().await.expect("lb1 shuts down");
}
