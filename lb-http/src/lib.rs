//! Layer-7 (HTTP) load balancing built on [`lb_core`]: tower layers, a hyper reverse proxy
//! and the balancer manager, on Apache mod_proxy_balancer's model.
//!
//! A request goes through this stack (each piece usable alone in any tower, hyper or axum
//! stack):
//!
//! | layer | job |
//! |---|---|
//! | [`server::serve`] | HTTP/1.1 and HTTP/2 from clients; the [`guard`] refuses request-smuggling shapes and slow heads |
//! | [`sticky::Sticky`] | reads the session route (Apache `stickysession`, HAProxy `cookie ... insert`), sets the route cookie when it changes |
//! | [`retry::Retry`] | sends idempotent requests again on configured statuses, within a budget |
//! | [`balance::Balance`] | picks a member with lb-core (routes, lbsets, hot standby, any scheduler, hash keys), fails over on connect errors, passive health, per-member `max` |
//! | [`proxy::Proxy`] | forwards over a pooled keep-alive client: RFC 9110 header rules, `Via`, `X-Forwarded-*`, `Forwarded`, `ProxyPreserveHost`, `ProxyPassReverse`, upgrades |
//!
//! [`router`] assembles the stack per balancer and mounts balancers on path prefixes;
//! [`hcheck`] runs mod_proxy_hcheck's checks; [`admin::Manager`] is the balancer-manager page,
//! its JSON API and Prometheus metrics.
//!
//! ```
//! use lb_core::Balancer;
//! use lb_http::member::MemberSpec;
//! use lb_http::router::{Router, SharedRouter, Site, SiteConfig};
//! use lb_http::sticky::StickyConfig;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A backend to balance to.
//! let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let backend_addr = backend.local_addr()?;
//! tokio::spawn(async move {
//!     let svc = hyper::service::service_fn(|_req| async {
//!         Ok::<_, std::convert::Infallible>(hyper::Response::new(lb_http::body::full("hello\n")))
//!     });
//!     while let Ok((s, _)) = backend.accept().await {
//!         let io = hyper_util::rt::TokioIo::new(s);
//!         tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
//!     }
//! });
//!
//! // The balancer: members as mod_proxy_balancer writes them.
//! let member: MemberSpec = format!("http://{backend_addr},route=node1").parse()?;
//! let balancer = Balancer::builder().backend(member.to_backend()?).build()?;
//! let config = SiteConfig { sticky: Some(StickyConfig::apache("ROUTEID")?), ..Default::default() };
//! let router = SharedRouter::new(Router::new(vec![Site::new("/", balancer, config)]));
//!
//! // Serve it.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(lb_http::server::serve(listener, router, Default::default(), async {
//!     let _ = stopped.await;
//! }));
//!
//! // A request through the proxy: the answer, and the route cookie.
//! let stream = tokio::net::TcpStream::connect(addr).await?;
//! let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
//! tokio::spawn(conn);
//! let resp = send.send_request(hyper::Request::get("/").header("host", "example.test").body(lb_http::body::empty())?).await?;
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.headers()["set-cookie"], "ROUTEID=.node1; Path=/");
//! drop(send);
//! let _ = stop.send(());
//! server.await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod body;
pub mod error;
pub mod ext;
pub mod guard;
pub mod hcheck;
pub mod headers;
pub mod member;
mod path;
pub mod proxy;
pub mod retry;
pub mod router;
pub mod server;
pub mod sticky;
mod throttle;

pub use error::{AdminError, BalanceError, Error, NotSent, ProxyError, Result};

/// The error type services in this crate return; downcast to [`ProxyError`],
/// [`BalanceError`] and friends to see what happened.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
