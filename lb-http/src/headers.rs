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
    // Most messages carry none of these: one pass over the names finds that out for less
    // than the six lookups below.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Fields named by Connection (RFC 9110 section 7.6.1), collected before removal. The
    // usual tokens (`keep-alive`, `close`) name nothing else to remove, and `upgrade` is dealt
    // with below: a list is only made for other names.
    let named: Vec<HeaderName> = connection_names(headers)
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
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

/// Joins several `Cookie` fields into one, separated by `; `. An HTTP/2 client may send
/// each cookie as a field of its own, and RFC 9113 section 8.2.3 asks for them to be joined
/// before the request goes on over HTTP/1.1, which allows a single `Cookie` field (RFC 6265
/// section 5.4); many servers read only the first.
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (i, v) in headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The fields [`strip_hop_by_hop`] always looks at.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
        || *name == header::TE
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
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
    let mut entry = match headers.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(value);
            return;
        }
        header::Entry::Occupied(o) => o,
    };
    let mut joined = Vec::new();
    for part in entry.iter() {
        joined.extend_from_slice(part.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            entry.insert(v);
        }
        Err(_) => entry.append(value),
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
        if let Ok(v) = HeaderValue::from_str(&forwarded_element(client, host)) {
            append_list(headers, header::FORWARDED, v);
        }
    }
}

/// This hop's RFC 7239 `Forwarded` element.
fn forwarded_element(client: ClientInfo, host: Option<&HeaderValue>) -> String {
    let proto = if client.tls { "https" } else { "http" };
    // RFC 7239 section 6: IPv6 addresses are bracketed and the value quoted.
    let node = match client.addr.ip() {
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
    elem
}

/// What a forwarded request head gets besides the client's own fields; see
/// [`write_request_head`].
pub(crate) struct HeadRewrite<'a> {
    /// The `Host` to send.
    pub(crate) host: &'a HeaderValue,
    /// The client, for the forwarding fields (none are added without it).
    pub(crate) client: Option<ClientInfo>,
    pub(crate) forwarded: ForwardedHeaders,
    /// The host the client asked for, for `X-Forwarded-Host` and `Forwarded`.
    pub(crate) front_host: Option<&'a HeaderValue>,
    /// This hop's `Via` entry.
    pub(crate) via: Option<&'a HeaderValue>,
}

/// Fields [`write_request_head`] writes after the client's other fields, each as one line
/// with this hop's entry appended, or as the client sent them when this hop adds nothing.
static LISTS: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    header::FORWARDED,
    header::VIA,
];

