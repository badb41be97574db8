//! A guard on the client side of an HTTP/1 connection that sees each request head before
//! whoever reads the connection does (hyper, or under [`serve`](crate::server::serve) its
//! own HTTP/1 path first): it refuses request-smuggling shapes and enforces the
//! request-head deadline.
//!
//! hyper already answers 400 and closes for differing duplicate `Content-Length`,
//! `Transfer-Encoding` whose last coding is not `chunked`, and `Transfer-Encoding` in
//! HTTP/1.0. A request with both `Transfer-Encoding` and `Content-Length`, however, hyper
//! accepts as RFC 9112 section 6.1 allows (the length is dropped, the body read as chunked, the
//! connection closed afterwards); this proxy refuses it outright, as the lb-http issue asks,
//! so such a request is never forwarded. So is a `Transfer-Encoding` other than `chunked`
//! alone (`gzip, chunked`): the proxy decodes only `chunked`, and would forward the body with
//! the other coding silently dropped. The guard holds back each head until it is complete,
//! checks it, and when it is refused hands hyper an invalid request line instead; hyper then
//! answers `400 Bad Request` and closes the connection (`serve`'s own path parses no such
//! head and hands it, and the connection, to hyper). Bodies pass through untouched while
//! the guard follows their framing (`Content-Length` or chunked) to find the next head.
//!
//! The head deadline is Apache's `RequestReadTimeout header=`: once the first byte of a head
//! has arrived, the whole head must arrive within [`GuardConfig::head_timeout`], else the
//! client gets `408 Request Timeout` and the connection is closed (slowloris). A connection
//! idle between requests for [`GuardConfig::idle_timeout`] is closed silently, and so is one
//! whose client takes nothing of what is written to it for [`GuardConfig::client_timeout`].
//!
//! A head ends where hyper's parser (httparse) finds its end: lines may end with CRLF or a
//! bare LF. A head over [`GuardConfig::max_head`] bytes, whole or still arriving, is
//! answered with `414` when its request line alone is that long, else `431`, and the
//! connection closed; heads hyper cannot parse are left to it
//! (400 or 431, then it closes), and nothing after them is read.
//!
//! After an HTTP/2 preface the guard steps aside: HTTP/2 has its own framing, handled by
//! hyper. It still keeps the idle timeout, run while no request is in flight: when it
//! passes, the code serving the connection is told (as `serve` is) and ends it with GOAWAY
//! (RFC 9113 section 6.8), so that a request the client was sending just then can be
//! retried elsewhere; a client that has not closed [`GuardConfig::head_timeout`] later (with
//! no request in flight) is closed. Used on its own, the guard closes an idle HTTP/2
//! connection silently. Under `serve` it also keeps the client timeout for responses that
//! wait on the client's flow-control window, which no write waiting on the socket shows:
//! when one has waited for it that long, the connection is closed, as an HTTP/1 one whose
//! client takes nothing is.
//!
//! After a request asking to switch protocols (`Upgrade`, `CONNECT`), what the client
//! sends is held until the answer is known, when the guard is told it (as `serve` does):
//! after a switch the bytes pass untouched; otherwise they are the next requests, checked
//! as any. Used on its own, without being told, the guard steps aside after such a request.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The request line handed to hyper in place of a refused head: an invalid method, which
/// hyper answers with 400 and a closed connection.
const POISON: &[u8] = b"\x01 / HTTP/1.1\r\n\r\n";

const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 21\r\n\r\nrequest head timeout\n";

/// What a connection's guard and the code answering its requests share:
/// - whether a request that asked to switch protocols (`Upgrade`, `CONNECT`) was answered
///   with the switch. Until it is known, the guard holds back what the client sent after
///   that request: the bytes are either the next request heads, to be checked as any, or
///   the new protocol's;
/// - how many requests are in flight (until their response body ends), when they are
///   counted: the idle timeout is for a connection with none. They are counted on HTTP/2
///   connections, and on HTTP/1 ones when hyper reads from the client while a request is in
///   flight (`abort_on_close`);
/// - that an HTTP/2 connection has been idle for the idle timeout and is to be ended with
///   GOAWAY ([`Shared::goaway_due`]);
/// - on HTTP/2, how many responses wait for the client to open its flow-control window
///   ([`InFlight::park`]), and since when each has: the client timeout runs from the
///   longest wait, as the socket's own runs while a write waits.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    switch: AtomicU8,
    counting: AtomicBool,
    goaway: AtomicBool,
    in_flight: AtomicUsize,
    parked: AtomicUsize,
    /// The waits of the HTTP/2 responses in flight, one slot each, registered once per
    /// response; a slot whose response ended is dropped at the next look.
    parks: Mutex<Vec<Weak<ParkSlot>>>,
    /// What the slots' times count from: the connection's first wait.
    park_base: OnceLock<Instant>,
    waker: AtomicWaker,
}

/// One HTTP/2 response's wait for the client's window: milliseconds after the
/// connection's `park_base`, plus one, since it waits; 0 while it does not.
#[derive(Debug, Default)]
pub(crate) struct ParkSlot(AtomicU64);

const SWITCH_IDLE: u8 = 0;
const SWITCH_AWAITED: u8 = 1;
const SWITCH_DONE: u8 = 2;
const SWITCH_DECLINED: u8 = 3;

impl Shared {
    /// `count`: count the requests in flight from the start (see above).
    pub(crate) fn new(count: bool) -> Shared {
        Shared {
            counting: AtomicBool::new(count),
            ..Shared::default()
        }
    }

    /// True while a request asking to switch protocols waits for its answer.
    pub(crate) fn switch_awaited(&self) -> bool {
        self.switch.load(Ordering::Acquire) == SWITCH_AWAITED
    }

