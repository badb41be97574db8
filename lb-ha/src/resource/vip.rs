//! A virtual IP address: added to an interface, announced to the neighbours.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::failover::{BoxFuture, Failover};
use crate::sys::packet::PacketSocket;
use crate::{Error, Result, netlink};

/// How a [`VirtualIp`] announces itself after it is added.
///
/// Linux ignores a second neighbour update within `locktime` (1 s by default) of the
/// previous one, so a single burst can be lost on a client that just refreshed its entry;
/// the announcement is sent at once and then repeated `count - 1` times, `interval` apart,
/// so that it spans more than a locktime (Heartbeat's `send_arp` does the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// How many announcements in all (at least one is sent).
    pub count: u32,
    /// Time between two announcements.
    pub interval: Duration,
}

impl Default for Announce {
    /// Five announcements 500 ms apart: 2 s, twice the default locktime.
    fn default() -> Self {
        Announce {
            count: 5,
            interval: Duration::from_millis(500),
        }
    }
}

/// A virtual IP: Heartbeat's `IPaddr::ADDR/PREFIX/IFACE`.
///
/// Promote adds the address to the interface through rtnetlink (an address already there
/// is fine) and announces it: a gratuitous ARP request for IPv4 (sender and target are
/// the address, broadcast) through an `AF_PACKET` socket, an unsolicited neighbour
/// advertisement (override flag set, to all nodes `ff02::1`) for IPv6, repeated as set by
/// [`Announce`]. Demote stops the announcements and removes the address. Needs
/// CAP_NET_ADMIN and CAP_NET_RAW.
#[derive(Debug)]
pub struct VirtualIp {
    name: String,
    addr: IpAddr,
    prefix: u8,
    interface: String,
    announce: Announce,
    announcer: Mutex<Option<JoinHandle<()>>>,
}

impl VirtualIp {
    /// The address `addr/prefix` on `interface`.
    pub fn new(addr: IpAddr, prefix: u8, interface: impl Into<String>) -> Result<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::Invalid(format!(
                "prefix /{prefix} is too long for {addr}"
            )));
        }
        let interface = interface.into();
        Ok(VirtualIp {
            name: format!("IPaddr::{addr}/{prefix}/{interface}"),
            addr,
            prefix,
            interface,
            announce: Announce::default(),
            announcer: Mutex::new(None),
        })
    }

    /// Sets how the address is announced.
    pub fn with_announce(mut self, announce: Announce) -> Self {
        self.announce = announce;
        self
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The interface.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    async fn add(&self) -> Result<()> {
        let index = netlink::if_index(&self.interface)?;
        let (addr, prefix) = (self.addr, self.prefix);
        let op = format!("add address {addr}/{prefix} on {}", self.interface);
        blocking(move || netlink::add_address(index, addr, prefix))
            .await
            .map_err(|source| Error::Netlink { op, source })?;
        let mut announcer = self.announcer.lock().await;
        if let Some(old) = announcer.take() {
            old.abort();
        }
        let mac = netlink::if_mac(&self.interface)?;
        let a = Announcement { addr, mac, index };
        // The first announcement is sent before promote returns, so it is not delayed by
        // the scheduler. A failure (link down, no CAP_NET_RAW) is logged, not fatal: the
        // address is in place and answers ARP / neighbour solicitations, and the repeats
        // may still get through once the link is up.
        let first = a.clone();
        if let Err(e) = blocking(move || first.send()).await {
            tracing::warn!(%addr, interface = %self.interface, error = %e, "announcing the address");
        }
        let Announce { count, interval } = self.announce;
        let iface = self.interface.clone();
        *announcer = Some(tokio::spawn(async move {
            for _ in 1..count {
                tokio::time::sleep(interval).await;
                let a = a.clone();
                if let Err(e) = blocking(move || a.send()).await {
                    tracing::warn!(%addr, interface = %iface, error = %e, "announcing the address");
                }
            }
        }));
        tracing::info!(%addr, prefix, interface = %self.interface, "virtual ip added and announced");
        Ok(())
    }

    async fn remove(&self) -> Result<()> {
        if let Some(a) = self.announcer.lock().await.take() {
            a.abort();
        }
        let index = match netlink::if_index(&self.interface) {
            Ok(i) => i,
            // No interface: no address to remove.
            Err(Error::NoInterface(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let (addr, prefix) = (self.addr, self.prefix);
        let op = format!("remove address {addr}/{prefix} from {}", self.interface);
        blocking(move || netlink::remove_address(index, addr, prefix))
            .await
            .map_err(|source| Error::Netlink { op, source })?;
        tracing::info!(%addr, interface = %self.interface, "virtual ip removed");
        Ok(())
    }
}

impl Failover for VirtualIp {
    fn name(&self) -> &str {
        &self.name
    }

    fn promote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.add())
    }

    fn demote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.remove())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("blocking task failed: {e}"))))
}

#[derive(Debug, Clone)]
struct Announcement {
    addr: IpAddr,
    mac: [u8; 6],
    index: u32,
}

impl Announcement {
    fn send(&self) -> std::io::Result<()> {
        match self.addr {
            IpAddr::V4(a) => {
                PacketSocket::open(self.index)?.send(&garp_frame(self.mac, a.octets()))
            }
            IpAddr::V6(a) => send_na(a, self.mac, self.index),
        }
    }
}

/// A gratuitous ARP request: broadcast, sender and target protocol address both `ip`.
pub(crate) fn garp_frame(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // ethernet, ipv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip);
    f.resize(60, 0); // minimum ethernet frame without FCS
    f
}

/// The ICMPv6 body of an unsolicited neighbour advertisement for `target` (RFC 4861
/// 4.4: solicited flag clear, override flag set, target link-layer address option).
/// The kernel fills the checksum of raw ICMPv6 sockets.
pub(crate) fn na_message(target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&mac);
    m
}

fn send_na(target: Ipv6Addr, mac: [u8; 6], index: u32) -> std::io::Result<()> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.set_multicast_hops_v6(255)?;
    s.set_multicast_if_v6(index)?;
    s.bind(&SocketAddr::new(target.into(), 0).into())?;
    let all_nodes = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)), 0);
    s.send_to(&na_message(target, mac), &all_nodes.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = garp_frame(mac, [198, 18, 0, 100]);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]); // request
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[198, 18, 0, 100]);
        assert_eq!(&f[38..42], &[198, 18, 0, 100]);
    }

    #[test]
    fn na_layout() {
        let t: Ipv6Addr = "2001:2::100".parse().expect("ip");
        let m = na_message(t, [2, 0, 0, 0, 0, 1]);
        assert_eq!(m.len(), 32);
        assert_eq!(m[0], 136);
        assert_eq!(m[4], 0x20); // override, not solicited
        assert_eq!(&m[8..24], &t.octets());
        assert_eq!(&m[24..26], &[2, 1]);
    }

    #[test]
    fn prefix_is_checked() {
        assert!(VirtualIp::new("198.18.0.1".parse().expect("ip"), 33, "eth0").is_err());
        let v = VirtualIp::new("198.18.0.1".parse().expect("ip"), 24, "eth0").expect("vip");
        assert_eq!(v.name(), "IPaddr::198.18.0.1/24/eth0");
    }
}
