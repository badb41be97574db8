//! The HTTP/1.1 requests [`serve`](super::serve) answers without hyper's server: requests
//! without a body and without an upgrade, in origin form, which is most of what a balancer
//! sees.
//!
//! Such a request was parsed twice before: by the guard, which checks every head, and by
//! hyper, which then built the request and ran it through its dispatcher (a state machine
//! made for bodies both ways, upgrades and pipelining). Here the request is built from the
//! guard's parse of the head (where its parts are: [`HeadMap`]) when a read returned it
//! alone, as on a kept-alive connection; from a parse of its own when it came with more
//! (pipelined requests). It goes to the service in the connection's own task, and the
//! response is written straight to the client: head and body in one write when the body
//! is at hand.
//!
//! Anything else (a head with `Content-Length`, `Transfer-Encoding`, `Expect` or
//! `Upgrade`, `CONNECT`, HTTP/1.0, an absolute-form or `*` target, a head that does not
//! parse, more fields than [`FAST_FIELDS`] or than the field limit, a head still incomplete
//! at [`MAX_FAST_HEAD`] bytes, the HTTP/2 preface) ends this path: the connection goes to
//! hyper with the bytes read so far, and stays with it (HTTP/1 only, once requests were
//! answered here). So everything this path does not do, refusals included (the guard's
//! replacement heads are among the heads that do not parse), is done as before.
//!
//! Responses are written as RFC 9112 section 6 says, and mostly as hyper's server writes
//! them: no body after `HEAD`, `204` and `304`, and no `Content-Length` on a `204`; chunked
//! when the response names other transfer codings (kept, with `chunked` last), else the
//! response's `Content-Length` when it has one, else the body's exact size when known, else
//! chunked; trailers only when the request said `TE: trailers`, and only those the response
//! declared in `Trailer` that may be trailers (RFC 9110 section 6.5.1); a `Date` field added
//! when there is none; `connection: close` when the connection ends after the response (the
//! client asked, the service's response says so, or the server is shutting down). An
//! interim status (`1xx`) as a final answer becomes `500` and the connection is closed. A
//! body that fails, or ends before its `Content-Length`, ends the connection there, so the
//! client sees a cut response (where hyper would have said `content-length: 0` for a body
//! known empty, the stated length is kept and the response cut: the service said both).

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, response};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::BoxError;
use crate::body::ProxyBody;
use crate::guard::{Guarded, HeadMap};
use crate::proxy::h1::{length_value, tokens};

/// Most fields a head answered here may have; a head with more goes to hyper.
pub(super) const FAST_FIELDS: usize = 64;
/// Largest head answered here: a longer one (still arriving, or whole) goes to hyper, which
/// reads heads up to the server's limit.
pub(super) const MAX_FAST_HEAD: usize = 16 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Body data up to this much is gathered with the head into one write.
const GATHER: usize = 64 * 1024;

/// How the connection's time on this path ended.
pub(super) enum Outcome {
    /// The connection is done: the client closed or failed, a response said to close, the
    /// server is shutting down, or a response could not be written whole.
    Closed,
    /// A request this path does not answer: hyper serves the connection from here, reading
    /// these bytes first. `answered`: this path answered requests before (the connection
    /// is HTTP/1 then, whatever follows: an HTTP/2 preface counts only as a connection's
    /// first bytes, RFC 9113 section 3.4).
    Handoff { bytes: Bytes, answered: bool },
}

/// A request parsed here, and what its head said about the connection.
struct Parsed {
    req: Request<ProxyBody>,
    /// `Connection: close`: the connection ends after the response.
    close: bool,
    /// `TE: trailers`: the client takes trailer fields.
    trailers: bool,
}

/// What the bytes read so far are. Returned once per request and taken apart at once: a
/// box for the request would be an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parse {
    Request(Parsed),
    /// Not a whole head yet.
    Partial,
    /// A head this path does not answer, or not a head at all: for hyper.
    Other,
}

