//! Tests of the selection pipeline through the public API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use super::*;
use crate::persistence::Persistence;
use crate::{Address, Failure, Role};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn lb(backends: Vec<Backend>) -> Balancer {
    Balancer::builder().backends(backends).build().unwrap()
}

/// [`lb`] with passive health off: failures leave the backends usable.
fn lb_without_passive(backends: Vec<Backend>) -> Balancer {
    let lb = lb(backends);
    lb.set_passive(PassiveConfig::off());
    lb
}

/// Backends on ports 1, 2 and 3, passive health off, at most `max_attempts` attempts.
fn three(max_attempts: usize) -> Balancer {
    let lb = lb_without_passive(vec![
        Backend::new(addr(1)),
        Backend::new(addr(2)),
        Backend::new(addr(3)),
    ]);
    lb.update_config(|c| c.max_attempts = max_attempts).unwrap();
    lb
}

fn ports(lb: &Balancer, n: usize, ctx: &PickContext<'_>) -> Vec<u16> {
    (0..n)
        .map(|_| lb.pick(ctx).unwrap().backend().address().port().unwrap())
        .collect()
}

#[derive(Debug, Default)]
struct MapTable(Mutex<HashMap<Vec<u8>, BackendId>>);

impl Persistence for MapTable {
    fn lookup(&self, key: &[u8]) -> Option<BackendId> {
        self.0.lock().unwrap().get(key).copied()
    }
    fn record(&self, key: &[u8], backend: BackendId) {
        self.0.lock().unwrap().insert(key.to_vec(), backend);
    }
    fn forget(&self, key: &[u8]) {
        self.0.lock().unwrap().remove(key);
    }
}

#[test]
fn round_robin_spreads_evenly() {
    let lb = lb(vec![
        Backend::new(addr(1)),
        Backend::new(addr(2)),
        Backend::new(addr(3)),
    ]);
    let got = ports(&lb, 300, &PickContext::new());
    for p in 1..=3 {
        assert_eq!(got.iter().filter(|&&x| x == p).count(), 100);
    }
}

#[test]
fn leases_count_and_release_even_after_removal() {
    let lb = lb(vec![Backend::new(addr(1)), Backend::new(addr(2))]);
    let a = lb.pick(&PickContext::new()).unwrap();
    let b = lb.pick(&PickContext::new()).unwrap();
    assert_eq!(lb.stats().active, 2);
    let removed = a.id();
    lb.remove(removed).unwrap();
    assert_eq!(
        a.member().state().active(),
        1,
        "in-flight lease survives removal"
    );
    drop(a);
    drop(b);
    assert_eq!(lb.stats().active, 0);
    assert!(lb.get(removed).is_none());
    assert_eq!(
        ports(&lb, 4, &PickContext::new()),
        vec![2, 2, 2, 2],
        "removed backend gets no new traffic"
    );
}

#[test]
fn weight_zero_and_drain_take_only_sticky_clients() {
    let table = Arc::new(MapTable::default());
    let lb = Balancer::builder()
        .backend(Backend::new(addr(1)))
        .backend(Backend::new(addr(2)))
        .persistence(table.clone())
        .build()
        .unwrap();
    let client = PickContext::new().with_client(addr(40000));
    let first = lb.pick(&client).unwrap();
    let home = first.id();
    drop(first);
    lb.set_weight(home, 0).unwrap();
    assert_eq!(lb.pick(&client).unwrap().id(), home, "sticky client stays");
    let other = PickContext::new().with_client(SocketAddr::from(([10, 0, 0, 9], 1)));
    for _ in 0..5 {
        assert_ne!(
            lb.pick(&other).unwrap().id(),
            home,
            "new client avoids weight 0"
        );
    }
    lb.set_weight(home, 1).unwrap();
    lb.set_admin(home, AdminState::Drain).unwrap();
    assert_eq!(lb.pick(&client).unwrap().id(), home, "drain keeps sticky");
    lb.set_admin(home, AdminState::Maintenance).unwrap();
    assert_ne!(lb.pick(&client).unwrap().id(), home, "maintenance moves it");
}

