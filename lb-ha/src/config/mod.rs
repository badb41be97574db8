//! Configuration: Heartbeat's own files and a TOML equivalent.
//!
//! Heartbeat v1 files run unchanged:
//! - `ha.cf` ([`HaCf`]): `keepalive`, `warntime`, `deadtime`, `initdead`, `udpport`,
//!   `auto_failback`, `ucast IFACE PEER`, `mcast IFACE GROUP PORT TTL LOOP`, `node`,
//!   `ping`; `respawn` and the logging directives are ignored with a warning; anything else
//!   is an error naming the file and line.
//! - `haresources` ([`parse_haresources`]): `NODE RESOURCE...`, where a resource is
//!   `IPaddr::ADDR/PREFIX/IFACE` or a script `NAME[::ARG...]`.
//! - `authkeys` ([`parse_authkeys`]): the shared key of the beats.
//!
//! The TOML form ([`HaConfig::from_toml`]) holds all three in one file:
//!
//! ```toml
//! nodes = ["lb0", "lb1"]
//! preferred = "lb0"            # the haresources line's node
//! keepalive = "200ms"          # Heartbeat's forms: 2, "500ms", "2s"
//! warntime = "500ms"
//! deadtime = "1s"
//! initdead = "2s"
//! udpport = 694
//! auto_failback = true
//! key = "shared secret"        # or key_file = "/etc/ha.d/authkeys"
//! ucast = [{ interface = "eth1", peer = "198.18.0.3" }]
//! ping = ["198.18.0.1"]
//! resources = ["IPaddr::198.18.0.100/24/eth1", "lb-pen-service"]
//! resource_dirs = ["/etc/ha.d/resource.d"]
//! announce = { count = 5, interval = "500ms" }
//! ```

mod authkeys;
mod duration;
mod hacf;
mod haresources;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use authkeys::parse_authkeys;
pub use duration::parse_duration;
pub use hacf::{HaCf, Mcast, Ucast};
pub use haresources::{ResourceLine, ResourceSpec, parse_haresources};

use crate::node::{Multicast, NodeConfig};
use crate::protocol::{Key, MachineConfig, Timing};
use crate::resource::{Announce, ExecResource, ResourceGroup, VirtualIp, find_script};
use crate::{Error, Result};

/// Heartbeat's default resource-script directories.
pub const DEFAULT_RESOURCE_DIRS: &[&str] = &["/etc/ha.d/resource.d", "/etc/init.d"];

/// A pair's whole configuration, from Heartbeat's files or TOML.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// The protocol's timing.
    pub timing: Timing,
    /// The UDP port of beats.
    pub udpport: u16,
    /// `auto_failback`.
    pub auto_failback: bool,
    /// The two node names.
    pub nodes: Vec<String>,
    /// Unicast peers.
    pub ucast: Vec<Ucast>,
    /// Multicast groups (the first one is used).
    pub mcast: Vec<Mcast>,
    /// Ping nodes.
    pub ping: Vec<IpAddr>,
    /// The shared key.
    pub key: Key,
    /// The node owning the resources when both are up.
    pub preferred: Option<String>,
    /// The resources, in promote order.
    pub resources: Vec<ResourceSpec>,
    /// Where scripts are searched before `PATH`.
    pub resource_dirs: Vec<PathBuf>,
    /// How virtual IPs are announced.
    pub announce: Announce,
    /// Warnings collected while reading (ignored directives).
    pub warnings: Vec<String>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

