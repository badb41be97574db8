//! Where a backend lives: a socket address, a host name resolved at use, or a Unix socket.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;

/// The address of a backend.
///
/// Parsed from `1.2.3.4:80`, `[2001:db8::1]:80`, `name.example:80` or `unix:/path/to/socket`;
/// [`Display`](fmt::Display) writes the same forms back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// An IPv4 or IPv6 socket address.
    Socket(SocketAddr),
    /// A host name and port, resolved each time a connection is made.
    Host {
        /// The host name.
        host: String,
        /// The TCP port.
        port: u16,
    },
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl Address {
    /// The socket address, when this is one.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Socket(a) => Some(*a),
            _ => None,
        }
    }

    /// The port, for socket and host addresses.
    pub fn port(&self) -> Option<u16> {
        match self {
            Address::Socket(a) => Some(a.port()),
            Address::Host { port, .. } => Some(*port),
            Address::Unix(_) => None,
        }
    }

    /// This address with another port (Unix sockets are returned unchanged).
    pub fn with_port(&self, port: u16) -> Address {
        match self {
            Address::Socket(a) => Address::Socket(SocketAddr::new(a.ip(), port)),
            Address::Host { host, .. } => Address::Host {
                host: host.clone(),
                port,
            },
            Address::Unix(p) => Address::Unix(p.clone()),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Socket(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(a) => write!(f, "{a}"),
            Address::Host { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn invalid(value: &str, reason: &'static str) -> Error {
    Error::InvalidAddress {
        value: value.to_owned(),
        reason,
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        })
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid(s, "empty unix socket path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Socket(a));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(invalid(s, "expected host:port, [ipv6]:port or unix:/path"));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(s, "port is not a number from 0 to 65535"))?;
        if host.starts_with('[') || host.contains(':') {
            return Err(invalid(
                s,
                "malformed IPv6 address (write it as [addr]:port)",
            ));
        }
        if host.parse::<IpAddr>().is_ok() {
            // Unreachable for valid IPv4 (handled above), kept for clarity of intent.
            return Err(invalid(s, "malformed address"));
        }
        if !valid_host(host) {
            return Err(invalid(
                s,
                "host name has characters a host name cannot have",
            ));
        }
        Ok(Address::Host {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_every_form() {
        for s in [
            "127.0.0.1:80",
            "[::1]:8080",
            "backend-1.example:443",
            "unix:/run/app.sock",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_input_naming_it() {
        for s in [
            "",
            "host",
            "host:notaport",
            "host:70000",
            "::1:80",
            "bad host:80",
            "unix:",
        ] {
            let e = s.parse::<Address>().unwrap_err();
            assert!(e.to_string().contains(&format!("{:?}", s.trim())), "{e}");
        }
    }
}
