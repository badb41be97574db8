//! Keep-alive HTTP/1.1 connections to backends.
//!
//! One [`Pool`] per [`Proxy`](super::Proxy). A request takes an idle connection to its
//! backend (the most recently used first) or opens one; the connection goes back to the
//! pool when the response body has been read to its end. Two kinds are kept apart:
//! connections used directly by the request's task ([`Direct`], for requests without a
//! body or upgrade) and connections run by hyper's client, each driven by its own task on
//! the runtime that opened it. A proxy built per worker thread (as lb-balancer builds them)
//! keeps each backend connection on one thread.
//!
//! This replaces hyper-util's general-purpose client, whose per-request costs (a pool keyed
//! by scheme and authority behind a hash map, connection metadata added to every response,
//! absolute-form URIs turned back into origin form, a spawned task per response to return
//! the connection) showed up in profiles of the proxy's hot path.
//!
//! Idle connections older than the idle timeout, and connections the backend closed, are
//! dropped when met at checkout and by a sweep every half idle timeout while the pool is
//! used; a pool left unused keeps its idle connections until the backend closes them.
//!
//! Idle connections hold file descriptors, which the process needs for its clients too.
//! When it runs short (a `socket()`, `connect()` or `accept()` failing with `EMFILE`,
//! `ENFILE`, `ENOBUFS` or `ENOMEM`), every pool of the process closes all its idle
//! connections, as HAProxy stops keeping idle server connections when descriptors grow
//! scarce (`tune.pool-high-fd-ratio`): a connect that failed so is tried once more, and
//! the server's accept loop tries its accept again at once when any were closed (once;
//! then it backs off as before). All of them, not the oldest few: the shortage is the
//! whole process's, one failure in a burst seldom comes alone, and
//! an idle connection is only a saved handshake, cheaper to open again than a 503 or a
//! client left waiting in the accept queue. The pools are found through a process-wide
//! list of them, kept when a proxy is made: a pool no request uses (another worker
//! thread's, another site's) gives its connections back too, and nothing is added to a
//! request's path. Unlike HAProxy, no idle connection is refused ahead of the shortage
//! (its `pool-high-fd-ratio`/`pool-low-fd-ratio`, a share of the descriptor limit): that
//! needs a count of the descriptors open in the process, kept on every connection's open
//! and close, which lb does not keep.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::uri::Authority;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use lb_core::health::is_local_shortage;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1::Direct;
use super::read_timer::ReadTimer;
use crate::BoxError;
use crate::body::ProxyBody;
use crate::error::ProxyError;

/// How the pool connects and how long it keeps connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

/// Idle connections by backend.
#[derive(Debug)]
pub(crate) struct Pool {
    config: PoolConfig,
    inner: Mutex<Inner>,
    /// The pools that give their idle connections back with this one's.
    registry: &'static Registry,
}

/// Pools that give their idle connections back together when the process runs short of
/// descriptors: [`POOLS`], every proxy's.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Taken only when a pool is made and when descriptors run short: never per request.
    pools: Mutex<Vec<Weak<Pool>>>,
}

/// The pools of every [`Proxy`](super::Proxy) in the process.
pub(crate) static POOLS: Registry = Registry::new();

#[derive(Debug, Default)]
struct Inner {
    /// By backend: a proxy has a handful, so a list searched in order beats hashing the
    /// authority on every request.
    idle: Vec<(Authority, Lists)>,
    last_sweep: Option<Instant>,
}

/// The idle connections to one backend, oldest first.
#[derive(Debug, Default)]
struct Lists {
    hyper: Vec<Idle>,
    direct: Vec<(Box<Direct>, Instant)>,
}

/// The same backend, for the pool: the authorities as written. `Authority`'s own `==`
/// ignores case, byte by byte, on every checkout and checkin; a member's authority is the
/// same text each time, so spellings differing in case merely get lists of their own.
fn same(a: &Authority, b: &Authority) -> bool {
    a.as_str() == b.as_str()
}

impl Inner {
    fn lists(&mut self, authority: &Authority) -> Option<&mut Lists> {
        self.idle
            .iter_mut()
            .find(|(a, _)| same(a, authority))
            .map(|(_, lists)| lists)
    }

    /// The lists of `authority`, made if missing.
    fn lists_or_new(&mut self, authority: Authority) -> &mut Lists {
        let i = match self.idle.iter().position(|(a, _)| same(a, &authority)) {
            Some(i) => i,
            None => {
                self.idle.push((authority, Lists::default()));
                self.idle.len() - 1
            }
        };
        &mut self.idle[i].1
    }

