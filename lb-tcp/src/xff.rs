//! pen's `-H`: inserting `X-Forwarded-For` into HTTP/1 requests on a TCP stream.
//!
//! pen adds the header to the first request of each client connection only; later
//! requests on a keep-alive connection reach the backend without it. [`XffInserter`]
//! does better where it can do so safely: it follows HTTP/1.1 message framing
//! (RFC 9112 section 6: `Content-Length`, `Transfer-Encoding: chunked`, requests
//! without a body) and inserts the header into **every request** of the connection.
//!
//! Exactly which requests get the header ([`XffScope::EveryRequest`], the default):
//!
//! * each request whose head (request line and headers, at most 64 KiB) parses as
//!   `METHOD SP target SP HTTP/1.x`, gets one extra line `X-Forwarded-For: <client ip>`
//!   right after the request line (an existing `X-Forwarded-For` is kept; HTTP allows a
//!   list header to be repeated, and backends join the lines);
//! * the header goes in as soon as the head is complete, before the body;
//! * after a request that the inserter cannot frame safely it stops and passes the rest
//!   of the connection through unchanged: a `CONNECT` or `Upgrade` request (the stream
//!   stops being HTTP), a `Transfer-Encoding` other than `chunked` last, conflicting
//!   `Content-Length` values, an over-long head, or bytes that are not an HTTP/1 request.
//!
//! With [`XffScope::FirstRequest`] it behaves like pen: only the first request.
//! Responses are never touched.

use std::net::IpAddr;

/// Longest request head we buffer before giving up and passing the stream through.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

/// Which requests of a connection get the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum XffScope {
    /// Every request whose boundaries can be parsed (the default).
    #[default]
    EveryRequest,
    /// Only the first request of the connection, like pen.
    FirstRequest,
}

/// A streaming rewriter for the client-to-backend direction; see the [module docs](self).
#[derive(Debug)]
pub struct XffInserter {
    header: Vec<u8>,
    scope: XffScope,
    state: State,
    /// Partial head or line.
    buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers,
    Passthrough,
}

/// How a parsed request head frames its body.
enum Framing {
    Length(u64),
    Chunked,
    /// Cannot follow this connection any further.
    Opaque,
}

impl XffInserter {
    /// An inserter that adds `X-Forwarded-For: client`.
    pub fn new(client: IpAddr, scope: XffScope) -> Self {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        XffInserter {
            header: format!("X-Forwarded-For: {client}\r\n").into_bytes(),
            scope,
            state: State::Head,
            buf: Vec::new(),
        }
    }

    /// Whether the inserter has given up and now passes everything through.
    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Feeds bytes from the client; appends what to send to the backend to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Body(n) | State::ChunkData(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => self.next_request(),
                        (State::Body(_), _) => State::Body(left),
                        (_, 0) => State::ChunkDataEnd(2),
                        _ => State::ChunkData(left),
                    };
                }
                State::ChunkDataEnd(n) => {
                    let take = usize::from(n).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = n - take as u8;
                    self.state = if left == 0 {
                        State::ChunkSize
                    } else {
                        State::ChunkDataEnd(left)
                    };
                }
                State::ChunkSize | State::Trailers => {
                    let Some(line_end) = self.take_line(&mut input, out) else {
                        continue;
                    };
                    let line = std::mem::take(&mut self.buf);
                    out.extend_from_slice(&line);
                    let text = trim_crlf(&line[..line_end]);
                    self.state = if self.state == State::Trailers {
                        if text.is_empty() {
                            self.next_request()
                        } else {
                            State::Trailers
                        }
                    } else {
                        match parse_chunk_size(text) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            None => State::Passthrough,
                        }
                    };
                }
                State::Head => {
                    // Empty lines between requests are allowed (RFC 9112 section 2.2).
                    if self.buf.is_empty() && (input[0] == b'\r' || input[0] == b'\n') {
                        out.push(input[0]);
                        input = &input[1..];
                        continue;
                    }
                    let before = self.buf.len();
                    self.buf.extend_from_slice(input);
                    // Look for the end of the head, starting a little before the new bytes.
                    let from = before.saturating_sub(3);
                    match find_head_end(&self.buf[from..]) {
                        Some(end) => {
                            let end = from + end;
                            let used = end - before;
                            input = &input[used..];
                            self.buf.truncate(end);
                            let head = std::mem::take(&mut self.buf);
                            self.state = self.emit_head(&head, out);
                        }
                        None => {
                            input = &[];
                            if self.buf.len() > MAX_HEAD || !plausible_start(&self.buf) {
                                out.extend_from_slice(&self.buf);
                                self.buf.clear();
                                self.state = State::Passthrough;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Flushes bytes held back at the end of the client's stream (a partial head or line).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
        self.state = State::Passthrough;
    }

    fn next_request(&self) -> State {
        match self.scope {
            XffScope::EveryRequest => State::Head,
            XffScope::FirstRequest => State::Passthrough,
        }
    }

    /// Accumulates a line into `buf`; returns the line's length once it is complete.
    fn take_line(&mut self, input: &mut &[u8], out: &mut Vec<u8>) -> Option<usize> {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.buf.extend_from_slice(&input[..=i]);
                *input = &input[i + 1..];
                Some(self.buf.len())
            }
            None => {
                self.buf.extend_from_slice(input);
                *input = &[];
                if self.buf.len() > MAX_LINE {
                    out.extend_from_slice(&self.buf);
                    self.buf.clear();
                    self.state = State::Passthrough;
                }
                None
            }
        }
    }

    /// Writes a complete head (with the header inserted when it parses) and returns the
    /// state for what follows it.
    fn emit_head(&self, head: &[u8], out: &mut Vec<u8>) -> State {
        let Some(line_end) = head.iter().position(|&b| b == b'\n') else {
            out.extend_from_slice(head);
            return State::Passthrough;
        };
        let request_line = trim_crlf(&head[..line_end]);
        let Some(method) = parse_request_line(request_line) else {
            out.extend_from_slice(head);
            return State::Passthrough;
        };
        out.extend_from_slice(&head[..=line_end]);
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&head[line_end + 1..]);
        if method.eq_ignore_ascii_case(b"CONNECT") {
            return State::Passthrough;
        }
        match framing(&head[line_end + 1..]) {
            Framing::Length(0) => self.next_request(),
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Opaque => State::Passthrough,
        }
    }
}

