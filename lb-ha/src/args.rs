//! [`HaArgs`]: the command-line options that make a binary highly available.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::config::{HaConfig, epoch_now};
use crate::failover::Failover;
use crate::node::{Node, Role};
use crate::protocol::{Event, Status};
use crate::sync::{StateSync, SyncTable};
use crate::{Error, Result};

/// Options for a highly available binary (flatten them into your clap parser).
///
/// Either Heartbeat's files (`--ha-config ha.cf --ha-resources haresources`, with
/// `authkeys` next to `ha.cf` unless `--ha-authkeys` says otherwise) or one TOML file
/// (`--ha-toml`). The node's name defaults to the host name, as in Heartbeat.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HaArgs {
    /// Heartbeat's ha.cf: timing, ucast/mcast, node names, ping nodes.
    #[arg(long = "ha-config", value_name = "HA_CF")]
    pub ha_config: Option<PathBuf>,
    /// Heartbeat's haresources: `NODE IPaddr::ADDR/PREFIX/IFACE SCRIPT...`.
    #[arg(
        long = "ha-resources",
        value_name = "HARESOURCES",
        requires = "ha_config"
    )]
    pub ha_resources: Option<PathBuf>,
    /// Heartbeat's authkeys (default: `authkeys` next to ha.cf).
    #[arg(long = "ha-authkeys", value_name = "AUTHKEYS", requires = "ha_config")]
    pub ha_authkeys: Option<PathBuf>,
    /// The whole HA configuration in one TOML file, instead of Heartbeat's files.
    #[arg(long = "ha-toml", value_name = "FILE", conflicts_with_all = ["ha_config", "ha_resources", "ha_authkeys"])]
    pub ha_toml: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long = "ha-node", value_name = "NAME")]
    pub ha_node: Option<String>,
    /// A directory searched for resource scripts before PATH (repeatable; default
    /// /etc/ha.d/resource.d and /etc/init.d).
    #[arg(long = "ha-resource-dir", value_name = "DIR")]
    pub ha_resource_dirs: Vec<PathBuf>,
    /// TCP port for state sync (client-table changes, active to passive).
    #[arg(long = "ha-sync-port", value_name = "PORT", default_value_t = 695)]
    pub ha_sync_port: u16,
}

impl HaArgs {
    /// True when HA was asked for.
    pub fn enabled(&self) -> bool {
        self.ha_config.is_some() || self.ha_toml.is_some()
    }

    /// Reads the configuration; `None` when HA was not asked for.
    pub fn load(&self) -> Result<Option<HaConfig>> {
        let mut c = if let Some(t) = &self.ha_toml {
            HaConfig::from_toml_file(t)?
        } else if let Some(cf) = &self.ha_config {
            let dir = cf.parent().map(PathBuf::from).unwrap_or_default();
            let res = self
                .ha_resources
                .clone()
                .unwrap_or_else(|| dir.join("haresources"));
            let keys = self
                .ha_authkeys
                .clone()
                .unwrap_or_else(|| dir.join("authkeys"));
            HaConfig::from_heartbeat(cf, &res, &keys)?
        } else {
            return Ok(None);
        };
        if !self.ha_resource_dirs.is_empty() {
            c.resource_dirs = self.ha_resource_dirs.clone();
        }
        Ok(Some(c))
    }

    /// This node's name: `--ha-node`, else the host name.
    pub fn node_name(&self) -> Result<String> {
        if let Some(n) = &self.ha_node {
            return Ok(n.clone());
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .map_err(|e| Error::io("reading the host name (give --ha-node)", e))
    }

    /// Starts the node with the configured resources; `None` when HA was not asked for.
    pub async fn start(&self) -> Result<Option<HaHandle>> {
        self.start_with(Vec::new(), None).await
    }

    /// Starts the node with the configured resources followed by `extra` ones (promoted
    /// after, demoted before the configured ones), and streams `sync` to the peer while
    /// active.
    pub async fn start_with(
        &self,
        extra: Vec<Box<dyn Failover>>,
        sync: Option<Arc<dyn SyncTable>>,
    ) -> Result<Option<HaHandle>> {
        let Some(config) = self.load()? else {
            return Ok(None);
        };
        let name = self.node_name()?;
        start(&config, &name, extra, sync, self.ha_sync_port)
            .await
            .map(Some)
    }
}

/// Starts node `name` of `config`: see [`HaArgs::start_with`].
pub async fn start(
    config: &HaConfig,
    name: &str,
    extra: Vec<Box<dyn Failover>>,
    sync: Option<Arc<dyn SyncTable>>,
    sync_port: u16,
) -> Result<HaHandle> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let node_config = config.node_config(name, epoch_now())?;
    let mut group = config.resource_group()?;
    for r in extra {
        group.push(r);
    }
    let key = node_config.key.clone();
    let node = Node::spawn(node_config, group).await?;
    let sync = match sync {
        None => None,
        Some(table) => {
            let peer = config
                .ucast
                .iter()
                .map(|u| u.peer)
                .find(|ip| !is_local(*ip))
                .ok_or_else(|| {
                    Error::Invalid("state sync needs a ucast peer address".to_owned())
                })?;
            let listen = SocketAddr::new(
                if peer.is_ipv6() {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::from([0u8; 4])
                },
                sync_port,
            );
            Some(
                StateSync::spawn(
                    table,
                    node.role(),
                    listen,
                    SocketAddr::new(peer, sync_port),
                    key,
                )
                .await?,
            )
        }
    };
    Ok(HaHandle { node, _sync: sync })
}

/// True when `ip` is an address of this host (binding to it succeeds).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// A running HA node started by [`HaArgs`].
#[derive(Debug)]
pub struct HaHandle {
    node: Node,
    _sync: Option<StateSync>,
}

impl HaHandle {
    /// The role, updated on every change.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.node.role()
    }

    /// The status for status pages.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.node.status()
    }

    /// State changes with reasons, peer up / late / dead, from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.node.events()
    }

    /// Every event since the node started, for the first caller: see
    /// [`Node::events_since_start`].
    pub fn events_since_start(&self) -> Option<broadcast::Receiver<Event>> {
        self.node.events_since_start()
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Demotes the resources, tells the peer, and stops.
    pub async fn shutdown(&self) -> Result<()> {
        self.node.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ha: HaArgs,
    }

    #[test]
    fn options_parse_and_conflict() {
        let c = Cli::try_parse_from([
            "x",
            "--ha-config",
            "ha.cf",
            "--ha-resources",
            "hr",
            "--ha-node",
            "lb0",
        ])
        .expect("heartbeat files");
        assert!(c.ha.enabled());
        assert_eq!(c.ha.node_name().expect("name"), "lb0");
        assert!(Cli::try_parse_from(["x", "--ha-toml", "a.toml", "--ha-config", "ha.cf"]).is_err());
        let none = Cli::try_parse_from(["x"]).expect("none");
        assert!(!none.ha.enabled());
        assert!(none.ha.load().expect("nothing to load").is_none());
    }

    #[test]
    fn local_addresses_are_recognised() {
        assert!(is_local("127.0.0.1".parse().expect("ip")));
        assert!(!is_local("198.18.255.254".parse().expect("ip")));
    }
}
