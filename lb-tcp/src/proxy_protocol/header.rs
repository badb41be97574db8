//! Encoding and parsing of PROXY protocol headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// The version-2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version-1 line, CRLF included.
const V1_MAX: usize = 107;
/// The largest version-2 header we accept (fixed part plus addresses and TLVs).
const V2_MAX: usize = 16 + 4096;

/// Which PROXY protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text version.
    V1,
    /// The binary version.
    V2,
}

impl FromStr for ProxyVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "v1" | "1" => Ok(ProxyVersion::V1),
            "v2" | "2" => Ok(ProxyVersion::V2),
            other => Err(Error::ProxyHeader(format!(
                "unknown version {other:?}, expected v1 or v2"
            ))),
        }
    }
}

/// A PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// A proxied TCP connection from `source` to `destination`.
    Proxy {
        /// The original client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// No address information (v1 `UNKNOWN`, v2 `LOCAL` or an unsupported family): the
    /// receiver uses the connection's own addresses.
    Unknown,
}

/// Both addresses in one family: IPv4 when both can be, else IPv6 (v4 mapped).
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (a, b) = (canon(a), canon(b));
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() && b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

impl ProxyHeader {
    /// A header for a client connection from `source` to `destination`.
    pub fn new(source: SocketAddr, destination: SocketAddr) -> Self {
        ProxyHeader::Proxy {
            source,
            destination,
        }
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, version: ProxyVersion, out: &mut Vec<u8>) {
        match version {
            ProxyVersion::V1 => self.encode_v1(out),
            ProxyVersion::V2 => self.encode_v2(out),
        }
    }

    /// The encoded header as a new vector.
    pub fn to_vec(&self, version: ProxyVersion) -> Vec<u8> {
        let mut out = Vec::with_capacity(V1_MAX);
        self.encode(version, &mut out);
        out
    }