impl HaConfig {
    /// Reads Heartbeat's `ha.cf`, `haresources` and `authkeys`.
    pub fn from_heartbeat(ha_cf: &Path, haresources: &Path, authkeys: &Path) -> Result<HaConfig> {
        let cf = HaCf::from_file(ha_cf)?;
        let lines = parse_haresources(&read(haresources)?, haresources)?;
        let key = parse_authkeys(&read(authkeys)?, authkeys)?;
        let (preferred, resources) = match lines.as_slice() {
            [] => (None, Vec::new()),
            [one] => (Some(one.node.clone()), one.resources.clone()),
            [_, second, ..] => {
                return Err(Error::Config {
                    file: haresources.to_owned(),
                    line: second.line,
                    key: second.node.clone(),
                    message:
                        "lb-ha runs one resource group per pair; put all resources on one line"
                            .to_owned(),
                });
            }
        };
        if let Some(p) = &preferred {
            if !cf.nodes.is_empty() && !cf.nodes.contains(p) {
                return Err(Error::Config {
                    file: haresources.to_owned(),
                    line: lines[0].line,
                    key: p.clone(),
                    message: format!("node {p:?} is not a `node` of {}", ha_cf.display()),
                });
            }
        }
        let c = HaConfig {
            timing: Timing {
                keepalive: cf.keepalive,
                warntime: cf.warntime,
                deadtime: cf.deadtime,
                initdead: cf.initdead,
            },
            udpport: cf.udpport,
            auto_failback: cf.auto_failback,
            nodes: cf.nodes,
            ucast: cf.ucast,
            mcast: cf.mcast,
            ping: cf.ping,
            key,
            preferred,
            resources,
            resource_dirs: DEFAULT_RESOURCE_DIRS.iter().map(PathBuf::from).collect(),
            announce: Announce::default(),
            warnings: cf.warnings,
        };
        c.check()
            .map_err(|m| Error::Invalid(format!("{}: {m}", ha_cf.display())))?;
        Ok(c)
    }

    /// Reads the TOML form.
    pub fn from_toml_file(path: &Path) -> Result<HaConfig> {
        HaConfig::from_toml(&read(path)?, path)
    }

