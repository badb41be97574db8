//! A direct HTTP/1.1 exchange with a backend, for requests without a body and without an
//! upgrade: most of what a balancer forwards.
//!
//! The request head is written and the response read by the task serving the client, on a
//! pooled connection it owns for the exchange. hyper's client runs each backend connection
//! as a task of its own, reached through a channel: per request, that is a message each way,
//! two task wake-ups and a body channel, which profiles showed as a large part of the
//! proxy's user CPU. Requests with a body (streamed while the response may already come
//! back) and upgrades still go through hyper's client.
//!
//! The response is read as RFC 9112 says (section 6.3): no body after `HEAD`, `1xx`, `204`
//! and `304`; a chunked body when `chunked` is the last transfer coding; a body read until
//! the connection closes when another coding is last or when neither `Transfer-Encoding`
//! nor `Content-Length` is given; otherwise `Content-Length` bytes. A response with both
//! fields, an invalid or disagreeing `Content-Length`, `Transfer-Encoding` in an HTTP/1.0
//! response, a head over [`MAX_HEAD`] or [`MAX_HEADERS`] fields, or a malformed chunk is
//! refused: the client gets 502 (head) or a cut response (body), and the connection is
//! dropped. Interim `1xx` responses are skipped. The head is read in one pass over the
//! parsed fields: framing and keep-alive come from that pass, not from header map lookups,
//! and the hop-by-hop fields (and those `Connection` names) are left out of the response's
//! map, as the proxy would remove them anyway.

