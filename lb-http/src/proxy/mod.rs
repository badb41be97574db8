//! The reverse proxy service: forwards a request to the backend chosen by an earlier layer
//! (a [`Target`] in the request's extensions) over pooled keep-alive connections, and returns
//! the backend's response, streaming bodies both ways. Requests without a body or upgrade
//! are written and answered directly by the task serving the client (see `h1`); the others
//! go through hyper's HTTP/1 client.
//!
//! Headers are handled as RFC 9110 section 7.6 asks of an intermediary (see
//! [`headers`]); `Host` is kept or replaced as Apache's `ProxyPreserveHost`
//! says; `Location`, `Content-Location` and `URI` in responses are rewritten back to the
//! front-end address as Apache's `ProxyPassReverse` does (see below). Requests asking for
//! an upgrade (WebSocket) are tunnelled: when the backend answers `101`, the two upgraded
//! connections are joined and bytes copied both ways until either side closes.
//!
//! Not done: TLS to backends (members are `http://`), HTTP/2 to backends (requests go out as
//! HTTP/1.1, so gRPC cannot go through), and WebSocket over HTTP/2 (RFC 8441 extended
//! `CONNECT`): HTTP/1.1 upgrades are tunnelled, HTTP/2 clients get ordinary
//! request/response proxying. A request's trailers reach the backend only when the client
//! declared them in a `Trailer` field: hyper's HTTP/1 client sends no others (nginx sends
//! none at all).
//! `CONNECT` is not forwarded (the router answers it 405); `OPTIONS *` goes as it is.
//!
//! # ProxyPassReverse
//!
//! With [`ProxyConfig::reverse`] (the default), `Location`, `Content-Location` and `URI`
//! response fields that point at a backend are made to point at the front end, so that a
//! redirect does not send the client to an address it cannot reach, or should not know. For
//! a balancer (`ProxyPassReverse /app balancer://name/`) Apache's mod_proxy checks the value
//! against every member of the balancer (`ap_proxy_location_reverse_map` in
//! `proxy_util.c`), not only the one that answered: a member that redirects to a sibling's
//! address (a canonical backend name they share, an application that knows the whole
//! cluster) must not show the client a backend address either. So does this proxy when the
//! request's [`Target`] carries its balancer's [`MemberUrls`], as
//! [`Balance`](crate::balance::Balance) sets them; they are read as the response arrives,
//! so a member added or removed at run time (the balancer manager, a reload) counts from
//! the next response on.
//!
//! A base URL (`http://host:port/path`) matches a value that starts with it, the scheme and
//! host compared without regard to case, the path exactly, where what follows is empty or
//! starts with `/` or `?`: `http://h/app` does not match `http://h/apple`. That part is kept,
//! after the front end's URL: the client's scheme and `Host`, then the mount path (a value
//! that would be empty or start with `?` gets a `/`). Without a `Host` to name (HTTP/1.0),
//! the front URL is the mount path alone: a relative reference (RFC 9110 section 10.2.2
//! allows it) rather than the backend's address. The answering member's base URL is tried
//! first, then the other members'; where several match (members with path prefixes,
//! `http://h:1/app` and `http://h:1/app/x`), the longest wins, so that no backend path is
//! left in the front URL. (Apache takes the first match in configuration order, and
//! compares the whole prefix without regard to case; the two differ only for such
//! overlapping prefixes.)

mod future;
pub(crate) mod h1;
pub(crate) mod pool;
mod read_timer;
mod reverse;
pub(crate) mod upload;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;

pub use future::ResponseFuture;
pub use reverse::{MemberUrls, reverse_url};

use crate::BoxError;
use crate::body::{ProxyBody, boxed};
use crate::error::{NotSent, ProxyError};
use crate::headers::{self, ClientInfo, ForwardedHeaders};
use pool::{Pool, PoolConfig, PooledBody};
use reverse::Reverse;

/// Closes every idle keep-alive connection to backends held by the proxies of this process,
/// to give their file descriptors back; returns how many it closed. lb-http does it itself
/// when a backend connect, or an accept in [`serve`](crate::server::serve), fails for want
/// of descriptors; a program that accepts clients with a loop of its own calls it when an
/// accept fails with `EMFILE` or `ENFILE`, then tries the accept again.
pub fn release_idle_connections() -> usize {
    pool::POOLS.release_idle()
}

/// Where to send a request: put in the request's extensions by the layer that chose the
/// backend (for example [`Balance`](crate::balance::Balance)).
///
/// Two targets are equal when they send requests to the same place, whatever
/// [`MemberUrls`] they carry.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` (TLS to backends is not supported).
    pub scheme: Scheme,
    /// Host and port of the backend.
    pub authority: Authority,
    /// Path prefix on the backend (no trailing slash; empty for `/`).
    pub path: String,
    /// Overrides [`ProxyConfig::response_timeout`] for this backend (Apache's member
    /// `timeout`).
    pub response_timeout: Option<Duration>,
    /// `authority` as a `Host` value, made once rather than per request.
    host: HeaderValue,
    /// The other members of the backend's balancer, for ProxyPassReverse. Shared, not
    /// built per request: a request costs one reference count, and the list is only read
    /// for a response that carries a field to rewrite.
    member_urls: Option<std::sync::Arc<MemberUrls>>,
}

impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        self.scheme == other.scheme
            && self.authority == other.authority
            && self.path == other.path
            && self.response_timeout == other.response_timeout
    }
}

impl Eq for Target {}

impl Target {
    /// Parses a member URL such as `http://127.0.0.1:9001` or `http://app:80/base/`.
    pub fn from_url(url: &str) -> crate::Result<Target> {
        let bad = |reason: &str| crate::Error::MemberUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("missing scheme"))?;
        if scheme != Scheme::HTTP {
            return Err(bad("only http:// members are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("missing host"))?;
        if authority.port_u16().is_none() && authority.host().is_empty() {
            return Err(bad("missing host"));
        }
        if authority.as_str().contains('@') {
            // They would go to the member as part of its Host, and show in the manager.
            return Err(bad("a member url cannot hold credentials (user@)"));
        }
        if has_bad_port(&authority) {
            return Err(bad("invalid port"));
        }
        if uri.query().is_some() {
            return Err(bad("a member url cannot have a query"));
        }
        // The path goes into request lines as it is: only what RFC 3986 allows in one.
        if let Some(c) = uri.path().chars().find(|&c| !crate::path::is_path_char(c)) {
            return Err(bad(&format!("{c:?} in the path (percent-encode it)")));
        }
        let path = uri.path().trim_end_matches('/').to_string();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?;
        Ok(Target {
            scheme,
            authority,
            path,
            response_timeout: None,
            host,
            member_urls: None,
        })
    }

    /// This target with `urls`, the members of the balancer it is one of: ProxyPassReverse
    /// then rewrites a response field that names any of them, not only this one (a member
    /// that redirects to a sibling's address). [`Balance`](crate::balance::Balance) sets
    /// it on the targets it chooses.
    pub fn with_member_urls(mut self, urls: std::sync::Arc<MemberUrls>) -> Target {
        self.member_urls = Some(urls);
        self
    }

    /// The URL prefix responses from this backend use, e.g. `http://127.0.0.1:9001/base`.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path)
    }
}

/// Whether `authority` names a port that is not one (`http` parses `:99999` and `:x` as
/// part of the authority, without a port). An empty port (`host:`) is allowed, as RFC 3986
/// allows it: the scheme's default.
pub(crate) fn has_bad_port(authority: &Authority) -> bool {
    let s = authority.as_str();
    // After an IPv6 literal's `]`, or after the host.
    let after_host = s.rsplit_once(']').map_or(s, |(_, rest)| rest);
    after_host
        .split_once(':')
        .is_some_and(|(_, port)| !port.is_empty())
        && authority.port_u16().is_none()
}

/// How the proxy forwards.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Keep the client's `Host` (Apache `ProxyPreserveHost On`); default off: `Host` is the
    /// backend's.
    pub preserve_host: bool,
    /// Which forwarding headers to add.
    pub forwarded: ForwardedHeaders,
    /// The pseudonym in `Via` (default `lb`); `None` adds no `Via`.
    pub via: Option<String>,
    /// Time to open a TCP connection to a backend (default 5 s) -> 502.
    pub connect_timeout: Duration,
    /// Time for the backend's response head (default 60 s, Apache `ProxyTimeout`) -> 504.
    /// For a request with neither a body nor an upgrade, it is the longest the backend may
    /// keep the proxy waiting between two moves (the request written, a piece of the head
    /// read), as nginx's `proxy_send_timeout` and `proxy_read_timeout` are: a head that
    /// keeps coming is waited for, and a request sent again on another kept-alive
    /// connection gets only what is left of it. Connecting is not counted (see
    /// `connect_timeout`). An upgrade request's head is waited for this long from the
    /// request's start, connecting included. Once the head is in, the longest its body may
    /// stall between two reads: a body that brings no byte for this long is cut, the
    /// client's connection closed (its HTTP/2 stream reset), as Apache's socket timeout and
    /// nginx's `proxy_read_timeout` do. So a stream that goes quiet for longer (server-sent
    /// events, long polling) needs a longer timeout. While a request body is sent, the wait
    /// starts afresh at each piece of it handed on, and not at all while the client is the
    /// one awaited (see [`client_body_timeout`](Self::client_body_timeout)): an upload that
    /// keeps moving may take longer. A tunnel (a WebSocket, say) through which no byte
    /// passes either way for this long is closed, as nginx closes one after
    /// `proxy_read_timeout`.
    pub response_timeout: Duration,
    /// The longest a client's request body may bring no byte while the proxy waits for one
    /// (default 60 s, as nginx's `client_body_timeout`): then the client gets `408` and the
    /// member is not blamed. While the proxy waits for the client, the response timeout
    /// does not run: the backend is not the one late.
    pub client_body_timeout: Duration,
    /// The front-end path prefix this proxy is mounted on (Apache `ProxyPass /app ...`),
    /// removed before the backend's own prefix is put in; empty for `/`.
    pub mount: String,
    /// Rewrite `Location`, `Content-Location` and `URI` (Apache `ProxyPassReverse`;
    /// default on): a value that starts with the base URL of the member that answered, or
    /// of any other member of its balancer, gets the front end's URL (the client's scheme
    /// and `Host`, and the mount path) in its place; without a `Host` to name, the mount
    /// path alone. The other members are those of the request's [`Target`] (see
    /// [`Target::with_member_urls`], which [`Balance`](crate::balance::Balance) sets), as
    /// they are when the response arrives, so members added or removed at run time count;
    /// where several match, the longest base URL wins. A `Target` without them (a proxy
    /// used without `Balance`) rewrites its own URL only. The [module docs](self#proxypassreverse)
    /// give the matching rules.
    pub reverse: bool,
    /// Idle keep-alive connections to backends are not used, and are closed, after this
    /// (default 90 s).
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per backend (default 256). When the process runs short
    /// of file descriptors, every proxy closes all its idle connections (see
    /// [`release_idle_connections`]).
    pub pool_max_idle: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            preserve_host: false,
            forwarded: ForwardedHeaders::default(),
            via: Some("lb".to_string()),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            mount: String::new(),
            reverse: true,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 256,
        }
    }
}