    /// Parses the TOML form; `file` names it in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<HaConfig> {
        let t: TomlConfig = toml::from_str(text).map_err(|e| toml_error(&e, text, file))?;
        let at = |key: &str, message: String| {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1);
            Error::Config {
                file: file.to_owned(),
                line,
                key: key.to_owned(),
                message,
            }
        };
        let d = |key: &str, v: Option<TomlDuration>, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(TomlDuration::Secs(s)) => {
                    Duration::try_from_secs_f64(s).map_err(|_| at(key, format!("bad duration {s}")))
                }
                Some(TomlDuration::Text(s)) => {
                    parse_duration(&s).map_err(|e| at(key, e.to_string()))
                }
            }
        };
        let defaults = HaCf::default();
        let key = match (t.key, t.key_file) {
            (Some(k), None) => Key::new(k),
            (None, Some(f)) => parse_authkeys(&read(&f)?, &f)?,
            (Some(_), Some(_)) => {
                return Err(at("key", "give key or key_file, not both".to_owned()));
            }
            (None, None) => {
                return Err(at(
                    "key",
                    "a shared key is required (key or key_file)".to_owned(),
                ));
            }
        };
        let mut resources = Vec::new();
        for r in &t.resources {
            resources.push(ResourceSpec::parse(r).map_err(|m| at("resources", m))?);
        }
        let announce = match t.announce {
            None => Announce::default(),
            Some(a) => Announce {
                count: a.count.unwrap_or(Announce::default().count),
                interval: d("interval", a.interval, Announce::default().interval)?,
            },
        };
        let udpport = t.udpport.unwrap_or(defaults.udpport);
        let c = HaConfig {
            timing: Timing {
                keepalive: d("keepalive", t.keepalive, defaults.keepalive)?,
                warntime: d("warntime", t.warntime, defaults.warntime)?,
                deadtime: d("deadtime", t.deadtime, defaults.deadtime)?,
                initdead: d("initdead", t.initdead, defaults.initdead)?,
            },
            udpport,
            auto_failback: t.auto_failback.unwrap_or(true),
            nodes: t.nodes,
            ucast: t
                .ucast
                .into_iter()
                .map(|u| Ucast {
                    interface: u.interface,
                    peer: u.peer,
                })
                .collect(),
            mcast: t
                .mcast
                .into_iter()
                .map(|m| Mcast {
                    interface: m.interface,
                    group: m.group,
                    port: m.port.unwrap_or(udpport),
                    ttl: m.ttl.unwrap_or(1),
                })
                .collect(),
            ping: t.ping,
            key,
            preferred: t.preferred,
            resources,
            resource_dirs: t
                .resource_dirs
                .unwrap_or_else(|| DEFAULT_RESOURCE_DIRS.iter().map(PathBuf::from).collect()),
            announce,
            warnings: Vec::new(),
        };
        c.check()
            .map_err(|m| Error::Invalid(format!("{}: {m}", file.display())))?;
        Ok(c)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.nodes.len() != 2 {
            return Err(format!(
                "a pair needs exactly two nodes, found {:?}",
                self.nodes
            ));
        }
        if let Some(n) = self.nodes.iter().find(|n| n.is_empty() || n.len() > 255) {
            return Err(format!("node name {n:?} must be 1 to 255 bytes long"));
        }
        if self.nodes[0] == self.nodes[1] {
            return Err(format!("both nodes are named {:?}", self.nodes[0]));
        }
        if let Some(p) = &self.preferred {
            if !self.nodes.contains(p) {
                return Err(format!(
                    "preferred node {p:?} is not one of {:?}",
                    self.nodes
                ));
            }
        }
        if self.ucast.is_empty() && self.mcast.is_empty() {
            return Err("no ucast or mcast: beats have nowhere to go".to_owned());
        }
        if let Some(m) = self.mcast.iter().find(|m| m.port != self.udpport) {
            return Err(format!(
                "mcast port {} differs from udpport {}: beats are received on one port",
                m.port, self.udpport
            ));
        }
        let t = &self.timing;
        if t.keepalive.is_zero() || t.deadtime <= t.keepalive {
            return Err(format!(
                "deadtime ({:?}) must be longer than keepalive ({:?})",
                t.deadtime, t.keepalive
            ));
        }
        Ok(())
    }

    /// The node configuration for node `name` (one of `nodes`); `epoch` is its generation
    /// (use [`epoch_now`]).
    pub fn node_config(&self, name: &str, epoch: u64) -> Result<NodeConfig> {
        let peer = match self.nodes.iter().position(|n| n == name) {
            Some(0) => self.nodes[1].clone(),
            Some(_) => self.nodes[0].clone(),
            None => {
                return Err(Error::Invalid(format!(
                    "this node {name:?} is not one of the configured nodes {:?}",
                    self.nodes
                )));
            }
        };
        let all_v6 = !self.ucast.is_empty() && self.ucast.iter().all(|u| u.peer.is_ipv6());
        let any: IpAddr = if all_v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        // Bind to the interface when every beat path uses the same one (Heartbeat does
        // the same); it also routes multicast beats out of it without a multicast route.
        let mut ifaces = self
            .ucast
            .iter()
            .map(|u| &u.interface)
            .chain(self.mcast.first().map(|m| &m.interface));
        let first_iface = ifaces.next().cloned();
        let bind_device = first_iface.filter(|i| ifaces.all(|j| j == i));
        Ok(NodeConfig {
            machine: MachineConfig {
                name: name.to_owned(),
                peer,
                preferred: self.preferred.clone(),
                auto_failback: self.auto_failback,
                timing: self.timing,
                ping_total: u16::try_from(self.ping.len()).unwrap_or(u16::MAX),
                epoch,
            },
            key: self.key.clone(),
            bind: SocketAddr::new(any, self.udpport),
            bind_device,
            peers: self
                .ucast
                .iter()
                .filter(|u| u.peer.is_ipv6() == all_v6)
                .map(|u| SocketAddr::new(u.peer, self.udpport))
                .collect(),
            multicast: self.mcast.first().map(|m| Multicast {
                interface: m.interface.clone(),
                group: m.group,
                ttl: m.ttl,
            }),
            ping: self.ping.clone(),
        })
    }

    /// Builds the resource group: virtual IPs and scripts (found now, so a missing
    /// script is reported at start-up).
    pub fn resource_group(&self) -> Result<ResourceGroup> {
        let mut g = ResourceGroup::new();
        for r in &self.resources {
            match r {
                ResourceSpec::Ip {
                    addr,
                    prefix,
                    interface,
                } => g.push(Box::new(
                    VirtualIp::new(*addr, *prefix, interface.clone())?.with_announce(self.announce),
                )),
                ResourceSpec::Script { name, args } => {
                    let path = find_script(name, &self.resource_dirs)?;
                    g.push(Box::new(ExecResource::new(
                        path,
                        args.iter().map(String::as_str),
                    )));
                }
            }
        }
        Ok(g)
    }
}