/// Answers the requests on `io` that this path answers, until one it does not, the end of
/// the connection, or `shutdown` (then an idle connection is closed at once and a busy one
/// after its response). `drain`: the receiver `shutdown` waits on, or a clone of it.
pub(super) async fn serve_h1<T, S, B, F>(
    io: &mut Guarded<T>,
    svc: &mut S,
    peer: SocketAddr,
    max_headers: usize,
    mut shutdown: Pin<&mut F>,
    drain: &watch::Receiver<()>,
) -> Outcome
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: tower::Service<Request<ProxyBody>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future,
{
    let mut rbuf = BytesMut::new();
    let mut wbuf = Vec::new();
    // Where the parts of a head are, when found here rather than by the guard.
    let mut scratch = HeadMap::default();
    // The last read went into an empty buffer: if it returned one whole head, the guard
    // knows where its parts are.
    let mut fresh = false;
    // `shutdown` has been polled and waits.
    let mut watching = false;
    // The last response's header map, emptied, for the next request (no allocation per
    // request: the proxy hands the request's map on to the response it reads).
    let mut spare: Option<HeaderMap> = None;
    let mut answered = false;
    loop {
        let parsed = loop {
            if !rbuf.is_empty() {
                let given = io.head_map().filter(|m| fresh && m.len == rbuf.len());
                match parse(&mut rbuf, max_headers, given, &mut scratch, &mut spare) {
                    Parse::Request(parsed) => break parsed,
                    Parse::Partial if rbuf.len() < MAX_FAST_HEAD => {}
                    Parse::Partial | Parse::Other => {
                        return Outcome::Handoff {
                            bytes: rbuf.freeze(),
                            answered,
                        };
                    }
                }
            }
            rbuf.reserve(READ_CHUNK);
            fresh = rbuf.is_empty();
            // No request in progress (a head is held by the guard until it is whole; what
            // is here is blank lines or the start of a pipelined head): the server's
            // shutdown closes the connection, as hyper's graceful shutdown closes one that
            // has not read a whole head. `shutdown` is polled until it waits (its waker
            // then stays registered, and wakes this task when the server shuts down); after
            // that, `drain` says whether it came.
            let mut read = std::pin::pin!(io.read_buf(&mut rbuf));
            let read = std::future::poll_fn(|cx| {
                if !watching {
                    if shutdown.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    watching = true;
                } else if shut_down(drain) {
                    return Poll::Ready(None);
                }
                read.as_mut().poll(cx).map(Some)
            })
            .await;
            let Some(read) = read else {
                return Outcome::Closed;
            };
            match read {
                // The client closed, or the guard ended the connection (a 408 written, the
                // idle timeout): a head cut short is not answered, as by hyper.
                Ok(0) => return Outcome::Closed,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("connection from {peer}: {e}");
                    return Outcome::Closed;
                }
            }
        };
        let Parsed {
            req,
            close,
            trailers,
        } = parsed;
        let head = req.method() == Method::HEAD;
        let Ok(resp) = super::handle(svc.clone(), peer, None, max_headers, req).await;
        answered = true;
        // Shutting down: this response is the connection's last.
        let keep = !close && !shut_down(drain);
        let (mut parts, mut body) = resp.into_parts();
        let keep = if parts.status.is_informational() {
            // An interim status as the final answer (the proxy never gives one): the client
            // would wait for a final response that never comes. As hyper's server does:
            // 500, and the connection closed.
            tracing::debug!(
                "the service answered a request from {peer} with {}: 500",
                parts.status
            );
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            parts.headers.clear();
            parts.extensions.remove::<hyper::ext::ReasonPhrase>();
            body = crate::body::empty();
            false
        } else {
            keep && !lists_close(&parts.headers)
        };
        match write_response(io, &mut wbuf, parts, body, head, keep, trailers).await {
            Ok(mut map) => {
                map.clear();
                spare = Some(map);
            }
            Err(e) => {
                tracing::debug!("connection from {peer}: {e}");
                return Outcome::Closed;
            }
        }
        if !keep {
            return Outcome::Closed;
        }
    }
}

/// True once the server is shutting down (`drain` has had its value, or is gone).
fn shut_down(drain: &watch::Receiver<()>) -> bool {
    drain.has_changed().unwrap_or(true)
}

/// True when a `Connection` field of `headers` lists `close`.
fn lists_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")))
}

/// Where the parts of the head at the start of `rbuf` are: httparse with its default
/// settings, as hyper's and the guard's parse. `None`: not a whole head yet; `Some(false)`:
/// not a head this path answers.
fn locate(rbuf: &[u8], max_headers: usize, map: &mut HeadMap) -> Option<bool> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FAST_FIELDS];
    let slots = &mut slots[..max_headers.min(FAST_FIELDS)];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(rbuf, slots) {
        Ok(httparse::Status::Complete(len)) => map.record(rbuf, len, &req),
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(false),
    }
    Some(true)
}

