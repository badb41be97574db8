//! No heap allocation per pick: a counting global allocator watches picks and lease drops
//! for every scheduler.
//!
//! The allocator counts only on the thread that switched counting on (a thread-local
//! flag), so other tests running in parallel do not disturb the count.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use lb_core::scheduler::AnyScheduler;
use lb_core::{Backend, Balancer, Health, PickContext};

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread-locals are const-initialised and never need allocating, and
    // during thread teardown they may be gone.
    let on = ON.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards its arguments unchanged to the system allocator, so the
// caller's guarantees carry over; counting touches only const thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: `ptr` was allocated by `System` with `layout` (all allocations go there).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    ON.with(|on| on.set(true));
    f();
    ON.with(|on| on.set(false));
    COUNT.with(Cell::get)
}

#[test]
fn the_counter_sees_allocations() {
    let n = allocations(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(16));
    });
    assert_eq!(n, 1);
}

#[test]
fn picks_and_lease_drops_do_not_allocate() {
    let specs = lb_core::scheduler::KNOWN.split(',').map(str::trim).chain([
        "ketama:bounded",
        "maglev:bounded",
        "sh:mask=24,port",
        "p2c:seed=1",
    ]);
    let keys: Vec<[u8; 8]> = (0..256u64).map(u64::to_le_bytes).collect();
    for spec in specs {
        let s: AnyScheduler = spec.parse().expect("known scheduler");
        let lb = Balancer::builder()
            .scheduler(s)
            .backends((0..64u16).map(|i| {
                Backend::new(SocketAddr::from(([127, 0, 0, 1], 20_000 + i)))
                    .with_weight(1 + u32::from(i % 3) * 50)
            }))
            .build()
            .expect("valid backends");
        // Some members down, so skipping and fallback paths run too.
        for m in lb.members().iter().step_by(5) {
            lb.set_health(m.id(), Health::Down).expect("member exists");
        }
        let client = SocketAddr::from(([192, 0, 2, 9], 5555));
        let run = |rounds: usize| {
            for r in 0..rounds {
                for (k, key) in keys.iter().enumerate() {
                    let ctx = match k % 3 {
                        0 => PickContext::new().with_key(key),
                        1 => PickContext::new().with_client(client),
                        _ => PickContext::new(),
                    };
                    let lease = lb.pick(&ctx).expect("a backend");
                    if (k + r) % 7 == 0 {
                        lease.add_bytes_out(1000);
                        lease.observe_latency(std::time::Duration::from_millis(k as u64 % 50 + 1));
                    }
                    drop(lease);
                }
            }
        };
        run(1); // warm-up: lazily initialised globals (the clock origin, arc-swap's slots)
        let n = allocations(|| run(4));
        assert_eq!(n, 0, "{spec}: {n} allocations in {} picks", 4 * keys.len());
    }
}
