//! Listening sockets: IPv4, IPv6 and dual stack, with the options an L4 balancer needs.
//!
//! [`ListenerConfig::bind`] creates the socket with socket2 so every option is set
//! before `bind(2)`/`listen(2)`:
//!
//! * `IPV6_V6ONLY` is always set explicitly on IPv6 sockets ([`ListenerConfig::v6_only`]),
//!   never left to `net.ipv6.bindv6only`: `[::]:80` with `v6_only = false` is dual stack.
//! * `SO_REUSEADDR` always (restarts do not wait for TIME_WAIT), `SO_REUSEPORT` on request
//!   (several processes or threads accepting on one port).
//! * `IP_FREEBIND` / `IPV6_FREEBIND` on request: bind an address that is not (yet) on this
//!   host, as an HA pair does with its virtual IP.
//! * the accept backlog.
//! * `TCP_DEFER_ACCEPT` on request, for protocols whose client speaks first
//!   ([`ListenerConfig::with_defer_accept`]).
//!
//! Accepted sockets get `TCP_NODELAY` and keepalive by [`SocketOptions::apply`] (on Linux
//! through the listening socket, whose options accepted sockets inherit); the same
//! options are applied to backend connections.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::proxy_protocol::TrustedSources;

/// Options for connected sockets (both legs of a proxied connection).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SocketOptions {
    /// Set `TCP_NODELAY` (default true).
    pub nodelay: bool,
    /// Enable TCP keepalive with this idle time (default 60 s; `None` = off).
    pub keepalive: Option<Duration>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
        }
    }
}

impl SocketOptions {
    /// Applies the options to a connected stream.
    pub fn apply(&self, stream: &TcpStream) -> std::io::Result<()> {
        self.apply_to(SockRef::from(stream))
    }

    fn apply_to(&self, socket: SockRef<'_>) -> std::io::Result<()> {
        socket.set_tcp_nodelay(self.nodelay)?;
        if let Some(idle) = self.keepalive {
            let ka = TcpKeepalive::new()
                .with_time(idle)
                .with_interval(Duration::from_secs(10));
            socket.set_tcp_keepalive(&ka)?;
        }
        Ok(())
    }
}

/// How to open one listening socket.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Listen backlog (default 1024).
    pub backlog: u32,
    /// Set `SO_REUSEPORT` (default false).
    pub reuse_port: bool,
    /// For IPv6 addresses: accept only IPv6 (`true`, the default) or IPv4 too (`false`).
    pub v6_only: bool,
    /// Allow binding an address that is not configured on the host (default false).
    pub freebind: bool,
    /// Options for accepted connections.
    pub socket: SocketOptions,
    /// Expect a PROXY protocol header from these peers; refuse anyone else.
    pub accept_proxy: Option<TrustedSources>,
    /// Hand a connection to `accept` only once its first bytes arrived, or after about this
    /// long (`TCP_DEFER_ACCEPT`; Linux; default off).
    pub defer_accept: Option<Duration>,
}

impl ListenerConfig {
    /// A listener on `addr` with default options.
    pub fn new(addr: SocketAddr) -> Self {
        ListenerConfig {
            addr,
            backlog: 1024,
            reuse_port: false,
            v6_only: true,
            freebind: false,
            socket: SocketOptions::default(),
            accept_proxy: None,
            defer_accept: None,
        }
    }

    /// A dual-stack listener on `[::]:port` (IPv6 and IPv4-mapped clients).
    pub fn dual_stack(port: u16) -> Self {
        ListenerConfig::new(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
            .with_v6_only(false)
    }

    /// Sets the backlog.
    pub fn with_backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }
    /// Sets `SO_REUSEPORT`.
    pub fn with_reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }
    /// Sets `IPV6_V6ONLY` (ignored for IPv4 addresses).
    pub fn with_v6_only(mut self, on: bool) -> Self {
        self.v6_only = on;
        self
    }
    /// Sets `IP_FREEBIND` / `IPV6_FREEBIND`.
    pub fn with_freebind(mut self, on: bool) -> Self {
        self.freebind = on;
        self
    }
    /// Sets the options of accepted connections.
    pub fn with_socket_options(mut self, options: SocketOptions) -> Self {
        self.socket = options;
        self
    }
    /// Expects PROXY protocol headers from these peers only.
    pub fn with_accept_proxy(mut self, trusted: TrustedSources) -> Self {
        self.accept_proxy = Some(trusted);
        self
    }
    /// Accepts a connection once its first bytes arrived, or after about `wait`
    /// (HAProxy's `defer-accept`, nginx's `deferred`): for protocols whose client speaks
    /// first, such as HTTP, every accepted socket then has something to read. See
    /// [`crate::sockopt::set_defer_accept`].
    pub fn with_defer_accept(mut self, wait: Duration) -> Self {
        self.defer_accept = Some(wait);
        self
    }

    /// Creates, configures, binds and listens. Must run inside a tokio runtime.
    pub fn bind(&self) -> Result<Listener> {
        let socket = self.bind_std()?;
        let addr = self.addr;
        Listener::from_bound(socket, self.clone()).map_err(|source| Error::Bind { addr, source })
    }

    /// Creates, configures, binds and listens, without a runtime: for a program that binds
    /// one listening socket per worker thread (with [`with_reuse_port`](Self::with_reuse_port))
    /// before it drops privileges, then serves each with [`Listener::from_bound`] on the
    /// worker's own runtime.
    pub fn bind_std(&self) -> Result<std::net::TcpListener> {
        let addr = self.addr;
        let fail = |source| Error::Bind { addr, source };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(fail)?;
        socket.set_reuse_address(true).map_err(fail)?;
        if addr.is_ipv6() {
            socket.set_only_v6(self.v6_only).map_err(fail)?;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            if self.reuse_port {
                socket.set_reuse_port(true).map_err(fail)?;
            }
            if self.freebind {
                if addr.is_ipv6() {
                    socket.set_freebind_v6(true).map_err(fail)?;
                } else {
                    socket.set_freebind_v4(true).map_err(fail)?;
                }
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        if self.reuse_port || self.freebind {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "SO_REUSEPORT/FREEBIND are only supported on Linux here",
            )));
        }
        // On Linux an accepted socket inherits TCP_NODELAY and the keepalive settings from
        // its listener: set once here, they cost no system calls per connection.
        #[cfg(target_os = "linux")]
        self.socket.apply_to(SockRef::from(&socket)).map_err(fail)?;
        if let Some(wait) = self.defer_accept {
            crate::sockopt::set_defer_accept(&socket, wait).map_err(fail)?;
        }
        socket.set_nonblocking(true).map_err(fail)?;
        socket.bind(&addr.into()).map_err(fail)?;
        let backlog = i32::try_from(self.backlog).unwrap_or(i32::MAX);
        socket.listen(backlog).map_err(fail)?;
        Ok(socket.into())
    }
}

