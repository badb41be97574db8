//! Serving a tower service to clients: HTTP/1.1 and HTTP/2 on one listener, each connection
//! behind a [`Guarded`] I/O object, upgrades allowed, errors turned into short responses,
//! graceful shutdown.
//!
//! An HTTP/1.1 request without a body and without an upgrade (most of what a balancer
//! sees) is answered by the server's own HTTP/1 path (the `h1` module): the request is built
//! from the guard's parse of its head and the response written straight to the client.
//! The first request that path does not answer (a body, `Expect`, an upgrade, `CONNECT`,
//! HTTP/1.0, a head it cannot take) hands the connection, with the bytes read so far, to
//! hyper's server, which serves it from then on: when it is the connection's first
//! request, through hyper-util's automatic protocol detection (HTTP/2 by prior knowledge
//! too, unless [`ServerConfig::http2`] is off), else HTTP/1 only.
//!
//! A connection is ended gracefully (hyper's `graceful_shutdown`) when the server shuts
//! down, and an HTTP/2 one also when it has been idle for [`GuardConfig::idle_timeout`]:
//! it gets GOAWAY (RFC 9113 section 6.8: first announcing the end with a ping, then, once
//! the client has answered it, naming the last stream taken), streams in flight finish, and
//! the connection is closed. A client that never answers the ping is closed
//! [`GuardConfig::head_timeout`] after its last stream ended. A request the client sent
//! just then is still taken and answered, and the client knows not to send more on that
//! connection, where a silent close would leave it not knowing whether its request was
//! seen. An idle HTTP/1 connection is closed silently: HTTP/1 has no way to say so between
//! requests (RFC 9112 section 9.5).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::BoxError;
use crate::body::{ProxyBody, boxed, full};
use crate::error::BalanceError;
use crate::ext::Served;
use crate::guard::{GuardConfig, Guarded, InFlight, ParkSlot, Shared};
use crate::headers::ClientInfo;

mod h1;

/// Limits on client connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Head deadline, idle and client timeouts, head size and field count (see
    /// [`GuardConfig`]).
    pub guard: GuardConfig,
    /// Accept HTTP/2 (prior knowledge, `h2c`) as well as HTTP/1.1 (default true).
    pub http2: bool,
    /// How long a graceful shutdown waits for connections in flight (default 30 s).
    pub drain_timeout: Duration,
    /// Give up an HTTP/1 request in progress when the client's end of the connection
    /// closes (HAProxy's `option abortonclose`; default false). By default, as in HAProxy,
    /// a client may shut its sending side down after a request and still get the
    /// response; a client that went away is noticed when the response is written to it.
    pub abort_on_close: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            guard: GuardConfig::default(),
            http2: true,
            drain_timeout: Duration::from_secs(30),
            abort_on_close: false,
        }
    }
}

/// Turns an error from the service stack into the response the client sees: the status the
/// leaf error names (502, 503, 504...) and a one-line body saying what happened, without
/// the backend's address ([`ProxyError::client_text`](crate::error::ProxyError::client_text));
/// the error itself is for the log.
pub fn error_response(err: &BoxError) -> Response<ProxyBody> {
    let (status, text) = if let Some(e) = crate::error::proxy_error(err) {
        (e.status(), e.client_text())
    } else if let Some(e) = err.downcast_ref::<BalanceError>() {
        (e.status(), e.client_text())
    } else {
        (StatusCode::BAD_GATEWAY, "bad gateway".to_string())
    };
    plain_text(status, &text)
}

