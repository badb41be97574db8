//! A guard on the client side of an HTTP/1 connection that sees each request head before
//! hyper does: it refuses request-smuggling shapes and enforces the request-head deadline.
//!
//! hyper already answers 400 and closes for differing duplicate `Content-Length`,
//! `Transfer-Encoding` whose last coding is not `chunked`, and `Transfer-Encoding` in
//! HTTP/1.0. A request with both `Transfer-Encoding` and `Content-Length`, however, hyper
//! accepts as RFC 9112 section 6.1 allows (the length is dropped, the body read as chunked, the
//! connection closed afterwards); this proxy refuses it outright, as the lb-http issue asks,
//! so such a request is never forwarded. The guard holds back each head until it is complete,
//! checks it, and when it is refused hands hyper an invalid request line instead; hyper then
//! answers `400 Bad Request` and closes the connection. Bodies pass through untouched while
//! the guard follows their framing (`Content-Length` or chunked) to find the next head.
//!
//! The head deadline is Apache's `RequestReadTimeout header=`: once the first byte of a head
//! has arrived, the whole head must arrive within [`GuardConfig::head_timeout`], else the
//! client gets `408 Request Timeout` and the connection is closed (slowloris). A connection
//! idle between requests for [`GuardConfig::idle_timeout`] is closed silently.
//!
//! After an HTTP/2 preface, a `CONNECT`, or a request asking for an upgrade the guard steps
//! aside: what follows is not HTTP/1 framing (HTTP/2 has its own, handled by hyper).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The request line handed to hyper in place of a refused head: an invalid method, which
/// hyper answers with 400 and a closed connection.
const POISON: &[u8] = b"\x01 / HTTP/1.1\r\n\r\n";

const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 21\r\n\r\nrequest head timeout\n";

/// Limits the guard enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// The whole head must arrive within this time of its first byte (default 20 s).
    pub head_timeout: Duration,
    /// A connection with no request in progress is closed after this time (default 60 s).
    pub idle_timeout: Duration,
    /// Largest head the guard holds back; a larger one is passed on for hyper to refuse with
    /// 431 (default 64 KiB; keep it equal to hyper's `max_buf_size`).
    pub max_head: usize,
    /// Most header fields a head may have; more are passed on for hyper to refuse with 431.
    pub max_headers: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            head_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_head: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// Where the guard is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Collecting a request head.
    Head,
    /// Inside a body with this many bytes left.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not HTTP/1 framing any more (HTTP/2, upgrade, CONNECT) or the stream went astray:
    /// bytes pass untouched and hyper judges them.
    Passthrough,
    /// A refused head was replaced; nothing more is read from the client.
    Closed,
}

/// Position inside chunked framing (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { size: u64, ext: bool, digits: u32 },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerEndLf,
}

/// Caller buffers smaller than this get a head read through [`SCRATCH`] bytes of the
/// guard's own.
const SMALL_READ: usize = 256;
/// The guard's own read buffer, on the stack, for small caller buffers.
const SCRATCH: usize = 2048;

pin_project_lite::pin_project! {
    /// An I/O object wrapping the client connection; give it to hyper instead of the socket.
    #[derive(Debug)]
    pub struct Guarded<T> {
        #[pin]
        inner: T,
        config: GuardConfig,
        mode: Mode,
        // Head bytes held back until the head is complete.
        head: BytesMut,
        // Bytes ready for hyper.
        out: BytesMut,
        first_head: bool,
        timer: Pin<Box<Sleep>>,
        deadline: Instant,
        armed: Armed,
        refused: u64,
        plain_close: bool,
    }
}

impl<T> Guarded<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, config: GuardConfig) -> Self {
        Guarded {
            inner,
            config,
            mode: Mode::Head,
            head: BytesMut::new(),
            out: BytesMut::new(),
            first_head: true,
            timer: Box::pin(tokio::time::sleep(config.idle_timeout)),
            deadline: Instant::now() + config.idle_timeout,
            armed: Armed::Idle,
            refused: 0,
            plain_close: false,
        }
    }

    /// For an `inner` that is a plain socket, closed as soon as hyper is done with it: the
    /// shutdown hyper makes at the end of an HTTP/1 connection is then skipped, since the
    /// close sends the same FIN (one system call less per connection). In a tunnel the
    /// shutdown is a half-close the other side may be waiting for, and it still goes through.
    pub(crate) fn plain_close(mut self) -> Self {
        self.plain_close = true;
        self
    }

    /// How many heads the guard refused on this connection.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Which deadline is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    /// None yet: armed when the guard next waits for bytes.
    None,
    /// Waiting for the first byte of a head.
    Idle,
    /// Waiting for the rest of a started head.
    Head,
}

