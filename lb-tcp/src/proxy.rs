//! The TCP balancer: accept, pick, connect with failover, relay.
//!
//! For each client connection [`TcpProxy::handle`] runs the data flow of the design:
//!
//! 1. from a listener that expects the PROXY protocol, read the client's real address
//!    (trusted peers only);
//! 2. take a slot of the global connection limit (pen's `-x`), refusing or waiting as
//!    [`WhenFull`] says;
//! 3. walk lb-core's failover iteration ([`Balancer::attempts`]): connect to each leased
//!    backend with the connect timeout (pen's `-t`); a refusal or timeout is reported to
//!    passive health ([`Lease::failure`](lb_core::Lease::failure)) and the next backend is
//!    tried **within the same client connection**, the emergency backend last;
//! 4. send the PROXY header to the backend if configured, then relay (see
//!    [`crate::relay`]), with `X-Forwarded-For` insertion if configured;
//! 5. count the bytes into the lease; dropping the lease releases the backend.
//!
//! [`TcpProxy::shutdown`] stops the accept loops, lets connections finish until a
//! deadline, then closes the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::scheduler::{AnyScheduler, Scheduler};
use lb_core::{Address, BackendId, Balancer, Failure, PickContext};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::limit::{ConnLimit, WhenFull};
use crate::listener::{Listener, SocketOptions};
use crate::proxy_protocol::{ProxyHeader, ProxyVersion, TrustedSources, read_header};
use crate::relay::{Relay, RelayConfig, RelayCounters, RelayEnd};
use crate::xff::{XffInserter, XffScope};

/// Settings of a [`TcpProxy`]; change them at run time with [`TcpProxy::update_config`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Connect timeout per backend attempt (pen `-t`, default 5 s).
    pub connect_timeout: Duration,
    /// The relay settings.
    pub relay: RelayConfig,
    /// Send a PROXY protocol header to backends.
    pub proxy_protocol: Option<ProxyVersion>,
    /// Insert `X-Forwarded-For` (pen `-H`).
    pub xff: Option<XffScope>,
    /// Global connection limit (pen `-x`, default 500).
    pub max_conns: usize,
    /// What to do when full.
    pub when_full: WhenFull,
    /// Options for backend sockets.
    pub backend_socket: SocketOptions,
    /// How long a trusted peer has to send its PROXY header.
    pub proxy_header_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            relay: RelayConfig::default(),
            proxy_protocol: None,
            xff: None,
            max_conns: 500,
            when_full: WhenFull::Refuse,
            backend_socket: SocketOptions::default(),
            proxy_header_timeout: Duration::from_secs(5),
        }
    }
}

impl ProxyConfig {
    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }
    /// Sets the relay settings.
    pub fn with_relay(mut self, relay: RelayConfig) -> Self {
        self.relay = relay;
        self
    }
    /// Sends PROXY headers of this version to backends.
    pub fn with_proxy_protocol(mut self, version: Option<ProxyVersion>) -> Self {
        self.proxy_protocol = version;
        self
    }
    /// Inserts `X-Forwarded-For` into requests.
    pub fn with_xff(mut self, scope: Option<XffScope>) -> Self {
        self.xff = scope;
        self
    }
    /// Sets the global connection limit.
    pub fn with_max_conns(mut self, n: usize) -> Self {
        self.max_conns = n;
        self
    }
    /// Sets the behaviour when full.
    pub fn with_when_full(mut self, w: WhenFull) -> Self {
        self.when_full = w;
        self
    }
}

