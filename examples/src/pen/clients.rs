//! pen's client table: which server each client used last.
//!
//! A fixed number of slots (`-c`, 2048 by default); when full, the least recently used
//! client is thrown out. With a tracking time (`-T`, 0 = forever) entries older than that
//! are ignored. Implements lb-core's [`Persistence`], so the balancer consults it before
//! scheduling and records every new choice.
//!
//! (lb-core's `core-api-1` has the trait but not yet its own `ClientTable`; this is the
//! small pen-specific one lb-pen needs.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lb_core::BackendId;
use lb_core::clock::now_ms;
use lb_core::persistence::Persistence;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) backend: BackendId,
    pub(crate) last_ms: u64,
}

#[derive(Debug)]
struct Table {
    slots: usize,
    tracking: Duration,
    map: HashMap<Vec<u8>, Entry>,
}

/// The client table; see the module docs.
#[derive(Debug)]
pub(crate) struct ClientTable {
    table: Mutex<Table>,
}

impl ClientTable {
    pub(crate) fn new(slots: usize, tracking: Duration) -> Self {
        ClientTable {
            table: Mutex::new(Table {
                slots: slots.max(1),
                tracking,
                map: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn slots(&self) -> usize {
        self.lock().slots
    }

    pub(crate) fn set_slots(&self, slots: usize) {
        let mut t = self.lock();
        t.slots = slots.max(1);
        while t.map.len() > t.slots {
            t.evict_oldest();
        }
    }

    pub(crate) fn tracking(&self) -> Duration {
        self.lock().tracking
    }

    pub(crate) fn set_tracking(&self, tracking: Duration) {
        self.lock().tracking = tracking;
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Forgets every client on `backend` (after the server was removed or re-addressed).
    pub(crate) fn forget_backend(&self, backend: BackendId) {
        self.lock().map.retain(|_, e| e.backend != backend);
    }
}

impl Table {
    fn evict_oldest(&mut self) {
        if let Some(key) = self
            .map
            .iter()
            .min_by_key(|(_, e)| e.last_ms)
            .map(|(k, _)| k.clone())
        {
            self.map.remove(&key);
        }
    }

    fn expired(&self, e: &Entry, now: u64) -> bool {
        !self.tracking.is_zero()
            && now.saturating_sub(e.last_ms)
                > u64::try_from(self.tracking.as_millis()).unwrap_or(u64::MAX)
    }
}

impl Persistence for ClientTable {
    fn lookup(&self, key: &[u8]) -> Option<BackendId> {
        let now = now_ms();
        let mut t = self.lock();
        let entry = *t.map.get(key)?;
        if t.expired(&entry, now) {
            t.map.remove(key);
            return None;
        }
        if let Some(e) = t.map.get_mut(key) {
            e.last_ms = now;
        }
        Some(entry.backend)
    }

    fn record(&self, key: &[u8], backend: BackendId) {
        let now = now_ms();
        let mut t = self.lock();
        if !t.map.contains_key(key) && t.map.len() >= t.slots {
            t.evict_oldest();
        }
        t.map.insert(
            key.to_vec(),
            Entry {
                backend,
                last_ms: now,
            },
        );
    }

    fn forget(&self, key: &[u8]) {
        self.lock().map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lru_eviction_and_expiry() {
        let t = ClientTable::new(2, Duration::from_secs(10));
        t.record(b"a", BackendId(1));
        tokio::time::advance(Duration::from_millis(5)).await;
        t.record(b"b", BackendId(2));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(t.lookup(b"a"), Some(BackendId(1))); // a is now more recent than b
        t.record(b"c", BackendId(3));
        assert_eq!(t.lookup(b"b"), None);
        assert_eq!(t.len(), 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(t.lookup(b"a"), None);
        t.set_tracking(Duration::ZERO);
        t.record(b"d", BackendId(4));
        tokio::time::advance(Duration::from_secs(100_000)).await;
        assert_eq!(t.lookup(b"d"), Some(BackendId(4)));
    }
}