#[test]
fn stubborn_client_fails_rather_than_moves() {
    let table = Arc::new(MapTable::default());
    let lb = Balancer::builder()
        .backend(Backend::new(addr(1)))
        .backend(Backend::new(addr(2)))
        .persistence(table)
        .stubborn(true)
        .build()
        .unwrap();
    let client = PickContext::new().with_client(addr(40000));
    let home = lb.pick(&client).unwrap().id();
    lb.set_health(home, Health::Down).unwrap();
    assert_eq!(
        lb.pick(&client).unwrap_err(),
        Error::StickyUnavailable(home)
    );
}

#[test]
fn hard_limit_admits_returning_clients_above_the_soft_limit() {
    let table = Arc::new(MapTable::default());
    let lb = Balancer::builder()
        .backend(Backend::new(addr(1)).with_max_conns(1).with_hard_conns(2))
        .persistence(table)
        .build()
        .unwrap();
    let c1 = PickContext::new().with_client(addr(1000));
    let c2 = PickContext::new().with_client(SocketAddr::from(([10, 0, 0, 2], 1)));
    let a = lb.pick(&c1).unwrap();
    assert!(lb.pick(&c2).is_err(), "soft limit reached for new clients");
    let b = lb.pick(&c1).unwrap();
    assert!(b.is_sticky());
    assert!(lb.pick(&c1).is_err(), "hard limit reached");
    drop((a, b));
}

#[test]
fn routes_pick_their_member_and_nofailover_refuses() {
    let lb = lb(vec![
        Backend::new(addr(1)).with_route("one"),
        Backend::new(addr(2)).with_route("two"),
    ]);
    for _ in 0..4 {
        let l = lb.pick(&PickContext::new().with_route("two")).unwrap();
        assert_eq!(l.backend().route(), Some("two"));
        assert!(l.is_sticky());
    }
    let two = lb.find(&Address::Socket(addr(2))).unwrap().id();
    lb.set_admin(two, AdminState::Maintenance).unwrap();
    let l = lb.pick(&PickContext::new().with_route("two")).unwrap();
    assert_eq!(l.backend().route(), Some("one"), "fails over by default");
    lb.update_config(|c| c.stubborn = true).unwrap();
    assert!(matches!(
        lb.pick(&PickContext::new().with_route("two")),
        Err(Error::StickyUnavailable(_))
    ));
}

#[test]
fn tiers_lbset_hot_standby_backup_emergency() {
    let lb = lb(vec![
        Backend::new(addr(1)).with_lbset(0),
        Backend::new(addr(2))
            .with_lbset(0)
            .with_role(Role::HotStandby),
        Backend::new(addr(3)).with_lbset(1),
        Backend::new(addr(4)).with_role(Role::Backup),
        Backend::new(addr(5)).with_role(Role::Backup),
        Backend::new(addr(6)).with_role(Role::Emergency),
    ]);
    let id = |p| lb.find(&Address::Socket(addr(p))).unwrap().id();
    let ctx = PickContext::new();
    assert_eq!(ports(&lb, 3, &ctx), vec![1, 1, 1]);
    lb.set_health(id(1), Health::Down).unwrap();
    assert_eq!(ports(&lb, 3, &ctx), vec![2, 2, 2], "hot standby of set 0");
    lb.set_health(id(2), Health::Down).unwrap();
    assert_eq!(ports(&lb, 3, &ctx), vec![3, 3, 3], "lbset 1");
    lb.set_health(id(3), Health::Down).unwrap();
    assert_eq!(ports(&lb, 3, &ctx), vec![4, 4, 4], "first backup only");
    lb.update_config(|c| c.all_backups = true).unwrap();
    let mut got = ports(&lb, 4, &ctx);
    got.sort();
    assert_eq!(got, vec![4, 4, 5, 5], "all backups");
    lb.set_health(id(4), Health::Down).unwrap();
    lb.set_health(id(5), Health::Down).unwrap();
    assert_eq!(ports(&lb, 2, &ctx), vec![6, 6], "emergency last");
    lb.set_health(id(6), Health::Down).unwrap();
    assert!(matches!(lb.pick(&ctx), Err(Error::NoBackend { .. })));
}