/// Writes the HTTP/1.1 head of a request for the next hop into `w`, straight from the
/// client's fields: the same fields as [`strip_hop_by_hop`], [`add_forwarded_value`],
/// [`append_list`] for `Via`, [`join_cookies`] and an inserted `Host` give, without copying
/// the header map or making a value per field. `Host` comes first (RFC 9112 section 3.2),
/// then the client's fields in their order (its cookies on one line), then the forwarding
/// fields and `Via`.
pub(crate) fn write_request_head(
    w: &mut Vec<u8>,
    method: &http::Method,
    path_and_query: &str,
    headers: &HeaderMap,
    rw: &HeadRewrite<'_>,
) {
    w.extend_from_slice(method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(path_and_query.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    w.extend_from_slice(rw.host.as_bytes());
    w.extend_from_slice(b"\r\n");
    // Whether `Connection` names other fields: most often it holds only `close` or
    // `keep-alive`, and then no field needs looking up in it.
    let names_fields = connection_names(headers).next().is_some();
    let dropped = |name: &HeaderName| {
        *name == header::HOST
            || is_hop_by_hop(name)
            || (names_fields && named_by_connection(headers, name))
    };
    let mut cookies_written = false;
    for (name, value) in headers {
        if dropped(name) || LISTS.contains(name) {
            continue;
        }
        if *name == header::COOKIE {
            // All of them on the first one's line.
            if !cookies_written {
                cookies_written = true;
                w.extend_from_slice(b"cookie: ");
                for (i, v) in headers.get_all(header::COOKIE).iter().enumerate() {
                    if i > 0 {
                        w.extend_from_slice(b"; ");
                    }
                    w.extend_from_slice(v.as_bytes());
                }
                w.extend_from_slice(b"\r\n");
            }
            continue;
        }
        put_field(w, name, value.as_bytes());
    }
    let xf = rw.forwarded.x_forwarded;
    for name in &LISTS {
        // The client's values, unless Connection named the field.
        let values = headers.get_all(name).iter().filter(|_| !dropped(name));
        // This hop's entry, when it adds one.
        let client = rw.client;
        let ours = match name.as_str() {
            "x-forwarded-for" => client.filter(|_| xf).map(|c| Entry::Ip(c.addr.ip())),
            "x-forwarded-proto" => client
                .filter(|_| xf)
                .map(|c| Entry::Bytes(if c.tls { b"https" } else { b"http" })),
            "x-forwarded-host" => rw
                .front_host
                .filter(|_| xf && client.is_some())
                .map(|h| Entry::Bytes(h.as_bytes())),
            "forwarded" => client
                .filter(|_| rw.forwarded.forwarded)
                .map(|c| Entry::Text(forwarded_element(c, rw.front_host))),
            _ => rw.via.map(|v| Entry::Bytes(v.as_bytes())),
        };
        let Some(ours) = ours else {
            for v in values {
                put_field(w, name, v.as_bytes());
            }
            continue;
        };
        w.extend_from_slice(name.as_str().as_bytes());
        w.extend_from_slice(b": ");
        // X-Forwarded-Proto is set, not appended to.
        if *name != X_FORWARDED_PROTO {
            for v in values {
                w.extend_from_slice(v.as_bytes());
                w.extend_from_slice(b", ");
            }
        }
        match ours {
            Entry::Bytes(b) => w.extend_from_slice(b),
            Entry::Ip(ip) => put_ip(w, &ip),
            Entry::Text(t) => w.extend_from_slice(t.as_bytes()),
        }
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b"\r\n");
}

/// Writes `ip` as text. IPv4, the usual case, without the formatting machinery (four
/// `Display` calls behind `write!`, measurable on every request).
fn put_ip(w: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    w.push(b'.');
                }
                if octet >= 100 {
                    w.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    w.push(b'0' + octet / 10 % 10);
                }
                w.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(w, "{v6}");
        }
    }
}

/// This hop's entry in a list field.
enum Entry<'a> {
    Bytes(&'a [u8]),
    Ip(IpAddr),
    Text(String),
}

fn put_field(w: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    w.extend_from_slice(name.as_str().as_bytes());
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

/// True when a `Connection` field of `headers` names `name` (as [`strip_hop_by_hop`] reads
/// it: `keep-alive`, `close` and `upgrade` name nothing else).
fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    connection_names(headers).any(|token| token.eq_ignore_ascii_case(name.as_str()))
}