/// Takes the head at the start of `rbuf` out into a request, when this path answers it.
/// `given`: where its parts are, as the guard found them; otherwise they are found here
/// (in `scratch`).
fn parse(
    rbuf: &mut BytesMut,
    max_headers: usize,
    given: Option<&HeadMap>,
    scratch: &mut HeadMap,
    spare: &mut Option<HeaderMap>,
) -> Parse {
    let map = match given {
        Some(map) => map,
        None => match locate(rbuf, max_headers, scratch) {
            Some(true) => &*scratch,
            Some(false) => return Parse::Other,
            None => return Parse::Partial,
        },
    };
    if map.minor != 1 || map.fields.len() > max_headers.min(FAST_FIELDS) {
        return Parse::Other;
    }
    let part = |(at, len): (usize, usize)| &rbuf[at..at + len];
    let target = part(map.target);
    if !target.starts_with(b"/") {
        return Parse::Other;
    }
    let method = match part(map.method) {
        b"GET" => Method::GET,
        b"HEAD" => Method::HEAD,
        b"CONNECT" => return Parse::Other,
        other => match Method::from_bytes(other) {
            Ok(m) => m,
            Err(_) => return Parse::Other,
        },
    };
    let mut close = false;
    let mut trailers = false;
    for &(n0, n1, v0, v1) in &map.fields {
        let name = &rbuf[n0..n1];
        let value = &rbuf[v0..v1];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") || is("transfer-encoding") || is("upgrade") || is("expect") {
            return Parse::Other;
        }
        if is("connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    return Parse::Other;
                }
            }
        } else if is("te") {
            trailers |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        }
    }
    let head = rbuf.split_to(map.len).freeze();
    match build(&head, method, map, spare) {
        Some(req) => Parse::Request(Parsed {
            req,
            close,
            trailers,
        }),
        None => {
            // A name, value or target the http types refuse (httparse passed it): put the
            // head back for hyper, which answers it.
            let mut all = BytesMut::with_capacity(head.len() + rbuf.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(rbuf);
            *rbuf = all;
            Parse::Other
        }
    }
}

/// The request of a parsed head (`head`: its bytes, which the target and field values are
/// slices of).
fn build(
    head: &Bytes,
    method: Method,
    map: &HeadMap,
    spare: &mut Option<HeaderMap>,
) -> Option<Request<ProxyBody>> {
    let (at, len) = map.target;
    let uri = Uri::from_maybe_shared(head.slice(at..at + len)).ok()?;
    let fields = &map.fields;
    // Room for the fields the proxy adds (X-Forwarded-*, Via, Forwarded).
    let room = fields.len() + 6;
    let mut map = match spare.take() {
        Some(mut map) => {
            map.reserve(room);
            map
        }
        None => HeaderMap::with_capacity(room),
    };
    for &(n0, n1, v0, v1) in fields {
        let name = HeaderName::from_bytes(&head[n0..n1]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1)).ok()?;
        map.append(name, value);
    }
    let mut req = Request::new(crate::body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Some(req)
}

/// How the response body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// This many bytes left.
    Length(u64),
    Chunked,
}