/// A response of `status` whose body is `text` and a newline, as plain text.
fn plain_text(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(format!("{text}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Serves `service` on `listener` until `shutdown` completes, then lets connections in
/// flight finish (up to [`ServerConfig::drain_timeout`]): HTTP/2 clients get GOAWAY, HTTP/1
/// connections close after the request in progress.
///
/// The service gets requests with a [`ProxyBody`]: hyper's body for the requests hyper
/// reads, an empty one for those the server's own HTTP/1 path answers (which have none).
///
/// Each request carries a [`ClientInfo`] in its extensions. Errors returned by the service
/// become responses through [`error_response`]. An accept that fails for want of file
/// descriptors (or buffers) first closes the idle backend connections of every
/// [`Proxy`](crate::proxy::Proxy) in the process ([`release_idle_connections`]) and is
/// tried again at once; with none to close, it is tried again 50 ms later.
///
/// [`release_idle_connections`]: crate::proxy::release_idle_connections
pub async fn serve<S, B, F>(listener: TcpListener, service: S, config: ServerConfig, shutdown: F)
where
    S: tower::Service<Request<ProxyBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()>,
{
    // hyper's HTTP/1 settings, for both of its servers below.
    macro_rules! http1_settings {
        ($builder:expr) => {
            $builder
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                // Besides serving half-closed clients, this spares hyper's check for the
                // client's end while a request is in flight: a read that finds nothing, but
                // first reserves a new 8 KiB buffer because the request still holds the old
                // one (an allocation per request).
                .half_close(!config.abort_on_close)
                .writev(false)
                .max_buf_size(config.guard.max_head.max(crate::guard::HYPER_BUFFER_FLOOR))
                .max_headers(config.guard.max_headers)
        };
    }
    // For the connections handed to hyper (in an Arc cloned into each connection's task):
    // from their start, HTTP/1.1 or HTTP/2 by prior knowledge (hyper-util's detection);
    // after requests answered on the server's own path, or with HTTP/2 off, HTTP/1 only
    // (hyper's own HTTP/1 server: hyper-util's `http1_only` is not kept to by its
    // connections with upgrades, which still take an HTTP/2 preface).
    let mut either = auto::Builder::new(TokioExecutor::new());
    http1_settings!(either.http1());
    either
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.guard.max_head as u32);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1_settings!(http1);
    let builders = Arc::new((either, http1));
    let http2 = config.http2;
    // Sockets accepted on Linux inherit TCP_NODELAY from their listener: set once there, it
    // saves a system call per connection. Elsewhere, or if it cannot be set, each accepted
    // socket gets it.
    let inherited_nodelay = nodelay_is_inherited(&listener);
    // Told to every connection when the server shuts down; each holds a receiver until it
    // ends, which the drain waits for.
    let (drain, _) = watch::channel(());
    tokio::pin!(shutdown);
    // A timer that is always due within a second. tokio's timer wakes its driver (a write
    // to an eventfd, and a wake-up) whenever a timer is set to expire before the earliest
    // one it knew of when the thread last went to sleep, even when that thread is the one
    // setting it. With no timer pending, as when requests come one per connection and
    // finish before the thread sleeps, every request's response timeout did that: 0.25
    // system calls per request. Behind this one, the timeouts of requests and connections
    // (seconds or more) are set without a wake-up.
    let mut anchor = tokio::time::interval(Duration::from_secs(1));
    anchor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failed accepts (out of file descriptors, most often): one line a second at most.
    let accept_failures = crate::throttle::Throttle::new();
    // The last accept failed, idle backend connections were closed for it, and it was tried
    // again at once: if that one fails too, the loop backs off all the same (with several
    // workers, the pools fill again as fast as the other threads check connections in).
    let mut retried_at_once = false;
    loop {
        let (stream, peer) = tokio::select! {
            _ = anchor.tick() => continue,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // A connection that went away before it was accepted: the next one may be
                // fine.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // Out of descriptors: the proxies' idle connections to backends give
                    // theirs back, and the accept is tried again at once (after the
                    // connections hyper's client runs on this thread have closed), once.
                    // Else back off instead of spinning. Said once a second rather than at
                    // every try.
                    let released = if lb_core::health::is_local_shortage(&e) {
                        crate::proxy::pool::POOLS.release_idle()
                    } else {
                        0
                    };
                    if let Some(n) = accept_failures.allow() {
                        tracing::warn!(
                            "accept failed: {e}{}{}",
                            crate::proxy::pool::closed_idle(released),
                            crate::throttle::left_out(n)
                        );
                    }
                    if released > 0 && !retried_at_once {
                        retried_at_once = true;
                        tokio::task::yield_now().await;
                    } else {
                        retried_at_once = false;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        retried_at_once = false;
        if !inherited_nodelay {
            let _ = stream.set_nodelay(true);
        }
        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d; it is named by
        // its IPv4 address (in X-Forwarded-For, Forwarded, and to the hashing schedulers).
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        // With abort_on_close hyper reads from the client while a request is in flight, so
        // the guard must know which are, not to take that wait for an idle connection.
        let shared = Arc::new(Shared::new(config.abort_on_close));
        // hyper reads from the client while a request is in flight only with
        // abort_on_close: such connections are hyper's from the start.
        let fast = !config.abort_on_close;
        let mut guarded = Guarded::new(stream, config.guard)
            .plain_close()
            .with_shared(shared.clone());
        if fast {
            guarded = guarded.map_heads();
        }
        let mut svc = service.clone();
        let builders = builders.clone();
        let max_headers = config.guard.max_headers;
        let mut drained = drain.subscribe();
        let drain_seen = drained.clone();
        // Boxed before it is spawned: the connection's future is several kilobytes, and the
        // spawn path moves it more than once (a memcpy each) on its way into the task.
        tokio::spawn(Box::pin(async move {
            // Out of tokio's cooperative budget: the HTTP/1 path polls it only until it waits
            // (see `h1::serve_h1`), which a poll refused for want of budget would not do.
            let draining = tokio::task::unconstrained(async move {
                let _ = drained.changed().await;
                drained
            });
            let mut draining = std::pin::pin!(draining);
            let (prefix, answered) = if fast {
                match h1::serve_h1(
                    &mut guarded,
                    &mut svc,
                    peer,
                    max_headers,
                    draining.as_mut(),
                    &drain_seen,
                )
                .await
                {
                    h1::Outcome::Closed => return,
                    h1::Outcome::Handoff { bytes, answered } => (bytes, answered),
                }
            } else {
                (Bytes::new(), false)
            };
            let guarded = guarded.unmapped();
            let goaway = shared.clone();
            let hyper_svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                // Most requests need none of it: only counted ones (HTTP/2, abort_on_close)
                // and one asking to switch protocols, which the guard waits on.
                let shared = (shared.counting() || shared.switch_awaited()).then(|| shared.clone());
                handle(
                    svc.clone(),
                    peer,
                    shared,
                    max_headers,
                    req.map(crate::body::incoming),
                )
            });
            let io = TokioIo::new(h1::Prefixed::new(guarded, prefix));
            let ended: Result<(), BoxError> = if answered || !http2 {
                let conn = builders.1.serve_connection(io, hyper_svc).with_upgrades();
                Box::pin(Connection::new(conn, draining, goaway, |conn| {
                    conn.graceful_shutdown()
                }))
                .await
                .map_err(Into::into)
            } else {
                let conn = builders.0.serve_connection_with_upgrades(io, hyper_svc);
                Box::pin(Connection::new(conn, draining, goaway, |conn| {
                    conn.graceful_shutdown()
                }))
                .await
            };
            if let Err(e) = ended {
                tracing::debug!("connection from {peer}: {e}");
            }
        }));
    }
    drop(listener);
    let _ = drain.send(());
    if tokio::time::timeout(config.drain_timeout, drain.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}; closing",
            config.drain_timeout
        );
    }
}

