//! Heartbeat v1's `haresources`.

use std::net::IpAddr;
use std::path::Path;

use crate::{Error, Result};

/// One resource of a `haresources` line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceSpec {
    /// `IPaddr::ADDR/PREFIX/IFACE` (also `IPaddr2::`, `IPv6addr::`): a virtual IP.
    Ip {
        /// The address.
        addr: IpAddr,
        /// The prefix length.
        prefix: u8,
        /// The interface.
        interface: String,
    },
    /// `NAME` or `NAME::ARG1::ARG2`: a script run as `NAME ARG1 ARG2 start|stop|status`.
    Script {
        /// The script's name (searched in the resource directories, then `PATH`) or path.
        name: String,
        /// Arguments before the action.
        args: Vec<String>,
    },
}

impl ResourceSpec {
    /// Parses one resource word.
    pub fn parse(word: &str) -> std::result::Result<ResourceSpec, String> {
        if let Some((name, spec)) = word.split_once("::") {
            if matches!(name, "IPaddr" | "IPaddr2" | "IPv6addr") {
                // The rest is one field: an IPv6 address contains `::` itself.
                return parse_ip(spec).map_err(|m| format!("{m} in {word:?}"));
            }
        }
        let mut parts = word.split("::");
        let name = parts.next().unwrap_or("");
        let args: Vec<String> = parts.map(str::to_owned).collect();
        if name.is_empty() {
            return Err(format!("empty resource name in {word:?}"));
        }
        if matches!(name, "IPaddr" | "IPaddr2" | "IPv6addr") {
            return Err(format!(
                "expected {name}::ADDRESS/PREFIX/INTERFACE, found {word:?}"
            ));
        }
        // A bare address is Heartbeat's shorthand for IPaddr::ADDRESS.
        if args.is_empty() && name.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "{word:?} needs a prefix and an interface: IPaddr::{word}/PREFIX/INTERFACE"
            ));
        }
        Ok(ResourceSpec::Script {
            name: name.to_owned(),
            args,
        })
    }
}

fn parse_ip(spec: &str) -> std::result::Result<ResourceSpec, String> {
    let mut f = spec.split('/');
    let addr = f.next().unwrap_or("");
    let addr: IpAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let (Some(prefix), Some(interface)) = (f.next(), f.next()) else {
        return Err("expected ADDRESS/PREFIX/INTERFACE".to_owned());
    };
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("bad prefix {prefix:?}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("prefix /{prefix} too long for {addr}"));
    }
    if interface.is_empty() {
        return Err("empty interface".to_owned());
    }
    // A fourth field (broadcast address) is accepted and ignored: the kernel derives it.
    Ok(ResourceSpec::Ip {
        addr,
        prefix,
        interface: interface.to_owned(),
    })
}

/// One `haresources` line: the preferred node and its resources, in promote order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLine {
    /// The node that owns the group when both are up.
    pub node: String,
    /// The resources.
    pub resources: Vec<ResourceSpec>,
    /// The (first) line number in the file.
    pub line: usize,
}

/// Parses `haresources` text (comments with `#`, continuation lines ending in `\`).
pub fn parse_haresources(text: &str, file: &Path) -> Result<Vec<ResourceLine>> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut first_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("");
        if pending.is_empty() {
            first_line = i + 1;
        }
        let trimmed = content.trim_end();
        if let Some(cont) = trimmed.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let logical = std::mem::take(&mut pending);
        let mut words = logical.split_whitespace();
        let Some(node) = words.next() else { continue };
        let mut resources = Vec::new();
        for w in words {
            resources.push(ResourceSpec::parse(w).map_err(|message| Error::Config {
                file: file.to_owned(),
                line: first_line,
                key: w.to_owned(),
                message,
            })?);
        }
        out.push(ResourceLine {
            node: node.to_owned(),
            resources,
            line: first_line,
        });
    }
    if !pending.trim().is_empty() {
        return Err(Error::Config {
            file: file.to_owned(),
            line: first_line,
            key: "\\".to_owned(),
            message: "the last line ends with a continuation".to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talk_form_and_ip_form() {
        let lines = parse_haresources(
            "# comment\nlb0 IPaddr::198.18.0.100/24/eth1 pen \\\n   httpd::extra\n",
            Path::new("haresources"),
        )
        .expect("parse");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].node, "lb0");
        assert_eq!(lines[0].line, 2);
        assert_eq!(
            lines[0].resources,
            [
                ResourceSpec::Ip {
                    addr: "198.18.0.100".parse().expect("ip"),
                    prefix: 24,
                    interface: "eth1".into()
                },
                ResourceSpec::Script {
                    name: "pen".into(),
                    args: vec![]
                },
                ResourceSpec::Script {
                    name: "httpd".into(),
                    args: vec!["extra".into()]
                },
            ]
        );
        let talk = parse_haresources("lb0 pen httpd\n", Path::new("h")).expect("talk");
        assert_eq!(talk[0].resources.len(), 2);
        let v6 = ResourceSpec::parse("IPv6addr::2001:2::100/64/eth0").expect("v6");
        assert!(matches!(v6, ResourceSpec::Ip { prefix: 64, .. }));
    }

    #[test]
    fn errors_name_file_line_and_resource() {
        let e = parse_haresources(
            "\nlb0 IPaddr::198.18.0.300/24/eth0\n",
            Path::new("haresources"),
        )
        .expect_err("bad ip")
        .to_string();
        assert_eq!(
            e,
            "haresources:2: IPaddr::198.18.0.300/24/eth0: bad address \"198.18.0.300\" in \"IPaddr::198.18.0.300/24/eth0\""
        );
        let e =
            parse_haresources("lb0 IPaddr::198.18.0.1\n", Path::new("h")).expect_err("no prefix");
        assert!(e.to_string().contains("ADDRESS/PREFIX/INTERFACE"), "{e}");
        let e = parse_haresources("lb0 198.18.0.1\n", Path::new("h")).expect_err("bare");
        assert!(
            e.to_string()
                .contains("IPaddr::198.18.0.1/PREFIX/INTERFACE"),
            "{e}"
        );
        let e = parse_haresources("lb0 IPaddr::198.18.0.1/33/eth0\n", Path::new("h"))
            .expect_err("prefix");
        assert!(e.to_string().contains("/33"), "{e}");
        assert!(parse_haresources("lb0 pen \\\n", Path::new("h")).is_err());
    }
}
