//! ProxyPassReverse: `Location`, `Content-Location` and `URI` in a response that point at
//! the backend are rewritten to point at the front end, as Apache's mod_proxy does
//! (`ap_proxy_location_reverse_map`), so that a redirect does not send the client to an
//! address it cannot reach, or should not know.

use http::HeaderMap;
use http::header::{self, HeaderValue};

use super::Target;

/// The response fields ProxyPassReverse rewrites.
const REWRITTEN: [header::HeaderName; 3] = [
    header::LOCATION,
    header::CONTENT_LOCATION,
    header::HeaderName::from_static("uri"),
];

/// What ProxyPassReverse needs; the URLs are only written out when a response carries one
/// of the fields it rewrites.
#[derive(Debug)]
pub(crate) struct Reverse {
    target: Target,
    /// The host the client asked for; `None` for an HTTP/1.0 request without `Host`.
    front_host: Option<HeaderValue>,
    tls: bool,
}

impl Reverse {
    /// For a request sent to `target`, that asked for `front_host` (over TLS when `tls`).
    pub(crate) fn new(target: Target, front_host: Option<HeaderValue>, tls: bool) -> Reverse {
        Reverse {
            target,
            front_host,
            tls,
        }
    }

    /// Rewrites the fields of `headers` that start with the backend's base URL to start
    /// with the front end's, for a proxy mounted on `mount`.
    pub(crate) fn rewrite(&self, headers: &mut HeaderMap, mount: &str) {
        if !REWRITTEN.iter().any(|n| headers.contains_key(n)) {
            return;
        }
        let Some((from, to)) = self.urls(mount) else {
            return;
        };
        for name in REWRITTEN {
            if let Some(v) = headers.get(&name).and_then(|v| v.to_str().ok()) {
                if let Some(mut new) = reverse_url(v, &from, &to) {
                    if new.is_empty() || new.starts_with('?') {
                        // Relative to a root mount: from the root.
                        new.insert(0, '/');
                    }
                    if let Ok(v) = HeaderValue::from_str(&new) {
                        headers.insert(name, v);
                    }
                }
            }
        }
    }

    /// (backend base URL, front base URL). Without a host to name, the front URL is the
    /// mount path alone: a relative `Location` (RFC 9110 section 10.2.2 allows it), rather
    /// than the backend's address.
    fn urls(&self, mount: &str) -> Option<(String, String)> {
        let front = match &self.front_host {
            Some(host) => {
                let scheme = if self.tls { "https" } else { "http" };
                format!("{scheme}://{}{mount}", host.to_str().ok()?)
            }
            None => mount.to_string(),
        };
        Some((self.target.base_url(), front))
    }
}

/// ProxyPassReverse: when `value` starts with the backend's base URL, put the front one.
/// The scheme and host compare without regard to case (RFC 3986 section 6.2.2.1; Apache
/// compares them so too), the path exactly.
pub fn reverse_url(value: &str, backend: &str, front: &str) -> Option<String> {
    // Where the backend URL's path starts: after `scheme://authority`.
    let origin = backend.find("://").map(|i| i + 3).map_or(0, |a| {
        backend[a..].find('/').map_or(backend.len(), |p| a + p)
    });
    let (head, rest) = (value.get(..origin)?, value.get(origin..)?);
    if !head.eq_ignore_ascii_case(&backend[..origin]) {
        return None;
    }
    let rest = rest.strip_prefix(&backend[origin..])?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    Some(format!("{front}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_rewrites_only_the_backend_prefix() {
        let b = "http://10.0.0.1:9001";
        let f = "http://front.test/app";
        assert_eq!(
            reverse_url("http://10.0.0.1:9001/x?y", b, f).unwrap(),
            "http://front.test/app/x?y"
        );
        assert_eq!(
            reverse_url("http://10.0.0.1:9001", b, f).unwrap(),
            "http://front.test/app"
        );
        assert!(reverse_url("http://10.0.0.1:90011/x", b, f).is_none());
        assert!(reverse_url("http://elsewhere/x", b, f).is_none());
        // The scheme and host in any case; the path as it is.
        let b = "http://Backend.test:9001/base";
        assert_eq!(
            reverse_url("HTTP://backend.TEST:9001/base/x", b, f).unwrap(),
            "http://front.test/app/x"
        );
        assert!(reverse_url("http://backend.test:9001/BASE/x", b, f).is_none());
        assert!(reverse_url("http://backend.test:9001/basement", b, f).is_none());
        assert!(reverse_url("http://b", b, f).is_none());
    }
}
