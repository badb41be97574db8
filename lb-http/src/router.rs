//! Several balancers behind one listener, each mounted on a path prefix (Apache's
//! `ProxyPass /app balancer://name/`), and the assembled per-balancer stack.
//!
//! [`Site::new`] builds the stack the design describes for one balancer:
//! `sticky -> retry -> balance (passive health, failover) -> proxy`. A [`Router`] sends each
//! request to the site with the longest matching prefix, once the dot segments of its path
//! are removed (a path climbing above the root gets 400; `CONNECT` gets 405); [`SharedRouter`] lets the whole
//! routing table be replaced at run time (SIGHUP reload) without touching connections in
//! flight: requests already routed finish on the old sites.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::future::Either;
use http::{Request, Response, StatusCode};
use lb_core::Balancer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use crate::BoxError;
use crate::balance::{BalanceConfig, BalanceLayer};
use crate::body::{ProxyBody, boxed, full};
use crate::path::{BadPath, remove_dot_segments};
use crate::proxy::{Proxy, ProxyConfig};
use crate::retry::{RetryConfig, RetryLayer};
use crate::sticky::{StickyConfig, StickyLayer};

/// A boxed site service.
pub type SiteService = BoxCloneSyncService<Request<ProxyBody>, Response<ProxyBody>, BoxError>;

/// Everything a site needs besides its balancer.
#[derive(Debug, Clone, Default)]
pub struct SiteConfig {
    /// Forwarding (its `mount` is set from the site's prefix).
    pub proxy: ProxyConfig,
    /// Balancing and passive health.
    pub balance: BalanceConfig,
    /// Session routes, if any. Their cookie is set with `Path=<mount>` (`/` for the root
    /// mount) unless [`StickyConfig::with_cookie_path`] chose a path.
    pub sticky: Option<StickyConfig>,
    /// Status retries, if any.
    pub retry: Option<RetryConfig>,
}

/// One balancer mounted on a prefix.
#[derive(Debug, Clone)]
pub struct Site {
    /// The balancer's name.
    pub name: String,
    /// The path prefix (`/` or `/app`).
    pub mount: String,
    /// The balancer (shared with the manager and health checks).
    pub balancer: Balancer,
    /// Called in place rather than cloned per request (see [`Site::call`]).
    service: Arc<Mutex<SiteService>>,
}

impl Site {
    /// Builds the stack for `balancer` on `mount` with a fresh connection pool.
    pub fn new(mount: &str, balancer: Balancer, config: SiteConfig) -> Site {
        let mount = mount.trim_end_matches('/').to_string();
        let mut proxy_config = config.proxy;
        proxy_config.mount = mount.clone();
        let proxy = Proxy::new(proxy_config);
        let name = config.balance.name.clone();
        let balance = BalanceLayer::new(balancer.clone(), config.balance);
        let inner = ServiceBuilder::new()
            .map_response(|r: Response<_>| r.map(boxed))
            .layer(balance)
            .service(proxy);
        // The route cookie goes back only to this balancer's requests: another balancer on
        // another prefix may use the same cookie name (RFC 6265 path-match is the router's
        // prefix match: `/app` matches `/app` and `/app/x`, not `/apple`).
        let sticky = config.sticky.map(|s| s.scoped_to(&mount));
        let service = match (sticky, config.retry) {
            (Some(s), Some(r)) => BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(StickyLayer::new(s))
                    .layer(RetryLayer::new(r))
                    .service(inner),
            ),
            (Some(s), None) => BoxCloneSyncService::new(StickyLayer::new(s).layer(inner)),
            (None, Some(r)) => BoxCloneSyncService::new(RetryLayer::new(r).layer(inner)),
            (None, None) => BoxCloneSyncService::new(inner),
        };
        Site {
            name,
            mount,
            balancer,
            service: Arc::new(Mutex::new(service)),
        }
    }

    /// Sends `req` through the site's stack. The usual tower idiom clones the stack for each
    /// request, which here costs an allocation and a reference count on every layer's shared
    /// state; the stack is called in place instead when it is ready at once (its layers
    /// always are), and cloned only when it is not.
    fn call(&self, req: Request<ProxyBody>) -> SiteFuture {
        let mut svc = self.service.lock().unwrap_or_else(|e| e.into_inner());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Ok(())) = svc.poll_ready(&mut cx) {
            return Either::Left(svc.call(req));
        }
        let svc = svc.clone();
        Either::Right(svc.oneshot(req))
    }

    fn matches(&self, path: &str) -> bool {
        self.mount.is_empty()
            || path
                .strip_prefix(self.mount.as_str())
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    }
}

