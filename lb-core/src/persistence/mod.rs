//! Persistence: keeping a client on the backend it used before.
//!
//! The [`Persistence`] trait maps a key (a client address, or any bytes) to a backend. The
//! balancer consults it before scheduling and records every new assignment. HTTP cookie
//! routes need no table: the route travels in the cookie and is matched against member
//! route names (see [`PickContext::with_route`](crate::PickContext::with_route));
//! [`RouteCodec`] and [`url_param`] read and write routes in Apache's `session.route` form.
//!
//! # The client table
//!
//! [`ClientTable`] follows pen's man page: a fixed number of slots (`-c`, 2048 by
//! default); when full, a new client replaces the least recently used one; an entry
//! expires `tracking` after its last use (`-T`, 0 = never); clients may be grouped by
//! source netmask (IPVS `-M`) through [`Persistence::client_key`]. pen's round-robin bypass
//! (`-r`), stubborn mode (`-s`) and the hard limit for returning clients are pipeline
//! settings of the balancer ([`PipelineConfig`](crate::PipelineConfig)).
//!
//! Design: the table is on the path of every pick, so every operation is O(1) under one
//! short `Mutex` (or one per shard, see [`ClientTableConfig::shards`]): a `HashMap` from key
//! to an index in a slab (`Vec`) of entries, and an intrusive doubly-linked list through the
//! slab in recency order. A lookup hashes the key, moves the entry to the head of the list
//! and stamps it with the time; nothing is allocated for a known key (keys up to 22 bytes,
//! every client address, are stored inline; longer keys are boxed once when recorded).
//! Times never increase from head to tail, so expired entries are all at the tail and are
//! dropped there, lazily, as the table is used. Time comes from [`tokio::time`] through
//! [`clock`](crate::clock), so tests pause it.
//!
//! For a standby node, [`ClientTable::export`] and [`ClientTable::import`] move the whole
//! table with each entry's age, and [`ClientTable::subscribe`] streams every new or changed
//! assignment.

mod client_key;
mod client_table;
mod route_codec;

use std::fmt;
use std::net::IpAddr;

pub use client_key::ClientKey;
pub use client_table::{ClientEntry, ClientTable, ClientTableConfig};
pub use route_codec::{RouteCodec, url_param};

use crate::backend::BackendId;

/// A table from client keys to backends.
pub trait Persistence: Send + Sync + fmt::Debug {
    /// The backend `key` was last assigned to, if remembered (and not expired).
    fn lookup(&self, key: &[u8]) -> Option<BackendId>;

    /// Remembers that `key` is on `backend`.
    fn record(&self, key: &[u8], backend: BackendId);

    /// Forgets `key`.
    fn forget(&self, key: &[u8]);

    /// The key of a client address; a hook for grouping clients (a netmask). The default is
    /// the address itself.
    fn client_key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::from_ip(ip)
    }
}
