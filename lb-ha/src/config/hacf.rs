//! Heartbeat's `ha.cf`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use super::duration::parse_duration;
use crate::{Error, Result};

/// One `ucast IFACE PEER` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ucast {
    /// The interface.
    pub interface: String,
    /// The peer's address.
    pub peer: IpAddr,
}

/// One `mcast IFACE GROUP PORT TTL LOOP` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mcast {
    /// The interface.
    pub interface: String,
    /// The group.
    pub group: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The TTL.
    pub ttl: u32,
}

/// The directives of an `ha.cf` that lb-ha uses. Absent directives take Heartbeat's
/// defaults (keepalive 2 s, warntime 10 s, deadtime 30 s, initdead 120 s, udpport 694,
/// auto_failback on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaCf {
    /// `keepalive`.
    pub keepalive: Duration,
    /// `warntime`.
    pub warntime: Duration,
    /// `deadtime`.
    pub deadtime: Duration,
    /// `initdead`.
    pub initdead: Duration,
    /// `udpport`.
    pub udpport: u16,
    /// `auto_failback on|off` (`legacy` is taken as `on`).
    pub auto_failback: bool,
    /// `ucast` lines.
    pub ucast: Vec<Ucast>,
    /// `mcast` lines.
    pub mcast: Vec<Mcast>,
    /// `node` names, in order.
    pub nodes: Vec<String>,
    /// `ping` nodes.
    pub ping: Vec<IpAddr>,
    /// Warnings about ignored directives (`respawn`, logging), with file and line.
    pub warnings: Vec<String>,
}