    /// The answer to the request that asked to switch: `switched` when the connection now
    /// carries the other protocol.
    pub(crate) fn settle(&self, switched: bool) {
        let to = if switched {
            SWITCH_DONE
        } else {
            SWITCH_DECLINED
        };
        let _ =
            self.switch
                .compare_exchange(SWITCH_AWAITED, to, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    /// True when requests are to be counted with [`Shared::begin`].
    pub(crate) fn counting(&self) -> bool {
        self.counting.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned value is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// True once the guard found the HTTP/2 connection idle for the idle timeout: whoever
    /// polls the connection is to end it gracefully (GOAWAY). The guard sets it while being
    /// read, so from within the connection's poll, and wakes the connection's task.
    pub(crate) fn goaway_due(&self) -> bool {
        self.goaway.load(Ordering::Relaxed)
    }

    /// The connection is to end with GOAWAY: set by the guard at the idle timeout, or by
    /// whoever serves the connection when it ends it gracefully (a server shutdown), after
    /// which the guard starts its wait for the client to close.
    pub(crate) fn set_goaway_due(&self) {
        self.goaway.store(true, Ordering::Relaxed);
    }
}

/// A request in flight on a connection (see [`Shared::begin`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Shared>);

impl InFlight {
    /// A slot for this request's response's waits, which the guard looks at (HTTP/2).
    pub(crate) fn park_slot(&self) -> Arc<ParkSlot> {
        let slot = Arc::new(ParkSlot::default());
        let mut parks = self.0.parks.lock().unwrap_or_else(PoisonError::into_inner);
        if parks.len() >= 64 && parks.len().is_power_of_two() {
            parks.retain(|p| p.strong_count() > 0);
        }
        parks.push(Arc::downgrade(&slot));
        slot
    }

    /// This request's response handed hyper a frame of its body, which on HTTP/2 waits
    /// until the client's flow-control window takes it: hyper asks for the next frame only
    /// then. Until [`unpark`](Self::unpark), the guard counts the client timeout for it.
    pub(crate) fn park(&self, slot: &ParkSlot) {
        let base = *self.0.park_base.get_or_init(Instant::now);
        let since = Instant::now().saturating_duration_since(base).as_millis();
        slot.0.store(
            u64::try_from(since).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Release,
        );
        if self.0.parked.fetch_add(1, Ordering::AcqRel) == 0 {
            // The guard may be waiting with no timer running.
            self.0.waker.wake();
        }
    }

    /// The frame handed over with [`park`](Self::park) was taken: hyper asks for more (or
    /// the response ended).
    pub(crate) fn unpark(&self, slot: &ParkSlot) {
        slot.0.store(0, Ordering::Release);
        self.0.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Since when the response that has waited longest for the client's window waits.
    fn oldest_park(&self) -> Option<Instant> {
        let base = *self.park_base.get()?;
        let mut parks = self.parks.lock().unwrap_or_else(PoisonError::into_inner);
        parks.retain(|p| p.strong_count() > 0);
        parks
            .iter()
            .filter_map(Weak::upgrade)
            .map(|slot| slot.0.load(Ordering::Acquire))
            .filter(|since| *since > 0)
            .min()
            .map(|since| base + Duration::from_millis(since - 1))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The guard may be waiting with no idle timer running.
            self.0.waker.wake();
        }
    }
}

/// Limits the guard enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// The whole head must arrive within this time of its first byte (default 20 s).
    pub head_timeout: Duration,
    /// A connection with no request in progress is closed after this time (default 60 s):
    /// the keep-alive timeout (Apache's `KeepAliveTimeout`, nginx's `keepalive_timeout`,
    /// HAProxy's `timeout http-keep-alive`). Under [`serve`](crate::server::serve) an
    /// HTTP/2 one gets GOAWAY instead, and is closed if the client has not closed it
    /// [`head_timeout`](Self::head_timeout) later.
    pub idle_timeout: Duration,
    /// A connection whose client takes no byte of what is written to it for this long, a
    /// response or a tunnel's data, is closed (nginx's `send_timeout`, HAProxy's `timeout
    /// client`); on HTTP/2, also one with a response that waits that long for the
    /// client's flow-control window. `None` (the default): the idle timeout, as one silence
    /// allowed from a client. [`ProxyConfig::client_body_timeout`] is its counterpart for a
    /// request body the client stops sending.
    ///
    /// [`ProxyConfig::client_body_timeout`]: crate::proxy::ProxyConfig::client_body_timeout
    pub client_timeout: Option<Duration>,
    /// Largest request head; a larger one gets 431 and the connection is closed (default
    /// 64 KiB).
    pub max_head: usize,
    /// Most header fields a head may have; more are passed on for hyper to refuse with 431.
    pub max_headers: usize,
}

impl GuardConfig {
    /// The [`client_timeout`](Self::client_timeout) in force: its own, or the idle timeout.
    pub fn client_timeout_or_idle(&self) -> Duration {
        self.client_timeout.unwrap_or(self.idle_timeout)
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            head_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            client_timeout: None,
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
    /// Not HTTP/1 framing any more (HTTP/2, a switched protocol) or the stream went astray:
    /// bytes pass untouched and hyper judges them.
    Passthrough,
    /// A request asking to switch protocols was passed on; what follows is held back until
    /// its answer is known (see [`Shared`]).
    AwaitSwitch,
    /// HTTP/2: bytes pass untouched; after the idle timeout with no request in flight
    /// (when told about them, see [`Shared`]) and nothing read, the connection is ended:
    /// with GOAWAY when there is a [`Shared`] to say so (then [`Mode::GoingAway`]),
    /// otherwise closed.
    Http2,
    /// HTTP/2 after the idle timeout, told to end with GOAWAY: bytes pass untouched; the
    /// connection is closed after the head timeout with no request in flight, whatever is
    /// read meanwhile (a client that does not close after GOAWAY).
    GoingAway,
    /// A refused head was replaced; nothing more is read from the client.
    Closed,
}

/// Position inside chunked framing (RFC 9112 section 7.1).
///
/// Where hyper reads a chunked body without error, the guard must find it end where hyper
/// does, or it would take body bytes for a head (and check them) and let a head through
/// unchecked as body bytes. So these states follow hyper's decoder (its `ChunkedState`)
/// byte for byte wherever hyper accepts the input; where hyper fails the body (and closes
/// the connection), the guard may be more lenient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The chunk-size line; `ext` once past the size (white space or an extension).
    Size {
        size: u64,
        ext: bool,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// The start of a trailer line, or of the empty line that ends the body (hyper's
    /// `EndCr`).
    TrailerLineStart,
    /// Inside a trailer line, which ends only at CRLF: a bare LF is one of its bytes, as
    /// hyper reads it.
    TrailerLine,
    TrailerLineLf,
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
        // Told whether a protocol switch happened and whether requests are in flight;
        // without it, a request asking for a switch ends the checks on the connection.
        shared: Option<Arc<Shared>>,
        // A request asking to switch has a body still passing: the wait starts after it.
        switch_after_body: bool,
        // Since when the client has taken no byte written to it (boxed: rarely set).
        write_stall: Option<Pin<Box<Sleep>>>,
        // HTTP/2 responses wait for the client's window: when the client timeout ends the
        // longest wait, as last looked.
        window_stall: Option<Instant>,
        // Where the parts of the head read last are, when it was let through in place and
        // the reader asked (`map_heads`); boxed, as few readers ask.
        map: Option<Box<HeadMap>>,
        // `map` is of the bytes the last read returned.
        mapped: bool,
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
            shared: None,
            switch_after_body: false,
            write_stall: None,
            window_stall: None,
            map: None,
            mapped: false,
        }
    }

    /// Keeps, for each head that a read returns alone and whole (the usual request on a
    /// kept-alive connection), where its parts are: see [`Guarded::head_map`].
    pub(crate) fn map_heads(mut self) -> Self {
        self.map = Some(Box::default());
        self
    }

    /// Stops what [`Guarded::map_heads`] started.
    pub(crate) fn unmapped(mut self) -> Self {
        self.map = None;
        self.mapped = false;
        self
    }

    /// Where the parts of the head are, when the last read returned exactly one whole head
    /// and nothing else, as offsets into what it returned; `None` otherwise, or without
    /// [`Guarded::map_heads`].
    pub(crate) fn head_map(&self) -> Option<&HeadMap> {
        self.map.as_deref().filter(|_| self.mapped)
    }

    /// Learns from `shared` whether a request asking to switch protocols was answered with
    /// the switch, and until then holds back what follows it; the checks go on after a
    /// refused switch. Without it, such a request ends the checks on the connection. Also
    /// learns from it whether requests are in flight (see [`Shared`]).
    pub(crate) fn with_shared(mut self, shared: Arc<Shared>) -> Self {
        self.shared = Some(shared);
        self
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
    /// Waiting for an HTTP/2 client to close after GOAWAY.
    GoingAway,
}

/// What to do with a complete head.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Pass it on, then follow `next`; `switch` when it asks to switch protocols, by hyper's
    /// rule: an `Upgrade` field in HTTP/1.1, or `CONNECT` without one.
    Forward { next: Mode, switch: bool },
    /// A smuggling shape: never passed on.
    Refuse,
}

/// What the bytes held so far are.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    /// Not a whole head yet.
    Partial,
    /// A whole head of this many bytes.
    Complete(usize, Verdict),
    /// Not a valid head (bad tokens, too many fields): hyper answers it with 400 or 431 and
    /// closes the connection.
    Invalid,
}

