//! Passive health through the public API, on paused time: blacklist and recovery, capped
//! exponential backoff, never ejecting the last usable backend, Envoy's panic threshold
//! and Apache's `forcerecovery`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::health::PassiveConfig;
use lb_core::{
    AdminState, Backend, BackendId, Balancer, Error, EventKind, Failure, Health, PickContext,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn balancer(n: u16, passive: PassiveConfig) -> (Balancer, Vec<BackendId>) {
    let lb = Balancer::builder()
        .backends((1..=n).map(|p| Backend::new(addr(p))))
        .passive(passive)
        .build()
        .unwrap();
    let ids = lb.members().iter().map(|m| m.id()).collect();
    (lb, ids)
}

/// How many of `n` picks went to each backend.
fn spread(lb: &Balancer, n: usize) -> BTreeMap<BackendId, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        *m.entry(lb.pick(&PickContext::new()).unwrap().id())
            .or_default() += 1;
    }
    m
}

/// Picks until `id` comes up (as real traffic would reach it) and fails that connection.
/// Returns false if `id` was not picked in 20 tries.
fn fail_when_picked(lb: &Balancer, id: BackendId) -> bool {
    for _ in 0..20 {
        let Ok(lease) = lb.pick(&PickContext::new()) else {
            return false;
        };
        if lease.id() == id {
            lease.failure(Failure::Connect);
            return true;
        }
    }
    false
}

fn in_error_for(lb: &Balancer, id: BackendId) -> Option<Duration> {
    lb.get(id).unwrap().state().in_error_for()
}

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
}