    /// Drops connections idle for longer than `idle_timeout`, every half of it.
    fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) <= idle_timeout / 2)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.idle.retain_mut(|(_, lists)| {
            lists
                .hyper
                .retain(|e| !e.tx.is_closed() && now.duration_since(e.since) <= idle_timeout);
            lists
                .direct
                .retain(|(_, since)| now.duration_since(*since) <= idle_timeout);
            !(lists.hyper.is_empty() && lists.direct.is_empty())
        });
    }
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<ProxyBody>,
    since: Instant,
}

/// A connection taken from the pool or just opened.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) tx: SendRequest<ProxyBody>,
    /// True when it was opened for this request (a failure on it is not a stale
    /// keep-alive connection).
    pub(crate) fresh: bool,
}

/// How many idle connections a checkout looks at, newest first, for one that is ready.
const SCAN: usize = 8;

impl Registry {
    pub(crate) const fn new() -> Registry {
        Registry {
            pools: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, pool: &Arc<Pool>) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        // The pools of proxies since dropped (a reload replaces them) leave with this.
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// Closes the idle connections of every pool; returns how many there were. Those run
    /// by hyper's client close when their tasks next run, on the threads that opened them.
    pub(crate) fn release_idle(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .iter()
            .filter_map(Weak::upgrade)
            .map(|pool| pool.release_idle())
            .sum()
    }
}

impl Pool {
    /// A pool that gives its idle connections back with every other proxy's (see
    /// [`POOLS`]).
    pub(crate) fn new(config: PoolConfig) -> Arc<Pool> {
        Pool::new_in(config, &POOLS)
    }