/// Checks a mount path before it is given to [`Site::new`]: one that no request could
/// match (`/app/../x`, `/app?x=1`, `/my app`) is refused, with a message saying why.
pub fn check_mount(mount: &str) -> Result<(), String> {
    crate::path::check_mount(mount)
}

/// Sends requests to sites by longest path prefix.
#[derive(Debug, Clone, Default)]
pub struct Router {
    sites: Vec<Site>,
}

impl Router {
    /// A router over `sites`.
    pub fn new(mut sites: Vec<Site>) -> Router {
        sites.sort_by_key(|s| std::cmp::Reverse(s.mount.len()));
        Router { sites }
    }

    /// The sites, longest prefix first.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }
}

/// A [`Router`] that can be replaced while serving.
#[derive(Debug, Clone)]
pub struct SharedRouter {
    current: Arc<ArcSwap<Router>>,
}

impl SharedRouter {
    /// Starts with `router`.
    pub fn new(router: Router) -> SharedRouter {
        SharedRouter {
            current: Arc::new(ArcSwap::from_pointee(router)),
        }
    }

    /// Replaces the routing table; requests in flight are not affected.
    pub fn replace(&self, router: Router) {
        self.current.store(Arc::new(router));
    }

    /// The current routing table.
    pub fn load(&self) -> Arc<Router> {
        self.current.load_full()
    }
}

/// The future of [`SharedRouter`]: the site stack's own future, or the stack cloned and
/// driven to readiness first.
pub type SiteFuture = Either<
    futures_util::future::BoxFuture<'static, Result<Response<ProxyBody>, BoxError>>,
    tower::util::Oneshot<SiteService, Request<ProxyBody>>,
>;

impl<B> tower::Service<Request<B>> for SharedRouter
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = SiteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let router = self.current.load();
        let mut req = req.map(boxed);
        // A reverse proxy opens no tunnels to other hosts (nginx answers 405 too).
        if req.method() == http::Method::CONNECT {
            return not_allowed(req);
        }
        // Routed, and forwarded, without its dot segments: `/x/../admin` is `/admin`, and
        // `/../secret` does not climb out of a member's prefix.
        if let Err(bad) = normalize_path(&mut req) {
            return answer(req, StatusCode::BAD_REQUEST, bad.message());
        }
        match router.sites.iter().find(|s| s.matches(req.uri().path())) {
            Some(site) => site.call(req),
            None => answer(
                req,
                StatusCode::NOT_FOUND,
                "no balancer is mounted on this path\n",
            ),
        }
    }
}

/// Removes the dot segments of `req`'s path (see [`crate::path`]), keeping its query and,
/// in absolute form, its scheme and authority.
fn normalize_path<B>(req: &mut Request<B>) -> Result<(), BadPath> {
    let uri = req.uri();
    let std::borrow::Cow::Owned(path) = remove_dot_segments(uri.path())? else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    // Made only of the request's own characters, so valid; kept as it was otherwise.
    if let Ok(pq) = http::uri::PathAndQuery::try_from(pq) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    Ok(())
}

/// 405 to a method no member is sent, with the methods that are (RFC 9110 section 15.5.6).
fn not_allowed(req: Request<ProxyBody>) -> SiteFuture {
    Either::Right(
        BoxCloneSyncService::new(tower::service_fn(|_req: Request<ProxyBody>| async {
            let mut r = Response::new(full("CONNECT is not supported by this reverse proxy\n"));
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static(
                    "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH",
                ),
            );
            Ok::<_, BoxError>(r)
        }))
        .oneshot(req),
    )
}

/// The router's own answer to `req`.
fn answer(req: Request<ProxyBody>, status: StatusCode, text: &'static str) -> SiteFuture {
    Either::Right(
        BoxCloneSyncService::new(tower::service_fn(
            move |_req: Request<ProxyBody>| async move {
                let mut r = Response::new(full(text));
                *r.status_mut() = status;
                Ok::<_, BoxError>(r)
            },
        ))
        .oneshot(req),
    )
}
