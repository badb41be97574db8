//! Header handling for a proxy, per RFC 9110 section 7.6 and RFC 7239.
//!
//! * Hop-by-hop fields are removed in both directions: `Connection` and every field it names,
//!   `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade` (kept, with
//!   `Connection: upgrade`, when the exchange is being tunnelled, as for WebSocket).
//! * `Via` gets this hop appended (`1.1 lb`, RFC 9110 section 7.6.3).
//! * `X-Forwarded-For` gets the client address appended; `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are set as Apache's mod_proxy sets them; `Forwarded` (RFC 7239) is
//!   appended when asked for.

use std::net::{IpAddr, SocketAddr};

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Keep-Alive` (not in the `http` crate's constants).
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection`, a non-standard hop-by-hop field old clients send.
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop fields from `headers`. When `tunnel` is true the `Upgrade` field is
/// kept and `Connection: upgrade` is (re)set, so the next hop sees the upgrade request or
/// acceptance.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, tunnel: bool) {
    // Fields named by Connection (RFC 9110 section 7.6.1), collected before removal. The
    // usual tokens (`keep-alive`, `close`) name nothing else to remove, and `upgrade` is dealt
    // with below: a list is only made for other names.
    let mut named: Vec<HeaderName> = Vec::new();
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if ["keep-alive", "close", "upgrade", ""]
            .iter()
            .any(|t| token.eq_ignore_ascii_case(t))
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            named.push(name);
        }
    }
    for name in named {
        headers.remove(&name);
    }
    headers.remove(header::CONNECTION);
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRANSFER_ENCODING);
    if tunnel && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// True when the request asks to switch protocols (HTTP/1.1 `Connection: upgrade` with an
/// `Upgrade` field).
pub fn wants_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The protocol name for `Via` (RFC 9110 section 7.6.3: the version without `HTTP/`).
pub fn via_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Appends `VERSION PSEUDONYM` to `Via`.
pub fn append_via(headers: &mut HeaderMap, version: Version, pseudonym: &str) {
    let value = format!("{} {}", via_version(version), pseudonym);
    if let Ok(v) = HeaderValue::from_str(&value) {
        append_list(headers, header::VIA, v);
    }
}

/// Appends `value` to the comma-separated list in `name`, merging repeated lines into one.
pub fn append_list(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    if !headers.contains_key(&name) {
        headers.insert(name, value);
        return;
    }
    let existing: Vec<&[u8]> = headers
        .get_all(&name)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let mut joined = Vec::new();
    for part in existing {
        joined.extend_from_slice(part);
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.append(name, value);
        }
    }
}

/// What the proxy knows about the client side of a request, for the forwarding headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The peer address of the client connection.
    pub addr: SocketAddr,
    /// True when the client connection is TLS (`https`).
    pub tls: bool,
}

/// Which forwarding headers to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` (default on).
    pub x_forwarded: bool,
    /// RFC 7239 `Forwarded` (default off).
    pub forwarded: bool,
}

impl Default for ForwardedHeaders {
    fn default() -> Self {
        ForwardedHeaders {
            x_forwarded: true,
            forwarded: false,
        }
    }
}

/// Adds the forwarding headers for a request from `client` whose original host was `host`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    which: ForwardedHeaders,
    client: ClientInfo,
    host: Option<&str>,
) {
    let host = host.and_then(|h| HeaderValue::from_str(h).ok());
    add_forwarded_value(headers, which, client, host.as_ref());
}

/// [`add_forwarded`] with the host as the request carried it (no copy is made of it).
pub fn add_forwarded_value(
    headers: &mut HeaderMap,
    which: ForwardedHeaders,
    client: ClientInfo,
    host: Option<&HeaderValue>,
) {
    use std::io::Write as _;
    let ip = client.addr.ip();
    let proto = if client.tls { "https" } else { "http" };
    if which.x_forwarded {
        // The longest IPv6 text form is 45 bytes; written on the stack, copied once.
        let mut buf = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        if write!(cursor, "{ip}").is_ok() {
            let len = cursor.position() as usize;
            if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
                append_list(headers, X_FORWARDED_FOR, v);
            }
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        if let Some(h) = host {
            append_list(headers, X_FORWARDED_HOST, h.clone());
        }
    }
    if which.forwarded {
        // RFC 7239 section 6: IPv6 addresses are bracketed and the value quoted.
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut elem = format!("for={node};proto={proto}");
        if let Some(h) = host.and_then(|h| h.to_str().ok()) {
            if h.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                elem.push_str(&format!(";host=\"{h}\""));
            }
        }
        if let Ok(v) = HeaderValue::from_str(&elem) {
            append_list(headers, header::FORWARDED, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "foo"),
            ("x-secret", "1"),
            ("foo", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn tunnel_keeps_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(Version::HTTP_11, &h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!wants_upgrade(Version::HTTP_10, &h));
    }

    #[test]
    fn appends_forwarding_headers() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1"), ("via", "1.0 first")]);
        let client = ClientInfo {
            addr: "[::1]:5000".parse().unwrap(),
            tls: false,
        };
        add_forwarded(
            &mut h,
            ForwardedHeaders {
                x_forwarded: true,
                forwarded: true,
            },
            client,
            Some("example.test"),
        );
        append_via(&mut h, Version::HTTP_11, "lb");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.test");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=http;host=\"example.test\""
        );
        assert_eq!(h["via"], "1.0 first, 1.1 lb");
    }
}