/// A node generation for [`HaConfig::node_config`]: milliseconds since the Unix epoch,
/// so a restarted node has a larger one.
pub fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlConfig {
    nodes: Vec<String>,
    preferred: Option<String>,
    keepalive: Option<TomlDuration>,
    warntime: Option<TomlDuration>,
    deadtime: Option<TomlDuration>,
    initdead: Option<TomlDuration>,
    udpport: Option<u16>,
    auto_failback: Option<bool>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    ucast: Vec<TomlUcast>,
    #[serde(default)]
    mcast: Vec<TomlMcast>,
    #[serde(default)]
    ping: Vec<IpAddr>,
    #[serde(default)]
    resources: Vec<String>,
    resource_dirs: Option<Vec<PathBuf>>,
    announce: Option<TomlAnnounce>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TomlDuration {
    Secs(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlUcast {
    interface: String,
    peer: IpAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlMcast {
    interface: String,
    group: Ipv4Addr,
    port: Option<u16>,
    ttl: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlAnnounce {
    count: Option<u32>,
    interval: Option<TomlDuration>,
}

/// Maps a TOML error to file, line and key.
fn toml_error(e: &toml::de::Error, text: &str, file: &Path) -> Error {
    let (line, key) = match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text.get(..start).unwrap_or(text).matches('\n').count() + 1;
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            let key = line_text.split('=').next().unwrap_or("").trim().to_owned();
            (line, key)
        }
        None => (1, String::new()),
    };
    Error::Config {
        file: file.to_owned(),
        line,
        key,
        message: e.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Failover;

    const TOML: &str = r#"
nodes = ["lb0", "lb1"]
preferred = "lb0"
keepalive = "200ms"
warntime = 0.5
deadtime = "1s"
initdead = 2
auto_failback = false
key = "secret"
ucast = [{ interface = "eth1", peer = "198.18.0.2" }, { interface = "eth1", peer = "198.18.0.3" }]
ping = ["198.18.0.1"]
resources = ["IPaddr::198.18.0.100/24/eth1", "sh::-c::true"]
announce = { count = 3, interval = "1200ms" }
"#;

    #[test]
    fn toml_form() {
        let c = HaConfig::from_toml(TOML, Path::new("ha.toml")).expect("parse");
        assert_eq!(c.timing.keepalive, Duration::from_millis(200));
        assert_eq!(c.timing.warntime, Duration::from_millis(500));
        assert_eq!(c.timing.deadtime, Duration::from_secs(1));
        assert_eq!(c.timing.initdead, Duration::from_secs(2));
        assert!(!c.auto_failback);
        assert_eq!(c.announce.count, 3);
        assert_eq!(c.resources.len(), 2);
        let n = c.node_config("lb1", 5).expect("node");
        assert_eq!(n.machine.peer, "lb0");
        assert_eq!(n.machine.ping_total, 1);
        assert_eq!(n.bind, "0.0.0.0:694".parse().expect("addr"));
        assert_eq!(n.bind_device.as_deref(), Some("eth1"));
        assert_eq!(n.peers.len(), 2);
        assert!(
            c.node_config("lb9", 5)
                .expect_err("unknown")
                .to_string()
                .contains("lb9")
        );
        let g = c.resource_group().expect("group");
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn toml_errors_name_file_line_and_key() {
        let e = HaConfig::from_toml(
            "nodes = [\"a\", \"b\"]\nkey = \"k\"\nkeepalive = \"soon\"\nucast = []\n",
            Path::new("ha.toml"),
        )
        .expect_err("bad duration")
        .to_string();
        assert!(
            e.starts_with("ha.toml:3: keepalive: bad duration \"soon\""),
            "{e}"
        );
        let e = HaConfig::from_toml(
            "nodes = [\"a\", \"b\"]\n\nbogus = 1\n",
            Path::new("ha.toml"),
        )
        .expect_err("unknown key")
        .to_string();
        assert!(
            e.starts_with("ha.toml:3: bogus: unknown field `bogus`"),
            "{e}"
        );
        let e = HaConfig::from_toml(
            "nodes = [\"a\", \"b\"]\nudpport = \"x\"\n",
            Path::new("ha.toml"),
        )
        .expect_err("bad port")
        .to_string();
        assert!(e.starts_with("ha.toml:2: udpport:"), "{e}");
        let e = HaConfig::from_toml("nodes = [\"a\"]\nkey = \"k\"\n", Path::new("ha.toml"))
            .expect_err("one node")
            .to_string();
        assert!(e.contains("exactly two nodes"), "{e}");
    }

    /// Arbitrary text never panics a parser: it parses or names what is wrong.
    #[test]
    fn garbage_never_panics() {
        let pieces = [
            "keepalive",
            "ucast",
            "mcast",
            "node",
            "ping",
            "IPaddr::",
            "/",
            "::",
            " ",
            "\n",
            "\\\n",
            "#",
            "=",
            "\"",
            "[",
            "]",
            "{",
            "}",
            "1",
            "500ms",
            "198.18.0.1",
            "é",
            "\u{1F600}",
            "auth",
            "sha1",
            "nodes",
            "key",
            ",",
            "eth0",
            "2001:2::1",
            "-",
            "99999999999999999999",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..(x % 24) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(pieces[(x % pieces.len() as u64) as usize]);
            }
            let f = Path::new("fuzz");
            let _ = HaCf::parse(&text, f);
            let _ = parse_haresources(&text, f);
            let _ = parse_authkeys(&text, f);
            let _ = HaConfig::from_toml(&text, f);
            let _ = parse_duration(&text);
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        }
    }

    #[test]
    fn heartbeat_files() {
        let d = std::env::temp_dir().join(format!("lb-ha-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("ha.cf"),
            "keepalive 200ms\ndeadtime 1\nwarntime 500ms\ninitdead 2\nucast eth1 198.18.0.2\nucast eth1 198.18.0.3\nnode lb0\nnode lb1\nrespawn hacluster ipfail\n",
        )
        .expect("write");
        std::fs::write(
            d.join("haresources"),
            "lb0 IPaddr::198.18.0.100/24/eth1 sh\n",
        )
        .expect("write");
        std::fs::write(d.join("authkeys"), "auth 1\n1 sha1 secret\n").expect("write");
        let c = HaConfig::from_heartbeat(
            &d.join("ha.cf"),
            &d.join("haresources"),
            &d.join("authkeys"),
        )
        .expect("files");
        assert_eq!(c.preferred.as_deref(), Some("lb0"));
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(
            c.resource_group().expect("group").name(),
            "IPaddr::198.18.0.100/24/eth1 sh"
        );
        std::fs::write(d.join("haresources"), "lb0 a\nlb1 b\n").expect("write");
        let e = HaConfig::from_heartbeat(
            &d.join("ha.cf"),
            &d.join("haresources"),
            &d.join("authkeys"),
        )
        .expect_err("two lines")
        .to_string();
        assert!(e.contains("haresources:2: lb1:"), "{e}");
        std::fs::write(d.join("haresources"), "lb0 no-such-script-lb-ha\n").expect("write");
        let c = HaConfig::from_heartbeat(
            &d.join("ha.cf"),
            &d.join("haresources"),
            &d.join("authkeys"),
        )
        .expect("parses");
        assert!(
            c.resource_group()
                .expect_err("missing")
                .to_string()
                .contains("no-such-script-lb-ha")
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