use std::cell::Cell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{StatusCode, Version, response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::pool::Pool;
use super::read_timer::ReadTimer;
use crate::error::ProxyError;

/// Largest response head accepted (status line and fields).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most fields accepted in a response head (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section.
const MAX_TRAILERS: usize = 16 * 1024;
/// Room made in the read buffer before each read of a head or a chunk line.
const READ_CHUNK: usize = 8 * 1024;
/// Most room made for one read of body data: large bodies are read in large pieces.
const MAX_BODY_READ: usize = 64 * 1024;

thread_local! {
    /// A header map left by a request this thread forwarded, emptied, for the next response
    /// head it reads. hyper's server keeps a response's map, once written, for the next
    /// request it parses: with this one, header maps go round without a new allocation per
    /// response (the largest one a request made, served from glibc's bins).
    static SPARE_MAP: Cell<Option<HeaderMap>> = const { Cell::new(None) };
}

/// Keeps `map`'s allocation for the next response head parsed on this thread.
pub(crate) fn recycle_map(mut map: HeaderMap) {
    map.clear();
    // Not kept once the thread's locals are being destroyed.
    let _ = SPARE_MAP.try_with(|spare| spare.set(Some(map)));
}

/// An empty header map with room for `fields`, the spare one if this thread has it.
fn spare_map(fields: usize) -> HeaderMap {
    match SPARE_MAP.try_with(Cell::take).ok().flatten() {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// A backend connection used directly, with its buffers (kept across requests).
#[derive(Debug)]
pub(crate) struct Direct {
    io: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Where the kept fields of the response head being parsed are (name and value
    /// offsets in `rbuf`).
    fields: Vec<(usize, usize, usize, usize)>,
    /// Times the waits of the exchanges on this connection: the request written, the
    /// response head and body read.
    timer: ReadTimer,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The request head could not be written whole: the backend cannot have acted on it.
    #[error("writing the request: {0}")]
    Unsent(std::io::Error),
    /// The connection ended or failed before any byte of a response.
    #[error("no response: {0}")]
    NoResponse(String),
    /// What came back is not a usable response.
    #[error("{0}")]
    Bad(String),
    /// What came back does not start as a response: on a kept-alive connection, bytes the
    /// backend sent after its previous response, which the request's answer follows.
    #[error("{0}")]
    Stray(String),
    /// Nothing moved for the response timeout, writing the request or reading the head.
    #[error("no response within the timeout")]
    Timeout,
}

/// How a response body is delimited, and whether its connection may be used again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delimiting {
    framing: Framing,
    keep_alive: bool,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

impl Direct {
    /// Boxed: the connection moves between the pool and response bodies, and a body type
    /// holding it inline would make every request and response that much larger to move.
    pub(crate) fn new(io: TcpStream) -> Box<Direct> {
        Box::new(Direct {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            fields: Vec::new(),
            timer: ReadTimer::new(Duration::MAX),
        })
    }

    /// True when nothing has arrived on this idle connection: a backend closing an idle
    /// connection makes it readable, and stray bytes would make it unusable too. Looks at
    /// the socket itself (a non-blocking peek), since the runtime may not have seen yet
    /// what arrived.
    pub(crate) fn is_idle_usable(&self) -> bool {
        matches!(self.peek(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// True unless the runtime has seen this idle connection become readable: stray bytes
    /// (a second response the backend sent after the one read, say a body after a 204, or
    /// more than its Content-Length) or its close. No system call in the usual case: a read
    /// that left the socket drained told the runtime so, and any byte arriving since woke
    /// it; only then is the socket itself looked at (a non-blocking peek). Used before any
    /// request goes on a kept-alive connection: taken as that request's response, a stray
    /// one would shift every later response on the connection to the wrong client. What
    /// arrives just before, while the runtime has not yet looked, is not seen (nginx
    /// checks an idle upstream connection on the same event).
    pub(crate) fn nothing_arrived(&self) -> bool {
        matches!(
            self.io.try_io(tokio::io::Interest::READABLE, || self.peek()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// A non-blocking peek at the next byte: `WouldBlock` when there is none yet.
    fn peek(&self) -> std::io::Result<usize> {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        socket2::SockRef::from(&self.io).peek(&mut byte)
    }

    /// When this connection's first wait since its last [`Direct::send`] began: `None`
    /// when nothing had to wait.
    pub(crate) fn first_wait(&self) -> Option<tokio::time::Instant> {
        self.timer.first_wait()
    }

    /// The buffer the request head is written into, emptied, for [`Direct::send`].
    pub(crate) fn head_buf(&mut self) -> &mut Vec<u8> {
        self.wbuf.clear();
        &mut self.wbuf
    }

    /// Takes the request head `from` wrote, to send it on this connection instead.
    pub(crate) fn take_head(&mut self, from: &mut Direct) {
        std::mem::swap(&mut self.wbuf, &mut from.wbuf);
    }

    /// Writes the request head put in [`Direct::head_buf`]. The exchange is timed from here
    /// by the connection's own timer, `timeout` at most between two moves (bytes written or
    /// read) up to the end of the response head, as nginx's `proxy_send_timeout` and
    /// `proxy_read_timeout` do: a timer kept for the connection is moved on, where one made
    /// for each request would be put into the runtime's timer wheel and taken out again.
    pub(crate) async fn send(&mut self, timeout: Duration) -> Result<(), ExchangeError> {
        self.timer.rearm(timeout);
        let mut at = 0;
        std::future::poll_fn(|cx| {
            while at < self.wbuf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[at..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(ExchangeError::Unsent(
                            std::io::ErrorKind::WriteZero.into(),
                        )));
                    }
                    Poll::Ready(Ok(n)) => {
                        at += n;
                        self.timer.moved();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Unsent(e))),
                    Poll::Pending if self.timer.expired(cx) => {
                        return Poll::Ready(Err(ExchangeError::Timeout));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Reads the response head, skipping interim responses. `head_only` when the request
    /// was `HEAD`. The body follows with [`Direct::into_body`].
    pub(crate) async fn read_head(
        &mut self,
        head_only: bool,
    ) -> Result<(response::Parts, Delimiting), ExchangeError> {
        let mut got_any = false;
        let mut interim = false;
        loop {
            if let Some((parts, framing, keep_alive)) = self.parse_head(head_only, &mut interim)? {
                return Ok((
                    parts,
                    Delimiting {
                        framing,
                        keep_alive,
                    },
                ));
            }
            if self.rbuf.len() >= MAX_HEAD {
                return Err(ExchangeError::Bad(format!(
                    "response head larger than {} KiB",
                    MAX_HEAD / 1024
                )));
            }
            let read = std::future::poll_fn(|cx| match self.poll_fill(cx, READ_CHUNK) {
                Poll::Pending if self.timer.expired(cx) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
                Poll::Ready(read) => {
                    self.timer.moved();
                    Poll::Ready(Some(read))
                }
            });
            let Some(read) = read.await else {
                return Err(ExchangeError::Timeout);
            };
            match read {
                Ok(0) if !got_any => {
                    return Err(ExchangeError::NoResponse("connection closed".into()));
                }
                Ok(0) => {
                    return Err(ExchangeError::Bad(
                        "connection closed in the response head".into(),
                    ));
                }
                Ok(_) => got_any = true,
                Err(e) if !got_any => return Err(ExchangeError::NoResponse(e.to_string())),
                Err(e) => return Err(ExchangeError::Bad(format!("reading the response: {e}"))),
            }
        }
    }

    /// The body of the response whose head [`Direct::read_head`] read. The connection goes
    /// back to `pool` when the body ends, if it can carry another request.
    pub(crate) fn into_body(
        self: Box<Self>,
        delimiting: Delimiting,
        pool: Arc<Pool>,
        authority: Authority,
        timeout: Duration,
    ) -> DirectBody {
        let Delimiting {
            framing,
            keep_alive,
        } = delimiting;
        let mut conn = self;
        conn.timer.rearm(timeout);
        let mut body = DirectBody {
            conn: Some(conn),
            state: match framing {
                Framing::Empty => State::Done,
                Framing::Length(n) => State::Length(n),
                Framing::Chunked => State::ChunkSize,
                Framing::Close => State::Close,
            },
            home: (keep_alive && framing != Framing::Close).then_some((pool, authority)),
        };
        if body.state == State::Done {
            body.release();
        }
        body
    }

    /// Parses a complete head at the start of the read buffer and takes it out, skipping
    /// interim responses (`interim` is set once one was: what follows is this request's
    /// answer, stray bytes or not). `None` when more bytes are needed.
    fn parse_head(
        &mut self,
        head_only: bool,
        interim: &mut bool,
    ) -> Result<Option<(response::Parts, Framing, bool)>, ExchangeError> {
        loop {
            if self.rbuf.is_empty() {
                return Ok(None);
            }
            let mut slots =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let (len, code, minor, hop) = match httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, &self.rbuf, &mut slots)
            {
                Ok(httparse::Status::Complete(len)) => {
                    let hop = Hop::read(resp.headers);
                    // Where each end-to-end field is in the buffer, to slice it once
                    // frozen. Hop-by-hop fields are left out here: the proxy would remove
                    // them from the response anyway.
                    let base = self.rbuf.as_ptr() as usize;
                    self.fields.clear();
                    for h in resp.headers.iter() {
                        if hop.drops(h.name.as_bytes()) {
                            continue;
                        }
                        let name = h.name.as_ptr() as usize - base;
                        let value = h.value.as_ptr() as usize - base;
                        self.fields
                            .push((name, name + h.name.len(), value, value + h.value.len()));
                    }
                    (
                        len,
                        resp.code.unwrap_or(0),
                        resp.version.unwrap_or(1),
                        hop.summary(),
                    )
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                // Not even the start of a status line: bytes that were on the connection
                // before the request went out (a body sent after a 204 or a HEAD answer).
                Err(e) if !*interim && !self.rbuf.starts_with(b"HTTP/") => {
                    return Err(ExchangeError::Stray(format!("invalid response head: {e}")));
                }
                Err(e) => {
                    return Err(ExchangeError::Bad(format!("invalid response head: {e}")));
                }
            };
            let head = self.rbuf.split_to(len).freeze();
            let status = StatusCode::from_u16(code)
                .map_err(|_| ExchangeError::Bad(format!("invalid status code {code}")))?;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ExchangeError::Bad(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                ));
            }
            if status.is_informational() {
                // 100 Continue, 102, 103: the final response follows.
                *interim = true;
                continue;
            }
            // Room for the fields the proxy and the layers above add (Via, a cookie).
            let mut headers = spare_map(self.fields.len() + 3);
            for &(n0, n1, v0, v1) in &self.fields {
                let name = HeaderName::from_bytes(&head[n0..n1])
                    .map_err(|_| ExchangeError::Bad("invalid header name".into()))?;
                let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
                    .map_err(|_| ExchangeError::Bad(format!("invalid value of {name}")))?;
                headers.append(name, value);
            }
            let version = if minor == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            let framing = hop
                .framing(status, version, head_only)
                .map_err(|e| ExchangeError::Bad(e.into()))?;
            let keep_alive = match version {
                Version::HTTP_10 => hop.keep_alive,
                _ => !hop.close,
            };
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = status;
            parts.version = version;
            parts.headers = headers;
            return Ok(Some((parts, framing, keep_alive)));
        }
    }

    /// Reads more into the read buffer, with room for at least `room` bytes.
    fn poll_fill(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<std::io::Result<usize>> {
        self.rbuf.reserve(room);
        pin!(self.io.read_buf(&mut self.rbuf)).poll(cx)
    }
}

/// What a response head's hop-by-hop and length fields say, read in one pass over the
/// parsed fields (no header map lookups).
#[derive(Debug)]
struct Hop<'a> {
    /// The fields read.
    fields: &'a [httparse::Header<'a>],
    /// Connection lists `close`.
    close: bool,
    /// Connection lists `keep-alive`.
    keep_alive: bool,
    /// Connection names other fields, to be removed too (rare).
    names_fields: bool,
    /// Transfer-Encoding was present; its last value.
    transfer_encoding: Option<&'a [u8]>,
    /// Content-Length: none, the one length all its values agree on, or what is wrong.
    length: Result<Option<u64>, &'static str>,
}

/// A [`Hop`] without its borrows, for after the head is taken out of the buffer.
#[derive(Debug, Clone, Copy)]
struct HopSummary {
    close: bool,
    keep_alive: bool,
    /// Transfer-Encoding was present, and its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    length: Result<Option<u64>, &'static str>,
}

/// Visible ASCII and tabs only: what `HeaderValue::to_str` accepts.
fn is_text(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// A `Content-Length` value: digits only (RFC 9110 section 8.6), within a `u64`.
pub(crate) fn length_value(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated tokens of a list value, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

impl<'a> Hop<'a> {
    fn read(fields: &'a [httparse::Header<'a>]) -> Hop<'a> {
        let mut hop = Hop {
            fields,
            close: false,
            keep_alive: false,
            names_fields: false,
            transfer_encoding: None,
            length: Ok(None),
        };
        for h in fields {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                if !is_text(h.value) {
                    continue;
                }
                for token in tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        hop.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        hop.keep_alive = true;
                    } else if !(token.is_empty() || token.eq_ignore_ascii_case(b"upgrade")) {
                        hop.names_fields = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                hop.transfer_encoding = Some(h.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                for part in tokens(h.value) {
                    let n = length_value(part);
                    hop.length = match (hop.length, n) {
                        (Err(e), _) => Err(e),
                        (_, None) => Err("invalid Content-Length"),
                        (Ok(Some(l)), Some(n)) if l != n => Err("differing Content-Length values"),
                        (Ok(_), Some(n)) => Ok(Some(n)),
                    };
                }
            }
        }
        hop
    }

    /// True for a field the proxy removes from responses (RFC 9110 section 7.6.1): the
    /// hop-by-hop fields and those Connection names.
    fn drops(&self, name: &[u8]) -> bool {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let hop_by_hop = match name.len() {
            2 => is("te"),
            7 => is("upgrade"),
            10 => is("connection") || is("keep-alive"),
            16 => is("proxy-connection"),
            17 => is("transfer-encoding"),
            _ => false,
        };
        hop_by_hop
            || (self.names_fields
                && self
                    .fields
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("connection") && is_text(h.value))
                    .flat_map(|h| tokens(h.value))
                    .any(|t| {
                        t.eq_ignore_ascii_case(name)
                            && !t.eq_ignore_ascii_case(b"close")
                            && !t.eq_ignore_ascii_case(b"keep-alive")
                    }))
    }

    fn summary(&self) -> HopSummary {
        HopSummary {
            close: self.close,
            keep_alive: self.keep_alive,
            transfer_encoding: self.transfer_encoding.map(|v| {
                is_text(v)
                    && v.rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            }),
            length: self.length,
        }
    }
}

impl HopSummary {
    /// The body length of a response (RFC 9112 section 6.3).
    fn framing(
        &self,
        status: StatusCode,
        version: Version,
        head_only: bool,
    ) -> Result<Framing, &'static str> {
        if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Framing::Empty);
        }
        if let Some(chunked) = self.transfer_encoding {
            if version == Version::HTTP_10 {
                return Err("Transfer-Encoding in an HTTP/1.0 response");
            }
            if self.length != Ok(None) {
                return Err("both Transfer-Encoding and Content-Length");
            }
            return Ok(if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            });
        }
        Ok(match self.length? {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        })
    }
}

/// Where the body reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Until the connection closes.
    Close,
    /// At a chunk-size line.
    ChunkSize,
    /// Bytes left of a chunk's data.
    ChunkData(u64),
    /// At the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    Done,
}

/// A response body read straight from the backend connection. Read to its end, it gives
/// the connection back to the pool (unless the backend said it closes it); dropped before
/// that, the connection is closed.
#[derive(Debug)]
pub(crate) struct DirectBody {
    conn: Option<Box<Direct>>,
    state: State,
    /// Where the connection goes back to, when it may be reused.
    home: Option<(Arc<Pool>, Authority)>,
}

impl DirectBody {
    fn release(&mut self) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some((pool, authority))) = (conn, self.home.take()) {
            // Bytes beyond the response mean the backend and the proxy disagree on where it
            // ended: the connection is not reused.
            if conn.rbuf.is_empty() {
                pool.checkin_direct(authority, conn);
            }
        }
    }

    fn fail(&mut self, why: impl Into<String>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        self.state = State::Done;
        self.conn = None;
        self.home = None;
        Poll::Ready(Some(Err(ProxyError::BadResponse(why.into()))))
    }

    /// Data from the read buffer, at most `limit` bytes; reads more when it is empty.
    /// `Ready(None)` at the end of the connection.
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
        limit: u64,
    ) -> Poll<std::io::Result<Option<Bytes>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        if conn.rbuf.is_empty() {
            let room = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .clamp(READ_CHUNK, MAX_BODY_READ);
            match conn.poll_fill(cx, room) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(_)) => {}
            }
        }
        let n = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(conn.rbuf.len());
        Poll::Ready(Ok(Some(conn.rbuf.split_to(n).freeze())))
    }

    /// Makes sure the read buffer holds a CRLF-terminated line of at most `max` bytes;
    /// returns its length without the CRLF.
    fn poll_line(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Result<usize, String>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err("connection gone".into()));
        };
        let mut searched = 0;
        loop {
            if let Some(i) = conn.rbuf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                if end == 0 || conn.rbuf[end - 1] != b'\r' {
                    return Poll::Ready(Err("chunk line not ended by CRLF".into()));
                }
                return Poll::Ready(Ok(end - 1));
            }
            searched = conn.rbuf.len();
            if searched > max {
                return Poll::Ready(Err("chunk-size line too long".into()));
            }
            match conn.poll_fill(cx, READ_CHUNK) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err("connection closed in the chunked body".into()));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// The size in a chunk-size line (`HEX [ext]`).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err("invalid chunk size".into());
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if !(ext.is_empty() || ext.starts_with(b";"))
        || rest.iter().any(|&b| b.is_ascii_control() && b != b'\t')
    {
        return Err("invalid chunk extension".into());
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| "invalid chunk size")?;
    u64::from_str_radix(hex, 16).map_err(|_| "invalid chunk size".into())
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let this = self.get_mut();
        // Progress without a frame: a chunk-size line read, or part of one.
        let before = (this.state, this.conn.as_ref().map_or(0, |c| c.rbuf.len()));
        let polled = this.poll_body(cx);
        // A wait is a read that found nothing: the connection is still there.
        let Poll::Pending = polled else {
            if let Some(conn) = this.conn.as_mut() {
                conn.timer.moved();
            }
            return polled;
        };
        let moved = before != (this.state, this.conn.as_ref().map_or(0, |c| c.rbuf.len()));
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Pending;
        };
        if moved {
            conn.timer.moved();
        }
        if conn.timer.expired(cx) {
            let timeout = conn.timer.timeout();
            this.state = State::Done;
            this.conn = None;
            this.home = None;
            return Poll::Ready(Some(Err(ProxyError::BodyTimeout(timeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl DirectBody {
    /// The next frame, without the timeout.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let this = self;
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    return match this.poll_data(cx, left) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Err(e)) => this.fail(format!("reading the body: {e}")),
                        Poll::Ready(Ok(None)) => {
                            this.fail("connection closed before the end of the body")
                        }
                        Poll::Ready(Ok(Some(data))) => {
                            let left = left - data.len() as u64;
                            this.state = State::Length(left);
                            if left == 0 {
                                this.release();
                            }
                            Poll::Ready(Some(Ok(Frame::data(data))))
                        }
                    };
                }
                State::Close => {
                    return match this.poll_data(cx, u64::MAX) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Err(e)) => this.fail(format!("reading the body: {e}")),
                        Poll::Ready(Ok(None)) => {
                            this.release();
                            Poll::Ready(None)
                        }
                        Poll::Ready(Ok(Some(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    };
                }
                State::ChunkSize => {
                    let len = match this.poll_line(cx, MAX_CHUNK_LINE) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return this.fail(e),
                        Poll::Ready(Ok(len)) => len,
                    };
                    let Some(conn) = this.conn.as_mut() else {
                        return this.fail("connection gone");
                    };
                    let size = match chunk_size(&conn.rbuf[..len]) {
                        Ok(size) => size,
                        Err(e) => return this.fail(e),
                    };
                    conn.rbuf.advance(len + 2);
                    this.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(left) => {
                    return match this.poll_data(cx, left) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Err(e)) => this.fail(format!("reading the body: {e}")),
                        Poll::Ready(Ok(None)) => this.fail("connection closed in the chunked body"),
                        Poll::Ready(Ok(Some(data))) => {
                            let left = left - data.len() as u64;
                            this.state = if left == 0 {
                                State::ChunkEnd
                            } else {
                                State::ChunkData(left)
                            };
                            Poll::Ready(Some(Ok(Frame::data(data))))
                        }
                    };
                }
                State::ChunkEnd => {
                    let len = match this.poll_line(cx, 2) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return this.fail(e),
                        Poll::Ready(Ok(len)) => len,
                    };
                    if len != 0 {
                        return this.fail("chunk data longer than its size");
                    }
                    if let Some(conn) = this.conn.as_mut() {
                        conn.rbuf.advance(2);
                    }
                    this.state = State::ChunkSize;
                }
                State::Trailers => return this.poll_trailers(cx),
            }
        }
    }
    /// The trailer section after the last chunk: an empty line, or fields then one.
    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return self.fail("connection gone");
            };
            if conn.rbuf.starts_with(b"\r\n") {
                conn.rbuf.advance(2);
                self.release();
                return Poll::Ready(None);
            }
            if conn.rbuf.len() >= 2 {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(&conn.rbuf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for f in fields.iter() {
                            let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) else {
                                return self.fail("invalid trailer field");
                            };
                            trailers.append(name, value);
                        }
                        conn.rbuf.advance(len);
                        self.release();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return self.fail(format!("invalid trailer section: {e}")),
                }
            }
            if conn.rbuf.len() > MAX_TRAILERS {
                return self.fail("trailer section too large");
            }
            match conn.poll_fill(cx, READ_CHUNK) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return self.fail(format!("reading the trailers: {e}")),
                Poll::Ready(Ok(0)) => {
                    return self.fail("connection closed in the trailer section");
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}
