//! Adding and removing interface addresses through rtnetlink.
//!
//! A small netlink client of our own instead of the `rtnetlink` or `neli` crates: lb-ha
//! needs exactly two requests (`RTM_NEWADDR`, `RTM_DELADDR`) with an acknowledgement, a
//! few dozen lines over a `NETLINK_ROUTE` socket from socket2, with no `unsafe` (the
//! kernel is the default destination of an unbound netlink socket) and without pulling
//! the async netlink stack (`netlink-proto`, `netlink-packet-*`, futures) into every
//! binary. Interface indexes come from `/sys/class/net/NAME/ifindex`.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::{Error, Result};

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NETLINK_ROUTE: i32 = 0;
const AF_NETLINK: i32 = 16;

static SEQ: AtomicU32 = AtomicU32::new(1);

/// The index of interface `name`.
pub(crate) fn if_index(name: &str) -> Result<u32> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::NoInterface(name.to_owned()));
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::NoInterface(name.to_owned()))
}

/// The hardware address of interface `name`.
pub(crate) fn if_mac(name: &str) -> Result<[u8; 6]> {
    if_index(name)?;
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .map_err(|e| Error::io(format!("reading the address of {name}"), e))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "interface {name} has no ethernet address ({:?})",
                    text.trim()
                ))
            })?;
    }
    Ok(mac)
}

/// Adds `addr/prefix` to interface index `ifindex`; an address already present is success.
/// IPv6 addresses are added without duplicate address detection, so they are usable at
/// once (the peer that held them is gone or has removed them).
pub(crate) fn add_address(ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    request(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        ifindex,
        addr,
        prefix,
    )
    .or_else(|e| {
        if e.raw_os_error() == Some(17) {
            Ok(()) // EEXIST
        } else {
            Err(e)
        }
    })
}

/// Removes `addr/prefix` from interface index `ifindex`; an absent address is success.
pub(crate) fn remove_address(ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    request(RTM_DELADDR, 0, ifindex, addr, prefix).or_else(|e| {
        if e.raw_os_error() == Some(99) || e.raw_os_error() == Some(19) {
            Ok(()) // EADDRNOTAVAIL, ENODEV
        } else {
            Err(e)
        }
    })
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn message(kind: u16, flags: u16, seq: u32, ifindex: u32, addr: IpAddr, prefix: u8) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct ifaddrmsg
    m.push(if addr.is_ipv4() { AF_INET } else { AF_INET6 });
    m.push(prefix);
    m.push(0); // flags
    m.push(0); // scope: universe
    m.extend_from_slice(&ifindex.to_ne_bytes());
    match addr {
        IpAddr::V4(a) => {
            attr(&mut m, IFA_LOCAL, &a.octets());
            attr(&mut m, IFA_ADDRESS, &a.octets());
            if prefix < 31 {
                let mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let bcast = u32::from(a) | mask;
                attr(&mut m, IFA_BROADCAST, &bcast.to_be_bytes());
            }
        }
        IpAddr::V6(a) => {
            attr(&mut m, IFA_ADDRESS, &a.octets());
            attr(&mut m, IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
        }
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

fn request(kind: u16, flags: u16, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    let mut sock = Socket::new(
        Domain::from(AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(NETLINK_ROUTE)),
    )?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    sock.write_all(&message(kind, flags, seq, ifindex, addr, prefix))?;
    let mut buf = vec![0u8; 8192];
    // Bounded: the kernel answers a request with one acknowledgement.
    for _ in 0..16 {
        let n = sock.read(&mut buf)?;
        let mut off = 0;
        while off + 16 <= n {
            let len =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let rseq =
                u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
            if len < 16 || off + len > n {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            if ty == NLMSG_ERROR && rseq == seq && len >= 20 {
                let code = i32::from_ne_bytes([
                    buf[off + 16],
                    buf[off + 17],
                    buf[off + 18],
                    buf[off + 19],
                ]);
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
            off += (len + 3) & !3;
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no netlink acknowledgement",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_message_layout() {
        let m = message(
            RTM_NEWADDR,
            NLM_F_CREATE,
            7,
            3,
            "198.18.0.100".parse().expect("ip"),
            24,
        );
        assert_eq!(
            m.len(),
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize
        );
        assert_eq!(m.len(), 16 + 8 + 3 * 8);
        assert_eq!(&m[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(&m[20..24], &3u32.to_ne_bytes());
        // broadcast attribute: 198.18.0.255
        assert_eq!(&m[m.len() - 4..], &[198, 18, 0, 255]);
    }

    #[test]
    fn unknown_interface_is_named() {
        let e = if_index("no-such-if0").expect_err("missing");
        assert!(e.to_string().contains("no-such-if0"));
        assert!(if_index("../etc").is_err());
        assert!(if_index("lo").is_ok());
    }
}
