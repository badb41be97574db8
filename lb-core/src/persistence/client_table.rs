//! pen's client table: a fixed number of slots, least-recently-used eviction, expiry.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{ClientKey, Persistence};
use crate::backend::BackendId;
use crate::clock;
use crate::error::{Error, Result};

/// Settings of a [`ClientTable`].
///
/// ```
/// use std::time::Duration;
/// use lb_core::persistence::ClientTableConfig;
///
/// // pen -c 4096 -T 3600, clients grouped per /24 (IPVS -M 255.255.255.0).
/// let cfg = ClientTableConfig::default()
///     .with_slots(4096)
///     .with_tracking(Duration::from_secs(3600))
///     .with_v4_netmask("255.255.255.0")
///     .unwrap();
/// assert_eq!(cfg.v4_mask, 24);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientTableConfig {
    /// How many clients are remembered (pen `-c`, 2048 by default).
    pub slots: usize,
    /// How long after its last use an entry expires (pen `-T`); zero keeps entries until
    /// they are evicted (pen's default).
    pub tracking: Duration,
    /// Bits of an IPv4 client address that make its key (IPVS `-M`); 32 by default.
    pub v4_mask: u8,
    /// Bits of an IPv6 client address that make its key; 128 by default.
    pub v6_prefix: u8,
    /// How many independently locked parts the table is split into; 1 (the default) gives
    /// pen's exact global LRU order. With `n` shards each holds about `slots / n` entries
    /// and evicts its own least recently used entry, which spreads lock contention over many
    /// threads at the price of an approximate LRU.
    pub shards: usize,
}

impl Default for ClientTableConfig {
    fn default() -> Self {
        ClientTableConfig {
            slots: 2048,
            tracking: Duration::ZERO,
            v4_mask: 32,
            v6_prefix: 128,
            shards: 1,
        }
    }
}

impl ClientTableConfig {
    /// Sets the number of slots (pen `-c`).
    pub fn with_slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// Sets the tracking time (pen `-T`); zero: forever.
    pub fn with_tracking(mut self, tracking: Duration) -> Self {
        self.tracking = tracking;
        self
    }

    /// Sets the IPv4 grouping as a prefix length (`24`, `/24`) or a dotted netmask
    /// (`255.255.255.0`).
    pub fn with_v4_netmask(mut self, mask: &str) -> Result<Self> {
        self.v4_mask = parse_v4_mask(mask)?;
        Ok(self)
    }

    /// Sets the IPv6 grouping as a prefix length (`64`, `/64`).
    pub fn with_v6_prefix(mut self, prefix: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidNetmask {
            value: prefix.to_owned(),
            reason,
        };
        let bits: u8 = prefix
            .trim()
            .trim_start_matches('/')
            .parse()
            .map_err(|_| bad("expected an IPv6 prefix length from 0 to 128"))?;
        if bits > 128 {
            return Err(bad("an IPv6 prefix is at most 128 bits"));
        }
        self.v6_prefix = bits;
        Ok(self)
    }

    /// Sets the number of shards (see [`shards`](Self::shards)).
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.slots == 0 {
            return Err(Error::InvalidConfig {
                name: "slots",
                value: "0".into(),
                reason: "a client table needs at least one slot",
            });
        }
        if self.slots >= NIL as usize {
            return Err(Error::InvalidConfig {
                name: "slots",
                value: self.slots.to_string(),
                reason: "more slots than a client table can index",
            });
        }
        if self.shards == 0 || self.shards > self.slots {
            return Err(Error::InvalidConfig {
                name: "shards",
                value: self.shards.to_string(),
                reason: "must be between 1 and the number of slots",
            });
        }
        if self.v4_mask > 32 {
            return Err(Error::InvalidNetmask {
                value: self.v4_mask.to_string(),
                reason: "an IPv4 mask keeps at most 32 bits",
            });
        }
        if self.v6_prefix > 128 {
            return Err(Error::InvalidNetmask {
                value: self.v6_prefix.to_string(),
                reason: "an IPv6 prefix is at most 128 bits",
            });
        }
        Ok(())
    }
}

