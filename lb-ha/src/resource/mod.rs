//! Resources: what moves between the nodes of a pair.
//!
//! A [`ResourceGroup`] holds resources in the order of a `haresources` line: it promotes
//! them first to last and demotes them last to first, as Heartbeat's `ResourceManager`
//! does. If a promote fails, the group demotes everything it had started (and the failed
//! resource itself, since demote is idempotent) and reports the error; the node then
//! enters its fault state and tells its peer.
//!
//! Built-in resources:
//! - [`VirtualIp`]: an address added to an interface through rtnetlink, announced with
//!   gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6), repeated.
//! - [`ExecResource`]: a `haresources` script run as `SCRIPT [ARGS] start|stop|status`.
//! - [`FnResource`]: a pair of async closures.

mod exec;
mod fn_resource;
mod group;
mod vip;

pub use exec::{ExecResource, find_script};
pub use fn_resource::FnResource;
pub use group::ResourceGroup;
pub use vip::{Announce, VirtualIp};
