//! A client address as a persistence key, kept inline (no allocation per pick).

use std::fmt;
use std::net::IpAddr;

/// A client key: an IPv4 (4 bytes) or IPv6 (16 bytes) address, possibly masked.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    buf: [u8; 16],
    len: u8,
}

impl ClientKey {
    /// The key of an address, unmasked. IPv4-mapped IPv6 addresses become IPv4.
    pub fn from_ip(ip: IpAddr) -> Self {
        ClientKey::masked(ip, 32, 128)
    }

    /// The key of an address with the low bits cleared: IPv4 keeps `v4_bits` bits, IPv6
    /// keeps `v6_bits` bits (IPVS persistence netmask grouping). Bit counts above the
    /// address size keep everything.
    pub fn masked(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let mut buf = [0u8; 16];
        let (len, bits) = match ip {
            IpAddr::V4(v4) => {
                buf[..4].copy_from_slice(&v4.octets());
                (4usize, v4_bits.min(32))
            }
            IpAddr::V6(v6) => {
                buf.copy_from_slice(&v6.octets());
                (16usize, v6_bits.min(128))
            }
        };
        let bits = usize::from(bits);
        for (i, byte) in buf.iter_mut().enumerate().take(len) {
            let keep = bits.saturating_sub(i * 8).min(8);
            *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        ClientKey {
            buf,
            len: len as u8,
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({:02x?})", self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_v4_and_v6_and_folds_mapped() {
        let k = ClientKey::masked("192.0.2.77".parse().unwrap(), 24, 128);
        assert_eq!(k.as_bytes(), &[192, 0, 2, 0]);
        let k = ClientKey::masked("::ffff:192.0.2.77".parse().unwrap(), 16, 128);
        assert_eq!(k.as_bytes(), &[192, 0, 0, 0]);
        let k = ClientKey::masked("2001:db8:1:2::5".parse().unwrap(), 32, 48);
        assert_eq!(
            k.as_bytes(),
            &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let k = ClientKey::masked("10.1.2.3".parse().unwrap(), 20, 128);
        assert_eq!(k.as_bytes(), &[10, 1, 0, 0]);
    }
}