/// Something that happened to a proxied connection, for logs and "recent clients".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A backend accepted the connection.
    Opened {
        /// The client (from the PROXY header when the listener expects one).
        client: SocketAddr,
        /// The backend.
        backend: BackendId,
        /// Its address.
        address: SocketAddr,
    },
    /// The connection ended.
    Closed {
        /// The client.
        client: SocketAddr,
        /// The backend.
        backend: BackendId,
        /// Bytes client to backend.
        bytes_in: u64,
        /// Bytes backend to client.
        bytes_out: u64,
        /// How long it lasted.
        duration: Duration,
    },
    /// No backend would take it.
    Failed {
        /// The client.
        client: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A callback receiving every [`ConnectionEvent`].
pub type Observer = Arc<dyn Fn(&ConnectionEvent) + Send + Sync>;

/// What one proxied connection did.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// The backend that served it.
    pub backend: BackendId,
    /// Bytes client to backend.
    pub bytes_in: u64,
    /// Bytes backend to client.
    pub bytes_out: u64,
    /// How many backends were tried (1 when the first answered).
    pub attempts: usize,
}

/// A layer-4 load balancer over an lb-core [`Balancer`]; cheap to clone.
///
/// ```no_run
/// use lb_core::{Backend, Balancer};
/// use lb_tcp::{ListenerConfig, ProxyConfig, TcpProxy};
///
/// # async fn run() -> lb_tcp::Result<()> {
/// let balancer = Balancer::builder()
///     .backend(Backend::new("127.0.0.1:8001".parse::<std::net::SocketAddr>().unwrap()))
///     .backend(Backend::new("127.0.0.1:8002".parse::<std::net::SocketAddr>().unwrap()))
///     .build()?;
/// let proxy = TcpProxy::new(balancer, ProxyConfig::default());
/// let listener = ListenerConfig::new("[::]:8080".parse().unwrap()).bind()?;
/// proxy.serve(listener).await
/// # }
/// ```
pub struct TcpProxy<S: Scheduler = AnyScheduler> {
    inner: Arc<Inner<S>>,
}

struct Inner<S: Scheduler> {
    balancer: Balancer<S>,
    config: ArcSwap<ProxyConfig>,
    limit: Arc<ConnLimit>,
    /// 0 running, 1 draining (stop accepting), 2 closing (abort relays).
    phase: watch::Sender<u8>,
    /// Connections being handled (including those waiting for a slot).
    handling: AtomicUsize,
    idle: Notify,
    observer: ArcSwap<Option<Observer>>,
}