fn parse_v4_mask(mask: &str) -> Result<u8> {
    let bad = |reason| Error::InvalidNetmask {
        value: mask.to_owned(),
        reason,
    };
    let s = mask.trim();
    if let Ok(dotted) = s.parse::<Ipv4Addr>() {
        let bits = u32::from(dotted);
        let ones = bits.leading_ones();
        if bits.checked_shl(ones).unwrap_or(0) != 0 {
            return Err(bad("a netmask's one bits must be contiguous"));
        }
        return Ok(ones as u8);
    }
    let bits: u8 = s
        .trim_start_matches('/')
        .parse()
        .map_err(|_| bad("expected a dotted netmask or a prefix length from 0 to 32"))?;
    if bits > 32 {
        return Err(bad("an IPv4 mask keeps at most 32 bits"));
    }
    Ok(bits)
}

/// One remembered client: its key, its backend and the time since it was last used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientEntry {
    /// The key: a (masked) client address of 4 or 16 bytes, or any other persistence key.
    pub key: Vec<u8>,
    /// The backend the client is on.
    pub backend: BackendId,
    /// Time since the entry was last looked up or recorded.
    pub age: Duration,
}

impl ClientEntry {
    /// The key as a client address, when it is one (4 or 16 bytes).
    pub fn client_ip(&self) -> Option<IpAddr> {
        match self.key.len() {
            4 => <[u8; 4]>::try_from(&self.key[..])
                .ok()
                .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            16 => <[u8; 16]>::try_from(&self.key[..])
                .ok()
                .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            _ => None,
        }
    }
}

/// pen's client table: remembers which backend each client used.
///
/// See the [module docs](super) for the design. Cheap operations under one short lock
/// per shard; lookups of a remembered key allocate nothing.
///
/// ```
/// use std::sync::Arc;
/// use lb_core::persistence::{ClientTable, ClientTableConfig};
/// use lb_core::{Backend, Balancer, PickContext};
/// # let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
///
/// let table = Arc::new(ClientTable::new(ClientTableConfig::default()).unwrap());
/// let lb = Balancer::builder()
///     .backend(Backend::new(addr("127.0.0.1:8001")))
///     .backend(Backend::new(addr("127.0.0.1:8002")))
///     .persistence(table.clone())
///     .build()
///     .unwrap();
/// let client = PickContext::new().with_client(addr("192.0.2.1:5000"));
/// let first = lb.pick(&client).unwrap().id();
/// for _ in 0..3 {
///     assert_eq!(lb.pick(&client).unwrap().id(), first); // the same backend again
/// }
/// assert_eq!(table.len(), 1);
/// ```
pub struct ClientTable {
    config: ClientTableConfig,
    tracking_ms: u64,
    shards: Box<[Padded]>,
    hasher: RandomState,
    events: broadcast::Sender<ClientEntry>,
}

const NIL: u32 = u32::MAX;
const INLINE: usize = 22;

