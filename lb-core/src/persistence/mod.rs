//! Persistence: keeping a client on the backend it used before.
//!
//! The [`Persistence`] trait maps a key (a client address, or any bytes) to a backend. The
//! balancer consults it before scheduling and records every new assignment. HTTP cookie
//! routes need no table: the route travels in the cookie and is matched against member
//! route names (see [`PickContext::with_route`](crate::PickContext::with_route)).

mod client_key;

use std::fmt;
use std::net::IpAddr;

pub use client_key::ClientKey;

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