/// What to do with a complete head.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Forward { next: Mode },
    Refuse,
    Passthrough,
}

/// Checks a complete head (`buf` ends with the blank line).
fn judge(buf: &[u8], max_headers: usize) -> Verdict {
    // Uninitialised slots: filling 128 empty headers (4 KiB) for every request cost more
    // than parsing a short head.
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut on_heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= on_stack.len() {
        &mut on_stack[..max_headers]
    } else {
        on_heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut on_heap
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(_)) => {}
        // Too many headers, bad tokens...: hyper refuses these itself with 431 or 400.
        _ => return Verdict::Passthrough,
    }
    let http10 = req.version == Some(0);
    let mut cl: Option<u64> = None;
    let mut cl_seen = false;
    let mut te_seen = false;
    let mut te_last_chunked = false;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            let digits = !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit);
            let Some(n) = digits
                .then(|| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .flatten()
            else {
                return Verdict::Refuse;
            };
            if cl.is_some_and(|prev| prev != n) {
                return Verdict::Refuse;
            }
            cl = Some(n);
            cl_seen = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            te_last_chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if te_seen && (cl_seen || http10 || !te_last_chunked) {
        return Verdict::Refuse;
    }
    if upgrade
        || req
            .method
            .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"))
    {
        return Verdict::Passthrough;
    }
    let next = if te_seen {
        Mode::Chunked(Chunk::Size {
            size: 0,
            ext: false,
            digits: 0,
        })
    } else {
        match cl {
            Some(n) if n > 0 => Mode::Body(n),
            _ => Mode::Head,
        }
    };
    Verdict::Forward { next }
}

/// Advances chunked framing over `data`; returns how many bytes belong to the body and the
/// mode after them (`None`: malformed, stop following).
fn scan_chunked(mut state: Chunk, data: &[u8]) -> (usize, Option<Mode>) {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        state = match state {
            Chunk::Size { size, ext, digits } => match b {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => {
                    if size == 0 {
                        Chunk::TrailerLineStart
                    } else {
                        Chunk::Data(size)
                    }
                }
                _ if ext => Chunk::Size { size, ext, digits },
                b';' | b' ' | b'\t' => Chunk::Size {
                    size,
                    ext: true,
                    digits,
                },
                _ => {
                    let Some(d) = (b as char).to_digit(16) else {
                        return (i, None);
                    };
                    if digits >= 16 {
                        return (i, None);
                    }
                    Chunk::Size {
                        size: size * 16 + u64::from(d),
                        ext,
                        digits: digits + 1,
                    }
                }
            },
            Chunk::SizeLf { size } => {
                if b != b'\n' {
                    return (i, None);
                }
                if size == 0 {
                    Chunk::TrailerLineStart
                } else {
                    Chunk::Data(size)
                }
            }
            Chunk::Data(n) => {
                let take = (n as usize).min(data.len() - i);
                i += take;
                let left = n - take as u64;
                state = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                b'\n' => Chunk::Size {
                    size: 0,
                    ext: false,
                    digits: 0,
                },
                _ => return (i, None),
            },
            Chunk::DataLf => {
                if b != b'\n' {
                    return (i, None);
                }
                Chunk::Size {
                    size: 0,
                    ext: false,
                    digits: 0,
                }
            }
            Chunk::TrailerLineStart => match b {
                b'\r' => Chunk::TrailerEndLf,
                b'\n' => return (i + 1, Some(Mode::Head)),
                _ => Chunk::TrailerLine,
            },
            Chunk::TrailerLine => {
                if b == b'\n' {
                    Chunk::TrailerLineStart
                } else {
                    Chunk::TrailerLine
                }
            }
            Chunk::TrailerEndLf => {
                if b != b'\n' {
                    return (i, None);
                }
                return (i + 1, Some(Mode::Head));
            }
        };
        i += 1;
    }
    (i, Some(Mode::Chunked(state)))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

