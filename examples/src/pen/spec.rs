//! pen's address and server-spec syntax.
//!
//! * listen address: `port`, `host:port`, `[v6]:port`, and pen's bare IPv6 form
//!   `::1:8080` where the **last** colon separates the port;
//! * server: `host[:port[:maxc[:hard[:weight[:prio]]]]]`, IPv6 hosts in brackets
//!   (`[::1]:80:10`); a bare IPv6 address without anything after it (`::1`) is accepted
//!   too and uses the listen port. Omitted port: the listen port; `maxc`/`hard` 0:
//!   unlimited; `weight` 0 or omitted: weight 1 (pen's weight 0 means "not weighted",
//!   lb-core's weight 0 would mean "quiescent"); `prio` 0 by default.
//!
//! Host names are resolved once, at start (as pen does); a name that does not resolve,
//! a port that is not a number in 1..=65535 or a limit that is not a number is an error
//! naming the value (pen 0.34 takes `host:notaport` and hangs).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// A parsed server spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) max: Option<u32>,
    pub(crate) hard: Option<u32>,
    pub(crate) weight: u32,
    pub(crate) prio: u32,
}

/// Where to listen: a socket address, or a bare port (dual stack on all addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenSpec {
    Port(u16),
    Addr(SocketAddr),
}

pub(crate) fn parse_port(s: &str, what: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "bad port {s:?} in {what}: expected a number 1-65535"
        )),
    }
}

fn resolve(host: &str, port: u16, what: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.is_empty() {
        return Err(format!("empty host in {what}"));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?} in {what}: {e}"))?
        .next()
        .ok_or_else(|| format!("host {host:?} in {what} has no address"))
}

/// Splits `host:port` in pen's way: `[v6]:port`, or the last colon separates the port.
pub(crate) fn parse_host_port(s: &str, what: &str) -> Result<SocketAddr, String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {what} {s:?}"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("missing port after ']' in {what} {s:?}"))?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("bad IPv6 address {host:?} in {what}"))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), parse_port(port, what)?));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("missing port in {what} {s:?}: expected host:port"))?;
    let port = parse_port(port, what)?;
    resolve(host, port, what)
}

/// The listen argument.
pub(crate) fn parse_listen(s: &str) -> Result<ListenSpec, String> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ListenSpec::Port(parse_port(s, "listen address")?));
    }
    if s.starts_with('/') {
        return Err(format!(
            "listening on a unix socket ({s}) is not supported by lb-pen"
        ));
    }
    parse_host_port(s, "listen address").map(ListenSpec::Addr)
}

/// One server spec; `default_port` is the listen port.
pub(crate) fn parse_server(s: &str, default_port: u16) -> Result<ServerSpec, String> {
    let what = format!("server {s:?}");
    let (host, rest): (String, Vec<&str>) = if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {what}"))?;
        let rest = match after {
            "" => Vec::new(),
            a => a
                .strip_prefix(':')
                .ok_or_else(|| format!("expected ':' after ']' in {what}"))?
                .split(':')
                .collect(),
        };
        (host.to_string(), rest)
    } else if s.parse::<Ipv6Addr>().is_ok() {
        (s.to_string(), Vec::new())
    } else {
        let mut parts = s.split(':');
        let host = parts.next().unwrap_or_default().to_string();
        (host, parts.collect())
    };
    if rest.len() > 5 {
        return Err(format!(
            "too many fields in {what}: expected host:port:maxc:hard:weight:prio (IPv6 hosts in brackets)"
        ));
    }
    let port = match rest.first() {
        Some(p) => parse_port(p, &what)?,
        None => default_port,
    };
    let num = |i: usize, name: &str| -> Result<u32, String> {
        match rest.get(i) {
            None => Ok(0),
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| format!("bad {name} {v:?} in {what}: expected a number")),
        }
    };
    let (max, hard, weight, prio) = (
        num(1, "maxc")?,
        num(2, "hard")?,
        num(3, "weight")?,
        num(4, "prio")?,
    );
    let addr = resolve(&host, port, &what)?;
    let limit = |n: u32| (n > 0).then_some(n);
    Ok(ServerSpec {
        addr,
        max: limit(max),
        hard: limit(hard),
        weight: weight.max(1),
        prio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("8080"), Ok(ListenSpec::Port(8080)));
        assert_eq!(
            parse_listen("127.0.0.1:8080"),
            Ok(ListenSpec::Addr(sa("127.0.0.1:8080")))
        );
        assert_eq!(
            parse_listen("[::]:8080"),
            Ok(ListenSpec::Addr(sa("[::]:8080")))
        );
        assert_eq!(
            parse_listen("::1:8080"),
            Ok(ListenSpec::Addr(sa("[::1]:8080")))
        );
        assert_eq!(
            parse_listen(":::8080"),
            Ok(ListenSpec::Addr(sa("[::]:8080")))
        );
        assert!(
            parse_listen("127.0.0.1:notaport")
                .unwrap_err()
                .contains("notaport")
        );
        assert!(parse_listen("0").is_err());
        assert!(parse_listen("70000").is_err());
    }

    #[test]
    fn server_forms() {
        let s = parse_server("127.0.0.1:81:10:20:3:1", 80).unwrap();
        assert_eq!(
            s,
            ServerSpec {
                addr: sa("127.0.0.1:81"),
                max: Some(10),
                hard: Some(20),
                weight: 3,
                prio: 1
            }
        );
        let d = parse_server("127.0.0.1", 80).unwrap();
        assert_eq!((d.addr, d.max, d.weight), (sa("127.0.0.1:80"), None, 1));
        assert_eq!(parse_server("[::1]:81:5", 80).unwrap().addr, sa("[::1]:81"));
        assert_eq!(parse_server("::1", 80).unwrap().addr, sa("[::1]:80"));
        assert_eq!(parse_server("localhost:82", 80).unwrap().addr.port(), 82);
        for bad in [
            "127.0.0.1:notaport",
            "127.0.0.1:80:x",
            "1.2.3.4:1:2:3:4:5:6",
            "[::1:80",
            "no-such-host.invalid:80",
        ] {
            let e = parse_server(bad, 80).unwrap_err();
            assert!(e.contains(bad) || e.contains("no-such-host"), "{bad}: {e}");
        }
    }
}