pin_project_lite::pin_project! {
    /// A client connection until it ends. It is asked to end gracefully (`end`: hyper's
    /// `graceful_shutdown`) once, at the first of: the server shutting down (`shutdown`
    /// ready), the guard finding the HTTP/2 connection idle ([`Shared::goaway_due`]); and
    /// polled on to its end.
    struct Connection<C, F, E> {
        #[pin]
        conn: C,
        #[pin]
        shutdown: F,
        // The server's shutdown receiver, once it has said so: held until the connection
        // ends, for the server's drain to wait on.
        held: Option<watch::Receiver<()>>,
        shared: Arc<Shared>,
        end: E,
        ending: bool,
    }
}

impl<C, F, E> Connection<C, F, E>
where
    E: Fn(Pin<&mut C>),
{
    fn new(conn: C, shutdown: F, shared: Arc<Shared>, end: E) -> Self {
        Connection {
            conn,
            shutdown,
            held: None,
            shared,
            end,
            ending: false,
        }
    }
}

impl<C, F, E> Future for Connection<C, F, E>
where
    C: Future,
    F: Future<Output = watch::Receiver<()>>,
    E: Fn(Pin<&mut C>),
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.ending
            && let Poll::Ready(held) = this.shutdown.poll(cx)
        {
            *this.held = Some(held);
            *this.ending = true;
            // The guard of an HTTP/2 connection starts its wait for the client to close
            // (a client that never answers the GOAWAY's ping would hold the drain).
            this.shared.set_goaway_due();
            (this.end)(this.conn.as_mut());
        }
        let polled = this.conn.as_mut().poll(cx);
        // The guard says so while it is read, that is within the poll above; looked at only
        // when the connection goes on.
        if polled.is_pending() && !*this.ending && this.shared.goaway_due() {
            *this.ending = true;
            (this.end)(this.conn.as_mut());
            // To send the GOAWAY.
            return this.conn.poll(cx);
        }
        polled
    }
}