/// Parses the head at the start of `buf` as hyper does (httparse, default settings: lines
/// may end with a bare LF) and checks it.
fn judge(buf: &[u8], max_headers: usize) -> Judged {
    judge_into(buf, max_headers, None)
}

/// Where the parts of a head are, as offsets into it: what the guard found when it parsed
/// a head it let through in place, for the reader of the connection to build its request
/// from without parsing the head again (see [`Guarded::map_heads`]).
#[derive(Debug, Default)]
pub(crate) struct HeadMap {
    /// The head's length.
    pub(crate) len: usize,
    pub(crate) method: (usize, usize),
    pub(crate) target: (usize, usize),
    /// The `x` of HTTP/1.x.
    pub(crate) minor: u8,
    /// Each field's name and value.
    pub(crate) fields: Vec<(usize, usize, usize, usize)>,
}

impl HeadMap {
    /// Notes where the parts of `req`, a complete head of `len` bytes parsed from the start
    /// of `buf`, are.
    pub(crate) fn record(&mut self, buf: &[u8], len: usize, req: &httparse::Request<'_, '_>) {
        let base = buf.as_ptr() as usize;
        let at = |part: &str| (part.as_ptr() as usize - base, part.len());
        self.len = len;
        self.method = req.method.map_or((0, 0), at);
        self.target = req.path.map_or((0, 0), at);
        self.minor = req.version.unwrap_or(0);
        self.fields.clear();
        for h in req.headers.iter() {
            let (n, _) = at(h.name);
            let v = h.value.as_ptr() as usize - base;
            self.fields
                .push((n, n + h.name.len(), v, v + h.value.len()));
        }
    }
}

