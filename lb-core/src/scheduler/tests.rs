//! Properties every scheduler must keep, checked with random member sets (proptest).

use std::sync::Arc;

use proptest::prelude::*;

use super::testing::{addr, balancer};
use super::{AnyScheduler, Candidates, Scheduler};
use crate::{AdminState, Backend, BackendId, Balancer, Health, Lease, Member, PickContext};

/// Every built-in scheduler, with parameters exercising their options.
fn all_schedulers() -> Vec<AnyScheduler> {
    [
        "roundrobin",
        "wrr",
        "bytraffic",
        "leastconn",
        "wlc",
        "sed",
        "nq",
        "bybusyness",
        "random:seed=1",
        "p2c:seed=2",
        "ewma:seed=3",
        "sh",
        "sh:mask=24,port",
        "ketama",
        "ketama:bounded",
        "maglev:1009",
        "maglev:1009,bound=1.1",
        "prio",
        "ovf",
        "first",
    ]
    .iter()
    .map(|s| s.parse().expect("valid scheduler"))
    .collect()
}

#[derive(Debug, Clone)]
struct MemberSpec {
    weight: u32,
    priority: u32,
    max_conns: Option<u32>,
    health: Health,
    admin: AdminState,
    in_error: bool,
    tried: bool,
    held: u32,
    bytes: u64,
}

fn member_spec() -> impl Strategy<Value = MemberSpec> {
    (
        prop_oneof![3 => 1u32..10, 1 => Just(0u32), 1 => 10u32..1000],
        0u32..3,
        prop::option::of(1u32..4),
        prop_oneof![4 => Just(Health::Up), 1 => Just(Health::Down)],
        prop_oneof![
            4 => Just(AdminState::Ready),
            1 => Just(AdminState::Drain),
            1 => Just(AdminState::Maintenance)
        ],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        0u32..4,
        0u64..10_000,
    )
        .prop_map(
            |(weight, priority, max_conns, health, admin, in_error, tried, held, bytes)| {
                MemberSpec {
                    weight,
                    priority,
                    max_conns,
                    health,
                    admin,
                    in_error,
                    tried,
                    held,
                    bytes,
                }
            },
        )
}

/// Builds the members (held leases give them active counts, set before the states that
/// would refuse them).
fn build(specs: &[MemberSpec]) -> (Balancer, Vec<Lease>, Vec<BackendId>) {
    let lb = Balancer::builder()
        .backends(specs.iter().enumerate().map(|(i, s)| {
            let b = Backend::new(addr(i)).with_priority(s.priority);
            b.with_weight(1)
        }))
        .build()
        .expect("valid backends");
    let members = lb.members();
    let mut leases = Vec::new();
    for (m, s) in members.iter().zip(specs) {
        // A route pick holds a lease on exactly this member.
        for _ in 0..s.held {
            leases.push(lease_on(&lb, m));
        }
        if let Some(l) = leases.last() {
            l.add_bytes_out(s.bytes);
        }
    }
    let mut tried = Vec::new();
    for (m, s) in members.iter().zip(specs) {
        let id = m.id();
        lb.update(id, |b| {
            b.set_weight(s.weight);
            b.set_max_conns(s.max_conns);
        })
        .expect("member exists");
        lb.set_health(id, s.health).expect("member exists");
        lb.set_admin(id, s.admin).expect("member exists");
        if s.in_error {
            lb.set_error_for(id, std::time::Duration::from_secs(3600))
                .expect("member exists");
        }
        if s.tried {
            tried.push(id);
        }
    }
    (lb, leases, tried)
}