/// A bound listening socket with its configuration.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    config: ListenerConfig,
    /// The socket options were set on the listening socket, and accepted sockets inherit
    /// them.
    inherited: bool,
}

impl Listener {
    /// Registers a socket from [`ListenerConfig::bind_std`] with the current tokio
    /// runtime. Must run inside that runtime.
    pub fn from_bound(
        socket: std::net::TcpListener,
        config: ListenerConfig,
    ) -> std::io::Result<Self> {
        Ok(Listener {
            inner: TcpListener::from_std(socket)?,
            config,
            inherited: cfg!(target_os = "linux"),
        })
    }

    /// Wraps an already bound tokio listener (options for accepted sockets still apply).
    pub fn from_tokio(inner: TcpListener, config: ListenerConfig) -> Self {
        Listener {
            inner,
            config,
            inherited: false,
        }
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The configuration.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// Accepts one connection and applies the socket options to it.
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        if !self.inherited {
            // A failing option (the peer already reset) is not worth dropping the
            // connection for.
            let _ = self.config.socket.apply(&stream);
        }
        Ok((stream, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dual_stack_accepts_ipv4_and_v6_only_refuses_it() {
        let Ok(dual) = ListenerConfig::dual_stack(0).bind() else {
            eprintln!("skipped: no IPv6 on this host");
            return;
        };
        let port = dual.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (_, peer) = dual.accept().await.unwrap();
        assert_eq!(peer.ip().to_canonical(), client.local_addr().unwrap().ip());

        let only = ListenerConfig::new("[::]:0".parse().unwrap())
            .with_v6_only(true)
            .bind()
            .unwrap();
        let port = only.local_addr().unwrap().port();
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }

    #[tokio::test]
    async fn reuse_port_allows_two_listeners_and_freebind_binds_absent_address() {
        let a = ListenerConfig::new("127.0.0.1:0".parse().unwrap())
            .with_reuse_port(true)
            .bind()
            .unwrap();
        let addr = a.local_addr().unwrap();
        ListenerConfig::new(addr)
            .with_reuse_port(true)
            .bind()
            .unwrap();
        assert!(ListenerConfig::new(addr).bind().is_err());
        // 198.18.0.0/15 is never configured here; without FREEBIND this fails (EADDRNOTAVAIL).
        let absent: SocketAddr = "198.18.255.254:0".parse().unwrap();
        assert!(ListenerConfig::new(absent).bind().is_err());
        ListenerConfig::new(absent)
            .with_freebind(true)
            .bind()
            .unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn defer_accept_is_set_when_asked_for() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let plain = ListenerConfig::new(addr).bind_std().unwrap();
        assert_eq!(
            crate::sockopt::defer_accept(&plain).unwrap(),
            Duration::ZERO
        );
        let deferred = ListenerConfig::new(addr)
            .with_defer_accept(Duration::from_secs(5))
            .bind_std()
            .unwrap();
        assert!(crate::sockopt::defer_accept(&deferred).unwrap() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn port_in_use_names_the_address() {
        let a = ListenerConfig::new("127.0.0.1:0".parse().unwrap())
            .bind()
            .unwrap();
        let addr = a.local_addr().unwrap();
        let err = ListenerConfig::new(addr).bind().unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_and_keepalive() {
        let check = |l: Listener| async move {
            let port = l.local_addr().unwrap().port();
            let _client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (stream, _) = l.accept().await.unwrap();
            let sock = SockRef::from(&stream);
            assert!(sock.tcp_nodelay().unwrap());
            assert!(sock.keepalive().unwrap());
            #[cfg(target_os = "linux")]
            {
                assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
                assert_eq!(
                    sock.tcp_keepalive_interval().unwrap(),
                    Duration::from_secs(10)
                );
            }
        };
        // Bound here (options inherited from the listening socket on Linux) ...
        check(
            ListenerConfig::new("127.0.0.1:0".parse().unwrap())
                .bind()
                .unwrap(),
        )
        .await;
        // ... and bound elsewhere (options applied to each accepted socket).
        let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = raw.local_addr().unwrap();
        check(Listener::from_tokio(raw, ListenerConfig::new(addr))).await;
    }
}