/// Position just past the first `\r\n\r\n` or `\n\n`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether a partial head can still become an HTTP request line (a token then a space).
fn plausible_start(buf: &[u8]) -> bool {
    for &b in buf.iter().take(32) {
        if b == b' ' {
            return true;
        }
        if !is_tchar(b) {
            return false;
        }
    }
    buf.len() < 32
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP target SP HTTP/1.x` -> the method.
fn parse_request_line(line: &[u8]) -> Option<&[u8]> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some()
        || method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !(version == b"HTTP/1.1" || version == b"HTTP/1.0")
    {
        return None;
    }
    Some(method)
}

/// The body framing of a request from its header lines (RFC 9112 section 6.3).
fn framing(headers: &[u8]) -> Framing {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for line in headers.split(|&b| b == b'\n') {
        let line = trim_crlf(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Framing::Opaque;
            };
            if length.is_some_and(|l| l != n) {
                return Framing::Opaque;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            return Framing::Opaque;
        }
    }
    match chunked {
        Some(true) => Framing::Chunked,
        Some(false) => Framing::Opaque,
        None => Framing::Length(length.unwrap_or(0)),
    }
}

/// A chunk-size line: hex digits, optionally followed by `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(scope: XffScope, pieces: &[&[u8]]) -> String {
        let mut x = XffInserter::new("192.0.2.7".parse().unwrap(), scope);
        let mut out = Vec::new();
        for p in pieces {
            x.feed(p, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    const TWO: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n";

    #[test]
    fn every_request_gets_the_header() {
        let out = run(XffScope::EveryRequest, &[TWO]);
        assert_eq!(out.matches("X-Forwarded-For: 192.0.2.7\r\n").count(), 3);
        assert!(out.contains(
            "POST /b HTTP/1.1\r\nX-Forwarded-For: 192.0.2.7\r\nContent-Length: 5\r\n\r\nhelloGET"
        ));
    }

    #[test]
    fn first_request_only_like_pen() {
        let out = run(XffScope::FirstRequest, &[TWO]);
        assert_eq!(out.matches("X-Forwarded-For").count(), 1);
        assert!(out.ends_with("helloGET /c HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let pieces: Vec<&[u8]> = TWO.chunks(1).collect();
        assert_eq!(
            run(XffScope::EveryRequest, &pieces),
            run(XffScope::EveryRequest, &[TWO])
        );
    }

    #[test]
    fn chunked_bodies_are_followed() {
        let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nGET /\r\n0\r\nT: 1\r\n\r\nGET /n HTTP/1.1\r\n\r\n";
        let out = run(XffScope::EveryRequest, &[req]);
        assert_eq!(out.matches("X-Forwarded-For").count(), 2);
        assert!(out.contains("5;x=y\r\nGET /\r\n0\r\n"));
    }

    #[test]
    fn body_that_looks_like_a_request_is_not_rewritten() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let out = run(XffScope::EveryRequest, &[req]);
        assert_eq!(out.matches("X-Forwarded-For").count(), 1);
    }

    #[test]
    fn non_http_and_upgrade_pass_through() {
        let ssh = b"SSH-2.0-OpenSSH_9.2\r\n\r\n";
        assert_eq!(run(XffScope::EveryRequest, &[ssh]).as_bytes(), ssh);
        let ws = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(
            run(XffScope::EveryRequest, &[ws])
                .matches("X-Forwarded-For")
                .count(),
            1
        );
    }

    #[test]
    fn ipv4_mapped_clients_are_shown_as_ipv4() {
        let mut x = XffInserter::new("::ffff:10.1.2.3".parse().unwrap(), XffScope::EveryRequest);
        let mut out = Vec::new();
        x.feed(b"GET / HTTP/1.0\r\n\r\n", &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("X-Forwarded-For: 10.1.2.3\r\n")
        );
    }

    proptest! {
        #[test]
        fn never_loses_or_reorders_client_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000), split in 0usize..2000) {
            let split = split.min(data.len());
            let mut x = XffInserter::new("192.0.2.1".parse().unwrap(), XffScope::EveryRequest);
            let mut out = Vec::new();
            x.feed(&data[..split], &mut out);
            x.feed(&data[split..], &mut out);
            // Removing the inserted lines gives back the input, minus a trailing partial head.
            let header = b"X-Forwarded-For: 192.0.2.1\r\n";
            let mut stripped = Vec::new();
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(header) { i += header.len(); } else { stripped.push(out[i]); i += 1; }
            }
            prop_assert!(data.starts_with(&stripped));
        }
    }
}
