//! High availability for lb: a pluggable [`Failover`] trait, a Heartbeat-style two-node
//! membership protocol, and resources (virtual IPs with gratuitous ARP / unsolicited
//! neighbour advertisement, scripts, closures).
//!
//! A [`Node`] sends authenticated beats to its peer, decides who holds the resources
//! (see [`protocol::Machine`] for the rules: deadtime, initdead, preferred node,
//! auto_failback, split brain, ipfail) and drives a [`resource::ResourceGroup`]. Its role
//! is published on a `tokio::sync::watch`.
//!
//! ```
//! use std::time::Duration;
//! use lb_ha::protocol::{Key, MachineConfig, Timing};
//! use lb_ha::resource::{FnResource, ResourceGroup};
//! use lb_ha::{Node, NodeConfig, Role};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lb_ha::Result<()> {
//! // A lone node: no peer answers, so it takes over after initdead.
//! let config = NodeConfig {
//!     machine: MachineConfig {
//!         name: "lb0".into(),
//!         peer: "lb1".into(),
//!         preferred: Some("lb0".into()),
//!         auto_failback: true,
//!         timing: Timing {
//!             keepalive: Duration::from_millis(50),
//!             warntime: Duration::from_millis(100),
//!             deadtime: Duration::from_millis(200),
//!             initdead: Duration::from_millis(200),
//!         },
//!         ping_total: 0,
//!         epoch: 1,
//!     },
//!     key: Key::new("shared secret"),
//!     bind: "127.0.0.1:0".parse().unwrap(),
//!     bind_device: None,
//!     peers: vec![],
//!     multicast: None,
//!     ping: vec![],
//! };
//! let resources = ResourceGroup::new().with(FnResource::new(
//!     "service",
//!     || async { Ok(()) },
//!     || async { Ok(()) },
//! ));
//! let node = Node::spawn(config, resources).await?;
//! let mut role = node.role();
//! role.wait_for(|r| *r == Role::Active).await.expect("node runs");
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Heartbeat's files (`ha.cf`, `haresources`, `authkeys`) and a TOML equivalent are read
//! by [`config`] into a [`config::HaConfig`], which yields the node's configuration and its
//! resource group. [`HaArgs`] gives binaries the `--ha-*` options and
//! [`HaArgs::start_with`] runs the node, its resources and [`sync`] (a table, such as pen's
//! client table, streamed from the active node to the passive one).
#![deny(unsafe_code)]

mod args;
pub mod client_table;
pub mod config;
mod error;
mod failover;
mod netlink;
mod node;
mod ping;
pub mod protocol;
pub mod resource;
pub mod sync;
mod sys;

pub use args::{HaArgs, HaHandle, start};
pub use error::{Error, Result};
pub use failover::{BoxFuture, Failover};
pub use node::{DEFAULT_PORT, Multicast, Node, NodeConfig, Role};
