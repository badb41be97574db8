//! The beat: wire format, encoding and authenticated decoding.

use super::auth::{Key, TAG_LEN};
use super::machine::NodeState;
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"LBHA";
const VERSION: u8 = 1;
const KIND_BEAT: u8 = 0;
/// Bytes before the name: magic, version, kind, epoch, seq, state, ping ok, ping total,
/// name length.
const HEADER: usize = 4 + 1 + 1 + 8 + 8 + 1 + 2 + 2 + 1;

/// One heartbeat, as sent by a node every `keepalive`.
///
/// Wire format (big endian): `"LBHA" version:u8=1 kind:u8=0 epoch:u64 seq:u64 state:u8
/// ping_ok:u16 ping_total:u16 name_len:u8 name tag[32]`, where `tag` is HMAC-SHA256 of
/// everything before it under the pair's shared key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The sender's node name (`uname -n` in Heartbeat).
    pub node: String,
    /// The sender's generation: fixed at start, larger after a restart.
    pub epoch: u64,
    /// Grows by one with every beat the sender sends in this epoch.
    pub seq: u64,
    /// The sender's state.
    pub state: NodeState,
    /// How many of the sender's ping nodes answer.
    pub ping_ok: u16,
    /// How many ping nodes the sender has.
    pub ping_total: u16,
}

impl Beat {
    /// Encodes and signs the beat.
    pub fn encode(&self, key: &Key) -> Vec<u8> {
        let name = self.node.as_bytes();
        let name = &name[..name.len().min(255)];
        let mut out = Vec::with_capacity(HEADER + name.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(KIND_BEAT);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(self.state.to_wire());
        out.extend_from_slice(&self.ping_ok.to_be_bytes());
        out.extend_from_slice(&self.ping_total.to_be_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        let tag = key.sign(&[&out]);
        out.extend_from_slice(&tag);
        out
    }

    /// Decodes a datagram, checking its tag. `from` names the sender in errors.
    ///
    /// Returns [`Error::Malformed`] for something that is not a beat and [`Error::Auth`]
    /// when the tag does not match (wrong key or tampered).
    pub fn decode(buf: &[u8], key: &Key, from: &str) -> Result<Beat> {
        if buf.len() < HEADER + TAG_LEN || &buf[..4] != MAGIC {
            return Err(Error::Malformed(format!(
                "{} bytes from {from} are not a beat",
                buf.len()
            )));
        }
        if buf[4] != VERSION || buf[5] != KIND_BEAT {
            return Err(Error::Malformed(format!(
                "unsupported beat version {} kind {} from {from}",
                buf[4], buf[5]
            )));
        }
        let name_len = buf[HEADER - 1] as usize;
        if buf.len() != HEADER + name_len + TAG_LEN {
            return Err(Error::Malformed(format!(
                "beat from {from} has length {} for a name of {name_len} bytes",
                buf.len()
            )));
        }
        let (body, tag) = buf.split_at(HEADER + name_len);
        if !key.verify(&[body], tag) {
            return Err(Error::Auth(from.to_owned()));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let u16_at = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
        let state = NodeState::from_wire(body[22]).ok_or_else(|| {
            Error::Malformed(format!("unknown state {} in beat from {from}", body[22]))
        })?;
        let node = std::str::from_utf8(&body[HEADER..])
            .map_err(|_| Error::Malformed(format!("node name from {from} is not utf-8")))?
            .to_owned();
        Ok(Beat {
            node,
            epoch: u64_at(6),
            seq: u64_at(14),
            state,
            ping_ok: u16_at(23),
            ping_total: u16_at(25),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat() -> Beat {
        Beat {
            node: "lb0".into(),
            epoch: 1_700_000_000_000,
            seq: 42,
            state: NodeState::Active,
            ping_ok: 1,
            ping_total: 2,
        }
    }

    #[test]
    fn round_trip() {
        let k = Key::new("k");
        let b = beat();
        assert_eq!(Beat::decode(&b.encode(&k), &k, "x").expect("decode"), b);
    }

    #[test]
    fn wrong_key_and_tampering_are_rejected() {
        let b = beat().encode(&Key::new("k"));
        assert!(matches!(
            Beat::decode(&b, &Key::new("other"), "x"),
            Err(Error::Auth(_))
        ));
        let mut t = b.clone();
        t[21] ^= 1; // sequence number
        assert!(matches!(
            Beat::decode(&t, &Key::new("k"), "x"),
            Err(Error::Auth(_))
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let k = Key::new("k");
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            assert!(Beat::decode(&junk, &k, "x").is_err());
        }
        let mut b = beat().encode(&k);
        b.truncate(b.len() - 1);
        assert!(matches!(
            Beat::decode(&b, &k, "x"),
            Err(Error::Malformed(_))
        ));
    }
}