impl<T> Guarded<T> {
    /// True when `data`, just read with nothing held, is exactly one complete request head
    /// that the guard forwards: the state moves past it as `feed` would move it, without
    /// copying it anywhere.
    fn accept_in_place(self: Pin<&mut Self>, data: &[u8]) -> bool {
        let this = self.project();
        if !matches!(*this.mode, Mode::Head)
            || !this.head.is_empty()
            || !this.out.is_empty()
            || data.first().is_none_or(|b| *b == b'\r' || *b == b'\n')
            || (*this.first_head && data.starts_with(b"PRI * HTTP/2.0"))
            || data.len() > this.config.max_head
        {
            return false;
        }
        if find_head_end(data) != Some(data.len()) {
            return false;
        }
        match judge(data, this.config.max_headers) {
            Verdict::Forward { next } => {
                *this.first_head = false;
                *this.mode = next;
                *this.armed = Armed::None;
                true
            }
            _ => false,
        }
    }

    /// [`feed`](Self::feed)s bytes read while collecting a head; with no head left
    /// partly held, no head deadline runs any more.
    fn take_in(mut self: Pin<&mut Self>, data: &[u8]) {
        self.as_mut().feed(data);
        let this = self.project();
        if this.head.is_empty() {
            *this.armed = Armed::None;
        }
    }