    fn encode_v1(&self, out: &mut Vec<u8>) {
        match *self {
            ProxyHeader::Proxy {
                source,
                destination,
            } => {
                let (s, d) = same_family(source, destination);
                let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                let line = format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                );
                out.extend_from_slice(line.as_bytes());
            }
            ProxyHeader::Unknown => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        }
    }

    fn encode_v2(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&V2_SIG);
        match *self {
            ProxyHeader::Proxy {
                source,
                destination,
            } => {
                out.push(0x21); // version 2, PROXY
                match same_family(source, destination) {
                    (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                        out.push(0x11); // AF_INET, STREAM
                        out.extend_from_slice(&12u16.to_be_bytes());
                        out.extend_from_slice(&s.ip().octets());
                        out.extend_from_slice(&d.ip().octets());
                    }
                    (s, d) => {
                        out.push(0x21); // AF_INET6, STREAM
                        out.extend_from_slice(&36u16.to_be_bytes());
                        out.extend_from_slice(&v6_octets(s.ip()));
                        out.extend_from_slice(&v6_octets(d.ip()));
                    }
                }
                let (s, d) = (source.port(), destination.port());
                out.extend_from_slice(&s.to_be_bytes());
                out.extend_from_slice(&d.to_be_bytes());
            }
            ProxyHeader::Unknown => {
                out.push(0x20); // version 2, LOCAL
                out.push(0x00); // AF_UNSPEC
                out.extend_from_slice(&0u16.to_be_bytes());
            }
        }
    }

    /// Parses a header at the start of `buf`.
    ///
    /// `Ok(Some((header, len)))`: a complete header of `len` bytes; `Ok(None)`: `buf` is
    /// a valid beginning, more bytes are needed; `Err`: not a valid header. Never panics,
    /// whatever the input.
    pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
        let n = buf.len().min(V2_SIG.len());
        if buf[..n] == V2_SIG[..n] {
            return if n < V2_SIG.len() {
                Ok(None)
            } else {
                parse_v2(buf)
            };
        }
        let n = buf.len().min(6);
        if buf[..n] == b"PROXY "[..n] {
            return parse_v1(buf);
        }
        Err(bad("no proxy protocol signature"))
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn bad(what: &str) -> Error {
    Error::ProxyHeader(what.to_string())
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(bad("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(bad("v1 line does not end in CRLF"));
    }
    let line = std::str::from_utf8(&window[..lf - 1]).map_err(|_| bad("v1 line is not ascii"))?;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let header = match parts.next() {
        Some("UNKNOWN") => ProxyHeader::Unknown,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut field = || {
                parts
                    .next()
                    .ok_or_else(|| bad("v1 line has too few fields"))
            };
            let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
            if parts.next().is_some() {
                return Err(bad("v1 line has too many fields"));
            }
            let ip = |s: &str| -> Result<IpAddr> {
                if family == "TCP4" {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6)
                }
                .map_err(|_| Error::ProxyHeader(format!("bad {family} address {s:?}")))
            };
            let port = |s: &str| -> Result<u16> {
                if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::ProxyHeader(format!("bad port {s:?}")));
                }
                s.parse()
                    .map_err(|_| Error::ProxyHeader(format!("bad port {s:?}")))
            };
            ProxyHeader::Proxy {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        Some(other) => return Err(Error::ProxyHeader(format!("unknown v1 family {other:?}"))),
        None => return Err(bad("v1 line has no family")),
    };
    Ok(Some((header, lf + 1)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Error::ProxyHeader(format!(
            "unsupported v2 version {}",
            ver_cmd >> 4
        )));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > V2_MAX {
        return Err(Error::ProxyHeader(format!(
            "v2 header of {len} bytes is too long"
        )));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let header = match ver_cmd & 0x0f {
        0 => ProxyHeader::Unknown,
        1 => match family >> 4 {
            1 if body.len() >= 12 => {
                let ip = |o: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        body[o],
                        body[o + 1],
                        body[o + 2],
                        body[o + 3],
                    ))
                };
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                ProxyHeader::Proxy {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            2 if body.len() >= 36 => {
                let ip = |o: usize| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&body[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(a))
                };
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                ProxyHeader::Proxy {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            1 | 2 => return Err(bad("v2 address block too short")),
            // AF_UNSPEC and AF_UNIX: no usable TCP addresses.
            _ => ProxyHeader::Unknown,
        },
        cmd => return Err(Error::ProxyHeader(format!("unknown v2 command {cmd}"))),
    };
    Ok(Some((header, 16 + len)))
}

/// Reads a PROXY header (v1 or v2) from a freshly accepted connection, waiting at most
/// `timeout`. Returns the header and any bytes read past it, which belong to the
/// client's stream and must be forwarded first.
pub async fn read_header(
    stream: &TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<(ProxyHeader, Vec<u8>)> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            stream.readable().await?;
            let n = match stream.try_read(&mut chunk) {
                Ok(0) => return Err(bad("connection closed before the header was complete")),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some((header, len)) = ProxyHeader::parse(&buf)? {
                return Ok((header, buf.split_off(len)));
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::ProxyHeaderTimeout(peer))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_matches_the_spec_example() {
        let h = ProxyHeader::new(sa("192.168.0.1:56324"), sa("192.168.0.11:443"));
        assert_eq!(
            h.to_vec(ProxyVersion::V1),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        let h6 = ProxyHeader::new(sa("[2001:db8::1]:1"), sa("192.0.2.1:80"));
        assert_eq!(
            h6.to_vec(ProxyVersion::V1),
            b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 80\r\n"
        );
        let mapped = ProxyHeader::new(sa("[::ffff:10.0.0.1]:5"), sa("10.0.0.2:6"));
        assert_eq!(
            mapped.to_vec(ProxyVersion::V1),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n"
        );
    }

    #[test]
    fn v2_layout() {
        let h = ProxyHeader::new(sa("1.2.3.4:256"), sa("5.6.7.8:80"));
        let v = h.to_vec(ProxyVersion::V2);
        assert_eq!(&v[..12], &V2_SIG);
        assert_eq!(&v[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&v[16..], &[1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 0, 80]);
        assert_eq!(
            ProxyHeader::Unknown.to_vec(ProxyVersion::V2)[12..],
            [0x20, 0, 0, 0]
        );
    }

    #[test]
    fn partial_and_bad_input() {
        let full = ProxyHeader::new(sa("1.2.3.4:1"), sa("5.6.7.8:2")).to_vec(ProxyVersion::V1);
        for cut in 0..full.len() {
            assert!(
                ProxyHeader::parse(&full[..cut]).unwrap().is_none(),
                "cut {cut}"
            );
        }
        assert!(ProxyHeader::parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(ProxyHeader::parse(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n").is_err());
        assert!(ProxyHeader::parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n").is_err());
        assert!(
            ProxyHeader::parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20)).is_err()
        );
        let mut v2 = ProxyHeader::Unknown.to_vec(ProxyVersion::V2);
        v2[12] = 0x31;
        assert!(ProxyHeader::parse(&v2).is_err());
    }

    #[test]
    fn v2_tlvs_are_skipped_and_length_reported() {
        let mut v = ProxyHeader::new(sa("1.2.3.4:1"), sa("5.6.7.8:2")).to_vec(ProxyVersion::V2);
        v[15] = 12 + 5;
        v.extend_from_slice(&[0x04, 0, 2, b'h', b'i', b'X']);
        let (h, len) = ProxyHeader::parse(&v).unwrap().unwrap();
        assert_eq!(len, 16 + 17);
        assert_eq!(h, ProxyHeader::new(sa("1.2.3.4:1"), sa("5.6.7.8:2")));
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ProxyHeader::parse(&data);
        }

        #[test]
        fn parse_never_panics_after_signatures(tail in proptest::collection::vec(any::<u8>(), 0..120), v2 in any::<bool>()) {
            let mut data = if v2 { V2_SIG.to_vec() } else { b"PROXY ".to_vec() };
            data.extend_from_slice(&tail);
            if let Ok(Some((_, len))) = ProxyHeader::parse(&data) {
                prop_assert!(len <= data.len());
            }
        }

        #[test]
        fn roundtrip(a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), p in any::<u16>(), q in any::<u16>(), v4 in any::<bool>(), two in any::<bool>()) {
            let (s, d) = if v4 {
                (SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])), p),
                 SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])), q))
            } else {
                (SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)).to_canonical(), p),
                 SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), q))
            };
            let version = if two { ProxyVersion::V2 } else { ProxyVersion::V1 };
            let mut bytes = ProxyHeader::new(s, d).to_vec(version);
            let len = bytes.len();
            bytes.extend_from_slice(b"rest");
            let (h, used) = ProxyHeader::parse(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, len);
            let (es, ed) = same_family(s, d);
            prop_assert_eq!(h, ProxyHeader::new(es, ed));
        }
    }
}