#[test]
fn attempts_exclude_tried_then_emergency_then_fail() {
    let lb = lb_without_passive(vec![
        Backend::new(addr(1)),
        Backend::new(addr(2)),
        Backend::new(addr(3)).with_role(Role::Emergency),
    ]);
    let mut a = lb.attempts(PickContext::new());
    let mut seen = Vec::new();
    while let Ok(l) = a.next() {
        seen.push(l.backend().address().port().unwrap());
        l.failure(Failure::Connect);
        assert!(seen.len() <= 3, "bounded");
    }
    seen[..2].sort();
    assert_eq!(seen, vec![1, 2, 3]);

    lb.update_config(|c| c.max_attempts = 1).unwrap();
    let mut a = lb.attempts(PickContext::new());
    let first = a.next().unwrap().backend().address().port().unwrap();
    assert!(first == 1 || first == 2);
    assert_eq!(a.next().unwrap().backend().address().port(), Some(3));
    assert!(a.next().is_err());
}

#[test]
fn excluded_backends_are_skipped_without_a_lease_or_an_attempt() {
    let lb = three(2);
    let id = |p| lb.find(&Address::Socket(addr(p))).unwrap().id();
    for _ in 0..6 {
        let mut a = lb
            .attempts(PickContext::new())
            .exclude([id(1), id(2), id(1)]);
        // Two backends skipped, yet two attempts left: only 3 is eligible, once.
        assert_eq!(a.next().unwrap().backend().address().port(), Some(3));
        assert!(a.next().is_err());
    }
    assert_eq!(lb.get(id(1)).unwrap().state().total(), 0);
    assert_eq!(lb.get(id(2)).unwrap().state().total(), 0);
    assert_eq!(lb.get(id(3)).unwrap().state().total(), 6);
}

#[test]
fn passed_over_backends_are_no_attempts_until_retaken() {
    let lb = three(1);
    let id = |p| lb.find(&Address::Socket(addr(p))).unwrap().id();
    let mut a = lb.attempts(PickContext::new());
    // Two backends given back (at a limit of the caller's): the one attempt allowed is
    // still there for the third.
    let first = a.next().unwrap();
    let first_member = first.shared_member().clone();
    a.pass_over(first);
    let second = a.next().unwrap();
    let second_id = second.id();
    a.pass_over(second);
    let third = a.next().unwrap();
    assert_ne!(third.id(), first_member.id());
    assert_ne!(third.id(), second_id);
    assert!(a.next().is_err(), "one attempt");
    drop(third);
    for p in 1..=3 {
        let member = lb.get(id(p)).unwrap();
        // Each was picked once (the total only grows), none is busy.
        assert_eq!((member.state().active(), member.state().total()), (0, 1));
    }
    // Retaken: a lease after all.
    let again = a.retake(&first_member).unwrap();
    assert_eq!(again.id(), first_member.id());
    assert_eq!(first_member.state().active(), 1);
    drop(again);
    // Not when the backend can no longer take new requests.
    lb.set_admin(first_member.id(), AdminState::Maintenance)
        .unwrap();
    assert!(a.retake(&first_member).is_none());
}

#[test]
fn a_backend_put_back_is_offered_again_and_the_emergency_too() {
    let lb = lb_without_passive(vec![
        Backend::new(addr(1)),
        Backend::new(addr(9)).with_role(Role::Emergency),
    ]);
    let mut a = lb.attempts(PickContext::new());
    let first = a.next().unwrap();
    assert_eq!(first.backend().address().port(), Some(1));
    a.pass_over(first);
    // The emergency server, put back: offered again by the next call.
    let emergency = a.next().unwrap();
    assert_eq!(emergency.backend().address().port(), Some(9));
    a.put_back(emergency);
    let again = a.next().unwrap();
    assert_eq!(again.backend().address().port(), Some(9));
    drop(again);
    assert!(a.next().is_err());
}

#[test]
fn a_passed_over_pick_is_not_recorded_for_persistence_and_a_retake_is() {
    let table = Arc::new(MapTable::default());
    let lb = Balancer::builder()
        .backends([Backend::new(addr(1)), Backend::new(addr(2))])
        .persistence(table.clone())
        .build()
        .unwrap();
    lb.set_passive(PassiveConfig::off());
    let ctx = || PickContext::new().with_key(b"client-k");
    let mut a = lb.attempts(ctx());
    let first = a.next().unwrap();
    let first_member = first.shared_member().clone();
    a.pass_over(first);
    assert_eq!(
        table.lookup(b"client-k"),
        None,
        "recorded on a backend passed over"
    );
    let second = a.next().unwrap();
    let second_member = second.shared_member().clone();
    a.pass_over(second);
    assert_eq!(table.lookup(b"client-k"), None);
    drop(a.retake(&first_member).unwrap());
    assert_eq!(table.lookup(b"client-k"), Some(first_member.id()));
    assert_ne!(first_member.id(), second_member.id());
}