/// A lease on one given member, through a sticky route.
fn lease_on(lb: &Balancer, m: &Arc<Member>) -> Lease {
    let route = format!("r{}", m.id().0);
    lb.update(m.id(), |b| b.set_route(Some(route.clone())))
        .expect("member exists");
    let lease = lb
        .pick(&PickContext::new().with_route(&route))
        .expect("the routed member takes it");
    assert_eq!(lease.id(), m.id());
    lease
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn never_picks_an_ineligible_member(
        specs in prop::collection::vec(member_spec(), 1..12),
        key in prop::collection::vec(any::<u8>(), 0..12),
        client in any::<[u8; 4]>(),
    ) {
        let (lb, _leases, tried) = build(&specs);
        let members = lb.members();
        let c = Candidates::with_tried(&members, &tried);
        let any_eligible = c.eligible().next().is_some();
        let client = std::net::SocketAddr::from((client, 4000));
        for s in all_schedulers() {
            let state = s.prepare(&members);
            for ctx in [
                PickContext::new(),
                PickContext::new().with_key(&key),
                PickContext::new().with_client(client),
            ] {
                for _ in 0..3 {
                    let got = s.pick(&state, &c, &ctx);
                    if let Some(i) = got {
                        prop_assert!(c.is_eligible(i), "{s} picked ineligible {i}: {specs:?}");
                        prop_assert!(members[i].backend().weight() > 0, "{s} picked weight 0");
                    }
                    // Overflow refuses by design when every member is at its weight.
                    let full = matches!(s, AnyScheduler::Overflow(_))
                        && c.eligible().all(|i| {
                            members[i].state().active() >= members[i].backend().weight()
                        });
                    if any_eligible && !full {
                        prop_assert!(got.is_some(), "{s} found nothing: {specs:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn counters_return_to_zero(
        ops in prop::collection::vec((0u8..6, any::<u16>()), 1..80),
        sched in 0usize..20,
    ) {
        let s = all_schedulers().swap_remove(sched);
        let name = s.to_string();
        let lb = Balancer::builder()
            .scheduler(s)
            .backends((0..3).map(|i| Backend::new(addr(i))))
            .build()
            .expect("valid backends");
        let mut leases: Vec<Lease> = Vec::new();
        let mut seen: Vec<Arc<Member>> = lb.members();
        let mut next_port = 3usize;
        for (op, arg) in ops {
            let members = lb.members();
            match op {
                0 => {
                    lb.add(Backend::new(addr(next_port)).with_weight(u32::from(arg % 4)))
                        .expect("new address");
                    next_port += 1;
                    seen = merge(seen, lb.members());
                }
                1 if !members.is_empty() => {
                    let m = &members[usize::from(arg) % members.len()];
                    lb.remove(m.id()).expect("member exists");
                }
                2 | 3 => {
                    let key = arg.to_le_bytes();
                    if let Ok(l) = lb.pick(&PickContext::new().with_key(&key)) {
                        leases.push(l);
                    }
                }
                4 if !leases.is_empty() => {
                    let l = leases.swap_remove(usize::from(arg) % leases.len());
                    drop(l);
                }
                5 if !members.is_empty() => {
                    let m = &members[usize::from(arg) % members.len()];
                    let health = if arg % 2 == 0 { Health::Down } else { Health::Up };
                    lb.set_health(m.id(), health).expect("member exists");
                }
                _ => {}
            }
            let active: u64 = seen.iter().map(|m| u64::from(m.state().active())).sum();
            prop_assert_eq!(active, leases.len() as u64, "{}", name);
        }
        drop(leases);
        for m in &seen {
            prop_assert_eq!(m.state().active(), 0);
        }
        prop_assert_eq!(lb.stats().active, 0);
    }
}

fn merge(mut seen: Vec<Arc<Member>>, now: Vec<Arc<Member>>) -> Vec<Arc<Member>> {
    for m in now {
        if !seen.iter().any(|s| s.id() == m.id()) {
            seen.push(m);
        }
    }
    seen
}

#[test]
fn weight_zero_gets_no_new_clients() {
    for s in all_schedulers() {
        let name = s.to_string();
        let lb = Balancer::builder()
            .scheduler(s)
            .backends((0..4).map(|i| Backend::new(addr(i)).with_weight(if i == 2 { 0 } else { 3 })))
            .build()
            .expect("valid backends");
        let zero = lb.members()[2].id();
        for k in 0u32..200 {
            let key = k.to_le_bytes();
            let ctx = if k % 2 == 0 {
                PickContext::new().with_key(&key)
            } else {
                PickContext::new()
            };
            let lease = lb.pick(&ctx).expect("a backend");
            assert_ne!(
                lease.id(),
                zero,
                "{name} gave a new client to a weight-0 member"
            );
        }
    }
}

#[test]
fn empty_sets_and_extreme_weights_never_panic() {
    for (s, again) in all_schedulers().into_iter().zip(all_schedulers()) {
        let name = s.to_string();
        let lb = Balancer::builder()
            .scheduler(s)
            .build()
            .expect("no backends is valid");
        assert!(
            matches!(
                lb.pick(&PickContext::new().with_key(b"k")),
                Err(crate::Error::NoBackend { .. })
            ),
            "{name}"
        );
        lb.add(Backend::new(addr(0)).with_weight(0))
            .expect("new address");
        assert!(
            lb.pick(&PickContext::new()).is_err(),
            "{name}: only weight 0"
        );
        // Built at once: one prepare (a Ketama ring at its point cap is slow in debug).
        let weights = [0, u32::MAX, 1, u32::MAX - 1];
        let lb = balancer(again, &weights);
        for k in 0u32..50 {
            let key = k.to_le_bytes();
            let lease = lb
                .pick(&PickContext::new().with_key(&key))
                .expect("a backend");
            assert_ne!(lease.backend().weight(), 0, "{name}");
        }
    }
}