/// [`judge`], noting in `map`, when given one, where the parts of a complete head are.
fn judge_into(buf: &[u8], max_headers: usize, map: Option<&mut HeadMap>) -> Judged {
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
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Judged::Partial,
        Err(_) => return Judged::Invalid,
    };
    let http10 = req.version == Some(0);
    if let Some(map) = map {
        map.record(buf, len, &req);
    }
    let mut cl: Option<u64> = None;
    let mut cl_seen = false;
    let mut te_seen = false;
    // The codings of every Transfer-Encoding field, in order: only `chunked`, alone, is
    // taken.
    let mut te_codings = 0;
    let mut te_only_chunked = true;
    let mut upgrade = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            let Some(n) = (v.len() <= 19)
                .then(|| crate::proxy::h1::length_value(v))
                .flatten()
            else {
                return Judged::Complete(len, Verdict::Refuse);
            };
            if cl.is_some_and(|prev| prev != n) {
                return Judged::Complete(len, Verdict::Refuse);
            }
            cl = Some(n);
            cl_seen = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for coding in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                // Empty list elements are allowed (RFC 9110 section 5.6.1).
                if !coding.is_empty() {
                    te_codings += 1;
                    te_only_chunked &= coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
    }
    // A coding besides `chunked` (`gzip, chunked`) would be dropped when the body is framed
    // anew for the backend, which would then take gzip-coded bytes for the body itself:
    // refused (nginx answers 501, HAProxy 422), as is `chunked` twice.
    if te_seen && (cl_seen || http10 || te_codings != 1 || !te_only_chunked) {
        return Judged::Complete(len, Verdict::Refuse);
    }
    // RFC 9112 section 3.2: 400 for more than one Host field, or none in HTTP/1.1 (which
    // would leave the proxy and the backend to pick different hosts, or none).
    if hosts > 1 || (hosts == 0 && !http10) {
        return Judged::Complete(len, Verdict::Refuse);
    }
    // hyper's rule (its h1 `Server::parse`): CONNECT asks to switch, and an `Upgrade` field
    // does in HTTP/1.1 and does not in HTTP/1.0, whatever the method.
    let switch = if upgrade {
        !http10
    } else {
        req.method == Some("CONNECT")
    };
    let next = if te_seen {
        Mode::Chunked(Chunk::Size {
            size: 0,
            ext: false,
        })
    } else {
        match cl {
            Some(n) if n > 0 => Mode::Body(n),
            _ => Mode::Head,
        }
    };
    Judged::Complete(len, Verdict::Forward { next, switch })
}

/// True when `buf` has an empty line: a head ends with one (CRLF or a bare LF).
fn has_blank_line(buf: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = buf[from..].iter().position(|b| *b == b'\n') {
        let at = from + p + 1;
        match buf.get(at) {
            Some(b'\n') => return true,
            Some(b'\r') if buf.get(at + 1) == Some(&b'\n') => return true,
            _ => {}
        }
        from = at;
    }
    false
}