#[tokio::test(start_paused = true)]
async fn passive_health_ejects_for_the_blacklist_time_but_not_the_last() {
    let lb = Balancer::builder()
        .backend(Backend::new(addr(1)))
        .backend(Backend::new(addr(2)))
        .passive(PassiveConfig::new(2, Duration::from_secs(30)))
        .build()
        .unwrap();
    let one = lb.find(&Address::Socket(addr(1))).unwrap().id();
    let two = lb.find(&Address::Socket(addr(2))).unwrap().id();
    let fail = |id| {
        let m = lb.get(id).unwrap();
        Lease::new(m, false).failure(Failure::Connect);
    };
    fail(one);
    assert!(
        lb.get(one).unwrap().state().in_error_for().is_none(),
        "1 < 2"
    );
    fail(one);
    assert!(lb.get(one).unwrap().state().in_error_for().is_some());
    assert_eq!(ports(&lb, 3, &PickContext::new()), vec![2, 2, 2]);
    // The last usable backend is not ejected.
    fail(two);
    fail(two);
    assert!(lb.get(two).unwrap().state().in_error_for().is_none());
    tokio::time::advance(Duration::from_secs(31)).await;
    let mut got = ports(&lb, 2, &PickContext::new());
    got.sort();
    assert_eq!(got, vec![1, 2], "back after the blacklist time");
}

#[test]
fn force_recovery_tries_members_in_error() {
    let lb = lb(vec![Backend::new(addr(1)), Backend::new(addr(2))]);
    for m in lb.members() {
        lb.set_error_for(m.id(), Duration::from_secs(60)).unwrap();
    }
    assert!(lb.pick(&PickContext::new()).is_ok(), "forcerecovery on");
    lb.update_config(|c| c.force_recovery = false).unwrap();
    assert!(lb.pick(&PickContext::new()).is_err());
}

#[test]
fn bad_input_is_refused_with_the_value() {
    let e = Balancer::builder()
        .backend(Backend::new(addr(1)))
        .backend(Backend::new(addr(1)))
        .build()
        .unwrap_err();
    assert_eq!(e.to_string(), "duplicate backend address 127.0.0.1:1");
    let e = Balancer::builder()
        .backend(Backend::new(addr(1)).with_max_conns(5).with_hard_conns(2))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("hard_conns=\"2\""), "{e}");
    let lb = lb(vec![]);
    assert!(matches!(
        lb.pick(&PickContext::new()),
        Err(Error::NoBackend { members: 0, .. })
    ));
    assert_eq!(
        lb.set_weight(BackendId(7), 1).unwrap_err().to_string(),
        "unknown backend #7"
    );
    assert!(lb.update_config(|c| c.panic_threshold = Some(1.5)).is_err());
}

#[tokio::test]
async fn subscription_starts_with_state_then_changes() {
    let lb = lb(vec![Backend::new(addr(1))]);
    let mut sub = lb.subscribe();
    let id = lb.members()[0].id();
    let mut initial = Vec::new();
    for _ in 0..4 {
        initial.push(sub.recv().await.unwrap().kind);
    }
    assert_eq!(
        initial,
        vec![
            EventKind::Added(Address::Socket(addr(1))),
            EventKind::Weight(1),
            EventKind::Admin(AdminState::Ready),
            EventKind::Health(Health::Up),
        ]
    );
    lb.set_health(id, Health::Down).unwrap();
    lb.set_health(id, Health::Down).unwrap(); // no change, no event
    lb.set_weight(id, 3).unwrap();
    assert_eq!(
        sub.recv().await.unwrap().kind,
        EventKind::Health(Health::Down)
    );
    assert_eq!(sub.recv().await.unwrap().kind, EventKind::Weight(3));
    assert!(sub.try_recv().is_none());
}