/// The proxy service. Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// One reference count for the whole: the service is cloned for every request.
    shared: std::sync::Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pool: std::sync::Arc<Pool>,
    config: ProxyConfig,
    via: Option<ViaValues>,
}

impl Proxy {
    /// A proxy with its own connection pool. Connections to backends are driven by tasks on
    /// the runtime of the request that opened them.
    pub fn new(config: ProxyConfig) -> Proxy {
        let pool = Pool::new(PoolConfig {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.pool_idle_timeout,
            max_idle: config.pool_max_idle,
        });
        let via = config.via.as_deref().and_then(ViaValues::new);
        Proxy {
            shared: std::sync::Arc::new(Shared { pool, config, via }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }
}

impl<B> tower::Service<Request<B>> for Proxy
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Taken, not cloned: the request is this attempt's own.
        match req.extensions_mut().remove::<Target>() {
            Some(target) => ResponseFuture::new(forward(self.clone(), target, req.map(boxed))),
            None => ResponseFuture::failed(ProxyError::NoTarget),
        }
    }
}

/// Sends `req` to `target` on a pooled connection and waits for the response head within
/// the response timeout. Through hyper's client, the timeout starts at the first poll;
/// on the direct path, the connection's own timer gives it for each wait of the exchange
/// (see `exchange_direct`). The body gets the same timeout for each of its waits (see
/// `read_timer`).
///
/// Plain functions returning futures, not `async fn`s: an `async fn` keeps its arguments
/// twice in its state (rust-lang/rust#62958), and each copy of a request there is 288 bytes
/// in a future that is boxed for every request. Under about 1 KiB, that box comes from the
/// allocator's per-thread cache. The exchange is boxed where it is made, and the timer
/// around it goes inline into [`ResponseFuture`]: built whole and then boxed, it was
/// copied about seven times on its way into the box (about 1 KiB each time).
fn forward(proxy: Proxy, target: Target, req: Request<ProxyBody>) -> Timed<future::Exchange> {
    let timeout = target
        .response_timeout
        .unwrap_or(proxy.shared.config.response_timeout);
    // A body to send: the response timer leaves out the waits for the client.
    let (req, upload) = if req.body().is_end_stream() {
        (req, None)
    } else {
        let progress = upload::Progress::new();
        let client_timeout = proxy.shared.config.client_body_timeout;
        let req = req.map(|b| {
            crate::body::boxed(upload::UploadBody::new(b, progress.clone(), client_timeout))
        });
        (req, Some(progress))
    };
    let tunnel = headers::wants_upgrade(req.version(), req.headers());
    let direct = !tunnel && req.body().is_end_stream() && req.method() != Method::CONNECT;
    Timed {
        exchange: exchange(proxy, target, req, timeout, upload.clone(), tunnel, direct),
        timer: None,
        timed: !direct,
        timeout,
        upload,
    }
}

pin_project_lite::pin_project! {
    /// An exchange, finished into the client's response. Through hyper's client (a body to
    /// send, an upgrade), under the response timeout, from the first poll: not
    /// `tokio::time::timeout`, whose timer starts when it is made (and needs the runtime
    /// then). The direct path times its own waits (see `exchange_direct`). The timer is
    /// boxed: made only for the first kind, and the future stays `Unpin`.
    pub(crate) struct Timed<F> {
        #[pin]
        exchange: F,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        // False when the exchange times its waits itself (the direct path).
        timed: bool,
        timeout: Duration,
        // How the request's body is getting on, when it has one.
        upload: Option<std::sync::Arc<upload::Progress>>,
    }
}

