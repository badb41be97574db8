//! The shared key and HMAC-SHA256 authentication of beats and sync frames.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The shared secret of a node pair (Heartbeat's `authkeys` key).
///
/// `Debug` does not print the key.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Key(bytes.into())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("hmac accepts keys of any length"),
        }
    }

    /// The tag of `parts`, concatenated.
    pub(crate) fn sign(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut m = self.mac();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Checks `tag` against `parts` in constant time.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut m = self.mac();
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = Key::new("secret");
        let t = k.sign(&[b"a", b"bc"]);
        assert!(k.verify(&[b"abc"], &t));
        assert!(!k.verify(&[b"abd"], &t));
        assert!(!Key::new("other").verify(&[b"abc"], &t));
        assert_eq!(format!("{k:?}"), "Key(..)");
    }
}