/// A shard's lock on cache lines of its own, so threads working on different shards do not
/// contend for one line.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// A key stored without allocation when short (every client address is).
#[derive(Clone)]
enum StoredKey {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

struct Node {
    key: StoredKey,
    backend: BackendId,
    last_ms: u64,
    prev: u32,
    next: u32,
}

/// One independently locked part: a map from key to slab index and an intrusive
/// doubly-linked LRU list through the slab (head: most recently used).
struct Shard {
    map: HashMap<StoredKey, u32>,
    nodes: Vec<Node>,
    free: u32,
    head: u32,
    tail: u32,
    cap: usize,
}

/// What a record did.
enum Recorded {
    Same,
    Changed,
}

impl ClientTable {
    /// A table with these settings; refuses zero slots and out-of-range masks.
    pub fn new(config: ClientTableConfig) -> Result<Self> {
        config.validate()?;
        let n = config.shards;
        let shards = (0..n)
            .map(|i| {
                Padded(Mutex::new(Shard::new(
                    config.slots / n + usize::from(i < config.slots % n),
                )))
            })
            .collect();
        let (events, _) = broadcast::channel(1024);
        Ok(ClientTable {
            tracking_ms: u64::try_from(config.tracking.as_millis()).unwrap_or(u64::MAX),
            config,
            shards,
            hasher: RandomState::new(),
            events,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ClientTableConfig {
        &self.config
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let i = if self.shards.len() == 1 {
            0
        } else {
            (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
        };
        lock(&self.shards[i])
    }

    /// How many clients are remembered (expired entries are dropped first).
    pub fn len(&self) -> usize {
        let now = clock::now_ms();
        self.shards
            .iter()
            .map(|s| {
                let mut s = lock(s);
                s.purge_expired(now, self.tracking_ms);
                s.map.len()
            })
            .sum()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every client.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            let cap = lock(s).cap;
            *lock(s) = Shard::new(cap);
        }
    }

    /// Forgets every client of one backend (when it is removed for good); returns how
    /// many were forgotten.
    pub fn forget_backend(&self, backend: BackendId) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut s = lock(s);
            let mut i = s.head;
            while i != NIL {
                let next = s.nodes[i as usize].next;
                if s.nodes[i as usize].backend == backend {
                    s.remove(i);
                    n += 1;
                }
                i = next;
            }
        }
        n
    }

    /// Every remembered client, most recently used first (for status pages).
    pub fn entries(&self) -> Vec<ClientEntry> {
        let now = clock::now_ms();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let mut s = lock(s);
            s.purge_expired(now, self.tracking_ms);
            let mut i = s.head;
            while i != NIL {
                let node = &s.nodes[i as usize];
                out.push(ClientEntry {
                    key: node.key.as_bytes().to_vec(),
                    backend: node.backend,
                    age: Duration::from_millis(now.saturating_sub(node.last_ms)),
                });
                i = node.next;
            }
        }
        out.sort_by_key(|e| e.age);
        out
    }

    /// Every remembered client, least recently used first: the order in which
    /// [`import`](Self::import) on another node rebuilds the same recency order.
    pub fn export(&self) -> Vec<ClientEntry> {
        let mut v = self.entries();
        v.reverse();
        v
    }

    /// Takes entries from another table (high-availability state sync).
    ///
    /// Each entry keeps its age, so it expires when it would have on the node that
    /// exported it and takes its place in the recency order. An entry already expired is
    /// skipped; a key known here and used more recently here keeps the local assignment;
    /// when the table is full, entries older than everything here are dropped, else the
    /// least recently used entry makes room. Imports emit no [`subscribe`](Self::subscribe)
    /// events. Backend ids mean the same only on balancers configured with the same
    /// backends in the same order. Cost: O(1) per entry younger than everything here,
    /// O(slots) at worst.
    pub fn import(&self, entries: impl IntoIterator<Item = ClientEntry>) {
        let now = clock::now_ms();
        let mut entries: Vec<ClientEntry> = entries.into_iter().collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.age));
        for e in entries {
            let age_ms = u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX);
            if self.tracking_ms != 0 && age_ms >= self.tracking_ms {
                continue;
            }
            let last_ms = now.saturating_sub(age_ms).max(1);
            self.shard(&e.key).insert_at(&e.key, e.backend, last_ms);
        }
    }

    /// Every new or changed assignment from now on, so a standby node can mirror the table
    /// (apply them with [`import`](Self::import)). A receiver more than 1024 entries behind
    /// loses the oldest ones (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<ClientEntry> {
        self.events.subscribe()
    }
}

