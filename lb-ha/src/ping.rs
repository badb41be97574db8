//! Ping nodes (Heartbeat's ipfail): how many of a set of hosts answer ICMP echo.
//!
//! Every `keepalive`, an echo request goes to each target over a raw ICMP socket; a
//! target counts as reachable while its last reply is younger than `deadtime` (and during
//! the first `deadtime`, before any reply could be expected). The count is published on a
//! watch that the node feeds to its state machine.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, interval};

use crate::protocol::Timing;

fn raw_socket(v6: bool) -> std::io::Result<UdpSocket> {
    let s = if v6 {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?
    };
    s.set_nonblocking(true)?;
    // A raw socket is a datagram socket; tokio's UdpSocket only needs send_to/recv_from.
    UdpSocket::from_std(s.into())
}

/// The internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"lb-ha ping");
    if !v6 {
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// Parses an echo reply (IPv4: with the IP header) and returns its identifier.
fn reply_id(v6: bool, data: &[u8]) -> Option<u16> {
    let icmp = if v6 {
        data
    } else {
        let ihl = usize::from(data.first()? & 0x0f) * 4;
        data.get(ihl..)?
    };
    let want = if v6 { 129 } else { 0 };
    (icmp.len() >= 8 && icmp[0] == want).then(|| u16::from_be_bytes([icmp[4], icmp[5]]))
}

/// Starts probing `targets`; the number reachable is sent on `tx`.
pub(crate) fn spawn(targets: Vec<IpAddr>, timing: Timing, tx: watch::Sender<u16>) {
    tokio::spawn(async move {
        let id = std::process::id() as u16;
        let mut sockets = HashMap::new();
        for v6 in [false, true] {
            if targets.iter().any(|t| t.is_ipv6() == v6) {
                match raw_socket(v6) {
                    Ok(s) => {
                        sockets.insert(v6, std::sync::Arc::new(s));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open an icmp socket: ping nodes are not checked");
                        return;
                    }
                }
            }
        }
        let start = Instant::now();
        let last: std::sync::Arc<std::sync::Mutex<HashMap<IpAddr, Instant>>> = Default::default();
        for (&v6, s) in &sockets {
            let (s, last, targets) = (s.clone(), last.clone(), targets.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                loop {
                    // Stops with the node (the receiving end of the count is dropped).
                    let r = tokio::select! {
                        r = s.recv_from(&mut buf) => r,
                        () = tx.closed() => break,
                    };
                    let Ok((n, from)) = r else {
                        break;
                    };
                    if reply_id(v6, &buf[..n]) == Some(id) && targets.contains(&from.ip()) {
                        if let Ok(mut l) = last.lock() {
                            l.insert(from.ip(), Instant::now());
                        }
                    }
                }
            });
        }
        let mut tick = interval(timing.keepalive);
        let mut seq = 0u16;
        loop {
            tick.tick().await;
            seq = seq.wrapping_add(1);
            for t in &targets {
                if let Some(s) = sockets.get(&t.is_ipv6()) {
                    let _ = s
                        .send_to(&echo_request(t.is_ipv6(), id, seq), SocketAddr::new(*t, 0))
                        .await;
                }
            }
            let now = Instant::now();
            let ok = {
                let Ok(l) = last.lock() else { break };
                targets
                    .iter()
                    .filter(|t| match l.get(t) {
                        Some(at) => now.duration_since(*at) < timing.deadtime,
                        None => now.duration_since(start) < timing.deadtime,
                    })
                    .count() as u16
            };
            tx.send_if_modified(|v| {
                let changed = *v != ok;
                if changed {
                    tracing::warn!(reachable = ok, of = targets.len(), "ping nodes reachable");
                }
                *v = ok;
                changed
            });
            if tx.is_closed() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_checksum_verifies() {
        let m = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&m), 0);
        assert_eq!(&m[4..6], &[0x12, 0x34]);
    }

    #[test]
    fn reply_parsing() {
        let mut v4 = vec![0x45u8; 20];
        v4.extend_from_slice(&[0, 0, 0, 0, 0xab, 0xcd, 0, 1]);
        assert_eq!(reply_id(false, &v4), Some(0xabcd));
        assert_eq!(reply_id(true, &[129, 0, 0, 0, 0, 9, 0, 1]), Some(9));
        assert_eq!(reply_id(true, &[128, 0, 0, 0, 0, 9, 0, 1]), None);
        assert_eq!(reply_id(false, &[0x4f]), None);
    }
}