/// In place of a head over the size limit: a head with one field more than hyper accepts,
/// which hyper answers with `431 Request Header Fields Too Large` before closing. (hyper's
/// own size limit cannot be set below 8 KiB.)
fn too_large(max_headers: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for _ in 0..=max_headers {
        head.extend_from_slice(b"x:\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// In place of a head whose request line alone is over the size limit: a request line with
/// a target longer than hyper takes (65,534 bytes), which hyper answers with `414 URI Too
/// Long` before closing.
fn uri_too_long() -> Vec<u8> {
    let mut head = b"GET /".to_vec();
    head.resize(head.len() + usize::from(u16::MAX), b'a');
    head.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    head
}

/// The smallest read buffer hyper must be allowed for the heads the guard hands it in place
/// of refused ones: [`uri_too_long`]'s, whatever the head size limit.
pub(crate) const HYPER_BUFFER_FLOOR: usize = 5 + u16::MAX as usize + 22;

/// Advances chunked framing over `data`; returns how many bytes belong to the body and the
/// mode after them (`None`: malformed, stop following).
fn scan_chunked(mut state: Chunk, data: &[u8]) -> (usize, Option<Mode>) {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        state = match state {
            Chunk::Size { size, ext } => match b {
                b'\r' => Chunk::SizeLf { size },
                // hyper refuses a bare LF here: following on is harmless.
                b'\n' => {
                    if size == 0 {
                        Chunk::TrailerLineStart
                    } else {
                        Chunk::Data(size)
                    }
                }
                _ if ext => Chunk::Size { size, ext },
                b';' | b' ' | b'\t' => Chunk::Size { size, ext: true },
                _ => {
                    // As many digits as hyper takes: leading zeros included, up to what a
                    // u64 holds.
                    let Some(size) = (b as char)
                        .to_digit(16)
                        .and_then(|d| size.checked_mul(16)?.checked_add(u64::from(d)))
                    else {
                        return (i, None);
                    };
                    Chunk::Size { size, ext }
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
                }
            }
            Chunk::TrailerLineStart => match b {
                b'\r' => Chunk::TrailerEndLf,
                _ => Chunk::TrailerLine,
            },
            Chunk::TrailerLine => match b {
                b'\r' => Chunk::TrailerLineLf,
                _ => Chunk::TrailerLine,
            },
            Chunk::TrailerLineLf => {
                if b != b'\n' {
                    return (i, None);
                }
                Chunk::TrailerLineStart
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
        if !(data.ends_with(b"\n\n") || data.ends_with(b"\n\r\n")) {
            return false;
        }
        match judge_into(data, this.config.max_headers, this.map.as_deref_mut()) {
            Judged::Complete(
                len,
                Verdict::Forward {
                    next,
                    switch: false,
                },
            ) if len == data.len() => {
                *this.first_head = false;
                *this.mode = next;
                *this.armed = Armed::None;
                *this.mapped = this.map.is_some();
                true
            }
            _ => false,
        }
    }

    /// Ready when the `want` deadline (head, idle, going away) has passed. An idle or going
    /// away deadline does not run while requests are in flight, when they are counted (see
    /// [`Shared`]).
    fn poll_timeout(self: Pin<&mut Self>, cx: &mut Context<'_>, want: Armed) -> Poll<()> {
        let this = self.project();
        if want != Armed::Head
            && let Some(shared) = this.shared.as_ref()
            && shared.counting()
        {
            shared.waker.register(cx.waker());
            if shared.busy() {
                // Armed afresh once the last one ends (its end wakes this reader).
                *this.armed = Armed::None;
                return Poll::Pending;
            }
        }
        if *this.armed != want {
            let wait = match want {
                Armed::Head | Armed::GoingAway => this.config.head_timeout,
                _ => this.config.idle_timeout,
            };
            *this.deadline = Instant::now() + wait;
            *this.armed = want;
        }
        // The timer may run early (it is only moved when it would be late) and is re-armed
        // when it fires before the deadline: one timer update per timeout period rather than
        // one per request.
        if this.timer.deadline() > *this.deadline {
            this.timer.as_mut().reset(*this.deadline);
        }
        ready!(this.timer.as_mut().poll(cx));
        if Instant::now() < *this.deadline {
            this.timer.as_mut().reset(*this.deadline);
            ready!(this.timer.as_mut().poll(cx));
        }
        Poll::Ready(())
    }

    /// HTTP/2: ready when a response has waited for the client's flow-control window for
    /// the client timeout (see [`Shared`]): the client reads nothing of it, and it holds a
    /// member's connection. What the client does meanwhile (pings, reading other streams,
    /// resetting them) does not count, as a write that waits is not helped by reads either.
    fn poll_window_stall(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Some(shared) = this.shared.as_ref() else {
            return Poll::Pending;
        };
        // Registered for a first wait to wake this reader (the responses are written by
        // tasks of their own).
        shared.waker.register(cx.waker());
        if shared.parked.load(Ordering::Acquire) == 0 {
            *this.window_stall = None;
            return Poll::Pending;
        }
        let limit = this.config.client_timeout_or_idle();
        loop {
            let deadline = match *this.window_stall {
                Some(deadline) => deadline,
                // A wait counted but not yet stamped, or one ending while another begins:
                // looked at again within the limit, not left without a timer.
                None => *this
                    .window_stall
                    .insert(shared.oldest_park().unwrap_or_else(Instant::now) + limit),
            };
            // As in `poll_timeout`: the timer may run early, and is then moved on.
            if this.timer.deadline() > deadline {
                this.timer.as_mut().reset(deadline);
            }
            ready!(this.timer.as_mut().poll(cx));
            if Instant::now() < deadline {
                this.timer.as_mut().reset(deadline);
                ready!(this.timer.as_mut().poll(cx));
            }
            // The deadline of the wait seen last: which waits now?
            match shared.oldest_park() {
                Some(since) if since + limit <= Instant::now() => return Poll::Ready(()),
                Some(since) => *this.window_stall = Some(since + limit),
                None if shared.parked.load(Ordering::Acquire) > 0 => {
                    *this.window_stall = Some(Instant::now() + limit);
                }
                None => {
                    *this.window_stall = None;
                    return Poll::Pending;
                }
            }
        }
    }

    /// What to do with an HTTP/2 connection one of whose responses waited for the client's
    /// window for the client timeout ([`poll_window_stall`](Self::poll_window_stall)). The
    /// first time, it is told to end with GOAWAY, as at the idle timeout: the other streams
    /// go on, and the client opens a new connection for new requests; the stalled response
    /// gets [`GuardConfig::head_timeout`] more. If it still waits then, the connection is
    /// closed (the error returned), as an HTTP/1 one whose client takes nothing is, and
    /// its streams end with it, their members' connections with them. (One stream cannot
    /// be reset alone from here: hyper does not poll a body waiting for the window.)
    fn window_stalled(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.as_mut().poll_window_stall(cx).is_pending() {
            return None;
        }
        let limit = self.config.client_timeout_or_idle();
        let grace = self.config.head_timeout;
        let this = self.as_mut().project();
        if *this.mode == Mode::Http2
            && let Some(shared) = this.shared.as_ref()
        {
            tracing::debug!("HTTP/2 client took no byte of a response for {limit:?}: GOAWAY");
            shared.set_goaway_due();
            *this.mode = Mode::GoingAway;
            *this.window_stall = Some(Instant::now() + grace);
            // The connection's task looks for the GOAWAY after each poll.
            cx.waker().wake_by_ref();
            return None;
        }
        *this.mode = Mode::Closed;
        tracing::debug!("HTTP/2 client took no byte of a response for {limit:?}: closing");
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took no byte of a response for {limit:?} (HTTP/2 flow control)"),
        ))
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
            if *this.mode == Mode::Head && *this.switch_after_body {
                *this.switch_after_body = false;
                *this.mode = Mode::AwaitSwitch;
            }
            match *this.mode {
                Mode::Closed => return,
                Mode::Passthrough | Mode::Http2 | Mode::GoingAway => {
                    this.out.extend_from_slice(data);
                    return;
                }
                Mode::AwaitSwitch => {
                    this.head.extend_from_slice(data);
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
                    let Some(next) = next else {
                        // Malformed: hyper sees it and answers 400; nothing more is read.
                        this.out.extend_from_slice(data);
                        *this.mode = Mode::Closed;
                        return;
                    };
                    this.out.extend_from_slice(&data[..used]);
                    data = &data[used..];
                    *this.mode = next;
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
                        *this.mode = Mode::Http2;
                        if let Some(shared) = this.shared {
                            shared.counting.store(true, Ordering::Relaxed);
                        }
                        return;
                    }
                    // A head is parsed once an empty line has arrived (looked for from a
                    // little before the new bytes), where hyper would find its end.
                    let from = before.saturating_sub(2);
                    let judged = if has_blank_line(&this.head[from..]) {
                        judge(this.head, this.config.max_headers)
                    } else {
                        Judged::Partial
                    };
                    let (end, verdict) = match judged {
                        Judged::Complete(end, verdict)
                            if end <= this.config.max_head && end > before =>
                        {
                            (end, verdict)
                        }
                        Judged::Partial if this.head.len() <= this.config.max_head => return,
                        Judged::Invalid => {
                            // hyper answers it (400, 431) and closes; nothing more is read.
                            this.out.extend_from_slice(this.head);
                            this.head.clear();
                            *this.mode = Mode::Closed;
                            return;
                        }
                        _ => {
                            // The request line alone too long: the target is (RFC 9110
                            // section 15.5.15), as nginx and Apache answer it.
                            let line_too_long = !this.head
                                [..this.config.max_head.min(this.head.len())]
                                .contains(&b'\n');
                            tracing::debug!(
                                "request head over {} bytes: {}",
                                this.config.max_head,
                                if line_too_long { 414 } else { 431 }
                            );
                            this.out.extend_from_slice(&if line_too_long {
                                uri_too_long()
                            } else {
                                too_large(this.config.max_headers)
                            });
                            this.head.clear();
                            *this.mode = Mode::Closed;
                            return;
                        }
                    };
                    *this.first_head = false;
                    let rest_start = end - before;
                    match verdict {
                        Verdict::Forward { next, switch } => {
                            this.out.extend_from_slice(&this.head[..end]);
                            *this.mode = next;
                            if switch {
                                match this.shared {
                                    Some(sw) => {
                                        sw.switch.store(SWITCH_AWAITED, Ordering::Release);
                                        if next == Mode::Head {
                                            *this.mode = Mode::AwaitSwitch;
                                        } else {
                                            *this.switch_after_body = true;
                                        }
                                    }
                                    None => *this.mode = Mode::Passthrough,
                                }
                            }
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

impl<T: AsyncRead> Guarded<T> {
    /// While a request asking to switch protocols waits for its answer: ready with true once
    /// the answer is known (the mode has moved on), with false when the client's input ended
    /// first (for the reader to see); until then, what the client sends is held, up to the
    /// head size limit.
    fn poll_switch(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            let this = self.as_mut().project();
            let Some(switch) = this.shared.as_ref() else {
                *this.mode = Mode::Passthrough;
                return Poll::Ready(Ok(true));
            };
            switch.waker.register(cx.waker());
            match switch.switch.load(Ordering::Acquire) {
                SWITCH_DONE => {
                    // The other protocol's bytes: passed on as they are, from now on.
                    *this.mode = Mode::Passthrough;
                    let held = std::mem::take(this.head);
                    this.out.extend_from_slice(&held);
                    return Poll::Ready(Ok(true));
                }
                SWITCH_DECLINED => {
                    // Still HTTP/1: what was held is the next requests, checked as any.
                    switch.switch.store(SWITCH_IDLE, Ordering::Release);
                    *this.mode = Mode::Head;
                    *this.armed = Armed::None;
                    let held = std::mem::take(this.head);
                    self.as_mut().take_in(&held);
                    return Poll::Ready(Ok(true));
                }
                _ => {}
            }
            if this.head.len() >= this.config.max_head {
                return Poll::Pending;
            }
            let mut scratch = [0u8; SCRATCH];
            let mut own = ReadBuf::new(&mut scratch);
            ready!(this.inner.poll_read(cx, &mut own))?;
            if own.filled().is_empty() {
                // The end of the client's input; what was held still follows the answer.
                return Poll::Ready(Ok(false));
            }
            this.head.extend_from_slice(own.filled());
        }
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        *self.as_mut().project().mapped = false;
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
            if self.mode == Mode::Head && self.switch_after_body {
                let this = self.as_mut().project();
                *this.switch_after_body = false;
                *this.mode = Mode::AwaitSwitch;
            }
            match self.mode {
                Mode::Closed => return Poll::Ready(Ok(())),
                Mode::Passthrough => return self.project().inner.poll_read(cx, buf),
                Mode::AwaitSwitch => {
                    if !ready!(self.as_mut().poll_switch(cx))? {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
                Mode::Http2 | Mode::GoingAway => {
                    let start = buf.filled().len();
                    let this = self.as_mut().project();
                    let going_away = *this.mode == Mode::GoingAway;
                    match this.inner.poll_read(cx, buf) {
                        Poll::Ready(read) => {
                            if buf.filled().len() > start && !going_away {
                                *this.armed = Armed::None;
                            }
                            // A client that keeps sending (pings, other streams) is still
                            // looked at for the waits.
                            if this
                                .shared
                                .as_ref()
                                .is_some_and(|s| s.parked.load(Ordering::Acquire) > 0)
                                && let Some(e) = self.as_mut().window_stalled(cx)
                            {
                                return Poll::Ready(Err(e));
                            }
                            return Poll::Ready(read);
                        }
                        Poll::Pending => {
                            if !going_away && this.shared.as_ref().is_some_and(|s| s.goaway_due()) {
                                // Ended by whoever serves the connection (a shutdown): the
                                // wait for the client to close starts.
                                *this.mode = Mode::GoingAway;
                                continue;
                            }
                            if let Some(e) = self.as_mut().window_stalled(cx) {
                                return Poll::Ready(Err(e));
                            }
                            let want = if going_away {
                                Armed::GoingAway
                            } else {
                                Armed::Idle
                            };
                            ready!(self.as_mut().poll_timeout(cx, want));
                            let this = self.as_mut().project();
                            if let Some(shared) = this.shared.as_ref()
                                && !going_away
                            {
                                // Idle too long: the connection is to end with GOAWAY. Its
                                // task is woken to see that (it looks after each poll); the
                                // wait for the client to close starts.
                                tracing::debug!("idle HTTP/2 connection: GOAWAY");
                                shared.set_goaway_due();
                                *this.mode = Mode::GoingAway;
                                cx.waker().wake_by_ref();
                                continue;
                            }
                            // Idle too long, or not closed after GOAWAY: hyper sees the end
                            // of input and closes.
                            *this.mode = Mode::Closed;
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
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
                    Mode::Chunked(state) => match scan_chunked(state, &buf.filled()[start..end]) {
                        (used, Some(next)) => (used, next),
                        // Malformed: hyper sees it and answers 400; nothing more is read.
                        (_, None) => (end - start, Mode::Closed),
                    },
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
                    let want = if self.head.is_empty() {
                        Armed::Idle
                    } else {
                        Armed::Head
                    };
                    ready!(self.as_mut().poll_timeout(cx, want));
                    let mut this = self.as_mut().project();
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
        let this = self.project();
        let written = this.inner.poll_write(cx, buf);
        write_stalled(
            written,
            this.write_stall,
            this.config.client_timeout_or_idle(),
            cx,
        )
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.plain_close
            && !matches!(
                *this.mode,
                Mode::Passthrough | Mode::Http2 | Mode::GoingAway
            )
        {
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = this.inner.poll_write_vectored(cx, bufs);
        write_stalled(
            written,
            this.write_stall,
            this.config.client_timeout_or_idle(),
            cx,
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A write that found the client's side full: after `limit` without one taking a byte, the
/// connection fails (a client that stopped reading holds a backend connection and its
/// member's slot otherwise, for as long as it likes).
fn write_stalled(
    written: Poll<io::Result<usize>>,
    stall: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if written.is_ready() {
        *stall = None;
        return written;
    }
    let timer = stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    ready!(timer.as_mut().poll(cx));
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client took no byte for {limit:?}"),
    )))
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

    /// The guard must find a chunked body's end where hyper does: hyper ends a trailer line
    /// only at CRLF, so a bare LF there is a byte of the trailers, and what follows up to
    /// the next empty CRLF line is trailers too. Ended at the bare LF instead, the guard
    /// took the last head for body bytes and let it through unchecked.
    #[tokio::test]
    async fn chunked_trailers_end_where_hyper_ends_them() {
        let body = b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            0\r\nX-T: a\n\nGET /fake HTTP/1.1\r\nHost: x\r\nContent-Length: 45\r\n\r\n";
        let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(smuggled);
        let mut want = body.to_vec();
        want.extend_from_slice(POISON);
        assert_eq!(run(&input).await, want);

        // Trailers ended by CRLF, and none, as before.
        for chunked in [
            &b"5\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
        ] {
            let mut input =
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(chunked);
            let next = input.len();
            input.extend_from_slice(smuggled);
            let mut want = input[..next].to_vec();
            want.extend_from_slice(POISON);
            assert_eq!(run(&input).await, want);
        }
    }

    /// hyper takes a chunk size with leading zeros, however many: so does the guard, and it
    /// goes on checking the heads after it.
    #[tokio::test]
    async fn chunk_sizes_with_many_leading_zeros_are_followed() {
        let body = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            000000000000000000005\r\nhello\r\n0\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        let mut want = body.to_vec();
        want.extend_from_slice(POISON);
        assert_eq!(run(&input).await, want);
        // A size over what hyper (a u64) holds is malformed: no more following.
        let over = Chunk::Size {
            size: 0,
            ext: false,
        };
        assert_eq!(scan_chunked(over, b"10000000000000000\r\n"), (16, None));
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
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        for head in refuse {
            assert_eq!(
                judge(head, 100),
                Judged::Complete(head.len(), Verdict::Refuse),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        // `chunked` alone, in any case, is taken.
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert!(matches!(
            judge(chunked, 100),
            Judged::Complete(
                _,
                Verdict::Forward {
                    next: Mode::Chunked(_),
                    switch: false
                }
            )
        ));
        let same = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(
            judge(same, 100),
            Judged::Complete(
                same.len(),
                Verdict::Forward {
                    next: Mode::Body(3),
                    switch: false
                }
            )
        );
        // Which requests ask to switch protocols, by hyper's rule.
        for (head, switch) in [
            (
                &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
                    [..],
                true,
            ),
            (b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", false),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
        ] {
            assert_eq!(
                judge(head, 100),
                Judged::Complete(
                    head.len(),
                    Verdict::Forward {
                        next: Mode::Head,
                        switch
                    }
                ),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        // The end of a head is where httparse (so hyper) finds it, bare LFs included.
        let lf = b"GET / HTTP/1.1\nHost: a\n\nGET /next";
        assert!(matches!(judge(lf, 100), Judged::Complete(24, _)));
        assert_eq!(
            judge(b"GET / HTTP/1.1\r\nHost: a\r\n", 100),
            Judged::Partial
        );
        assert_eq!(judge(b"G\x01T / HTTP/1.1\r\n\r\n", 100), Judged::Invalid);
        assert_eq!(judge(&too_large(3), 3), Judged::Invalid);
    }

    #[tokio::test]
    async fn heads_ending_in_bare_lf_are_checked_as_hyper_reads_them() {
        let input = b"POST /a HTTP/1.1\nHost: x\nContent-Length: 5\n\nhelloPOST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let mut want = b"POST /a HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello".to_vec();
        want.extend_from_slice(POISON);
        assert_eq!(run(input).await, want);
        // And one whole in a read goes through at once, not held for a CRLF that never comes.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = Box::pin(Guarded::new(server, GuardConfig::default()));
        let get = b"GET /lf HTTP/1.1\nHost: x\n\n";
        client.write_all(get).await.unwrap();
        let mut buf = vec![0u8; 256];
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], get);
    }

    #[tokio::test]
    async fn heads_over_the_size_limit_get_431_whole_or_in_pieces() {
        let config = GuardConfig {
            max_head: 1024,
            ..GuardConfig::default()
        };
        let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(3000));
        let smuggled =
            b"POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for pieces in [1, 3] {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut g = Box::pin(Guarded::new(server, config));
            let mut out = Vec::new();
            let mut buf = vec![0u8; 8192];
            for piece in big.as_bytes().chunks(big.len().div_ceil(pieces)) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
                if let Some(n) = futures_util::FutureExt::now_or_never(g.read(&mut buf)) {
                    out.extend_from_slice(&buf[..n.unwrap()]);
                }
            }
            client.write_all(smuggled).await.unwrap();
            client.shutdown().await.unwrap();
            g.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, too_large(config.max_headers), "{pieces} pieces");
        }
        // A request line alone over the limit: 414.
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(3000));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = Box::pin(Guarded::new(server, config));
        client.write_all(long.as_bytes()).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        g.read_to_end(&mut out).await.unwrap();
        assert!(
            out == uri_too_long(),
            "{}",
            String::from_utf8_lossy(&out[..40])
        );
        assert_eq!(uri_too_long().len(), HYPER_BUFFER_FLOOR);
    }

    /// After a request asking to switch protocols, what the client sends is held until the
    /// answer is known: checked as requests when the switch was refused, passed as it is
    /// when it happened.
    #[tokio::test]
    async fn what_follows_a_switch_request_waits_for_the_answer() {
        let upgrade =
            &b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"[..];
        let smuggled = &b"POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..];
        for switched in [false, true] {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let switch = Arc::new(Shared::default());
            let mut g =
                Box::pin(Guarded::new(server, GuardConfig::default()).with_shared(switch.clone()));
            client.write_all(upgrade).await.unwrap();
            client.write_all(smuggled).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = g.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], upgrade);
            assert!(switch.switch_awaited());
            let early = futures_util::FutureExt::now_or_never(g.read(&mut buf));
            assert!(
                early.is_none(),
                "bytes after the switch request went on unanswered"
            );
            switch.settle(switched);
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            g.read_to_end(&mut rest).await.unwrap();
            if switched {
                assert_eq!(
                    rest, smuggled,
                    "the other protocol's bytes pass as they are"
                );
            } else {
                assert_eq!(rest, POISON, "checked as a request");
                assert!(!switch.switch_awaited());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_last_request() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = Box::pin(Guarded::new(server, GuardConfig::default()));
        let req = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi";
        let mut buf = vec![0u8; 1024];
        for _ in 0..3 {
            client.write_all(req).await.unwrap();
            let mut got = 0;
            while got < req.len() {
                let n = g.read(&mut buf).await.unwrap();
                assert!(n > 0, "end of input after {got} bytes");
                got += n;
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

    /// HTTP/2 under `serve` (told through [`Shared`]): after the idle timeout with no request
    /// in flight the connection is to get GOAWAY and stays open; it is closed when the client
    /// has not closed it after the head timeout more, whatever the client sends meanwhile,
    /// not counting the time a request that came just then is in flight. On its own the
    /// guard closes an idle HTTP/2 connection.
    #[tokio::test(start_paused = true)]
    async fn idle_http2_is_told_to_go_away_then_closed() {
        use tokio::time::timeout;
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut buf = [0u8; 256];
        let open = async |shared: Option<&Arc<Shared>>| {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut g = Guarded::new(server, GuardConfig::default());
            if let Some(shared) = shared {
                g = g.with_shared(shared.clone());
            }
            let mut g = Box::pin(g);
            client.write_all(preface).await.unwrap();
            let mut buf = [0u8; 256];
            let n = g.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], preface);
            (client, g)
        };

        let (_client, mut g) = open(None).await;
        let start = Instant::now();
        assert_eq!(g.read(&mut buf).await.unwrap(), 0, "closed");
        assert_eq!(start.elapsed().as_secs(), 60);

        let shared = Arc::new(Shared::new(false));
        let (mut client, mut g) = open(Some(&shared)).await;
        // A request in flight for longer than the idle timeout: nothing happens.
        let in_flight = shared.begin();
        let read = timeout(Duration::from_secs(120), g.read(&mut buf)).await;
        assert!(read.is_err(), "read {read:?} while a request was in flight");
        assert!(!shared.goaway_due());
        drop(in_flight);
        // Idle for the idle timeout: GOAWAY is due, and the connection stays open.
        let idle = Instant::now();
        let read = timeout(Duration::from_secs(70), g.read(&mut buf)).await;
        assert!(read.is_err(), "read {read:?} after the idle timeout");
        assert!(shared.goaway_due());
        // What the client sends still passes, and gives it no more time.
        client.write_all(b"frames").await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"frames");
        assert_eq!(g.read(&mut buf).await.unwrap(), 0, "closed");
        assert_eq!(idle.elapsed().as_secs(), 60 + 20);

        // A request that came just before the GOAWAY is let finish.
        let shared = Arc::new(Shared::new(false));
        let (_client, mut g) = open(Some(&shared)).await;
        let read = timeout(Duration::from_secs(61), g.read(&mut buf)).await;
        assert!(read.is_err(), "read {read:?} after the idle timeout");
        assert!(shared.goaway_due());
        let in_flight = shared.begin();
        let read = timeout(Duration::from_secs(30), g.read(&mut buf)).await;
        assert!(read.is_err(), "read {read:?} while a request was in flight");
        drop(in_flight);
        let ended = Instant::now();
        assert_eq!(g.read(&mut buf).await.unwrap(), 0, "closed");
        assert_eq!(ended.elapsed().as_secs(), 20);
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