    /// Runs `data` through the state machine, moving passable bytes to `out` and head bytes
    /// to `head`.
    fn feed(self: Pin<&mut Self>, mut data: &[u8]) {
        let this = self.project();
        while !data.is_empty() {
            match *this.mode {
                Mode::Closed => return,
                Mode::Passthrough => {
                    this.out.extend_from_slice(data);
                    return;
                }
                Mode::Body(n) => {
                    let take = (n as usize).min(data.len());
                    this.out.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let left = n - take as u64;
                    *this.mode = if left == 0 {
                        Mode::Head
                    } else {
                        Mode::Body(left)
                    };
                }
                Mode::Chunked(state) => {
                    let (used, next) = scan_chunked(state, data);
                    this.out.extend_from_slice(&data[..used]);
                    data = &data[used..];
                    *this.mode = next.unwrap_or(Mode::Passthrough);
                }
                Mode::Head => {
                    // Blank lines before a request line are allowed (RFC 9112 section 2.2).
                    if this.head.is_empty() {
                        let skip = data.iter().take_while(|b| **b == b'\r' || **b == b'\n');
                        let skip = skip.count();
                        this.out.extend_from_slice(&data[..skip]);
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let before = this.head.len();
                    this.head.extend_from_slice(data);
                    if *this.first_head && this.head.starts_with(b"PRI * HTTP/2.0") {
                        this.out.extend_from_slice(this.head);
                        this.head.clear();
                        *this.mode = Mode::Passthrough;
                        return;
                    }
                    // Search from a little before the new bytes for the end of the head.
                    let from = before.saturating_sub(3);
                    let Some(end) = find_head_end(&this.head[from..]).map(|e| e + from) else {
                        if this.head.len() > this.config.max_head {
                            this.out.extend_from_slice(this.head);
                            this.head.clear();
                            *this.mode = Mode::Passthrough;
                        }
                        return;
                    };
                    *this.first_head = false;
                    let rest_start = end - before;
                    match judge(&this.head[..end], this.config.max_headers) {
                        Verdict::Forward { next } => {
                            this.out.extend_from_slice(&this.head[..end]);
                            *this.mode = next;
                        }
                        Verdict::Passthrough => {
                            this.out.extend_from_slice(&this.head[..end]);
                            *this.mode = Mode::Passthrough;
                        }
                        Verdict::Refuse => {
                            tracing::debug!("refusing a request head with a smuggling shape");
                            *this.refused += 1;
                            this.out.extend_from_slice(POISON);
                            this.head.clear();
                            *this.mode = Mode::Closed;
                            return;
                        }
                    }
                    this.head.clear();
                    data = &data[rest_start..];
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            {
                let this = self.as_mut().project();
                if !this.out.is_empty() {
                    let n = this.out.len().min(buf.remaining());
                    buf.put_slice(&this.out[..n]);
                    this.out.advance(n);
                    return Poll::Ready(Ok(()));
                }
            }
            match self.mode {
                Mode::Closed => return Poll::Ready(Ok(())),
                Mode::Passthrough => return self.project().inner.poll_read(cx, buf),
                _ => {}
            }
            // Fast path: inside a body, read straight into the caller's buffer.
            if matches!(self.mode, Mode::Body(_) | Mode::Chunked(_)) {
                let start = buf.filled().len();
                ready!(self.as_mut().project().inner.poll_read(cx, buf))?;
                let end = buf.filled().len();
                if end == start {
                    return Poll::Ready(Ok(()));
                }
                let this = self.as_mut().project();
                let (used, next) = match *this.mode {
                    Mode::Body(n) => {
                        let used = (n as usize).min(end - start);
                        let left = n - used as u64;
                        (
                            used,
                            if left == 0 {
                                Mode::Head
                            } else {
                                Mode::Body(left)
                            },
                        )
                    }
                    Mode::Chunked(state) => {
                        let (used, next) = scan_chunked(state, &buf.filled()[start..end]);
                        (used, next.unwrap_or(Mode::Passthrough))
                    }
                    _ => (end - start, *this.mode),
                };
                *this.mode = next;
                *this.armed = Armed::None;
                if start + used < end {
                    let rest = buf.filled()[start + used..end].to_vec();
                    buf.set_filled(start + used);
                    self.as_mut().feed(&rest);
                }
                if buf.filled().len() > start {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Collecting a head: read into the caller's buffer. When the new bytes are
            // exactly one whole head that the guard lets through (the usual keep-alive
            // request), they stay where they are; anything else is taken back out and goes
            // through `feed`, which holds partial heads and answers refused ones. A buffer
            // with no room gets nothing, as from a socket, rather than a read of 0 bytes that
            // would look like the end of input.
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // A small caller buffer would take a head in many reads: hyper-util reads the
            // first 24 bytes of a connection alone, to tell HTTP/2's preface from HTTP/1.1.
            // The socket is then read into a buffer of the guard's, and the head served
            // from `out`. End of input, errors and nothing-yet go on to the read below,
            // which sees them again.
            if buf.remaining() < SMALL_READ {
                let mut scratch = [0u8; SCRATCH];
                let mut own = ReadBuf::new(&mut scratch);
                if let Poll::Ready(Ok(())) = self.as_mut().project().inner.poll_read(cx, &mut own) {
                    if !own.filled().is_empty() {
                        self.as_mut().take_in(own.filled());
                        continue;
                    }
                }
            }
            let start = buf.filled().len();
            match self.as_mut().project().inner.poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let new = &buf.filled()[start..];
                    if new.is_empty() {
                        // EOF: let hyper see what was held (it reports an incomplete head).
                        let this = self.as_mut().project();
                        let held = std::mem::take(this.head);
                        this.out.extend_from_slice(&held);
                        *this.mode = Mode::Closed;
                        if this.out.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    if self.as_mut().accept_in_place(new) {
                        return Poll::Ready(Ok(()));
                    }
                    self.as_mut().take_in(new);
                    buf.set_filled(start);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let mut this = self.as_mut().project();
                    let want = if this.head.is_empty() {
                        Armed::Idle
                    } else {
                        Armed::Head
                    };
                    if *this.armed != want {
                        let wait = match want {
                            Armed::Head => this.config.head_timeout,
                            _ => this.config.idle_timeout,
                        };
                        *this.deadline = Instant::now() + wait;
                        *this.armed = want;
                    }
                    // The timer may run early (it is only moved when it would be late) and
                    // is re-armed when it fires before the deadline: one timer update per
                    // timeout period rather than one per request.
                    if this.timer.deadline() > *this.deadline {
                        this.timer.as_mut().reset(*this.deadline);
                    }
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() < *this.deadline {
                        this.timer.as_mut().reset(*this.deadline);
                        if this.timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    *this.mode = Mode::Closed;
                    if !this.head.is_empty() {
                        tracing::debug!("request head timeout: answering 408");
                        let mut written = 0;
                        while written < RESPONSE_408.len() {
                            match this.inner.as_mut().poll_write(cx, &RESPONSE_408[written..]) {
                                Poll::Ready(Ok(n)) if n > 0 => written += n,
                                _ => break,
                            }
                        }
                        let _ = this.inner.as_mut().poll_flush(cx);
                    }
                    this.head.clear();
                    // hyper sees a clean end of input and closes the connection.
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for Guarded<T> {
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
        let this = self.project();
        if *this.plain_close && *this.mode != Mode::Passthrough {
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn run(input: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = Box::pin(Guarded::new(server, GuardConfig::default()));
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        g.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn passes_pipelined_requests_with_bodies() {
        let input = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\nGET /c HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(run(input).await, input.to_vec());
    }

    #[tokio::test]
    async fn refuses_te_with_cl_even_when_pipelined() {
        let input = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\nPOST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        let out = run(input).await;
        let mut want = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        want.extend_from_slice(POISON);
        assert_eq!(out, want);
    }

    #[tokio::test]
    async fn heads_read_whole_or_in_pieces() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = Box::pin(Guarded::new(server, GuardConfig::default()));
        let mut buf = vec![0u8; 4096];
        // A whole head in one read is handed over as it is.
        let get = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(get).await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], get);
        // A head in two pieces is held until it is complete.
        client.write_all(b"GET /b HTTP/1.1\r\nho").await.unwrap();
        let partial = futures_util::FutureExt::now_or_never(g.read(&mut buf));
        assert!(partial.is_none(), "a partial head was handed over");
        client.write_all(b"st: x\r\n\r\n").await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n");
        // A refused head arriving whole in one read is not handed over either.
        client
            .write_all(
                b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], POISON);
        assert_eq!(g.refused(), 1);
    }

    /// Counts the reads of the wrapped I/O that returned bytes.
    struct CountReads<T> {
        inner: T,
        reads: usize,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for CountReads<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.reads += 1;
            }
            polled
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for CountReads<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// The end of an HTTP/1 connection on a plain socket: hyper's shutdown is skipped (the
    /// close that follows sends the FIN). In a tunnel the half-close reaches the client.
    #[tokio::test]
    async fn a_plain_socket_is_shut_down_only_in_a_tunnel() {
        use futures_util::FutureExt as _;
        let get = &b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"[..];
        let upgrade =
            &b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"[..];
        for (head, tunnel) in [(get, false), (upgrade, true)] {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut g = Box::pin(Guarded::new(server, GuardConfig::default()).plain_close());
            client.write_all(head).await.unwrap();
            let mut buf = vec![0u8; 256];
            let n = g.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], head);
            g.write_all(b"answer").await.unwrap();
            g.shutdown().await.unwrap();
            let mut got = [0u8; 6];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"answer");
            let mut byte = [0u8; 1];
            let eof = client.read(&mut byte).now_or_never();
            if tunnel {
                assert_eq!(
                    eof.map(Result::unwrap),
                    Some(0),
                    "the half-close goes through"
                );
            } else {
                assert!(eof.is_none(), "no shutdown before the close");
                drop(g);
                assert_eq!(
                    client.read(&mut byte).await.unwrap(),
                    0,
                    "the close ends it"
                );
            }
        }
    }

    #[tokio::test]
    async fn small_reads_take_a_head_in_one_socket_read() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let counted = CountReads {
            inner: server,
            reads: 0,
        };
        let mut g = Box::pin(Guarded::new(counted, GuardConfig::default()));
        let get = b"GET /a/longer/path HTTP/1.1\r\nhost: example\r\naccept: */*\r\n\r\n";
        let refused = b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        for (sent, want, reads) in [(&get[..], &get[..], 1), (&refused[..], POISON, 2)] {
            client.write_all(sent).await.unwrap();
            // As hyper-util reads the start of a connection: 24 bytes, then the rest.
            let mut got = Vec::new();
            let mut small = [0u8; 24];
            while got.len() < want.len() {
                let n = g.read(&mut small).await.unwrap();
                assert!(n > 0, "end of input after {got:?}");
                got.extend_from_slice(&small[..n]);
            }
            assert_eq!(got, want);
            assert_eq!(g.inner.reads, reads, "socket reads");
        }
    }

    #[test]
    fn judges_shapes() {
        let refuse = [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        ];
        for head in refuse {
            assert_eq!(
                judge(head, 100),
                Verdict::Refuse,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(
            judge(
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                100
            ),
            Verdict::Forward {
                next: Mode::Body(3)
            }
        );
        assert_eq!(
            judge(
                b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                100
            ),
            Verdict::Passthrough
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_last_request() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = Box::pin(Guarded::new(server, GuardConfig::default()));
        let req = b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi";
        let mut buf = vec![0u8; 1024];
        for _ in 0..3 {
            client.write_all(req).await.unwrap();
            let mut got = 0;
            while got < req.len() {
                got += g.read(&mut buf).await.unwrap();
            }
            // 50 s idle each time: below the 60 s idle timeout since the last request.
            tokio::time::advance(Duration::from_secs(50)).await;
        }
        client.write_all(req).await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed although it was never idle for 60 s"
        );
        while g.read(&mut buf).await.unwrap() > 0 {}
        // The read loop above ended: only after the idle timeout, with no 408 for an idle
        // connection.
        drop(g);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_head_gets_408() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let config = GuardConfig {
            head_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let mut g = Box::pin(Guarded::new(server, config));
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        // Returns (EOF) only once the deadline passes under paused time.
        g.read_to_end(&mut out).await.unwrap();
        assert!(out.is_empty());
        let mut answer = vec![0u8; RESPONSE_408.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 408"));
    }
}