impl<F> Future for Timed<F>
where
    F: Future<Output = Result<(Response<ProxyBody>, Prepared, Proxy), BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.timed && this.timer.is_none() {
            *this.timer = Some(Box::pin(tokio::time::sleep(*this.timeout)));
        }
        if let Poll::Ready(done) = this.exchange.poll(cx) {
            return Poll::Ready(done.map(|(resp, prepared, proxy)| {
                finish_response(
                    resp,
                    &prepared,
                    &proxy.shared.config,
                    proxy.shared.via.as_ref(),
                )
            }));
        }
        let Some(timer) = this.timer.as_mut() else {
            return Poll::Pending;
        };
        loop {
            std::task::ready!(timer.as_mut().poll(cx));
            // While the body is sent, the backend's wait starts at its last move, and the
            // waits for the client are not the backend's.
            let Some(progress) = this.upload.as_ref() else {
                break;
            };
            let now = tokio::time::Instant::now();
            match progress.backend_deadline(*this.timeout) {
                Some(deadline) if deadline <= now => break,
                Some(deadline) => timer.as_mut().reset(deadline),
                None => timer.as_mut().reset(upload::deadline(*this.timeout)),
            }
        }
        Poll::Ready(Err(ProxyError::ResponseTimeout(*this.timeout).into()))
    }
}

/// The exchange [`forward`] times.
///
/// The connection is had before the request is rewritten: when none can be opened, the
/// request comes back untouched in a [`NotSent`] error, for another backend. Without a body
/// to stream or a protocol to switch to, the exchange is done directly on the connection, in
/// this task; otherwise through hyper's client.
fn exchange(
    proxy: Proxy,
    target: Target,
    mut req: Request<ProxyBody>,
    timeout: Duration,
    upload: Option<std::sync::Arc<upload::Progress>>,
    tunnel: bool,
    direct: bool,
) -> future::Exchange {
    let client = req.extensions().get::<ClientInfo>().copied();
    Box::pin(async move {
        let authority = target.authority.clone();
        if !direct {
            // Boxed: bodies and upgrades are the rare case, and this branch's state would
            // otherwise make every request's future larger (and costlier to move).
            return Box::pin(async move {
                let pool = &proxy.shared.pool;
                let conn = match pool.get(&authority).await {
                    Ok(conn) => conn,
                    Err(e) => return Err(NotSent::new(e, req).into()),
                };
                let (req, mut prepared) = proxy.prepare(req, client, target, tunnel)?;
                let resp =
                    exchange_hyper(pool, &authority, req, conn, &mut prepared, timeout, upload)
                        .await?;
                Ok((resp, prepared, proxy))
            })
            .await;
        }
        let pool = &proxy.shared.pool;
        let plan = proxy.plan(&req, &target)?;
        // A request that may not be sent twice only goes on a connection seen open.
        let check = !req.method().is_idempotent();
        let (mut conn, fresh) = match pool.get_direct(&authority, check).await {
            Ok(conn) => conn,
            Err(e) => return Err(NotSent::new(e, req).into()),
        };
        // The head is written from the request's fields, the request left as it is: it can
        // still go back whole if the kept-alive connection turns out closed and no new one
        // can be opened.
        {
            let rewrite = headers::HeadRewrite {
                host: proxy.host_for(&plan, &target),
                client,
                forwarded: proxy.shared.config.forwarded,
                front_host: plan.front_host.as_ref(),
                via: proxy
                    .shared
                    .via
                    .as_ref()
                    .map(|v| v.for_version(req.version())),
            };
            headers::write_request_head(
                conn.head_buf(),
                req.method(),
                plan.path(&req),
                req.headers(),
                &rewrite,
            );
        }
        match exchange_direct(pool, &authority, req.method(), (conn, fresh), timeout).await {
            Ok(mut resp) => {
                // The request's extension map, emptied, becomes the response's: the layers
                // above add theirs without making a map of their own.
                let mut extensions = std::mem::take(req.extensions_mut());
                extensions.clear();
                *resp.extensions_mut() = extensions;
                // Its header map, for the next response read on this thread.
                h1::recycle_map(std::mem::take(req.headers_mut()));
                let prepared = proxy.prepared(plan, client, target, None, req.version());
                Ok((resp, prepared, proxy))
            }
            Err(e) if e.is_connect() => Err(NotSent::new(e, req).into()),
            Err(e) => Err(e.into()),
        }
    })
}

/// One request sent through hyper's client on `conn`. A request that a kept-alive
/// connection did not take (the backend had closed it) is sent again on a new connection.
/// A `101` answer to an upgrade request joins the two connections.
async fn exchange_hyper(
    pool: &std::sync::Arc<Pool>,
    authority: &Authority,
    mut req: Request<ProxyBody>,
    mut conn: pool::Conn,
    prepared: &mut Prepared,
    timeout: Duration,
    upload: Option<std::sync::Arc<upload::Progress>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut resp = loop {
        match conn.tx.try_send_request(req).await {
            Ok(resp) => break resp,
            Err(mut e) => match e.take_message() {
                Some(unsent) if !conn.fresh => {
                    tracing::debug!("kept-alive connection to {authority} closed; reconnecting");
                    req = unsent;
                }
                _ => {
                    return Err(upload::client_side(e.error())
                        .unwrap_or_else(|| ProxyError::BadResponse(error_chain(e.error()))));
                }
            },
        }
        conn = pool.get(authority).await?;
    };
    // hyper's client checks its limit only on a head still incomplete, so one that arrives
    // whole in a read may be larger: held to the direct path's limit here.
    let head_len = 16
        + resp
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head_len > h1::MAX_HEAD {
        return Err(ProxyError::BadResponse(format!(
            "response head larger than {} KiB",
            h1::MAX_HEAD / 1024
        )));
    }
    // hyper's client reads such a body as chunked but leaves the length in the fields, where
    // it would go on to the client with a body of another length (RFC 9112 section 6.3
    // says to remove it, or take the message as an error): refused, as on the direct path.
    if resp.headers().contains_key(header::TRANSFER_ENCODING)
        && resp.headers().contains_key(header::CONTENT_LENGTH)
    {
        return Err(ProxyError::BadResponse(
            "both Transfer-Encoding and Content-Length".into(),
        ));
    }
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = prepared.tunnel.take() {
            let backend = hyper::upgrade::on(&mut resp);
            let hold = crate::ext::TunnelHold::default();
            resp.extensions_mut().insert(hold.clone());
            spawn_tunnel(client, backend, hold, timeout);
            prepared.tunnelled = true;
        }
    }
    let tx = conn.tx;
    Ok(
        PooledBody::wrap(resp, pool.clone(), authority.clone(), tx, timeout, upload)
            .map(crate::body::pooled),
    )
}