    /// A pool that gives its idle connections back with those of `registry`.
    pub(crate) fn new_in(config: PoolConfig, registry: &'static Registry) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            config,
            inner: Mutex::new(Inner::default()),
            registry,
        });
        registry.add(&pool);
        pool
    }

    /// Closes this pool's idle connections; returns how many there were.
    fn release_idle(&self) -> usize {
        let idle = match self.inner.lock() {
            Ok(mut inner) => std::mem::take(&mut inner.idle),
            Err(_) => return 0,
        };
        // Dropped (and closed) after the lock is let go.
        idle.iter()
            .map(|(_, lists)| lists.hyper.len() + lists.direct.len())
            .sum()
    }

    /// An idle connection to `authority` ready for a request, or a new one.
    pub(crate) async fn get(&self, authority: &Authority) -> Result<Conn, ProxyError> {
        if let Some(tx) = self.checkout(authority) {
            return Ok(Conn { tx, fresh: false });
        }
        // Boxed: connecting is the rare case, and its future would otherwise make every
        // request's future larger (and costlier to move into its box).
        let tx = Box::pin(self.connect(authority)).await?;
        Ok(Conn { tx, fresh: true })
    }

    fn checkout(&self, authority: &Authority) -> Option<SendRequest<ProxyBody>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().ok()?;
        let list = &mut inner.lists(authority)?.hyper;
        let mut i = list.len();
        let mut looked = 0;
        while i > 0 && looked < SCAN {
            i -= 1;
            looked += 1;
            let entry = &list[i];
            if entry.tx.is_closed() || now.duration_since(entry.since) > self.config.idle_timeout {
                list.swap_remove(i);
                continue;
            }
            // A connection whose last response was just read may not have been told yet
            // that it is free: left for a later request.
            if entry.tx.is_ready() {
                return Some(list.swap_remove(i).tx);
            }
        }
        None
    }

    /// Gives back a connection whose exchange is complete.
    pub(crate) fn checkin(&self, authority: Authority, tx: SendRequest<ProxyBody>) {
        if tx.is_closed() {
            return;
        }
        self.keep(authority, |lists, since, max_idle| {
            if lists.hyper.len() < max_idle {
                lists.hyper.push(Idle { tx, since });
            }
        });
    }

    /// Sweeps, then lets `put` add an idle connection to the lists of `authority` (with
    /// the time and the most idle connections to keep). Nothing is kept when that most is 0.
    fn keep(&self, authority: Authority, put: impl FnOnce(&mut Lists, Instant, usize)) {
        let now = Instant::now();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.sweep(now, self.config.idle_timeout);
        if self.config.max_idle > 0 {
            put(inner.lists_or_new(authority), now, self.config.max_idle);
        }
    }

    /// An idle direct connection to `authority`, or a new one; with it, true when it is
    /// new. An idle connection on which anything arrived while it was idle (stray bytes, or
    /// the backend's close), as far as the runtime has seen, is not used
    /// ([`Direct::nothing_arrived`], no system call in the usual case). With `check`, the
    /// socket itself is looked at (a non-blocking peek, one system call), so that a close
    /// the runtime has not seen yet is found too; without, such a connection is found out
    /// when its response does not come.
    pub(crate) async fn get_direct(
        &self,
        authority: &Authority,
        check: bool,
    ) -> Result<(Box<Direct>, bool), ProxyError> {
        if let Some(conn) = self.checkout_direct(authority, check) {
            return Ok((conn, false));
        }
        // Boxed, as in `get`.
        let stream = Box::pin(self.open_timed(authority)).await?;
        Ok((Direct::new(stream), true))
    }

    fn checkout_direct(&self, authority: &Authority, check: bool) -> Option<Box<Direct>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().ok()?;
        let list = &mut inner.lists(authority)?.direct;
        while let Some((conn, since)) = list.pop() {
            if now.duration_since(since) > self.config.idle_timeout {
                // The older ones have expired too.
                list.clear();
                return None;
            }
            let usable = if check {
                conn.is_idle_usable()
            } else {
                conn.nothing_arrived()
            };
            if usable {
                return Some(conn);
            }
        }
        None
    }

    /// Gives back a direct connection whose exchange is complete.
    pub(crate) fn checkin_direct(&self, authority: Authority, conn: Box<Direct>) {
        self.keep(authority, |lists, since, max_idle| {
            if lists.direct.len() < max_idle {
                lists.direct.push((conn, since));
            }
        });
    }

    /// A new TCP connection to `authority` within the connect timeout, without Nagle.
    async fn open_timed(&self, authority: &Authority) -> Result<TcpStream, ProxyError> {
        let timeout = self.config.connect_timeout;
        let stream = match tokio::time::timeout(timeout, self.open_or_give_back(authority)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if is_local_shortage(&e) => {
                return Err(ProxyError::LocalResources(format!("{authority}: {e}")));
            }
            Ok(Err(e)) => return Err(ProxyError::Connect(format!("{authority}: {e}"))),
            Err(_) => return Err(ProxyError::ConnectTimeout(timeout)),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// [`open`]; when the process is short of descriptors or buffers, tried once more after
    /// every pool's idle connections were closed to give theirs back (once more even when
    /// there were none: another request may just have closed them).
    async fn open_or_give_back(&self, authority: &Authority) -> std::io::Result<TcpStream> {
        match open(authority).await {
            Err(e) if is_local_shortage(&e) => {
                let released = self.registry.release_idle();
                if released > 0 {
                    // Every request meets the shortage while it lasts: a line a second.
                    static SAID: crate::throttle::Throttle = crate::throttle::Throttle::new();
                    if let Some(n) = SAID.allow() {
                        tracing::warn!(
                            "connect to {authority} failed: {e}{}{}",
                            closed_idle(released),
                            crate::throttle::left_out(n)
                        );
                    }
                    // The connections hyper's client runs on this thread close when their
                    // tasks run: before the second try.
                    tokio::task::yield_now().await;
                }
                open(authority).await
            }
            opened => opened,
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<ProxyBody>, ProxyError> {
        let stream = self.open_timed(authority).await?;
        // The same limits on a response head as the direct path's: which path a request
        // takes must not decide whether its answer passes.
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            .max_buf_size(super::h1::MAX_HEAD.max(8192))
            .max_headers(super::h1::MAX_HEADERS)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Connect(format!("{authority}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("backend connection closed: {e}");
            }
        });
        Ok(tx)
    }
}

/// "; closed N idle backend connections...", for a failure after which `n` idle connections
/// were closed; nothing when none were.
pub(crate) fn closed_idle(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; closed {n} idle backend connections to free their descriptors")
    }
}

/// Opens a TCP connection to `authority`. tokio resolves a name and tries each address in
/// turn; an IP literal is used as it is (IPv6 literals come bracketed in URLs). Without a
/// port, the `http` one (80): members are `http://`.
pub(crate) async fn open(authority: &Authority) -> std::io::Result<TcpStream> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    TcpStream::connect((host, authority.port_u16().unwrap_or(80))).await
}