/// Writes the response to `io` and returns its header map.
async fn write_response<T>(
    io: &mut T,
    wbuf: &mut Vec<u8>,
    parts: response::Parts,
    mut body: ProxyBody,
    head: bool,
    keep: bool,
    trailers: bool,
) -> io::Result<HeaderMap>
where
    T: AsyncWrite + Unpin,
{
    wbuf.clear();
    let mut framing = encode_head(&parts, &body, head, keep, wbuf);
    let mut tail: Option<HeaderMap> = None;
    while framing != Framing::Empty && !body.is_end_stream() {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                // Nothing at hand: what is gathered goes out while the body waits.
                send(io, wbuf).await?;
                body.frame().await
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // What is gathered still goes: the client sees a response cut short, not a
                // connection closed before any answer (which it may take as its request
                // never seen, and send again).
                send(io, wbuf).await?;
                return Err(io::Error::other(e));
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    tail = Some(t);
                }
                continue;
            }
        };
        match &mut framing {
            Framing::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(io::Error::other(
                        "the response body is longer than its Content-Length",
                    ));
                }
                *left -= n;
                put(io, wbuf, data).await?;
            }
            Framing::Chunked if !data.is_empty() => {
                let _ = write!(wbuf, "{:x}\r\n", data.len());
                put(io, wbuf, data).await?;
                wbuf.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    match framing {
        Framing::Length(left) if left > 0 => {
            send(io, wbuf).await?;
            return Err(io::Error::other(format!(
                "the response body ended {left} bytes short of its Content-Length"
            )));
        }
        Framing::Chunked => {
            wbuf.extend_from_slice(b"0\r\n");
            if let Some(tail) = tail.filter(|_| trailers) {
                put_trailers(&parts.headers, &tail, wbuf);
            }
            wbuf.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
    send(io, wbuf).await?;
    Ok(parts.headers)
}

/// Adds `data` to what is gathered, or, when that would make too much, writes both.
async fn put<T: AsyncWrite + Unpin>(io: &mut T, wbuf: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    if wbuf.len() + data.len() <= GATHER {
        wbuf.extend_from_slice(&data);
        return Ok(());
    }
    send(io, wbuf).await?;
    io.write_all(&data).await
}

/// Writes what is gathered.
async fn send<T: AsyncWrite + Unpin>(io: &mut T, wbuf: &mut Vec<u8>) -> io::Result<()> {
    if !wbuf.is_empty() {
        io.write_all(wbuf).await?;
        wbuf.clear();
    }
    Ok(())
}

/// Writes the status line and fields of `parts` to `dst`, with the framing fields this
/// writer decides, and says how the body is to be written.
fn encode_head(
    parts: &response::Parts,
    body: &ProxyBody,
    head: bool,
    keep: bool,
    dst: &mut Vec<u8>,
) -> Framing {
    let status = parts.status;
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => dst.extend_from_slice(reason.as_bytes()),
        None => dst.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    dst.extend_from_slice(b"\r\n");
    let mut length: Option<u64> = None;
    let mut date = false;
    // Transfer codings the response names besides chunked (a service's own, as the proxy
    // removes a backend's): kept, with chunked last.
    let mut codings = false;
    // Where the Content-Length field went, to take it out again if codings follow.
    let mut length_at = 0..0;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING {
            codings |= tokens(value.as_bytes()).any(|c| !c.eq_ignore_ascii_case(b"chunked"));
            continue;
        }
        if (!keep && *name == header::CONNECTION)
            || (status == StatusCode::NO_CONTENT && *name == header::CONTENT_LENGTH)
        {
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            // One length, said once: another value, or one that is no length, is dropped
            // (the body's own size or chunked framing then tells the client).
            match length_value(value.as_bytes()) {
                Some(n) if length.is_none() => length = Some(n),
                _ => continue,
            }
            let at = dst.len();
            put_field(dst, name.as_str().as_bytes(), value.as_bytes());
            length_at = at..dst.len();
            continue;
        } else if *name == header::DATE {
            date = true;
        }
        put_field(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else if codings {
        // Not both (RFC 9112 section 6.1).
        dst.drain(length_at);
        for value in parts.headers.get_all(header::TRANSFER_ENCODING) {
            let list = tokens(value.as_bytes()).filter(|c| !c.eq_ignore_ascii_case(b"chunked"));
            for coding in list.filter(|c| !c.is_empty()) {
                dst.extend_from_slice(b"transfer-encoding: ");
                dst.extend_from_slice(coding);
                dst.extend_from_slice(b"\r\n");
            }
        }
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        if head {
            Framing::Empty
        } else {
            Framing::Chunked
        }
    } else if head {
        // What a GET would have had, when known.
        if let (None, Some(n @ 1..)) = (length, body.size_hint().exact()) {
            put_length(dst, n);
        }
        Framing::Empty
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        put_length(dst, n);
        Framing::Length(n)
    } else {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if !keep {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if !date {
        put_date(dst);
    }
    dst.extend_from_slice(b"\r\n");
    framing
}

/// Writes the trailer fields of `tail` that the response declared in its `Trailer` field
/// and that may be trailers at all (RFC 9110 section 6.5.1: not the ones framing, routing,
/// authentication or the content's handling depend on), as hyper's server does.
fn put_trailers(headers: &HeaderMap, tail: &HeaderMap, dst: &mut Vec<u8>) {
    let declared: Vec<&[u8]> = headers
        .get_all(header::TRAILER)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .collect();
    for (name, value) in tail {
        let allowed = !matches!(
            *name,
            header::AUTHORIZATION
                | header::CACHE_CONTROL
                | header::CONTENT_ENCODING
                | header::CONTENT_LENGTH
                | header::CONTENT_RANGE
                | header::CONTENT_TYPE
                | header::HOST
                | header::MAX_FORWARDS
                | header::SET_COOKIE
                | header::TE
                | header::TRAILER
                | header::TRANSFER_ENCODING
        );
        let name = name.as_str().as_bytes();
        if allowed && declared.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            put_field(dst, name, value.as_bytes());
        }
    }
}

fn put_field(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

fn put_length(dst: &mut Vec<u8>, n: u64) {
    let _ = write!(dst, "content-length: {n}\r\n");
}

thread_local! {
    /// The `Date` value of the current second, made once a second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn put_date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != secs {
            *date = (secs, httpdate::fmt_http_date(now));
        }
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(date.1.as_bytes());
        dst.extend_from_slice(b"\r\n");
    });
}

pin_project_lite::pin_project! {
    /// The client connection handed to hyper: the bytes this path read first, then the
    /// connection's own.
    pub(super) struct Prefixed<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Prefixed<T> {
    pub(super) fn new(inner: T, prefix: Bytes) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<T: AsyncRead> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
