//! Pick + lease drop through a `Balancer`, for every scheduler at 4, 64 and 1024 backends,
//! single-threaded and with a second thread picking on the same balancer; and the
//! scheduler's own pick (no pipeline, no lease) for the ones with a target.
//!
//! Run: `cargo bench -p lb-core --bench pick -- --warm-up-time 1 --measurement-time 2`.
// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_core::scheduler::{AnyScheduler, Candidates, Scheduler};
use lb_core::{Backend, Balancer, PickContext};
use tokio::time::Instant;

const SCHEDULERS: &[&str] = &[
    "roundrobin",
    "wrr",
    "bytraffic",
    "leastconn",
    "wlc",
    "sed",
    "nq",
    "bybusyness",
    "random:seed=1",
    "p2c:seed=1",
    "ewma:seed=1",
    "sh",
    "ketama",
    "maglev",
    "maglev:bounded",
    "prio",
    "ovf",
    "first",
];
const SIZES: &[usize] = &[4, 64, 1024];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, (i / 250) as u8, 1 + (i % 250) as u8], 8000))
}

/// `n` backends weighted 1, 2, 3, 4, 1, 2, ... (enough for `ovf`, which needs active <
/// weight: at most one lease per thread is in flight).
fn balancer(spec: &str, n: usize) -> Balancer {
    balancer_weighted(spec, n, |i| 1 + (i % 4) as u32)
}

fn balancer_weighted(spec: &str, n: usize, weight: impl Fn(usize) -> u32) -> Balancer {
    let s: AnyScheduler = spec.parse().expect("known scheduler");
    Balancer::builder()
        .scheduler(s)
        .backends((0..n).map(|i| Backend::new(addr(i)).with_weight(weight(i))))
        .build()
        .expect("valid backends")
}

/// Keys and clients cycled through, so hashing schedulers touch their whole table.
struct Inputs {
    keys: Vec<[u8; 12]>,
    clients: Vec<SocketAddr>,
}

impl Inputs {
    fn new() -> Self {
        Inputs {
            keys: (0..4096u32)
                .map(|k| {
                    let mut key = *b"session-0000";
                    key[8..].copy_from_slice(&k.to_be_bytes());
                    key
                })
                .collect(),
            clients: (0..4096u32)
                .map(|k| SocketAddr::from((k.wrapping_mul(2_654_435_761).to_be_bytes(), 40000)))
                .collect(),
        }
    }

    fn ctx(&self, i: usize) -> PickContext<'_> {
        let i = i % self.keys.len();
        PickContext::new()
            .with_client(self.clients[i])
            .with_key(&self.keys[i])
    }
}

fn pick_and_drop(c: &mut Criterion) {
    let inputs = Inputs::new();
    for &spec in SCHEDULERS {
        let mut group = c.benchmark_group(format!("pick/{spec}"));
        for &n in SIZES {
            let lb = balancer(spec, n);
            group.bench_with_input(BenchmarkId::new("1-thread", n), &n, |b, _| {
                let mut i = 0usize;
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let lease = lb.pick(&inputs.ctx(i)).expect("a backend");
                    black_box(&lease);
                })
            });
            group.bench_with_input(BenchmarkId::new("2-threads", n), &n, |b, _| {
                b.iter_custom(|iters| contended(&lb, &inputs, iters))
            });
        }
        group.finish();
    }
}

/// Times `iters` picks on this thread while another thread picks on the same balancer.
fn contended(lb: &Balancer, inputs: &Inputs, iters: u64) -> Duration {
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 7usize;
            started.store(true, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let lease = lb.pick(&inputs.ctx(i)).expect("a backend");
                black_box(&lease);
            }
        });
        while !started.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        for i in 0..iters as usize {
            let lease = lb.pick(&inputs.ctx(i)).expect("a backend");
            black_box(&lease);
        }
        let elapsed = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        elapsed
    })
}

/// The scheduler alone: `Scheduler::pick` on prepared state, no pipeline and no lease.
fn scheduler_only(c: &mut Criterion) {
    let inputs = Inputs::new();
    let mut group = c.benchmark_group("scheduler");
    for spec in ["roundrobin", "wrr", "wlc", "maglev", "ketama", "sh"] {
        for &n in SIZES {
            let lb = balancer(spec, n);
            let members = lb.members();
            let s: AnyScheduler = spec.parse().expect("known scheduler");
            let state = s.prepare(&members);
            group.bench_with_input(BenchmarkId::new(spec, n), &n, |b, _| {
                let mut i = 0usize;
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let c = Candidates::new(&members);
                    black_box(s.pick(&state, &c, &inputs.ctx(i)))
                })
            });
        }
    }
    group.finish();
}

/// Smooth WRR whose period is too long to precompute (weights 1, 101, 201, 301, ... over
/// 1024 members: a period of 154624 picks): every pick runs nginx's loop under a lock.
fn wrr_long_period(c: &mut Criterion) {
    let lb = balancer_weighted("wrr", 1024, |i| 1 + (i % 4) as u32 * 100);
    c.bench_function("pick/wrr-long-period/1-thread/1024", |b| {
        b.iter(|| black_box(lb.pick(&PickContext::new()).expect("a backend")))
    });
}

/// The connection-count schedulers on busy members: every member holds four leases for
/// the whole run, so no member is idle and each pick compares them all (an idle member
/// ends the scan at once, which the plain pick-and-drop runs measure).
fn busy_members(c: &mut Criterion) {
    let inputs = Inputs::new();
    let mut group = c.benchmark_group("pick-busy");
    for spec in ["leastconn", "wlc", "sed"] {
        for &n in SIZES {
            let lb = balancer(spec, n);
            // The scheduler spreads these evenly: four leases on every member.
            let held: Vec<_> = (0..4 * n)
                .map(|_| lb.pick(&PickContext::new()).expect("a backend"))
                .collect();
            group.bench_with_input(BenchmarkId::new(spec, n), &n, |b, _| {
                let mut i = 0usize;
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let lease = lb.pick(&inputs.ctx(i)).expect("a backend");
                    black_box(&lease);
                })
            });
            drop(held);
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    scheduler_only,
    pick_and_drop,
    busy_members,
    wrr_long_period
);
criterion_main!(benches);
