//! Keep-alive HTTP/1.1 connections to backends, over hyper's connection API.
//!
//! One [`Pool`] per [`Proxy`](super::Proxy). A request takes an idle connection to its
//! backend (the most recently used first) or opens one; the connection goes back to the
//! pool when the response body has been read to its end. Each connection is driven by its
//! own task on the runtime that opened it, so a proxy built per worker thread (as
//! lb-balancer builds them) keeps each backend connection on one thread.
//!
//! This replaces hyper-util's general-purpose client, whose per-request costs (a pool keyed
//! by scheme and authority behind a hash map, connection metadata added to every response,
//! absolute-form URIs turned back into origin form, a spawned task per response to return
//! the connection) showed up in profiles of the proxy's hot path.
//!
//! Idle connections older than the idle timeout, and connections the backend closed, are
//! dropped when met at checkout and by a sweep every half idle timeout while the pool is
//! used; a pool left unused keeps its idle connections until the backend closes them.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::uri::Authority;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

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
}

#[derive(Debug, Default)]
struct Inner {
    /// By backend: a proxy has a handful, so a list searched in order beats hashing the
    /// authority on every request.
    idle: Vec<(Authority, Vec<Idle>)>,
    last_sweep: Option<Instant>,
}

impl Inner {
    fn list(&mut self, authority: &Authority) -> Option<&mut Vec<Idle>> {
        self.idle
            .iter_mut()
            .find(|(a, _)| a == authority)
            .map(|(_, list)| list)
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

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Pool {
        Pool {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// An idle connection to `authority` ready for a request, or a new one.
    pub(crate) async fn get(&self, authority: &Authority) -> Result<Conn, ProxyError> {
        if let Some(tx) = self.checkout(authority) {
            return Ok(Conn { tx, fresh: false });
        }
        let tx = self.connect(authority).await?;
        Ok(Conn { tx, fresh: true })
    }

    fn checkout(&self, authority: &Authority) -> Option<SendRequest<ProxyBody>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().ok()?;
        let list = inner.list(authority)?;
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
        let now = Instant::now();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let sweep_every = self.config.idle_timeout / 2;
        if inner
            .last_sweep
            .is_none_or(|t| now.duration_since(t) > sweep_every)
        {
            inner.last_sweep = Some(now);
            let idle_timeout = self.config.idle_timeout;
            inner.idle.retain_mut(|(_, list)| {
                list.retain(|e| !e.tx.is_closed() && now.duration_since(e.since) <= idle_timeout);
                !list.is_empty()
            });
        }
        let max_idle = self.config.max_idle;
        let idle = Idle { tx, since: now };
        match inner.list(&authority) {
            Some(list) if list.len() < max_idle => list.push(idle),
            Some(_) => {}
            None if max_idle > 0 => inner.idle.push((authority, vec![idle])),
            None => {}
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<ProxyBody>, ProxyError> {
        let timeout = self.config.connect_timeout;
        let stream = match tokio::time::timeout(timeout, open(authority)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ProxyError::Connect(format!("{authority}: {e}"))),
            Err(_) => return Err(ProxyError::ConnectTimeout(timeout)),
        };
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            .writev(false)
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

/// Opens a TCP connection to `authority`. tokio resolves a name and tries each address in
/// turn; an IP literal is used as it is (IPv6 literals come bracketed in URLs).
async fn open(authority: &Authority) -> std::io::Result<TcpStream> {
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => {
                // The connection is broken: not given back.
                this.home = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