/// A response body that gives its connection back to the pool once read to the end.
/// Dropped before that, the connection is closed (the rest of the response is not read).
#[derive(Debug)]
pub(crate) struct PooledBody {
    body: Incoming,
    home: Option<Home>,
    timer: ReadTimer,
    /// The request's body, still on its way when the backend answers early: while the
    /// backend waits for the client, so does this body, and the wait is not the backend's.
    upload: Option<Arc<super::upload::Progress>>,
}

#[derive(Debug)]
struct Home {
    pool: Arc<Pool>,
    authority: Authority,
    tx: SendRequest<ProxyBody>,
}

impl PooledBody {
    /// Wraps the body of `resp`, received on `tx`. A body that is already complete (a
    /// response to HEAD, a 204 or 304) returns the connection at once.
    pub(crate) fn wrap(
        resp: Response<Incoming>,
        pool: Arc<Pool>,
        authority: Authority,
        tx: SendRequest<ProxyBody>,
        timeout: Duration,
        upload: Option<Arc<super::upload::Progress>>,
    ) -> Response<PooledBody> {
        let reusable = resp.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        resp.map(|body| {
            let mut b = PooledBody {
                body,
                home: reusable.then_some(Home {
                    pool,
                    authority,
                    tx,
                }),
                timer: ReadTimer::new(timeout),
                upload,
            };
            if b.body.is_end_stream() {
                b.release();
            }
            b
        })
    }

    fn release(&mut self) {
        if let Some(h) = self.home.take() {
            h.pool.checkin(h.authority, h.tx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => {
                // The connection is broken: not given back.
                this.home = None;
                // Because the client's body failed: the client's doing, not the backend's.
                if this.upload.as_ref().is_some_and(|u| u.client_failed()) {
                    return Poll::Ready(Some(Err(ProxyError::ClientBody(
                        "the request body failed while the response was read".into(),
                    )
                    .into())));
                }
            }
            Poll::Pending => {
                if !this.timer.expired(cx) {
                    return Poll::Pending;
                }
                if this.upload.as_ref().is_some_and(|u| u.on_the_client()) {
                    // The backend waits on the client (whose own timer ends that wait): a
                    // new deadline from now.
                    this.timer.moved();
                    let _ = this.timer.expired(cx);
                    return Poll::Pending;
                }
                // Neither given back nor kept: dropping the body closes the connection.
                this.home = None;
                let timeout = this.timer.timeout();
                return Poll::Ready(Some(Err(ProxyError::BodyTimeout(timeout).into())));
            }
            Poll::Ready(Some(Ok(_))) => {}
        }
        this.timer.moved();
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// What a process short of descriptors gets back: the idle connections of every pool,
    /// closed (the backend sees them end), and of no pool since dropped.
    #[tokio::test]
    async fn release_idle_closes_the_idle_connections_of_every_pool() {
        static REGISTRY: Registry = Registry::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let config = PoolConfig {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle: 8,
        };
        let pools = [
            Pool::new_in(config, &REGISTRY),
            Pool::new_in(config, &REGISTRY),
        ];
        let mut backend_ends = Vec::new();
        for pool in &pools {
            // Two direct connections and one run by hyper's client (a request with a body
            // goes on one of those).
            let (a, _) = pool.get_direct(&authority, false).await.unwrap();
            let (b, _) = pool.get_direct(&authority, false).await.unwrap();
            for conn in [a, b] {
                backend_ends.push(listener.accept().await.unwrap().0);
                pool.checkin_direct(authority.clone(), conn);
            }
            let conn = pool.get(&authority).await.unwrap();
            backend_ends.push(listener.accept().await.unwrap().0);
            pool.checkin(authority.clone(), conn.tx);
        }
        drop(Pool::new_in(config, &REGISTRY));
        assert_eq!(REGISTRY.release_idle(), 6);
        for mut end in backend_ends {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), end.read(&mut buf)).await;
            assert_eq!(
                read.unwrap().unwrap(),
                0,
                "an idle connection is still open"
            );
        }
        for pool in &pools {
            assert!(pool.checkout_direct(&authority, false).is_none());
            assert!(pool.checkout(&authority).is_none());
        }
        assert_eq!(REGISTRY.release_idle(), 0);
        // The dropped pool left the list when the next one came.
        let _third = Pool::new_in(config, &REGISTRY);
        assert_eq!(REGISTRY.pools.lock().unwrap().len(), 3);
    }
}
