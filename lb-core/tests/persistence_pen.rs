//! pen's client-table behaviour through the balancer: `-c` slots, `-T` tracking, `-r`
//! round-robin bypass, `-s` stubborn, the hard limit for returning clients, and a table
//! entry whose backend was removed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::persistence::{ClientTable, ClientTableConfig};
use lb_core::{Backend, BackendId, Balancer, Error, Health, PickContext};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn client(i: u8) -> PickContext<'static> {
    PickContext::new().with_client(SocketAddr::from(([192, 0, 2, i], 40000 + u16::from(i))))
}

fn setup(cfg: ClientTableConfig, backends: Vec<Backend>) -> (Balancer, Arc<ClientTable>) {
    let table = Arc::new(ClientTable::new(cfg).unwrap());
    let lb = Balancer::builder()
        .backends(backends)
        .persistence(table.clone())
        .build()
        .unwrap();
    (lb, table)
}

fn two() -> Vec<Backend> {
    vec![Backend::new(addr(1)), Backend::new(addr(2))]
}

#[test]
fn a_full_table_forgets_the_least_recent_client_who_is_then_rebalanced() {
    let (lb, table) = setup(ClientTableConfig::default().with_slots(2), two());
    let home1 = lb.pick(&client(1)).unwrap().id();
    let home2 = lb.pick(&client(2)).unwrap().id();
    assert_ne!(home1, home2, "round robin");
    assert_eq!(
        lb.pick(&client(1)).unwrap().id(),
        home1,
        "refreshes client 1"
    );
    let _ = lb.pick(&client(3)).unwrap(); // evicts client 2
    assert_eq!(table.len(), 2);
    let ips: Vec<_> = table
        .entries()
        .iter()
        .filter_map(|e| e.client_ip())
        .collect();
    assert!(!ips.contains(&"192.0.2.2".parse().unwrap()), "{ips:?}");
    let again = lb.pick(&client(2)).unwrap();
    assert!(!again.is_sticky(), "client 2 was forgotten");
}

#[tokio::test(start_paused = true)]
async fn tracking_time_expires_clients() {
    let cfg = ClientTableConfig::default().with_tracking(Duration::from_secs(60));
    let (lb, table) = setup(cfg, two());
    let _ = lb.pick(&client(1)).unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(lb.pick(&client(1)).unwrap().is_sticky());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(table.len(), 0);
    assert!(!lb.pick(&client(1)).unwrap().is_sticky());
    assert_eq!(table.len(), 1, "recorded anew");
}

#[test]
fn round_robin_bypass_neither_reads_nor_writes_the_table() {
    let (lb, table) = setup(ClientTableConfig::default(), two());
    lb.update_config(|c| c.bypass_persistence = true).unwrap();
    let a = lb.pick(&client(1)).unwrap().id();
    let b = lb.pick(&client(1)).unwrap().id();
    assert_ne!(a, b, "plain round robin");
    assert!(table.is_empty());
}

#[test]
fn stubborn_clients_fail_rather_than_move_and_others_move() {
    // By default a client whose backend is down moves, and the table follows it.
    let (lb, table) = setup(ClientTableConfig::default(), two());
    let home = lb.pick(&client(1)).unwrap().id();
    lb.set_health(home, Health::Down).unwrap();
    let moved = lb.pick(&client(1)).unwrap().id();
    assert_ne!(moved, home);
    assert_eq!(table.entries()[0].backend, moved);

    // pen -s: it fails instead, and stays recorded on its backend.
    let (lb, table) = setup(ClientTableConfig::default(), two());
    lb.update_config(|c| c.stubborn = true).unwrap();
    let home = lb.pick(&client(1)).unwrap().id();
    lb.set_health(home, Health::Down).unwrap();
    assert_eq!(
        lb.pick(&client(1)).unwrap_err(),
        Error::StickyUnavailable(home)
    );
    assert_eq!(table.entries()[0].backend, home);
    assert!(lb.pick(&client(2)).is_ok(), "new clients are not affected");
}

#[test]
fn returning_clients_may_exceed_the_soft_limit_up_to_the_hard_limit() {
    let (lb, _table) = setup(
        ClientTableConfig::default(),
        vec![
            Backend::new(addr(1)).with_max_conns(1).with_hard_conns(2),
            Backend::new(addr(2)).with_max_conns(1).with_hard_conns(2),
        ],
    );
    let a = lb.pick(&client(1)).unwrap(); // backend 1: 1 of soft 1
    let b = lb.pick(&client(2)).unwrap(); // backend 2: 1 of soft 1
    assert!(
        lb.pick(&client(3)).is_err(),
        "new clients stop at the soft limit"
    );
    let a2 = lb.pick(&client(1)).unwrap();
    assert_eq!(a2.id(), a.id());
    assert!(a2.is_sticky(), "a returning client passes the soft limit");
    assert!(
        lb.pick(&client(1)).is_err(),
        "the hard limit holds (no other backend has room)"
    );
    drop((a, b, a2));
}

#[tokio::test]
async fn a_removed_backend_s_clients_are_reassigned_and_mirrored() {
    let (lb, table) = setup(ClientTableConfig::default(), two());
    let home = lb.pick(&client(1)).unwrap().id();
    let mut mirror = table.subscribe();
    lb.remove(home).unwrap();
    let moved = lb.pick(&client(1)).unwrap();
    assert_ne!(moved.id(), home);
    let e = mirror.recv().await.unwrap();
    assert_eq!(
        (e.client_ip(), e.backend),
        (Some("192.0.2.1".parse().unwrap()), moved.id())
    );
    // A standby's table fed by the stream gives the same answer.
    let standby = ClientTable::new(ClientTableConfig::default()).unwrap();
    standby.import([e]);
    assert_eq!(standby.entries().len(), 1);
    assert_eq!(standby.entries()[0].backend, moved.id());
    assert_eq!(table.forget_backend(moved.id()), 1);
    assert_eq!(table.forget_backend(BackendId(99)), 0);
}