impl<S: Scheduler> Clone for TcpProxy<S> {
    fn clone(&self) -> Self {
        TcpProxy {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Scheduler> std::fmt::Debug for TcpProxy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("config", &self.inner.config.load())
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

/// Decrements the handling count on drop.
struct Handling<'a, S: Scheduler>(&'a Inner<S>);

impl<S: Scheduler> Drop for Handling<'_, S> {
    fn drop(&mut self) {
        if self.0.handling.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<S: Scheduler + 'static> TcpProxy<S> {
    /// A proxy balancing over `balancer`.
    pub fn new(balancer: Balancer<S>, config: ProxyConfig) -> Self {
        let limit = ConnLimit::new(config.max_conns);
        TcpProxy {
            inner: Arc::new(Inner {
                balancer,
                config: ArcSwap::from_pointee(config),
                limit,
                phase: watch::channel(0).0,
                handling: AtomicUsize::new(0),
                idle: Notify::new(),
                observer: ArcSwap::from_pointee(None),
            }),
        }
    }

    /// The balancer (for runtime changes: weights, drain, add, remove).
    pub fn balancer(&self) -> &Balancer<S> {
        &self.inner.balancer
    }

    /// The current settings.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.inner.config.load_full()
    }

    /// Changes the settings; new connections use them at once.
    pub fn update_config(&self, change: impl FnOnce(&mut ProxyConfig)) {
        let mut config = ProxyConfig::clone(&self.inner.config.load());
        change(&mut config);
        self.inner.limit.set_limit(config.max_conns);
        self.inner.config.store(Arc::new(config));
    }

    /// Sets a callback for connection events.
    pub fn set_observer(&self, observer: Option<Observer>) {
        self.inner.observer.store(Arc::new(observer));
    }

    /// Connections relaying now (holding a slot of the global limit).
    pub fn active(&self) -> usize {
        self.inner.limit.active()
    }

    fn emit(&self, event: ConnectionEvent) {
        if let Some(observer) = self.inner.observer.load().as_ref() {
            observer(&event);
        }
    }

    /// Accepts connections on `listener` and handles each in its own task, until
    /// [`shutdown`](Self::shutdown) is called. For several listeners (IPv4 and IPv6, a
    /// virtual IP and a management address...) call `serve` once per listener on clones
    /// of the proxy: they share the balancer, the limits and the shutdown. Accept errors (out of descriptors) are
    /// logged and retried after a short pause.
    pub async fn serve(&self, listener: Listener) -> Result<()> {
        let trusted = Arc::new(listener.config().accept_proxy.clone());
        let mut phase = self.inner.phase.subscribe();
        loop {
            if *phase.borrow_and_update() != 0 {
                return Ok(());
            }
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let this = self.clone();
                        let trusted = trusted.clone();
                        tokio::spawn(async move {
                            if let Err(e) = this.handle_from(trusted.as_ref().as_ref(), stream, peer).await {
                                tracing::debug!(%peer, error = %e, "connection failed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = phase.changed() => {}
            }
        }
    }

    /// Handles one accepted connection from the embedding program (no PROXY header
    /// expected): balance, connect, relay, until the connection ends.
    pub async fn handle(&self, client: TcpStream, peer: SocketAddr) -> Result<ConnectionStats> {
        self.run(client, peer, Vec::new()).await
    }

    /// Handles a connection that must start with a PROXY protocol header when `trusted`
    /// is given (a listener's [`accept_proxy`](crate::ListenerConfig::accept_proxy)):
    /// peers outside it are refused.
    pub async fn handle_from(
        &self,
        trusted: Option<&TrustedSources>,
        client: TcpStream,
        peer: SocketAddr,
    ) -> Result<ConnectionStats> {
        let Some(trusted) = trusted else {
            return self.run(client, peer, Vec::new()).await;
        };
        if !trusted.trusts(peer.ip()) {
            return Err(Error::UntrustedProxy(peer));
        }
        let timeout = self.inner.config.load().proxy_header_timeout;
        let (header, rest) = read_header(&client, peer, timeout).await?;
        let origin = match header {
            ProxyHeader::Proxy { source, .. } => source,
            _ => peer,
        };
        self.run(client, origin, rest).await
    }

    async fn run(
        &self,
        client: TcpStream,
        origin: SocketAddr,
        early: Vec<u8>,
    ) -> Result<ConnectionStats> {
        let inner = &*self.inner;
        inner.handling.fetch_add(1, Ordering::AcqRel);
        let _handling = Handling(inner);
        let config = inner.config.load_full();
        let result = self.connect_and_relay(&config, client, origin, early).await;
        if let Err(e) = &result {
            self.emit(ConnectionEvent::Failed {
                client: origin,
                reason: e.to_string(),
            });
        }
        result
    }

    async fn connect_and_relay(
        &self,
        config: &ProxyConfig,
        client: TcpStream,
        origin: SocketAddr,
        early: Vec<u8>,
    ) -> Result<ConnectionStats> {
        let inner = &*self.inner;
        let Some(_slot) = inner.limit.acquire(config.when_full).await else {
            return Err(Error::LimitReached(inner.limit.limit()));
        };
        let wait_until = match config.when_full {
            WhenFull::Wait(d) => Some(Instant::now() + d),
            WhenFull::Refuse => None,
        };
        let (lease, backend, tried) = loop {
            match self.connect(config, origin).await {
                Ok(found) => break found,
                // Nothing was eligible (every backend at its limit): wait for a release.
                Err((0, e)) => match wait_until {
                    Some(deadline) if inner.limit.wait_freed(deadline).await => continue,
                    _ => return Err(e),
                },
                Err((_, e)) => return Err(e),
            }
        };
        let started = Instant::now();
        if self.inner.observer.load().is_some() {
            self.emit(ConnectionEvent::Opened {
                client: origin,
                backend: lease.id(),
                address: match lease.backend().address().socket_addr() {
                    Some(a) => a,
                    None => backend.peer_addr()?,
                },
            });
        }
        let mut first = Vec::new();
        if let Some(version) = config.proxy_protocol {
            let local = client.local_addr()?;
            ProxyHeader::new(origin, local).encode(version, &mut first);
        }
        first.extend_from_slice(&early);
        if !first.is_empty() {
            write_all(&backend, &first).await?;
        }
        let xff = config.xff.map(|scope| XffInserter::new(origin.ip(), scope));
        let relay = Relay::new(config.relay.clone());
        let counters = RelayCounters::default();
        let mut phase = inner.phase.subscribe();
        let end = tokio::select! {
            stats = relay.run_with(&client, &backend, xff, &counters) => Some(stats.end),
            _ = phase.wait_for(|p| *p >= 2) => None,
        };
        let (bytes_in, bytes_out) = (counters.client_to_backend(), counters.backend_to_client());
        lease.add_bytes_in(bytes_in);
        lease.add_bytes_out(bytes_out);
        if let Some(RelayEnd::Error(e)) = &end {
            tracing::debug!(client = %origin, error = %e, "relay ended with an error");
        }
        self.emit(ConnectionEvent::Closed {
            client: origin,
            backend: lease.id(),
            bytes_in,
            bytes_out,
            duration: started.elapsed(),
        });
        Ok(ConnectionStats {
            backend: lease.id(),
            bytes_in,
            bytes_out,
            attempts: tried,
        })
    }

    /// Walks the failover iteration until a backend accepts. On failure returns how many
    /// backends were tried with the error.
    async fn connect(
        &self,
        config: &ProxyConfig,
        origin: SocketAddr,
    ) -> std::result::Result<(lb_core::Lease, TcpStream, usize), (usize, Error)> {
        let ctx = PickContext::new().with_client(origin);
        let mut attempts = self.inner.balancer.attempts(ctx);
        let mut last_error = None;
        loop {
            let lease = match attempts.next() {
                Ok(lease) => lease,
                Err(e) => {
                    let tried = attempts.count();
                    let reason = match last_error {
                        Some(last) => format!("{e}; last error: {last}"),
                        None => e.to_string(),
                    };
                    return Err((
                        tried,
                        Error::NoBackend {
                            client: origin,
                            reason,
                        },
                    ));
                }
            };
            match connect_to(lease.backend().address(), config.connect_timeout).await {
                Ok(stream) => {
                    lease.success();
                    let _ = config.backend_socket.apply(&stream);
                    return Ok((lease, stream, attempts.count()));
                }
                Err((failure, e)) => {
                    tracing::debug!(backend = %lease.backend().address(), error = %e, "connect failed");
                    lease.failure(failure);
                    last_error = Some(format!("{}: {e}", lease.backend().address()));
                }
            }
        }
    }

    /// Stops accepting, lets connections finish for up to `grace`, then closes the rest.
    /// Returns how many connections were still open at the deadline.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let inner = &*self.inner;
        inner.phase.send_replace(1);
        let deadline = Instant::now() + grace;
        loop {
            let idle = inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if inner.handling.load(Ordering::Acquire) == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let left = inner.handling.load(Ordering::Acquire);
        inner.phase.send_replace(2);
        left
    }
}

/// Connects to a backend address with a timeout; classifies failures for passive health.
async fn connect_to(
    address: &Address,
    timeout: Duration,
) -> std::result::Result<TcpStream, (Failure, std::io::Error)> {
    let attempt = async {
        match address {
            Address::Socket(sa) => TcpStream::connect(*sa).await,
            Address::Host { host, port } => TcpStream::connect((host.as_str(), *port)).await,
            Address::Unix(path) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "unix socket backend {} cannot be relayed by lb-tcp",
                    path.display()
                ),
            )),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err((Failure::Connect, e)),
        Err(_) => Err((
            Failure::Timeout,
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        )),
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
