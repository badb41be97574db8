//! Layer-4 (TCP) load balancing built on [`lb_core`].
//!
//! The pieces, usable on their own:
//!
//! * [`listener`]: IPv4 / IPv6 / dual-stack listeners with backlog, `SO_REUSEPORT`,
//!   `IP_FREEBIND`, `TCP_NODELAY` and keepalive.
//! * [`relay`]: both directions of a connection, zero-copy with `splice(2)` on Linux or
//!   buffered, with half-close, idle timeout and byte counts.
//! * [`proxy_protocol`]: PROXY protocol v1/v2 headers to backends and from trusted peers.
//! * [`xff`]: pen's `-H`, `X-Forwarded-For` inserted into HTTP/1 requests on the stream.
//! * [`TcpProxy`]: all of it around an lb-core [`Balancer`](lb_core::Balancer): connect
//!   with timeout and failover, limits, graceful shutdown.
//!
//! ```no_run
//! use lb_tcp::listener::ListenerConfig;
//! use lb_tcp::relay::Relay;
//!
//! # async fn run() -> lb_tcp::Result<()> {
//! let listener = ListenerConfig::new("127.0.0.1:8080".parse().unwrap()).bind()?;
//! let relay = Relay::default();
//! loop {
//!     let (client, _peer) = listener.accept().await?;
//!     let relay = relay.clone();
//!     tokio::spawn(async move {
//!         if let Ok(backend) = tokio::net::TcpStream::connect("127.0.0.1:80").await {
//!             let stats = relay.run(&client, &backend).await;
//!             println!("{} bytes up, {} down", stats.client_to_backend, stats.backend_to_client);
//!         }
//!     });
//! }
//! # }
//! ```
#![deny(unsafe_code)]

mod error;
mod limit;
pub mod listener;
mod proxy;
pub mod proxy_protocol;
pub mod relay;
pub mod sockopt;
pub mod xff;

pub use error::{Error, Result};
pub use limit::WhenFull;
pub use listener::{Listener, ListenerConfig, SocketOptions};
pub use proxy::{ConnectionEvent, ConnectionStats, Observer, ProxyConfig, TcpProxy};
