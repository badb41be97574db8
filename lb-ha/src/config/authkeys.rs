//! Heartbeat's `authkeys`.

use std::path::Path;

use crate::protocol::Key;
use crate::{Error, Result};

/// Parses `authkeys` text (`auth N` then lines `N METHOD KEY`) and returns the selected
/// key. Whatever the method named (`sha1`, `md5`, `sha256`), lb-ha authenticates with
/// HMAC-SHA256 under that key; `crc` has no key and is refused.
pub fn parse_authkeys(text: &str, file: &Path) -> Result<Key> {
    let err = |line: usize, key: &str, message: String| Error::Config {
        file: file.to_owned(),
        line,
        key: key.to_owned(),
        message,
    };
    let mut selected: Option<(usize, String)> = None;
    let mut keys = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = content.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["auth", n] => selected = Some((line, (*n).to_owned())),
            [n, method, key] if n.parse::<u32>().is_ok() => {
                if !matches!(*method, "sha1" | "md5" | "sha256") {
                    return Err(err(
                        line,
                        n,
                        format!("unsupported method {method:?}: use sha1, md5 or sha256"),
                    ));
                }
                keys.push(((*n).to_owned(), (*key).to_owned()));
            }
            [n, "crc"] => {
                return Err(err(
                    line,
                    n,
                    "crc has no key and authenticates nothing".to_owned(),
                ));
            }
            [w, ..] => {
                return Err(err(
                    line,
                    w,
                    "expected `auth N` or `N METHOD KEY`".to_owned(),
                ));
            }
        }
    }
    let (line, n) = selected.ok_or_else(|| err(1, "auth", "no `auth N` line".to_owned()))?;
    keys.into_iter()
        .find(|(k, _)| *k == n)
        .map(|(_, key)| Key::new(key))
        .ok_or_else(|| err(line, "auth", format!("no key numbered {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_the_numbered_key() {
        let k =
            parse_authkeys("auth 2\n1 sha1 one\n2 sha1 two\n", Path::new("authkeys")).expect("key");
        // The selected key is "two": check by signing.
        assert!(k.verify(&[b"x"], &Key::new("two").sign(&[b"x"])));
    }

    #[test]
    fn errors() {
        let p = Path::new("authkeys");
        let e = parse_authkeys("auth 3\n1 sha1 one\n", p)
            .expect_err("missing")
            .to_string();
        assert_eq!(e, "authkeys:1: auth: no key numbered 3");
        assert!(
            parse_authkeys("auth 1\n1 crc\n", p)
                .expect_err("crc")
                .to_string()
                .contains("crc")
        );
        assert!(parse_authkeys("1 sha1 x\n", p).is_err());
    }
}