/// The field names `Connection` lists, without the tokens that name no field to remove.
fn connection_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !["keep-alive", "close", "upgrade", ""]
                .iter()
                .any(|t| token.eq_ignore_ascii_case(t))
        })
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
    fn cookie_fields_are_joined_into_one() {
        let mut h = map(&[("cookie", "a=1"), ("x-a", "1"), ("cookie", "b=2; c=3")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2; c=3");
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
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

    mod head {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const NAMES: [&str; 15] = [
            "host",
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "via",
            "x-a",
            "cookie",
            "x-secret",
        ];
        const CONNECTION: [&str; 7] = [
            "close",
            "keep-alive",
            "X-Secret",
            "via, x-a",
            "X-Forwarded-For",
            "upgrade",
            "x-forwarded-host,  Forwarded, ",
        ];
        const VALUES: [&str; 5] = ["1", "10.0.0.1", "a b", "example.test:8080", "1.0 old"];

        fn fields() -> impl Strategy<Value = Vec<(usize, usize)>> {
            prop::collection::vec(
                (0..NAMES.len(), 0..VALUES.len().max(CONNECTION.len())),
                0..10,
            )
        }

        fn by_name<'a>(
            pairs: impl Iterator<Item = (&'a str, &'a [u8])>,
        ) -> BTreeMap<String, Vec<Vec<u8>>> {
            let mut m: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
            for (k, v) in pairs {
                m.entry(k.to_ascii_lowercase())
                    .or_default()
                    .push(v.to_vec());
            }
            m
        }

        proptest! {
            /// The hand-written IPv4 text is what `Display` writes, for every address.
            #[test]
            fn ip_text_matches_display(octets in any::<[u8; 4]>(), segments in any::<[u16; 8]>()) {
                for ip in [IpAddr::from(octets), IpAddr::from(segments)] {
                    let mut w = Vec::new();
                    put_ip(&mut w, &ip);
                    prop_assert_eq!(String::from_utf8(w).unwrap(), ip.to_string());
                }
            }
        }

        proptest! {
            /// The head written straight from the client's fields carries the same fields
            /// as the header map rewritten by the public functions, with Host first.
            #[test]
            fn written_head_matches_the_rewritten_map(
                pairs in fields(),
                client in prop::option::of((any::<bool>(), any::<bool>())),
                x_forwarded in any::<bool>(),
                forwarded in any::<bool>(),
                via in prop::option::of(prop::sample::select(vec!["1.1 lb", "1.0 lb"])),
                front in prop::option::of(prop::sample::select(vec!["front.test", "[::1]:8080"])),
                preserve in any::<bool>(),
            ) {
                let mut map = HeaderMap::new();
                for (n, v) in &pairs {
                    let value = if NAMES[*n] == "connection" {
                        CONNECTION[v % CONNECTION.len()]
                    } else {
                        VALUES[v % VALUES.len()]
                    };
                    map.append(
                        HeaderName::from_static(NAMES[*n]),
                        HeaderValue::from_static(value),
                    );
                }
                let client = client.map(|(v6, tls)| ClientInfo {
                    addr: if v6 { "[2001:db8::7]:4000" } else { "192.0.2.9:4000" }.parse().unwrap(),
                    tls,
                });
                let which = ForwardedHeaders { x_forwarded, forwarded };
                let via = via.map(HeaderValue::from_static);
                let front = front.map(HeaderValue::from_static);
                let target = HeaderValue::from_static("backend:9001");
                let host = match (&front, preserve) {
                    (Some(f), true) => f,
                    _ => &target,
                };

                let mut expected = map.clone();
                strip_hop_by_hop(&mut expected, false);
                join_cookies(&mut expected);
                if let Some(c) = client {
                    add_forwarded_value(&mut expected, which, c, front.as_ref());
                }
                if let Some(v) = &via {
                    append_list(&mut expected, header::VIA, v.clone());
                }
                expected.insert(header::HOST, host.clone());

                let mut w = Vec::new();
                let rewrite = HeadRewrite {
                    host,
                    client,
                    forwarded: which,
                    front_host: front.as_ref(),
                    via: via.as_ref(),
                };
                write_request_head(&mut w, &http::Method::GET, "/p?q=1", &map, &rewrite);

                let mut slots = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut slots);
                let parsed = req.parse(&w).unwrap();
                prop_assert_eq!(parsed, httparse::Status::Complete(w.len()));
                prop_assert_eq!(req.method, Some("GET"));
                prop_assert_eq!(req.path, Some("/p?q=1"));
                prop_assert_eq!(req.version, Some(1));
                prop_assert_eq!(req.headers[0].name, "host");
                let got = by_name(req.headers.iter().map(|h| (h.name, h.value)));
                let want = by_name(expected.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
                prop_assert_eq!(got, want);
            }
        }
    }
}
