//! The [`Failover`] trait: what a node does when its role changes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::Result;

/// A boxed, sendable future, as returned by [`Failover`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Actions a node takes when it becomes active ([`promote`](Failover::promote)) or stops
/// being active ([`demote`](Failover::demote)).
///
/// Both methods must be **idempotent**: promoting an active resource or demoting a stopped
/// one succeeds and changes nothing. The node may call `demote` on a resource it never
/// promoted (for instance after a failed promote, or at shutdown).
///
/// Implementations are small: a virtual IP ([`VirtualIp`](crate::resource::VirtualIp)), a
/// script ([`ExecResource`](crate::resource::ExecResource)), a pair of closures
/// ([`FnResource`](crate::resource::FnResource)), or your own type. Ordering, rollback and
/// fault handling live in [`ResourceGroup`](crate::resource::ResourceGroup).
pub trait Failover: Send + Sync + fmt::Debug {
    /// A short name for logs and status pages (`IPaddr::198.18.0.100/24/eth0`, `httpd`).
    fn name(&self) -> &str;

    /// Take the resource over: start the service, add the address.
    fn promote(&self) -> BoxFuture<'_, Result<()>>;

    /// Give the resource up: stop the service, remove the address.
    fn demote(&self) -> BoxFuture<'_, Result<()>>;
}

impl<T: Failover + ?Sized> Failover for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn promote(&self) -> BoxFuture<'_, Result<()>> {
        (**self).promote()
    }
    fn demote(&self) -> BoxFuture<'_, Result<()>> {
        (**self).demote()
    }
}

impl<T: Failover + ?Sized> Failover for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn promote(&self) -> BoxFuture<'_, Result<()>> {
        (**self).promote()
    }
    fn demote(&self) -> BoxFuture<'_, Result<()>> {
        (**self).demote()
    }
}