/// What the guard checks in HTTP/1 heads, for an HTTP/2 request: at most `max_headers`
/// fields (431), and one authority (RFC 9113 section 8.3.1): `:authority` without userinfo
/// and with a valid port, and a `Host` field, if any, naming the same authority (400).
/// Layers after this one read the client's host from either.
///
/// HTTP/2 clients send each cookie in a field of its own (RFC 9113 section 8.2.3), which
/// HTTP/1 has as one field: the `cookie` fields count as one, as the proxy joins them.
fn check_http2_head<B>(req: &Request<B>, max_headers: usize) -> Result<(), (StatusCode, String)> {
    let h = req.headers();
    let cookies = h.get_all(http::header::COOKIE).iter().count();
    if h.len() - cookies.saturating_sub(1) > max_headers {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("more than {max_headers} header fields"),
        ));
    }
    let bad = |why: String| Err((StatusCode::BAD_REQUEST, why));
    let authority = req.uri().authority();
    if let Some(a) = authority {
        if a.as_str().contains('@') {
            return bad(format!(":authority {a} holds userinfo"));
        }
        if crate::proxy::has_bad_port(a) {
            return bad(format!(":authority {a} has an invalid port"));
        }
    }
    let mut hosts = h.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next(), authority) {
        (Some(_), Some(_), _) => bad("more than one Host field".into()),
        (Some(host), None, Some(a)) if !same_authority(host.as_bytes(), a, req.uri()) => {
            bad(format!(
                "Host {} differs from :authority {a}",
                String::from_utf8_lossy(host.as_bytes())
            ))
        }
        _ => Ok(()),
    }
}

/// Whether the `Host` value `host` names `authority`, compared as RFC 3986 section 6.2
/// normalises them: the host without regard to case, a missing or empty port as the
/// scheme's default.
fn same_authority(host: &[u8], authority: &http::uri::Authority, uri: &http::Uri) -> bool {
    let Ok(host) = http::uri::Authority::try_from(host) else {
        return false;
    };
    let default = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    host.host().eq_ignore_ascii_case(authority.host())
        && host.port_u16().unwrap_or(default) == authority.port_u16().unwrap_or(default)
}