/// One request without a body, sent and answered on a direct connection, `conn` first (its
/// head already written, see [`h1::Direct::head_buf`]). A kept-alive connection found
/// closed is replaced by a new one when the request was not written, or when its method is
/// idempotent (RFC 9110 section 9.2.2): a backend may have closed it just as the request
/// went out. The same for one that answers with stray bytes first (a body the backend sent
/// after a response that has none), as nginx drops an idle connection that turns readable.
///
/// The exchange is timed by the connection's own timer: `timeout` at most between two
/// moves (the request written, a piece of the head read). A request sent again on another
/// connection gets what is left of `timeout` after the waits on the ones before, so that
/// retries do not add up past it (a backend that closes each connection late, without an
/// answer, gets 504 within `timeout`, not a wait per pooled connection). Connecting is not
/// counted: it has the connect timeout.
async fn exchange_direct(
    pool: &std::sync::Arc<Pool>,
    authority: &Authority,
    method: &Method,
    conn: (Box<h1::Direct>, bool),
    timeout: Duration,
) -> Result<Response<ProxyBody>, ProxyError> {
    let idempotent = method.is_idempotent();
    let head_only = method == Method::HEAD;
    let (mut conn, mut fresh) = conn;
    // What is left of the timeout for the next try.
    let mut left = timeout;
    loop {
        // In a block of its own: the result is not kept in this future's state while a new
        // connection is awaited below.
        {
            let result = match conn.send(left).await {
                Ok(()) => conn.read_head(head_only).await,
                Err(e) => Err(e),
            };
            match result {
                Ok((head, delimiting)) => {
                    let body = conn.into_body(delimiting, pool.clone(), authority.clone(), timeout);
                    return Ok(Response::from_parts(head, crate::body::direct(body)));
                }
                Err(h1::ExchangeError::Unsent(e)) if !fresh => {
                    tracing::debug!(
                        "kept-alive connection to {authority} refused the request: {e}"
                    );
                }
                Err(h1::ExchangeError::NoResponse(e)) if !fresh && idempotent => {
                    tracing::debug!("kept-alive connection to {authority} gave no response: {e}");
                }
                Err(h1::ExchangeError::Stray(e)) if !fresh && idempotent => {
                    tracing::debug!("kept-alive connection to {authority} held stray bytes: {e}");
                }
                Err(h1::ExchangeError::Timeout) => {
                    return Err(ProxyError::ResponseTimeout(timeout));
                }
                Err(e) => return Err(ProxyError::BadResponse(format!("{authority}: {e}"))),
            }
        }
        if let Some(began) = conn.first_wait() {
            let waited = tokio::time::Instant::now().saturating_duration_since(began);
            left = match left.checked_sub(waited) {
                Some(rest) if !rest.is_zero() => rest,
                _ => return Err(ProxyError::ResponseTimeout(timeout)),
            };
        }
        // One closed connection suggests more (the backend restarted): the next ones are
        // looked at before a request goes out on them.
        let (mut next, next_fresh) = pool.get_direct(authority, true).await?;
        next.take_head(&mut conn);
        (conn, fresh) = (next, next_fresh);
    }
}

/// What the response side needs to know about the request.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The client's side of an upgrade it asked for.
    pub(crate) tunnel: Option<hyper::upgrade::OnUpgrade>,
    /// The backend switched protocols and the two connections are joined.
    pub(crate) tunnelled: bool,
    /// What ProxyPassReverse needs (also holds the target).
    pub(crate) reverse: Option<Reverse>,
    pub(crate) version: Version,
}