impl Default for HaCf {
    fn default() -> Self {
        HaCf {
            keepalive: Duration::from_secs(2),
            warntime: Duration::from_secs(10),
            deadtime: Duration::from_secs(30),
            initdead: Duration::from_secs(120),
            udpport: crate::DEFAULT_PORT,
            auto_failback: true,
            ucast: Vec::new(),
            mcast: Vec::new(),
            nodes: Vec::new(),
            ping: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Directives accepted and ignored with a warning: they do not change what lb-ha does.
const IGNORED: &[&str] = &[
    "respawn",
    "logfile",
    "debugfile",
    "logfacility",
    "use_logd",
    "debug",
];

impl HaCf {
    /// Reads and parses an `ha.cf` file.
    pub fn from_file(path: &Path) -> Result<HaCf> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        HaCf::parse(&text, path)
    }

    /// Parses `ha.cf` text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<HaCf> {
        let mut cf = HaCf::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let Some(key) = words.next() else { continue };
            let args: Vec<&str> = words.collect();
            let err = |message: String| Error::Config {
                file: file.to_owned(),
                line,
                key: key.to_owned(),
                message,
            };
            let one = || -> Result<&str> {
                match args.as_slice() {
                    [v] => Ok(*v),
                    _ => Err(err(format!(
                        "expected one value, found {:?}",
                        args.join(" ")
                    ))),
                }
            };
            let duration =
                || -> Result<Duration> { parse_duration(one()?).map_err(|e| err(e.to_string())) };
            match key {
                "keepalive" => cf.keepalive = duration()?,
                "warntime" => cf.warntime = duration()?,
                "deadtime" => cf.deadtime = duration()?,
                "initdead" => cf.initdead = duration()?,
                "udpport" => {
                    let v = one()?;
                    cf.udpport = v.parse().map_err(|_| err(format!("bad port {v:?}")))?;
                }
                "auto_failback" => {
                    cf.auto_failback = match one()? {
                        "on" | "yes" | "true" | "legacy" => true,
                        "off" | "no" | "false" => false,
                        v => return Err(err(format!("expected on or off, found {v:?}"))),
                    }
                }
                "ucast" => match args.as_slice() {
                    [iface, peers @ ..] if !peers.is_empty() => {
                        for p in peers {
                            let peer = p
                                .parse()
                                .map_err(|_| err(format!("bad peer address {p:?}")))?;
                            cf.ucast.push(Ucast {
                                interface: (*iface).to_owned(),
                                peer,
                            });
                        }
                    }
                    _ => return Err(err("expected `ucast INTERFACE PEER-ADDRESS`".to_owned())),
                },
                "mcast" => match args.as_slice() {
                    [iface, group, port, ttl, _loop] => {
                        let group: Ipv4Addr = group
                            .parse()
                            .map_err(|_| err(format!("bad group {group:?}")))?;
                        if !group.is_multicast() {
                            return Err(err(format!("{group} is not a multicast group")));
                        }
                        cf.mcast.push(Mcast {
                            interface: (*iface).to_owned(),
                            group,
                            port: port
                                .parse()
                                .map_err(|_| err(format!("bad port {port:?}")))?,
                            ttl: ttl.parse().map_err(|_| err(format!("bad ttl {ttl:?}")))?,
                        });
                    }
                    _ => {
                        return Err(err(
                            "expected `mcast INTERFACE GROUP PORT TTL LOOP`".to_owned()
                        ));
                    }
                },
                "node" => {
                    if args.is_empty() {
                        return Err(err("expected one or more node names".to_owned()));
                    }
                    cf.nodes.extend(args.iter().map(|s| (*s).to_owned()));
                }
                "ping" => {
                    if args.is_empty() {
                        return Err(err("expected one or more addresses".to_owned()));
                    }
                    for a in &args {
                        cf.ping
                            .push(a.parse().map_err(|_| err(format!("bad address {a:?}")))?);
                    }
                }
                k if IGNORED.contains(&k) => {
                    let w = format!("{}:{line}: {k} is ignored by lb-ha", file.display());
                    tracing::warn!("{w}");
                    cf.warnings.push(w);
                }
                "bcast" => {
                    return Err(err(
                        "broadcast beats are not supported: use `ucast INTERFACE PEER` or `mcast`"
                            .to_owned(),
                    ));
                }
                _ => return Err(err("unknown directive".to_owned())),
            }
        }
        Ok(cf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TALK: &str = "\
# from the talk, with the peers' addresses
ucast eth1 198.18.0.2
ucast eth1 198.18.0.3
keepalive 2
warntime 10
deadtime 30
initdead 120
udpport 694
auto_failback on
node lb0
node lb1
respawn hacluster /usr/lib64/heartbeat/ipfail
";

    #[test]
    fn parses_the_talks_file() {
        let cf = HaCf::parse(TALK, Path::new("ha.cf")).expect("parse");
        assert_eq!(cf.keepalive, Duration::from_secs(2));
        assert_eq!(cf.warntime, Duration::from_secs(10));
        assert_eq!(cf.deadtime, Duration::from_secs(30));
        assert_eq!(cf.initdead, Duration::from_secs(120));
        assert_eq!(cf.udpport, 694);
        assert!(cf.auto_failback);
        assert_eq!(cf.nodes, ["lb0", "lb1"]);
        assert_eq!(cf.ucast.len(), 2);
        assert_eq!(
            cf.ucast[1].peer,
            "198.18.0.3".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(cf.warnings, ["ha.cf:12: respawn is ignored by lb-ha"]);
    }

    #[test]
    fn millisecond_forms_mcast_ping() {
        let cf = HaCf::parse(
            "keepalive 200ms\ndeadtime 1\nauto_failback off\nmcast eth0 239.0.0.1 694 1 0\nping 198.18.0.1 198.18.0.254\nnode a b\n",
            Path::new("x"),
        )
        .expect("parse");
        assert_eq!(cf.keepalive, Duration::from_millis(200));
        assert_eq!(cf.deadtime, Duration::from_secs(1));
        assert!(!cf.auto_failback);
        assert_eq!(cf.mcast[0].group, Ipv4Addr::new(239, 0, 0, 1));
        assert_eq!(cf.ping.len(), 2);
        assert_eq!(cf.nodes, ["a", "b"]);
    }

    #[test]
    fn errors_name_file_line_and_directive() {
        let cases = [
            ("node a\nbogus 1\n", "ha.cf:2: bogus: unknown directive"),
            (
                "keepalive soon\n",
                "ha.cf:1: keepalive: bad duration \"soon\"",
            ),
            (
                "ucast eth0\n",
                "ha.cf:1: ucast: expected `ucast INTERFACE PEER-ADDRESS`",
            ),
            (
                "ucast eth0 not-an-ip\n",
                "ha.cf:1: ucast: bad peer address \"not-an-ip\"",
            ),
            (
                "\n\nauto_failback maybe\n",
                "ha.cf:3: auto_failback: expected on or off, found \"maybe\"",
            ),
            ("udpport 70000\n", "ha.cf:1: udpport: bad port \"70000\""),
            (
                "bcast eth0\n",
                "ha.cf:1: bcast: broadcast beats are not supported",
            ),
            (
                "mcast eth0 10.0.0.1 694 1 0\n",
                "ha.cf:1: mcast: 10.0.0.1 is not a multicast group",
            ),
        ];
        for (text, want) in cases {
            let e = HaCf::parse(text, Path::new("ha.cf"))
                .expect_err(text)
                .to_string();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
    }
}