#[tokio::test(start_paused = true)]
async fn blacklisted_backend_returns_after_exactly_the_blacklist_time() {
    let (lb, ids) = balancer(2, PassiveConfig::default()); // pen: 1 failure, 30 s
    let mut events = lb.subscribe();
    while events.try_recv().is_some() {} // the initial state
    assert!(fail_when_picked(&lb, ids[0]));
    assert_eq!(in_error_for(&lb, ids[0]), Some(Duration::from_secs(30)));
    assert_eq!(
        events.try_recv().map(|e| e.kind),
        Some(EventKind::InError(Duration::from_secs(30)))
    );
    advance(Duration::from_millis(29_999)).await;
    assert_eq!(spread(&lb, 10).get(&ids[0]), None, "still blacklisted");
    advance(Duration::from_millis(1)).await;
    assert_eq!(in_error_for(&lb, ids[0]), None);
    assert_eq!(spread(&lb, 10)[&ids[0]], 5, "back in the rotation");
    // A success through it ends the episode, visibly.
    let lease = lb.pick(&PickContext::new()).unwrap();
    let lease = if lease.id() == ids[0] {
        lease
    } else {
        lb.pick(&PickContext::new()).unwrap()
    };
    assert_eq!(lease.id(), ids[0]);
    lease.success();
    assert_eq!(
        events.try_recv().map(|e| e.kind),
        Some(EventKind::Recovered)
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_begun_before_the_error_does_not_end_it() {
    let (lb, ids) = balancer(2, PassiveConfig::default()); // pen: 1 failure, 30 s
    // A request in flight on the backend while another one to it fails.
    let pick_a = || loop {
        let l = lb.pick(&PickContext::new()).unwrap();
        if l.id() == ids[0] {
            break l;
        }
    };
    let in_flight = pick_a();
    assert!(fail_when_picked(&lb, ids[0]));
    in_flight.success();
    drop(in_flight);
    assert_eq!(
        in_error_for(&lb, ids[0]),
        Some(Duration::from_secs(30)),
        "ended by a success that began before the failure"
    );
    assert_eq!(spread(&lb, 10).get(&ids[0]), None);
    // After its time, a request sent to it (a retry) succeeds: that ends the error.
    advance(Duration::from_secs(30)).await;
    pick_a().success();
    assert_eq!(lb.get(ids[0]).unwrap().state().consecutive_failures(), 0);
    assert!(fail_when_picked(&lb, ids[0]));
    assert_eq!(
        in_error_for(&lb, ids[0]),
        Some(Duration::from_secs(30)),
        "a fresh episode: the backoff was reset"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_must_be_consecutive() {
    let (lb, ids) = balancer(2, PassiveConfig::new(3, Duration::from_secs(10)));
    let member = lb.get(ids[0]).unwrap();
    assert!(fail_when_picked(&lb, ids[0]));
    assert!(fail_when_picked(&lb, ids[0]));
    // A success in between resets the streak.
    for _ in 0..2 {
        let l = lb.pick(&PickContext::new()).unwrap();
        if l.id() == ids[0] {
            l.success();
        }
    }
    assert_eq!(member.state().consecutive_failures(), 0);
    assert!(fail_when_picked(&lb, ids[0]));
    assert!(fail_when_picked(&lb, ids[0]));
    assert_eq!(in_error_for(&lb, ids[0]), None, "2 of 3");
    assert!(fail_when_picked(&lb, ids[0]));
    assert_eq!(in_error_for(&lb, ids[0]), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn repeated_ejections_back_off_exponentially_up_to_the_cap() {
    let passive =
        PassiveConfig::new(1, Duration::from_secs(10)).with_max_backoff(Duration::from_secs(35));
    let (lb, ids) = balancer(2, passive);
    let a = ids[0];
    let mut seen = Vec::new();
    for _ in 0..4 {
        assert!(fail_when_picked(&lb, a), "picked again after its time");
        let t = in_error_for(&lb, a).unwrap();
        seen.push(t.as_secs());
        advance(t - Duration::from_millis(1)).await;
        assert_eq!(spread(&lb, 6).get(&a), None, "not before its time");
        advance(Duration::from_millis(1)).await;
    }
    assert_eq!(seen, vec![10, 20, 35, 35]);
    // A success resets the backoff.
    let l = loop {
        let l = lb.pick(&PickContext::new()).unwrap();
        if l.id() == a {
            break l;
        }
    };
    l.success();
    drop(l);
    assert!(fail_when_picked(&lb, a));
    assert_eq!(in_error_for(&lb, a), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn the_last_usable_backend_is_not_ejected_unless_configured() {
    let (lb, ids) = balancer(3, PassiveConfig::new(1, Duration::from_secs(30)));
    assert!(fail_when_picked(&lb, ids[0]));
    lb.set_admin(ids[1], AdminState::Maintenance).unwrap();
    // ids[2] is now the only usable member: failures are counted, not acted on.
    for _ in 0..5 {
        assert!(fail_when_picked(&lb, ids[2]));
    }
    assert_eq!(in_error_for(&lb, ids[2]), None);
    assert_eq!(lb.get(ids[2]).unwrap().state().consecutive_failures(), 5);
    assert_eq!(spread(&lb, 4), BTreeMap::from([(ids[2], 4)]));

    // A health-check "down" does not count as usable either.
    lb.set_admin(ids[1], AdminState::Ready).unwrap();
    lb.set_health(ids[1], Health::Down).unwrap();
    assert!(fail_when_picked(&lb, ids[2]));
    assert_eq!(in_error_for(&lb, ids[2]), None);

    // With eject_last, it goes too; forcerecovery (on by default) then tries everyone in
    // error rather than failing.
    lb.set_passive(PassiveConfig::new(1, Duration::from_secs(30)).with_eject_last(true));
    assert!(fail_when_picked(&lb, ids[2]));
    assert_eq!(in_error_for(&lb, ids[2]), Some(Duration::from_secs(30)));
    let got = spread(&lb, 4);
    assert_eq!(got.values().sum::<usize>(), 4);
    assert!(
        got.keys().all(|id| *id == ids[0] || *id == ids[2]),
        "forced recovery: members in error, never the down one: {got:?}"
    );
    lb.update_config(|c| c.force_recovery = false).unwrap();
    assert!(matches!(
        lb.pick(&PickContext::new()),
        Err(Error::NoBackend { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn panic_threshold_balances_across_all_when_too_few_are_usable() {
    let (lb, ids) = balancer(4, PassiveConfig::new(1, Duration::from_secs(30)));
    for &id in &ids[..3] {
        assert!(fail_when_picked(&lb, id));
    }
    assert_eq!(
        spread(&lb, 8),
        BTreeMap::from([(ids[3], 8)]),
        "no threshold"
    );

    // 1 usable of 4 is not below 25 %: no panic.
    lb.update_config(|c| c.panic_threshold = Some(0.25))
        .unwrap();
    assert_eq!(spread(&lb, 8), BTreeMap::from([(ids[3], 8)]));

    // 1 of 4 is below 50 %: panic mode, every ready and up member shares the load.
    lb.update_config(|c| c.panic_threshold = Some(0.5)).unwrap();
    let got = spread(&lb, 40);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.values().all(|&n| n == 10), "{got:?}");

    // Panic mode still respects health checks and admin state.
    lb.set_health(ids[0], Health::Down).unwrap();
    lb.set_admin(ids[1], AdminState::Maintenance).unwrap();
    let got = spread(&lb, 20);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![ids[2], ids[3]]
    );

    // When the blacklist ends, the threshold is met again and panic mode ends.
    lb.set_health(ids[0], Health::Up).unwrap();
    lb.set_admin(ids[1], AdminState::Ready).unwrap();
    advance(Duration::from_secs(30)).await;
    let got = spread(&lb, 40);
    assert!(got.values().all(|&n| n == 10), "{got:?}");
}

/// The threshold reads the members' health, not what one request went through: members a
/// request tried (refused connections, say) are not in error for it, so its next attempts
/// stay off a member in error while most of the tier is usable.
#[tokio::test(start_paused = true)]
async fn panic_threshold_does_not_count_the_members_a_request_tried() {
    let (lb, ids) = balancer(4, PassiveConfig::new(1, Duration::from_secs(30)));
    assert!(fail_when_picked(&lb, ids[3]));
    lb.update_config(|c| {
        c.panic_threshold = Some(0.5);
        c.force_recovery = false;
    })
    .unwrap();
    for _ in 0..4 {
        let mut attempts = lb.attempts(PickContext::new());
        let mut got = Vec::new();
        for _ in 0..3 {
            let lease = attempts.next().unwrap();
            got.push(lease.id());
            // Not a failure the member is put in error for: only this request moves on.
            drop(lease);
        }
        got.sort();
        assert_eq!(got, ids[..3], "three usable of four is not below 50 %");
        // Every usable member tried: none left for this request, and the one in error is
        // not made usable by the request's own tries.
        assert!(
            matches!(attempts.next(), Err(Error::NoBackend { tried: 3, .. })),
            "the member in error was tried"
        );
    }
}