fn lock(m: &Padded) -> MutexGuard<'_, Shard> {
    // Shard operations cannot panic on any input, only on an internal bug; rather than
    // spread such a panic to every later pick, keep using the shard.
    m.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl Persistence for ClientTable {
    fn lookup(&self, key: &[u8]) -> Option<BackendId> {
        let now = clock::now_ms();
        self.shard(key).lookup(key, now, self.tracking_ms)
    }

    fn record(&self, key: &[u8], backend: BackendId) {
        let now = clock::now_ms();
        let done = {
            let mut s = self.shard(key);
            s.purge_expired(now, self.tracking_ms);
            s.record(key, backend, now)
        };
        if matches!(done, Recorded::Changed) && self.events.receiver_count() > 0 {
            let _ = self.events.send(ClientEntry {
                key: key.to_vec(),
                backend,
                age: Duration::ZERO,
            });
        }
    }

    fn forget(&self, key: &[u8]) {
        let mut s = self.shard(key);
        if let Some(&i) = s.map.get(key) {
            s.remove(i);
        }
    }

    fn client_key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::masked(ip, self.config.v4_mask, self.config.v6_prefix)
    }
}

impl fmt::Debug for ClientTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTable")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// ----- The stored key -----

impl StoredKey {
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..key.len()].copy_from_slice(key);
            StoredKey::Inline {
                len: key.len() as u8,
                buf,
            }
        } else {
            StoredKey::Heap(key.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, buf } => &buf[..usize::from(*len)],
            StoredKey::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for StoredKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

// Hash and Eq agree with `[u8]`'s, as `Borrow` requires.
impl Hash for StoredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for StoredKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for StoredKey {}

// ----- The shard: slab + intrusive LRU list -----

impl Shard {
    fn new(cap: usize) -> Self {
        Shard {
            map: HashMap::with_capacity(cap.min(4096)),
            nodes: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            cap,
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    /// Links `i` before `at` (`NIL`: at the tail).
    fn link_before(&mut self, i: u32, at: u32) {
        let prev = match at {
            NIL => self.tail,
            a => self.nodes[a as usize].prev,
        };
        {
            let n = &mut self.nodes[i as usize];
            n.prev = prev;
            n.next = at;
        }
        match prev {
            NIL => self.head = i,
            p => self.nodes[p as usize].next = i,
        }
        match at {
            NIL => self.tail = i,
            a => self.nodes[a as usize].prev = i,
        }
    }

    /// Marks `i` used at `now`: to the head, its time no older than the old head's, so
    /// times never increase from head to tail.
    fn touch(&mut self, i: u32, now: u64) {
        let head_ms = match self.head {
            NIL => 0,
            h => self.nodes[h as usize].last_ms,
        };
        if self.head != i {
            self.unlink(i);
            let head = self.head;
            self.link_before(i, head);
        }
        self.nodes[i as usize].last_ms = now.max(head_ms);
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let key = std::mem::replace(
            &mut self.nodes[i as usize].key,
            StoredKey::Inline {
                len: 0,
                buf: [0; INLINE],
            },
        );
        self.map.remove(key.as_bytes());
        self.nodes[i as usize].next = self.free;
        self.free = i;
    }

    fn expired(&self, i: u32, now: u64, tracking_ms: u64) -> bool {
        tracking_ms != 0 && now.saturating_sub(self.nodes[i as usize].last_ms) >= tracking_ms
    }

    /// Drops expired entries; they are all at the tail since times fall towards it.
    fn purge_expired(&mut self, now: u64, tracking_ms: u64) {
        if tracking_ms == 0 {
            return;
        }
        while self.tail != NIL && self.expired(self.tail, now, tracking_ms) {
            self.remove(self.tail);
        }
    }

    fn lookup(&mut self, key: &[u8], now: u64, tracking_ms: u64) -> Option<BackendId> {
        let i = *self.map.get(key)?;
        if self.expired(i, now, tracking_ms) {
            self.remove(i);
            return None;
        }
        self.touch(i, now);
        Some(self.nodes[i as usize].backend)
    }

    fn record(&mut self, key: &[u8], backend: BackendId, now: u64) -> Recorded {
        if let Some(&i) = self.map.get(key) {
            self.touch(i, now);
            let node = &mut self.nodes[i as usize];
            if node.backend == backend {
                return Recorded::Same;
            }
            node.backend = backend;
            return Recorded::Changed;
        }
        let head_ms = match self.head {
            NIL => 0,
            h => self.nodes[h as usize].last_ms,
        };
        let i = self.alloc(key, backend, now.max(head_ms));
        let head = self.head;
        self.link_before(i, head);
        Recorded::Changed
    }

    /// A free slot holding `key`, evicting the least recently used entry when full. The
    /// slot is not linked; the map entry is made.
    fn alloc(&mut self, key: &[u8], backend: BackendId, last_ms: u64) -> u32 {
        if self.free == NIL && self.nodes.len() >= self.cap {
            let lru = self.tail;
            self.remove(lru);
        }
        let stored = StoredKey::new(key);
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            let n = &mut self.nodes[i as usize];
            n.key = stored.clone();
            n.backend = backend;
            n.last_ms = last_ms;
            i
        } else {
            self.nodes.push(Node {
                key: stored.clone(),
                backend,
                last_ms,
                prev: NIL,
                next: NIL,
            });
            (self.nodes.len() - 1) as u32
        };
        self.map.insert(stored, i);
        i
    }

    /// Inserts an entry last used at `last_ms` in its place in the recency order.
    fn insert_at(&mut self, key: &[u8], backend: BackendId, last_ms: u64) {
        if let Some(&i) = self.map.get(key) {
            if self.nodes[i as usize].last_ms >= last_ms {
                return;
            }
            self.unlink(i);
            self.nodes[i as usize].backend = backend;
            self.nodes[i as usize].last_ms = last_ms;
            let at = self.position_for(last_ms);
            self.link_before(i, at);
            return;
        }
        if self.free == NIL
            && self.nodes.len() >= self.cap
            && self.nodes[self.tail as usize].last_ms > last_ms
        {
            return;
        }
        let i = self.alloc(key, backend, last_ms);
        let at = self.position_for(last_ms);
        self.link_before(i, at);
    }

    /// The first node (from the head) used no later than `last_ms`; `NIL`: the tail end.
    fn position_for(&self, last_ms: u64) -> u32 {
        let mut at = self.head;
        while at != NIL && self.nodes[at as usize].last_ms > last_ms {
            at = self.nodes[at as usize].next;
        }
        at
    }
}

#[cfg(test)]
impl ClientTable {
    /// Panics unless every shard's list, map and slab agree.
    fn check_invariants(&self) {
        for s in self.shards.iter() {
            lock(s).check_invariants();
        }
    }
}

#[cfg(test)]
impl Shard {
    fn check_invariants(&self) {
        let mut count = 0;
        let (mut prev, mut i) = (NIL, self.head);
        let mut last_ms = u64::MAX;
        while i != NIL {
            let n = &self.nodes[i as usize];
            assert_eq!(n.prev, prev, "prev link of {i}");
            assert!(n.last_ms <= last_ms, "times fall towards the tail");
            assert_eq!(self.map.get(n.key.as_bytes()), Some(&i), "map entry of {i}");
            last_ms = n.last_ms;
            count += 1;
            assert!(
                count <= self.cap,
                "list longer than the capacity (a cycle?)"
            );
            prev = i;
            i = n.next;
        }
        assert_eq!(self.tail, prev, "tail");
        assert_eq!(count, self.map.len(), "list and map sizes");
        let mut free = 0;
        let mut f = self.free;
        while f != NIL {
            free += 1;
            assert!(free <= self.nodes.len(), "free list cycle");
            f = self.nodes[f as usize].next;
        }
        assert_eq!(
            count + free,
            self.nodes.len(),
            "every slot is listed or free"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::{Backend, Balancer, PickContext};

    fn table(slots: usize, tracking_secs: u64) -> ClientTable {
        ClientTable::new(
            ClientTableConfig::default()
                .with_slots(slots)
                .with_tracking(Duration::from_secs(tracking_secs)),
        )
        .unwrap()
    }

    fn keys(t: &ClientTable) -> Vec<Vec<u8>> {
        t.entries().into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn full_table_evicts_the_least_recently_used_and_lookups_refresh() {
        let t = table(3, 0);
        t.record(b"a", BackendId(1));
        t.record(b"b", BackendId(2));
        t.record(b"c", BackendId(3));
        assert_eq!(t.lookup(b"a"), Some(BackendId(1)), "refreshes a");
        t.record(b"d", BackendId(4));
        assert_eq!(t.lookup(b"b"), None, "b was least recently used");
        assert_eq!(t.len(), 3);
        assert_eq!(keys(&t), vec![b"d".to_vec(), b"a".to_vec(), b"c".to_vec()]);
        // A long key (stored on the heap) behaves the same.
        let long = vec![7u8; 100];
        t.record(&long, BackendId(5));
        assert_eq!(t.lookup(&long), Some(BackendId(5)));
        assert_eq!(t.lookup(b"c"), None, "c evicted");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_tracking_time_since_last_use() {
        let t = table(10, 10);
        t.record(b"a", BackendId(1));
        t.record(b"b", BackendId(2));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            t.lookup(b"a"),
            Some(BackendId(1)),
            "9 s < 10 s; refreshes a"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.lookup(b"b"), None, "b unused for 11 s");
        assert_eq!(t.lookup(b"a"), Some(BackendId(1)), "a used 2 s ago");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.len(), 0, "a unused for 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_tracking_keeps_entries_forever() {
        let t = table(10, 0);
        t.record(b"a", BackendId(1));
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert_eq!(t.lookup(b"a"), Some(BackendId(1)));
        let e = &t.entries()[0];
        assert_eq!(e.age, Duration::ZERO, "the lookup refreshed it");
    }

    #[test]
    fn netmask_groups_clients_through_the_balancer() {
        let cfg = ClientTableConfig::default()
            .with_v4_netmask("255.255.255.0")
            .unwrap()
            .with_v6_prefix("/48")
            .unwrap();
        let t = Arc::new(ClientTable::new(cfg).unwrap());
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let lb = Balancer::builder()
            .backend(Backend::new(addr("127.0.0.1:1")))
            .backend(Backend::new(addr("127.0.0.1:2")))
            .persistence(t.clone())
            .build()
            .unwrap();
        let pick = |c: &str| {
            lb.pick(&PickContext::new().with_client(addr(c)))
                .unwrap()
                .id()
        };
        let a = pick("192.0.2.1:1000");
        assert_eq!(pick("192.0.2.200:2000"), a, "same /24, same backend");
        assert_ne!(
            pick("198.51.100.1:1000"),
            a,
            "other /24: round robin moves on"
        );
        let b = pick("[2001:db8:1:2::5]:1");
        assert_eq!(pick("[2001:db8:1:ffff::9]:1"), b, "same /48");
        assert_eq!(t.len(), 3);
        let ips: Vec<_> = t.entries().iter().filter_map(|e| e.client_ip()).collect();
        assert!(ips.contains(&"192.0.2.0".parse().unwrap()), "{ips:?}");
        assert!(ips.contains(&"2001:db8:1::".parse().unwrap()), "{ips:?}");
    }

    #[tokio::test]
    async fn subscribers_see_new_and_changed_assignments_only() {
        let t = table(10, 0);
        let mut rx = t.subscribe();
        t.record(b"a", BackendId(1));
        t.record(b"a", BackendId(1));
        t.record(b"a", BackendId(2));
        t.lookup(b"a");
        let first = rx.recv().await.unwrap();
        assert_eq!((first.key, first.backend), (b"a".to_vec(), BackendId(1)));
        assert_eq!(rx.recv().await.unwrap().backend, BackendId(2));
        assert!(
            rx.try_recv().is_err(),
            "repeat record and lookup emit nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn export_import_keeps_assignments_ages_and_recency() {
        let a = table(3, 100);
        a.record(b"old", BackendId(1));
        tokio::time::advance(Duration::from_secs(10)).await;
        a.record(b"mid", BackendId(2));
        tokio::time::advance(Duration::from_secs(10)).await;
        a.record(b"new", BackendId(3));
        let exported = a.export();
        assert_eq!(exported[0].key, b"old");
        assert_eq!(exported[0].age, Duration::from_secs(20));

        let b = table(3, 100);
        b.import(exported.clone());
        assert_eq!(b.entries(), a.entries());
        b.record(b"x", BackendId(4));
        assert_eq!(b.lookup(b"old"), None, "the oldest is evicted first");
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(b.lookup(b"new"), Some(BackendId(3)));
        assert_eq!(b.entries().len(), 3, "mid is 99 s old");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.lookup(b"mid"), None, "expires when it would have on a");
        assert_eq!(b.lookup(b"new"), Some(BackendId(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn import_skips_expired_and_keeps_fresher_local_entries() {
        let t = table(2, 60);
        t.record(b"local", BackendId(1));
        let e = |k: &[u8], b, s| ClientEntry {
            key: k.to_vec(),
            backend: BackendId(b),
            age: Duration::from_secs(s),
        };
        t.import(vec![e(b"local", 9, 5), e(b"dead", 2, 60)]);
        assert_eq!(t.lookup(b"local"), Some(BackendId(1)), "local is fresher");
        assert_eq!(t.lookup(b"dead"), None, "expired on arrival");
        tokio::time::advance(Duration::from_secs(2)).await;
        t.import(vec![e(b"local", 9, 1)]);
        assert_eq!(t.lookup(b"local"), Some(BackendId(9)), "remote is fresher");
        // Full: an entry older than everything here is dropped, a younger one evicts.
        t.import(vec![e(b"young", 3, 0)]);
        t.import(vec![e(b"ancient", 4, 50)]);
        assert_eq!(t.lookup(b"ancient"), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn forget_forget_backend_and_clear() {
        let t = table(10, 0);
        for (k, b) in [(b"a", 1), (b"b", 2), (b"c", 1), (b"d", 3)] {
            t.record(k, BackendId(b));
        }
        t.forget(b"d");
        assert_eq!(t.lookup(b"d"), None);
        assert_eq!(t.forget_backend(BackendId(1)), 2);
        assert_eq!(keys(&t), vec![b"b".to_vec()]);
        t.clear();
        assert!(t.is_empty());
        t.record(b"e", BackendId(1));
        assert_eq!(t.lookup(b"e"), Some(BackendId(1)), "usable after clear");
    }

    #[test]
    fn shards_hold_exactly_the_configured_slots() {
        let t =
            ClientTable::new(ClientTableConfig::default().with_slots(10).with_shards(3)).unwrap();
        for i in 0..100u32 {
            t.record(&i.to_be_bytes(), BackendId(i));
        }
        assert!(t.len() <= 10, "{}", t.len());
        for i in 100..200u32 {
            t.record(&i.to_be_bytes(), BackendId(i));
            assert_eq!(t.lookup(&i.to_be_bytes()), Some(BackendId(i)));
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_value() {
        let err = |c: ClientTableConfig| ClientTable::new(c).unwrap_err().to_string();
        let d = ClientTableConfig::default;
        assert_eq!(
            err(d().with_slots(0)),
            "invalid configuration slots=\"0\": a client table needs at least one slot"
        );
        let mut c = d();
        c.v4_mask = 33;
        assert!(err(c).contains("invalid netmask \"33\""));
        let mut c = d();
        c.v6_prefix = 129;
        assert!(err(c).contains("invalid netmask \"129\""));
        assert!(err(d().with_slots(2).with_shards(3)).contains("shards=\"3\""));
        for bad in ["255.0.255.0", "33", "/x", "", "255.255.255.256"] {
            let e = d().with_v4_netmask(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidNetmask { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert!(d().with_v6_prefix("129").is_err());
        for (s, bits) in [("0.0.0.0", 0), ("255.255.240.0", 20), ("/16", 16), ("8", 8)] {
            assert_eq!(d().with_v4_netmask(s).unwrap().v4_mask, bits, "{s}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Record(u8, u32),
        Lookup(u8),
        Forget(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u32..4).prop_map(|(k, b)| Op::Record(k, b)),
            (0u8..12).prop_map(Op::Lookup),
            (0u8..12).prop_map(Op::Forget),
        ]
    }

    proptest! {
        /// The table behaves exactly like a naive LRU list of `slots` entries.
        #[test]
        fn matches_a_naive_lru_model(slots in 1usize..6, ops in proptest::collection::vec(op(), 0..200)) {
            let t = table(slots, 0);
            let mut model: VecDeque<(u8, u32)> = VecDeque::new(); // front: most recent
            for op in ops {
                match op {
                    Op::Record(k, b) => {
                        t.record(&[k], BackendId(b));
                        model.retain(|e| e.0 != k);
                        model.push_front((k, b));
                        model.truncate(slots);
                    }
                    Op::Lookup(k) => {
                        let want = model.iter().position(|e| e.0 == k).map(|i| {
                            let e = model.remove(i).unwrap();
                            model.push_front(e);
                            BackendId(e.1)
                        });
                        prop_assert_eq!(t.lookup(&[k]), want);
                    }
                    Op::Forget(k) => {
                        t.forget(&[k]);
                        model.retain(|e| e.0 != k);
                    }
                }
                t.check_invariants();
                let got: Vec<(u8, u32)> =
                    t.entries().iter().map(|e| (e.key[0], e.backend.0)).collect();
                // Equal ages tie in `entries`; compare as sets plus the length.
                let mut got_sorted = got.clone();
                got_sorted.sort_unstable();
                let mut want: Vec<_> = model.iter().copied().collect();
                want.sort_unstable();
                prop_assert_eq!(got_sorted, want);
            }
        }
    }

    proptest! {
        /// Imports of random ages mixed with records keep the structure sound and never
        /// exceed the slots.
        #[test]
        fn imports_keep_the_structure_sound(
            slots in 1usize..8,
            shards in 1usize..3,
            ops in proptest::collection::vec((0u8..16, 0u32..4, 0u64..100, any::<bool>()), 0..100),
        ) {
            let shards = shards.min(slots);
            let t = ClientTable::new(
                ClientTableConfig::default().with_slots(slots).with_shards(shards),
            )
            .unwrap();
            for (k, b, age, import) in ops {
                if import {
                    t.import([ClientEntry {
                        key: vec![k],
                        backend: BackendId(b),
                        age: Duration::from_secs(age),
                    }]);
                } else {
                    t.record(&[k], BackendId(b));
                    prop_assert_eq!(t.lookup(&[k]), Some(BackendId(b)));
                }
                t.check_invariants();
                prop_assert!(t.len() <= slots);
            }
        }
    }

    #[test]
    fn concurrent_use_keeps_the_table_sound() {
        let t = Arc::new(
            ClientTable::new(ClientTableConfig::default().with_slots(64).with_shards(4)).unwrap(),
        );
        let threads: Vec<_> = (0..4u32)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let key = ((i * 7 + n) % 200).to_be_bytes();
                        match i % 4 {
                            0 | 1 => t.record(&key, BackendId(n)),
                            2 => {
                                t.lookup(&key);
                            }
                            _ => t.forget(&key),
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        t.check_invariants();
        assert!(t.len() <= 64);
    }
}