impl Proxy {
    /// The client's host and the backend URI of `req` for `target`.
    fn plan(&self, req: &Request<ProxyBody>, target: &Target) -> Result<Plan, ProxyError> {
        let config = &self.shared.config;
        // Its target is a host to tunnel to, not a resource of a member's.
        if req.method() == Method::CONNECT {
            return Err(ProxyError::Request("CONNECT is not forwarded".to_string()));
        }
        // The client's host: the authority of an absolute-form target, which wins over
        // Host (RFC 9112 section 3.2.2; HTTP/2's :authority, which the server made sure
        // Host agrees with), else the Host field.
        let front_host: Option<HeaderValue> =
            match (req.uri().authority(), req.headers().get(header::HOST)) {
                (None, host) => host.cloned(),
                (Some(a), Some(h)) if h.as_bytes() == a.as_str().as_bytes() => Some(h.clone()),
                (Some(a), _) => HeaderValue::from_str(a.as_str()).ok(),
            };
        // The backend URI: its prefix plus what follows the mount point, without dot
        // segments (the router removed them already; this proxy may be used without one).
        // With neither a prefix nor a mount point nor dot segments (the usual case) the
        // client's path goes as it is.
        let path = crate::path::remove_dot_segments(req.uri().path())
            .map_err(|bad| ProxyError::Request(bad.message().trim_end().to_string()))?;
        // `OPTIONS *` (asterisk form) is about the server, not a path: it goes as it is.
        let asterisk = req.uri().path_and_query().is_some_and(|pq| pq == "*");
        let as_sent = asterisk
            || (target.path.is_empty()
                && config.mount.is_empty()
                && matches!(path, std::borrow::Cow::Borrowed(_))
                && req
                    .uri()
                    .path_and_query()
                    .is_some_and(|pq| pq.as_str().starts_with('/')));
        let new_path = if as_sent {
            None
        } else {
            Some(backend_path(target, config, &path, req.uri().query())?)
        };
        Ok(Plan {
            front_host,
            new_path,
        })
    }

    /// The `Host` sent to the backend (Apache's `ProxyPreserveHost`).
    fn host_for<'a>(&self, plan: &'a Plan, target: &'a Target) -> &'a HeaderValue {
        match (&plan.front_host, self.shared.config.preserve_host) {
            (Some(front), true) => front,
            _ => &target.host,
        }
    }

    /// What the response side needs, for a request `plan` describes.
    fn prepared(
        &self,
        plan: Plan,
        client: Option<ClientInfo>,
        target: Target,
        tunnel: Option<hyper::upgrade::OnUpgrade>,
        version: Version,
    ) -> Prepared {
        let reverse = self
            .shared
            .config
            .reverse
            .then(|| Reverse::new(target, plan.front_host, client.is_some_and(|c| c.tls)));
        Prepared {
            tunnel,
            tunnelled: false,
            reverse,
            version,
        }
    }

    /// Rewrites `req` for `target`: its URI, hop-by-hop and forwarding fields, `Host`.
    fn prepare(
        &self,
        mut req: Request<ProxyBody>,
        client: Option<ClientInfo>,
        target: Target,
        tunnel: bool,
    ) -> Result<(Request<ProxyBody>, Prepared), ProxyError> {
        let config = &self.shared.config;
        let version = req.version();
        let plan = self.plan(&req, &target)?;
        let on_upgrade = tunnel.then(|| hyper::upgrade::on(&mut req));
        let host = self.host_for(&plan, &target).clone();

        let (mut parts, body) = req.into_parts();
        // Origin form (RFC 9112 section 3.2.1): the connection is to the backend already.
        let pq = match &plan.new_path {
            Some(pq) => pq.clone(),
            None => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        parts.uri = Uri::from(pq);
        parts.version = Version::HTTP_11;
        let h = &mut parts.headers;
        // Room for the fields added below, made once: hyper sizes the map for what the
        // client sent, and growing it field by field reallocates it more than once.
        h.reserve(6);
        headers::strip_hop_by_hop(h, tunnel);
        headers::join_cookies(h);
        if let Some(client) = client {
            headers::add_forwarded_value(h, config.forwarded, client, plan.front_host.as_ref());
        }
        if let Some(via) = &self.shared.via {
            headers::append_list(h, header::VIA, via.for_version(version).clone());
        }
        h.insert(header::HOST, host);
        let prepared = self.prepared(plan, client, target, on_upgrade, version);
        Ok((Request::from_parts(parts, body), prepared))
    }
}

/// The client's host and the backend URI of a request.
struct Plan {
    front_host: Option<HeaderValue>,
    /// The path and query for the backend, when not the client's own.
    new_path: Option<PathAndQuery>,
}

impl Plan {
    /// The path and query to send for `req`.
    fn path<'a>(&'a self, req: &'a Request<ProxyBody>) -> &'a str {
        match &self.new_path {
            Some(pq) => pq.as_str(),
            None => req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
        }
    }
}

/// The target's path prefix followed by what follows the mount point in `path` (without
/// dot segments), and `query`.
fn backend_path(
    target: &Target,
    config: &ProxyConfig,
    path: &str,
    query: Option<&str>,
) -> Result<PathAndQuery, ProxyError> {
    let rest = path.strip_prefix(config.mount.as_str()).unwrap_or(path);
    let mut pq = String::with_capacity(target.path.len() + path.len() + 16);
    pq.push_str(&target.path);
    if !rest.starts_with('/') {
        pq.push('/');
    }
    pq.push_str(rest);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    PathAndQuery::try_from(pq).map_err(|e| ProxyError::Request(e.to_string()))
}

/// `Via` values for each protocol version, made once per proxy.
#[derive(Debug)]
pub(crate) struct ViaValues {
    http09: HeaderValue,
    http10: HeaderValue,
    http11: HeaderValue,
    http2: HeaderValue,
    http3: HeaderValue,
}

impl ViaValues {
    fn new(pseudonym: &str) -> Option<ViaValues> {
        let v = |version| {
            HeaderValue::from_str(&format!("{} {pseudonym}", headers::via_version(version))).ok()
        };
        Some(ViaValues {
            http09: v(Version::HTTP_09)?,
            http10: v(Version::HTTP_10)?,
            http11: v(Version::HTTP_11)?,
            http2: v(Version::HTTP_2)?,
            http3: v(Version::HTTP_3)?,
        })
    }