#[test]
fn runtime_update_keeps_counters() {
    let lb = lb(vec![Backend::new(addr(1))]);
    let id = lb.members()[0].id();
    let l = lb.pick(&PickContext::new()).unwrap();
    lb.update(id, |b| b.set_address(Address::Socket(addr(9))))
        .unwrap();
    assert_eq!(lb.get(id).unwrap().state().active(), 1);
    assert_eq!(
        l.backend().address().port(),
        Some(1),
        "lease keeps its address"
    );
    drop(l);
    assert_eq!(lb.stats().backends[0].total, 1);
    assert_eq!(
        lb.pick(&PickContext::new())
            .unwrap()
            .backend()
            .address()
            .port(),
        Some(9)
    );
}

#[test]
fn added_backends_start_in_the_configured_health_and_emergency_is_no_peer() {
    let lb = Balancer::builder()
        .backend(Backend::new(addr(1)))
        .backend(Backend::new(addr(2)).with_role(Role::Emergency))
        .initial_health(Health::Down)
        .build()
        .unwrap();
    let id = lb.add(Backend::new(addr(3))).unwrap();
    assert_eq!(lb.get(id).unwrap().state().health(), Health::Down);
    let one = lb.find(&Address::Socket(addr(1))).unwrap().id();
    lb.set_health(one, Health::Up).unwrap();
    // Backend 1 is the last normal usable one: the emergency backend does not make it
    // ejectable.
    Lease::new(lb.get(one).unwrap(), false).failure(Failure::Connect);
    assert!(lb.get(one).unwrap().state().in_error_for().is_none());
}

#[test]
fn attached_values_are_shared_by_every_clone_and_made_once() {
    let lb = Balancer::builder()
        .backend(Backend::new(Address::Socket(
            "127.0.0.1:1".parse().unwrap(),
        )))
        .build()
        .unwrap();
    let clone = lb.clone();
    let made = std::sync::atomic::AtomicUsize::new(0);
    let a = lb.attached(|| {
        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::sync::Mutex::new(7u32)
    });
    let b = std::thread::scope(|s| {
        s.spawn(|| clone.attached(|| std::sync::Mutex::new(0u32)))
            .join()
            .unwrap()
    });
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(*b.lock().unwrap(), 7);
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Another type has its own value; another balancer its own values.
    assert_eq!(*lb.attached(|| String::from("other")), "other");
    let fresh = Balancer::builder()
        .backend(Backend::new(Address::Socket(
            "127.0.0.1:2".parse().unwrap(),
        )))
        .build()
        .unwrap();
    assert!(!Arc::ptr_eq(
        &a,
        &fresh.attached(|| std::sync::Mutex::new(0u32))
    ));
}

#[test]
fn an_edit_dropped_after_a_refused_step_changes_nothing() {
    let lb = lb(vec![Backend::new(addr(1)), Backend::new(addr(2))]);
    let (one, two) = (lb.members()[0].id(), lb.members()[1].id());
    let mut sub = lb.subscribe();
    while sub.try_recv().is_some() {}

    let mut e = lb.edit();
    e.remove(one).unwrap();
    e.set_admin(two, AdminState::Maintenance).unwrap();
    e.set_ignore_errors(two, true).unwrap();
    e.set_weight(two, 5).unwrap();
    e.update_config(|c| c.max_attempts = 9).unwrap();
    let added = e.add(Backend::new(addr(3))).unwrap();
    // The edit sees its own changes...
    assert_eq!(e.members().len(), 2);
    assert!(e.get(one).is_none());
    assert_eq!(e.get(two).unwrap().backend().weight(), 5);
    assert_eq!(e.find(&Address::Socket(addr(3))).unwrap().id(), added);
    assert_eq!(e.config().max_attempts, 9);
    // ... and nobody else does.
    assert_eq!(lb.members().len(), 2);
    assert_eq!(
        lb.config().max_attempts,
        PipelineConfig::default().max_attempts
    );
    // An address already a member's (in the edit) is refused; the caller drops the edit.
    assert!(matches!(
        e.add(Backend::new(addr(3))),
        Err(Error::DuplicateAddress(_))
    ));
    drop(e);

    let members = lb.members();
    assert_eq!(
        members.iter().map(|m| m.id()).collect::<Vec<_>>(),
        vec![one, two]
    );
    assert_eq!(members[1].backend().weight(), 1);
    assert_eq!(members[1].state().admin(), AdminState::Ready);
    assert!(!members[1].state().ignores_errors());
    assert_eq!(
        lb.config().max_attempts,
        PipelineConfig::default().max_attempts
    );
    assert!(sub.try_recv().is_none(), "a dropped edit sends no event");
    // The next member added gets the id the dropped edit had used: nothing of it is left.
    assert_eq!(lb.add(Backend::new(addr(3))).unwrap(), added);
}

