//! The client table allocates nothing when it looks up or re-records a known client, and
//! neither does a pick that the table answers.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to the
//! system allocator.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lb_core::persistence::{ClientTable, ClientTableConfig, Persistence};
use lb_core::{Backend, BackendId, Balancer, PickContext};

#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};

    use std::cell::Cell;

    use super::{AtomicU64, Ordering};

    thread_local! {
        /// Only the measuring thread counts: the test harness's own threads allocate too.
        pub(crate) static COUNTING: Cell<bool> = const { Cell::new(false) };
    }
    pub(crate) static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    fn counting() -> bool {
        // `try_with`: the thread-local may be gone while a thread shuts down.
        COUNTING.try_with(Cell::get).unwrap_or(false)
    }

    pub(crate) struct Counting;

    // SAFETY: every method forwards to the system allocator with the caller's arguments,
    // so the GlobalAlloc contract holds as it does for `System`; counting is a side effect.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if counting() {
                ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: same contract as our caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if counting() {
                ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

fn allocations_during(f: impl FnOnce()) -> u64 {
    counting::ALLOCATIONS.store(0, Ordering::SeqCst);
    counting::COUNTING.with(|c| c.set(true));
    f();
    counting::COUNTING.with(|c| c.set(false));
    counting::ALLOCATIONS.load(Ordering::SeqCst)
}

#[test]
fn known_clients_cost_no_allocation() {
    let probe = allocations_during(|| drop(std::hint::black_box(vec![1u8; 8])));
    assert_eq!(probe, 1, "the counter counts");
    // 64 slots per shard for 33 keys: whatever shard the random hasher sends each key to,
    // none is evicted. (With 16 per shard, one run in a few thousand put 17 keys in one
    // shard and evicted one, and the lookups below failed.)
    let table = Arc::new(
        ClientTable::new(ClientTableConfig::default().with_slots(256).with_shards(4)).unwrap(),
    );
    let clients: Vec<SocketAddr> = (1..=32u8)
        .map(|i| SocketAddr::from(([192, 0, 2, i], 40000)))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        let key = table.client_key(c.ip());
        table.record(key.as_bytes(), BackendId(i as u32 % 3));
    }
    let long_key = vec![b'k'; 64];
    table.record(&long_key, BackendId(1));

    let n = allocations_during(|| {
        for _ in 0..100 {
            for (i, c) in clients.iter().enumerate() {
                let key = table.client_key(c.ip());
                assert_eq!(table.lookup(key.as_bytes()), Some(BackendId(i as u32 % 3)));
                table.record(key.as_bytes(), BackendId(i as u32 % 3));
            }
            assert_eq!(table.lookup(&long_key), Some(BackendId(1)));
        }
    });
    assert_eq!(n, 0, "lookups and repeated records allocated {n} times");

    let lb = Balancer::builder()
        .backend(Backend::new(SocketAddr::from(([127, 0, 0, 1], 1))))
        .backend(Backend::new(SocketAddr::from(([127, 0, 0, 1], 2))))
        .persistence(table.clone())
        .build()
        .unwrap();
    table.clear();
    let ctx = PickContext::new().with_client(clients[0]);
    let home = lb.pick(&ctx).unwrap().id();
    let n = allocations_during(|| {
        for _ in 0..1000 {
            let lease = lb.pick(&ctx).unwrap();
            assert!(lease.is_sticky());
            assert_eq!(lease.id(), home);
        }
    });
    assert_eq!(n, 0, "sticky picks allocated {n} times");
}