    fn for_version(&self, version: Version) -> &HeaderValue {
        match version {
            Version::HTTP_09 => &self.http09,
            Version::HTTP_10 => &self.http10,
            Version::HTTP_2 => &self.http2,
            Version::HTTP_3 => &self.http3,
            _ => &self.http11,
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

/// Applies the response-side header rules.
pub(crate) fn finish_response(
    resp: Response<ProxyBody>,
    prepared: &Prepared,
    config: &ProxyConfig,
    via: Option<&ViaValues>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    // Room for Via and the layers' fields (a route cookie, Cache-Control), made once.
    parts.headers.reserve(3);
    headers::strip_hop_by_hop(&mut parts.headers, prepared.tunnelled);
    // RFC 9110 section 8.6: a 204 carries no Content-Length. hyper's HTTP/1 server drops
    // one; its HTTP/2 server would send it on.
    if parts.status == http::StatusCode::NO_CONTENT {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if let Some(via) = via {
        headers::append_list(
            &mut parts.headers,
            header::VIA,
            via.for_version(parts.version).clone(),
        );
    }
    if let Some(reverse) = &prepared.reverse {
        reverse.rewrite(&mut parts.headers, &config.mount);
    }
    // The client's version, whatever the backend's; but HTTP/1.1 for an HTTP/1.0 client:
    // hyper's server writes `HTTP/1.0` to it anyway, and decides its keep-alive only for a
    // response left at 1.1 (adding `Connection: keep-alive` when the client asked for it).
    // A response marked 1.0 closes the connection, since its own `Connection` field, a
    // hop-by-hop one, is removed above.
    parts.version = match prepared.version {
        Version::HTTP_09 | Version::HTTP_10 => Version::HTTP_11,
        v => v,
    };
    Response::from_parts(parts, body)
}

/// Joins the client's and the backend's upgraded connections; what `hold` keeps lives until
/// they close. A tunnel through which no byte passes either way for `idle` is closed, as
/// nginx closes one after `proxy_read_timeout` and HAProxy after `timeout tunnel`: a peer
/// that vanished without a FIN would hold both connections, and its member's busy count,
/// for good.
pub(crate) fn spawn_tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    hold: crate::ext::TunnelHold,
    idle: Duration,
) {
    tokio::spawn(async move {
        let _hold = hold;
        let (c, b) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!("upgrade failed: {e}");
                return;
            }
        };
        let activity = upload::Progress::new();
        let mut c = Watched::new(TokioIo::new(c), activity.clone());
        let mut b = Watched::new(TokioIo::new(b), activity.clone());
        let copy = tokio::io::copy_bidirectional(&mut c, &mut b);
        tokio::pin!(copy);
        let timer = tokio::time::sleep_until(upload::deadline(idle));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                done = &mut copy => {
                    if let Err(e) = done {
                        tracing::debug!("tunnel closed: {e}");
                    }
                    return;
                }
                () = &mut timer => {
                    let deadline = activity
                        .backend_deadline(idle)
                        .unwrap_or_else(|| upload::deadline(idle));
                    if deadline <= tokio::time::Instant::now() {
                        tracing::debug!("tunnel idle for {idle:?}; closed");
                        return;
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    });
}

pin_project_lite::pin_project! {
    /// One end of a tunnel, telling `activity` when bytes pass.
    struct Watched<T> {
        #[pin]
        io: T,
        activity: std::sync::Arc<upload::Progress>,
    }
}

impl<T> Watched<T> {
    fn new(io: T, activity: std::sync::Arc<upload::Progress>) -> Self {
        Watched { io, activity }
    }
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let read = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.moved();
        }
        read
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let written = this.io.poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved();
        }
        written
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_member_urls() {
        let t = Target::from_url("http://127.0.0.1:9001/base/").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9001");
        assert_eq!(t.path, "/base");
        assert_eq!(t.base_url(), "http://127.0.0.1:9001/base");
        assert!(Target::from_url("https://x:1").is_err());
        assert!(Target::from_url("127.0.0.1:80").is_err());
        assert!(Target::from_url("http://x:1/?a=b").is_err());
        let err = |url: &str| Target::from_url(url).unwrap_err().to_string();
        assert!(err("http://user:secret@x:1").contains("credentials"));
        assert!(err("http://x:99999").contains("invalid port"));
        assert!(err("http://x:1/a\"b").contains("'\"' in the path"));
        assert!(err("http://x:1/a{b}").contains("'{' in the path"));
        assert_eq!(
            Target::from_url("http://x:1/a%20b;v=1").unwrap().path,
            "/a%20b;v=1"
        );
        assert!(Target::from_url("http://[::1]:8080/").is_ok());
        assert!(Target::from_url("http://[::1]/").is_ok());
        assert!(err("http://[::1]:80000").contains("invalid port"));
    }

    /// On the direct path the response timeout is the longest the exchange may wait for a
    /// move (a byte written or read) up to the response head, timed by the kept-alive
    /// connection's own timer: a head that keeps coming is waited for, a backend that goes
    /// quiet gets 504 after exactly the timeout, and the timer serves each request on the
    /// connection in turn.
    #[tokio::test(start_paused = true)]
    async fn the_direct_path_times_each_wait_for_the_response_head() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::time::{Instant, sleep};
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = backend.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            // First request: the head in three parts, 6 s apart (12 s in all).
            assert!(s.read(&mut buf).await.unwrap() > 0);
            for part in [
                &b"HTTP/1.1 200 OK\r\n"[..],
                b"Content-Length: 2\r\n",
                b"\r\nok",
            ] {
                s.write_all(part).await.unwrap();
                sleep(Duration::from_secs(6)).await;
            }
            // Second request, on the same connection: no answer.
            assert!(s.read(&mut buf).await.unwrap() > 0);
            sleep(Duration::from_secs(3600)).await;
        });
        let mut target = Target::from_url(&format!("http://{addr}")).unwrap();
        target.response_timeout = Some(Duration::from_secs(10));
        let mut proxy = Proxy::new(ProxyConfig::default());
        let request = || {
            let mut req = Request::get("/").body(crate::body::empty()).unwrap();
            req.extensions_mut().insert(target.clone());
            req
        };
        let resp = tower::Service::call(&mut proxy, request()).await.unwrap();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
        assert_eq!(&body.unwrap().to_bytes()[..], b"ok");
        // Whatever is left of the backend's last 6 s wait passes before the next request.
        sleep(Duration::from_secs(6)).await;
        let start = Instant::now();
        let err = tower::Service::call(&mut proxy, request())
            .await
            .unwrap_err();
        let waited = start.elapsed();
        assert!(
            matches!(err.downcast_ref(), Some(ProxyError::ResponseTimeout(t)) if *t == Duration::from_secs(10)),
            "{err}"
        );
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
        accepted.abort();
    }

    /// A request sent again on another kept-alive connection (the first closed without an
    /// answer) gets only what is left of the response timeout: a backend that closes each
    /// connection late gets 504 within the timeout, not one timeout per pooled connection.
    #[tokio::test(start_paused = true)]
    async fn retries_on_kept_alive_connections_share_the_response_timeout() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::time::{Instant, sleep};
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = backend.local_addr().unwrap();
        let slow_seen = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = slow_seen.clone();
        let accepting = tokio::spawn(async move {
            for _ in 0..8 {
                let (mut s, _) = backend.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        if buf[..n].starts_with(b"GET /slow") {
                            // 45 s, then the connection closes without an answer.
                            seen.fetch_add(1, Ordering::SeqCst);
                            sleep(Duration::from_secs(45)).await;
                            return;
                        }
                        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                    }
                });
            }
        });
        let mut target = Target::from_url(&format!("http://{addr}")).unwrap();
        target.response_timeout = Some(Duration::from_secs(60));
        let proxy = Proxy::new(ProxyConfig::default());
        let request = |path: &str| {
            let mut req = Request::get(path).body(crate::body::empty()).unwrap();
            req.extensions_mut().insert(target.clone());
            req
        };
        // Three kept-alive connections in the pool.
        let warm = (0..3).map(|_| {
            let mut proxy = proxy.clone();
            let req = request("/warm");
            async move {
                let resp = tower::Service::call(&mut proxy, req).await.unwrap();
                http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap();
            }
        });
        futures_util::future::join_all(warm).await;
        let start = Instant::now();
        let err = tower::Service::call(&mut proxy.clone(), request("/slow"))
            .await
            .unwrap_err();
        let waited = start.elapsed();
        assert!(
            matches!(err.downcast_ref(), Some(ProxyError::ResponseTimeout(_))),
            "{err}"
        );
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
            "{waited:?}"
        );
        assert_eq!(
            slow_seen.load(Ordering::SeqCst),
            2,
            "sent on two connections"
        );
        accepting.abort();
    }

    /// Embedders poll it with `Pin::new` or `select!` on `&mut`: it stays `Unpin`.
    #[test]
    fn the_response_future_is_unpin() {
        fn unpin<T: Unpin>() {}
        unpin::<ResponseFuture>();
    }

    #[test]
    fn via_names_the_version_of_each_hop() {
        let via = ViaValues::new("lb").unwrap();
        assert_eq!(via.for_version(Version::HTTP_09), "0.9 lb");
        assert_eq!(via.for_version(Version::HTTP_10), "1.0 lb");
        assert_eq!(via.for_version(Version::HTTP_11), "1.1 lb");
        assert_eq!(via.for_version(Version::HTTP_2), "2 lb");
        assert_eq!(via.for_version(Version::HTTP_3), "3 lb");
        assert!(ViaValues::new("bad\nname").is_none());
    }
}