/// Sets TCP_NODELAY on `listener`; true when the sockets it accepts will have it too (Linux
/// copies it to them).
fn nodelay_is_inherited(listener: &TcpListener) -> bool {
    let set = socket2::SockRef::from(listener)
        .set_tcp_nodelay(true)
        .is_ok();
    set && cfg!(target_os = "linux")
}

async fn handle<S, B>(
    svc: S,
    peer: SocketAddr,
    shared: Option<Arc<Shared>>,
    max_headers: usize,
    mut req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Infallible>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // HTTP/1 heads were checked by the guard before they were parsed into requests (here or
    // by hyper); HTTP/2 ones here.
    // Userinfo in an absolute-form target (RFC 9110 section 4.2.4: to be taken as an
    // error) is refused for both: it would go on in X-Forwarded-Host, and in Host with
    // ProxyPreserveHost, credentials and all.
    let checked = if req.version() == http::Version::HTTP_2 {
        check_http2_head(&req, max_headers)
    } else {
        match req.uri().authority() {
            Some(a) if a.as_str().contains('@') => Err((
                StatusCode::BAD_REQUEST,
                format!("request target {a} holds userinfo"),
            )),
            _ => Ok(()),
        }
    };
    if let Err((status, why)) = checked {
        tracing::debug!("request from {peer} refused: {why}");
        let mut resp = plain_text(status, &why);
        // The text quotes the client: not to be sniffed as anything but text.
        resp.headers_mut().insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
        // As for the heads the guard refuses: an HTTP/1 client that sent one is not read
        // from again.
        if req.version() != http::Version::HTTP_2 {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        return Ok(resp);
    }
    if req.extensions().is_empty()
        && let Some(spare) = SPARE_EXTENSIONS
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
    {
        *req.extensions_mut() = spare;
    }
    let in_flight = shared.as_ref().filter(|s| s.counting()).map(Shared::begin);
    // An HTTP/2 response waits for the client's window with no write waiting on the
    // socket: the guard times that wait from what the body says (see `Counted`).
    let window = req.version() == http::Version::HTTP_2;
    // The request the guard waits on is the one hyper will switch protocols for, if the
    // answer says so: a 101, or a 2xx to CONNECT (its other requests, pipelined before it,
    // have no `OnUpgrade`).
    let switch = shared
        .filter(|s| s.switch_awaited())
        .filter(|_| {
            req.extensions()
                .get::<hyper::upgrade::OnUpgrade>()
                .is_some()
        })
        .map(|s| (s, req.method() == http::Method::CONNECT));
    req.extensions_mut().insert(ClientInfo {
        addr: peer,
        tls: false,
    });
    let resp = match svc.oneshot(req).await {
        Ok(mut resp) => {
            // Which member served it was for the layers. hyper drops what else the map
            // holds after reading its own (a reason phrase, a header case map): a map with
            // nothing else is kept, empty, for a later request, and one with anything is
            // left as it is.
            let extensions = resp.extensions_mut();
            extensions.remove::<Served>();
            if extensions.is_empty() {
                // Not kept once the thread's locals are being destroyed.
                let _ = SPARE_EXTENSIONS.try_with(|spare| {
                    let mut spare = spare.borrow_mut();
                    if spare.len() < MAX_SPARE_EXTENSIONS {
                        spare.push(std::mem::take(extensions));
                    }
                });
            }
            resp.map(boxed)
        }
        Err(e) => {
            let e: BoxError = e.into();
            // No member could take the request (503): the operator's to see, as nginx's
            // "no live upstreams". A member's failure was logged where the member is known
            // (the balance layer names it); anything else is the client's, or its
            // connection's.
            if e.downcast_ref::<BalanceError>().is_some() {
                tracing::warn!("request from {peer} failed: {e}");
            } else {
                tracing::debug!("request from {peer} failed: {e}");
            }
            error_response(&e)
        }
    };
    if let Some((switch, connect)) = switch {
        let status = resp.status();
        switch.settle(if connect {
            status.is_success()
        } else {
            status == StatusCode::SWITCHING_PROTOCOLS
        });
    }
    Ok(match in_flight {
        // In flight until the response body ends.
        Some(in_flight) => resp.map(|body| boxed(Counted::new(body, in_flight, window))),
        None => resp,
    })
}

/// A response body that keeps its request counted as in flight (see [`Shared`]).
///
/// On HTTP/2 (`window`) it also tells the guard when hyper holds a frame of it (`parked`,
/// in a `slot` registered at the first wait, so that short responses never take one):
/// hyper asks a body for its next frame only once the client's flow-control window has room
/// for more, so from a frame handed over until the next ask the response waits for the
/// client. Frames go out at most [`WINDOW_STEP`] bytes at a time, so that a client reading
/// with a small window is seen taking bytes at every step rather than once per member's
/// read (64 KiB and more).
struct Counted {
    body: ProxyBody,
    in_flight: InFlight,
    window: bool,
    slot: Option<Arc<ParkSlot>>,
    parked: bool,
    /// What is left of a data frame cut at [`WINDOW_STEP`].
    rest: Bytes,
}

/// HTTP/2's smallest largest frame (RFC 9113 section 4.2): the most a client with the
/// default `SETTINGS_MAX_FRAME_SIZE` takes in one frame.
const WINDOW_STEP: usize = 16 * 1024;

impl Counted {
    fn new(body: ProxyBody, in_flight: InFlight, window: bool) -> Counted {
        Counted {
            window,
            slot: None,
            body,
            in_flight,
            parked: false,
            rest: Bytes::new(),
        }
    }

    /// The next piece of at most [`WINDOW_STEP`] bytes of `data`; the rest is kept.
    fn step(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > WINDOW_STEP {
            self.rest = data.split_off(WINDOW_STEP);
        }
        data
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.window {
            return Pin::new(&mut this.body).poll_frame(cx);
        }
        if this.parked
            && let Some(slot) = &this.slot
        {
            this.parked = false;
            this.in_flight.unpark(slot);
        }
        let polled = if this.rest.is_empty() {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_data() {
                    Ok(data) => Frame::data(this.step(data)),
                    Err(frame) => frame,
                }))),
                other => other,
            }
        } else {
            let rest = std::mem::take(&mut this.rest);
            Poll::Ready(Some(Ok(Frame::data(this.step(rest)))))
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.is_data()
            && !this.is_end_stream()
        {
            let slot = this.slot.get_or_insert_with(|| this.in_flight.park_slot());
            this.parked = true;
            this.in_flight.park(slot);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut with_rest = SizeHint::new();
        with_rest.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            with_rest.set_upper(upper + rest);
        }
        with_rest
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // A stream reset, or the connection gone, with a frame still held.
        if self.parked
            && let Some(slot) = &self.slot
        {
            self.in_flight.unpark(slot);
        }
    }
}

/// Most empty extension maps kept per thread. Requests take them as they arrive and
/// responses give them back as they end, in any order: one kept map would mostly be missed.
const MAX_SPARE_EXTENSIONS: usize = 64;

thread_local! {
    /// Empty extension maps (with their tables) left by responses, for the next requests on
    /// this thread: each request's map was two allocations otherwise.
    static SPARE_EXTENSIONS: RefCell<Vec<http::Extensions>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `serve` relies on to skip a system call per connection: on Linux an accepted
    /// socket has TCP_NODELAY when its listener had it.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inherited = nodelay_is_inherited(&listener);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        assert!(socket2::SockRef::from(&listener).tcp_nodelay().unwrap());
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        if inherited {
            assert!(accepted.nodelay().unwrap());
        }
    }
}