#[test]
fn a_committed_edit_lands_whole_with_its_events_in_order() {
    let lb = lb(vec![Backend::new(addr(1)), Backend::new(addr(2))]);
    let (one, two) = (lb.members()[0].id(), lb.members()[1].id());
    let mut sub = lb.subscribe();
    while sub.try_recv().is_some() {}

    let mut e = lb.edit();
    let three = e.add(Backend::new(addr(3))).unwrap();
    e.set_admin(three, AdminState::Drain).unwrap();
    e.remove(one).unwrap();
    e.update(two, |b| b.set_route(Some("b".into()))).unwrap();
    e.set_weight(two, 4).unwrap();
    e.commit();

    let members = lb.members();
    assert_eq!(
        members.iter().map(|m| m.id()).collect::<Vec<_>>(),
        vec![two, three]
    );
    assert_eq!(members[0].backend().route(), Some("b"));
    assert_eq!(members[0].backend().weight(), 4);
    assert_eq!(members[1].state().admin(), AdminState::Drain);
    let events: Vec<_> = std::iter::from_fn(|| sub.try_recv())
        .map(|e| (e.backend, e.kind))
        .collect();
    assert_eq!(
        events,
        vec![
            (three, EventKind::Added(Address::Socket(addr(3)))),
            (three, EventKind::Admin(AdminState::Drain)),
            (one, EventKind::Removed),
            (two, EventKind::Updated),
            (two, EventKind::Weight(4)),
        ]
    );
    // Picks see the result: the drained new member takes no new traffic.
    assert!((0..4).all(|_| lb.pick(&PickContext::new()).unwrap().id() == two));
}

#[test]
fn other_changes_wait_for_an_open_edit() {
    let lb = lb(vec![Backend::new(addr(1))]);
    let one = lb.members()[0].id();
    let mut e = lb.edit();
    e.set_weight(one, 2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let other = lb.clone();
    let writer = std::thread::spawn(move || {
        tx.send("started").unwrap();
        // Reads the member as the edit left it: weight 2, not 1.
        other
            .update(one, |b| b.set_weight(b.weight() * 10))
            .unwrap();
        other.set_admin(one, AdminState::Maintenance).unwrap();
        tx.send("done").unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("started"));
    // Picks go on while the edit is open.
    assert_eq!(lb.pick(&PickContext::new()).unwrap().id(), one);
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a change landed while an edit was open"
    );
    assert_eq!(lb.members()[0].backend().weight(), 1);
    assert_eq!(lb.members()[0].state().admin(), AdminState::Ready);
    e.commit();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("done"));
    writer.join().unwrap();
    assert_eq!(lb.members()[0].backend().weight(), 20);
    assert_eq!(lb.members()[0].state().admin(), AdminState::Maintenance);
}

#[test]
fn a_member_added_in_maintenance_by_an_edit_never_takes_a_pick() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    // The only member is in maintenance: no pick may succeed.
    let lb = lb(vec![Backend::new(addr(1))]);
    lb.set_admin(lb.members()[0].id(), AdminState::Maintenance)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let picked = Arc::new(AtomicUsize::new(0));
    let picker = {
        let (lb, stop, picked) = (lb.clone(), stop.clone(), picked.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                if lb.pick(&PickContext::new()).is_ok() {
                    picked.fetch_add(1, Relaxed);
                }
            }
        })
    };
    for _ in 0..20_000 {
        // Added in maintenance in one edit, as lb-balancer's reload and the manager add a
        // `status=+D` member: it must land in maintenance.
        let mut e = lb.edit();
        let id = e.add(Backend::new(addr(2))).unwrap();
        e.set_admin(id, AdminState::Maintenance).unwrap();
        e.commit();
        lb.remove(id).unwrap();
        if picked.load(Relaxed) > 0 {
            break;
        }
    }
    stop.store(true, Relaxed);
    picker.join().unwrap();
    assert_eq!(
        picked.load(Relaxed),
        0,
        "a member added in maintenance was leased between the publish and its admin state"
    );
}
