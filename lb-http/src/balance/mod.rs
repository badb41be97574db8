//! `Balance`: picks a member for each request with lb-core's pipeline and any scheduler,
//! fails over on connect errors, and applies passive health.
//!
//! The pick follows mod_proxy_balancer: the request's sticky [`Route`] (from
//! [`Sticky`](crate::sticky::Sticky)) selects its member when usable; otherwise the lowest
//! `lbset` with a usable member is scheduled (hot standbys only when no other member of the
//! set is usable); a hash key for hashing schedulers is taken from a header, cookie, the path
//! or a query parameter ([`HashKey`]). The chosen member becomes the request's
//! [`Target`](crate::proxy::Target), which carries the balancer's
//! [`MemberUrls`](crate::proxy::MemberUrls): ProxyPassReverse rewrites the address of any
//! member, not only that of the member that answered.
//!
//! The [`Lease`](lb_core::Lease) is held until the response body ends (or is dropped), so `bybusyness` and
//! least-connection schedulers count streaming responses; bytes both ways are counted on it.
//! The time to the response head is recorded on it for a scheduler that reads latency
//! (`ewma`, see [`Lease::wants_latency`](lb_core::Lease::wants_latency)).
//!
//! Failover (Apache `maxattempts`): when the connection to a member cannot be opened the
//! member is put in error for its `retry` time and the next member is tried, whatever the
//! request's method and body: none of it was sent, its body not even read. The request is
//! not copied for that: the inner service gives it back in a [`NotSent`] error, as
//! [`Proxy`](crate::proxy::Proxy) does; an inner service that does not is not retried on
//! another member. Passive health: a response whose status is in
//! `failonstatus`, or a response timeout with `failontimeout` (the head late, or the body
//! stalled), puts the member in error for its `retry` time (the response is still returned
//! to the client, as Apache does).
//!
//! A member's `max` limits its concurrent requests. A request that its session routes to a
//! member at its `max` waits for a slot there, up to the member's `acquire` (else
//! [`BalanceConfig::queue_timeout`]), then gets 503: as with Apache and HAProxy, a busy
//! member does not move a session. Another request passes over members at their `max`
//! (neither an attempt against `maxattempts` nor a pick of theirs) to the next member of
//! the same tier with a free slot; when every member of the tier is at its `max`, it takes
//! the first slot any of them frees within its wait, else it gets 503. A busy member is
//! usable: no request goes to a later tier (hot standby, higher lbset, backup) for it.

mod body;
mod future;
mod key;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as _;
use lb_core::{Balancer, Failure, PickContext};
use tower::{Layer, ServiceExt};

pub use body::{CountBody, LeaseBody};
pub use future::ResponseFuture;
pub use key::{HashKey, cookie, query_param};

use crate::BoxError;
use crate::body::ProxyBody;
use crate::error::{BalanceError, NotSent, ProxyError};
use crate::ext::{Route, Served, Tried, TunnelHold};
use crate::headers::ClientInfo;
use crate::member::{MemberHttp, Members};

/// Settings of a [`Balance`].
#[derive(Debug, Clone)]
pub struct BalanceConfig {
    /// The balancer's name (for messages and the manager).
    pub name: String,
    /// Where the hash key comes from, for hashing schedulers.
    pub key: Option<HashKey>,
    /// How long a request waits for a slot on a member at its `max`, unless the member has
    /// its own `acquire` (default 1 s).
    pub queue_timeout: Duration,
    /// Response statuses that put the member in error (Apache `failonstatus`).
    pub failonstatus: Vec<u16>,
    /// A response timeout, of the head or a stalled body, puts the member in error (Apache
    /// `failontimeout`).
    pub failontimeout: bool,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            name: "default".into(),
            key: None,
            queue_timeout: Duration::from_secs(1),
            failonstatus: Vec::new(),
            failontimeout: false,
        }
    }
}

/// Wraps a service (usually [`Proxy`](crate::proxy::Proxy)) in a [`Balance`].
#[derive(Debug, Clone)]
pub struct BalanceLayer {
    balancer: Balancer,
    config: Arc<BalanceConfig>,
    members: Arc<Members>,
}

impl BalanceLayer {
    /// A layer over `balancer`.
    pub fn new(balancer: Balancer, config: BalanceConfig) -> Self {
        BalanceLayer {
            members: Arc::new(Members::shared(&balancer)),
            balancer,
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance {
            inner,
            shared: Arc::new(Shared {
                balancer: self.balancer.clone(),
                name: self.config.name.as_str().into(),
                config: self.config.clone(),
                members: self.members.clone(),
            }),
        }
    }
}

/// The balancing service; see the module docs.
#[derive(Debug, Clone)]
pub struct Balance<S> {
    inner: S,
    /// One reference count per request, on this service's own allocation. The balancer's
    /// own count is shared by every thread serving it, and bumping it per request would
    /// move its cache line between cores each time.
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    balancer: Balancer,
    /// The name again, for the response bodies' log lines: their reference count is this
    /// thread's, not one every thread serving the balancer bumps.
    name: Arc<str>,
    config: Arc<BalanceConfig>,
    members: Arc<Members>,
}

impl<S> Balance<S> {
    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.shared.balancer
    }
}

impl<S> tower::Service<Request<ProxyBody>> for Balance<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<LeaseBody<ProxyBody>>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> ResponseFuture {
        let inner = self.inner.clone();
        ResponseFuture::new(Box::pin(run(inner, self.shared.clone(), req)))
    }
}

/// The request's future. A plain function returning an `async move` block, not an `async
/// fn`: an `async fn` keeps its arguments twice in its state (rust-lang/rust#62958), and
/// every copy of a request there is 288 bytes in a future that is boxed for each request.
/// Under about 1 KiB, that box comes from the allocator's per-thread cache.
fn run<S>(
    mut inner: S,
    shared: Arc<Shared>,
    mut req: Request<ProxyBody>,
) -> impl Future<Output = Result<Response<LeaseBody<ProxyBody>>, BoxError>> + Send + 'static
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = BoxError>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Taken out rather than cloned: nothing after this layer reads it.
    let route = req.extensions_mut().remove::<Route>();
    let tried = req.extensions().get::<Tried>().cloned();
    let client = req.extensions().get::<ClientInfo>().map(|c| c.addr);
    let key = shared.config.key.as_ref().and_then(|k| k.extract(&req));
    let replayable = req.body().is_end_stream();
    // A body's bytes are counted on the lease of the member it goes to: wrapped once, the
    // lease it counts on set for each attempt. An empty body (most requests) has no bytes
    // to count: it goes as it is.
    let counted = (!replayable).then(|| Arc::new(body::LeaseSlot::empty()));
    if let Some(slot) = &counted {
        let slot = slot.clone();
        req = req.map(|body| crate::body::boxed(CountBody::counting_on(body, slot)));
    }
    // The request goes to each attempt as it is, not copied: a proxy that could not
    // connect gives it back (`NotSent`), body untouched, for the next member.
    let mut req = Some(req);
    async move {
        let Shared {
            balancer,
            name,
            config,
            members,
        } = &*shared;
        let mut ctx = PickContext::new();
        if let Some(c) = client {
            ctx = ctx.with_client(c);
        }
        if let Some(k) = &key {
            ctx = ctx.with_key(k);
        }
        if let Some(Route(r)) = &route {
            ctx = ctx.with_route(r);
        }
        // Members an outer Retry already used are skipped without a lease, so their
        // counters (the manager's "Elected") see only the requests they served.
        let mut attempts = balancer
            .attempts(ctx)
            .exclude(tried.as_ref().map(Tried::ids).unwrap_or_default());
        let mut last_err: Option<BoxError> = None;
        // Members found at their `max` by requests the scheduler placed, of the first tier
        // met: the request goes on to the others of that tier first, and waits for these
        // only when none has a slot. Held without a lease, so that they count as busy only
        // with the requests they serve.
        let mut full: Vec<(Arc<lb_core::Member>, Arc<MemberHttp>)> = Vec::new();
        loop {
            let picked = match attempts.next() {
                // A member of a later tier (a hot standby, a higher lbset, a backup): the
                // full members are only busy, and busy members are usable (Apache's rule
                // for +H and lbset): wait for them instead. Put back, not passed over: if
                // the member waited for then fails, this one is still offered.
                Ok(lease)
                    if !lease.is_sticky()
                        && full
                            .iter()
                            .map(|(m, _)| m.backend().tier())
                            .min()
                            .is_some_and(|first| first < lease.backend().tier()) =>
                {
                    attempts.put_back(lease);
                    None
                }
                Ok(lease) => Some(lease),
                Err(lb_core::Error::StickyUnavailable(_)) => {
                    let r = route.map(|r| r.0).unwrap_or_default();
                    return Err(BalanceError::RouteUnavailable(r).into());
                }
                Err(_) => None,
            };
            let (lease, member, permit) = match picked {
                Some(lease) => {
                    let member = match members.get_member(lease.shared_member()) {
                        Ok(m) => m,
                        Err(e) => {
                            lease.failure(Failure::Other);
                            last_err = Some(e.into());
                            continue;
                        }
                    };
                    match &member.slots {
                        None => (lease, member, None),
                        Some(sem) => match sem.clone().try_acquire_owned() {
                            Ok(p) => (lease, member, Some(p)),
                            // A session waits for its own member, as with Apache (`acquire`,
                            // then 503) and HAProxy (the server's queue): going to another
                            // would move the session for good, its route cookie rewritten,
                            // for a member that is only busy.
                            Err(_) if lease.is_sticky() => {
                                let wait = member.acquire.unwrap_or(config.queue_timeout);
                                match Box::pin(tokio::time::timeout(
                                    wait,
                                    sem.clone().acquire_owned(),
                                ))
                                .await
                                {
                                    Ok(Ok(p)) => (lease, member, Some(p)),
                                    _ => return Err(queue_timeout(&[(lease.backend(), wait)])),
                                }
                            }
                            // Passed over: neither an attempt (`maxattempts`) nor a pick
                            // of the member.
                            Err(_) => {
                                full.push((lease.shared_member().clone(), member));
                                attempts.pass_over(lease);
                                continue;
                            }
                        },
                    }
                }
                None if !full.is_empty() && req.is_some() => {
                    // Every member left of the tier is at its `max`: the first slot any of
                    // them frees within its wait (`acquire`, else the queue timeout) takes
                    // the request.
                    let waits: Vec<_> = full
                        .iter()
                        .map(|(_, m)| m.acquire.unwrap_or(config.queue_timeout))
                        .collect();
                    match first_slot(&full, &waits).await {
                        // The others stay: if this one fails, the request waits for them
                        // before it turns to a later tier.
                        Some((i, p)) => {
                            let (shared, member) = full.swap_remove(i);
                            match attempts.retake(&shared) {
                                Some(lease) => (lease, member, Some(p)),
                                // Disabled, down or removed while the request waited.
                                None => continue,
                            }
                        }
                        None => {
                            let waited: Vec<_> =
                                full.iter().map(|(m, _)| m.backend()).zip(waits).collect();
                            return Err(queue_timeout(&waited));
                        }
                    }
                }
                None => {
                    return Err(last_err
                        .unwrap_or_else(|| BalanceError::NoMember(config.name.clone()).into()));
                }
            };
            let id = lease.id();
            if req.is_none() {
                return Err(
                    last_err.unwrap_or_else(|| BalanceError::NoMember(config.name.clone()).into())
                );
            }
            if let Some(t) = &tried {
                t.push(id);
            }
            let lease = Arc::new(lease);
            // Timed only for a scheduler that reads latency (ewma): two clock readings and a
            // shared cache line written per request otherwise.
            let started = lease.wants_latency().then(tokio::time::Instant::now);
            let result = match inner.ready().await {
                Ok(svc) => {
                    // The request is made ready and handed over in a block of its own, so
                    // that no copy of it is kept in this future's state during the await.
                    let call = {
                        let Some(mut this) = req.take() else {
                            unreachable!("checked above")
                        };
                        this.extensions_mut().insert(member.target.clone());
                        if let Some(slot) = &counted {
                            slot.store(Some(lease.clone()));
                        }
                        svc.call(this)
                    };
                    call.await
                }
                Err(e) => Err(e),
            };
            let put_in_error =
                |why: &str| put_in_error(Some(&config.name), &lease, member.retry, why);
            match result {
                Ok(mut resp) => {
                    if let Some(started) = started {
                        lease.observe_latency(started.elapsed());
                    }
                    // Judged by its status now, or by its body when that ends.
                    let status = resp.status().as_u16();
                    let judged = config.failonstatus.contains(&status);
                    if judged {
                        lease.failure(Failure::Status(status));
                        put_in_error(&format!("status {status}"));
                    }
                    resp.extensions_mut().insert(Served {
                        id,
                        route: lease.backend().route().map(str::to_string),
                        sticky: lease.is_sticky(),
                    });
                    // An open tunnel keeps the member busy, and its `max` slot, until it
                    // closes: the 101's body itself ends at once.
                    let permit = match resp.extensions_mut().remove::<TunnelHold>() {
                        Some(hold) => {
                            hold.keep(lease.clone());
                            hold.keep(permit);
                            None
                        }
                        None => permit,
                    };
                    let error_for = config.failontimeout.then_some(member.retry);
                    return Ok(resp.map(|b| {
                        let body = LeaseBody::new(b, lease, permit)
                            .in_error_on_timeout(error_for)
                            .in_balancer(name.clone());
                        if judged { body } else { body.records_outcome() }
                    }));
                }
                Err(e) => {
                    // A request given back unsent is kept for the next member, whatever its
                    // method and body: no byte of it left (the proxy gives it back only
                    // when no connection could be opened, before the body is read). The
                    // error goes on as the plain `ProxyError`.
                    let e = match e.downcast::<NotSent>() {
                        Ok(not_sent) => {
                            let (error, back) = not_sent.into_parts();
                            req = back;
                            BoxError::from(error)
                        }
                        Err(e) => e,
                    };
                    // The client's fault, or this proxy's own shortage: the member is not
                    // blamed, and no other is tried.
                    if let Some(pe) = e
                        .downcast_ref::<ProxyError>()
                        .filter(|pe| pe.is_not_the_backends())
                    {
                        if matches!(pe, ProxyError::LocalResources(_)) {
                            // Every request meets it while it lasts: a line a second.
                            static SHORTAGE: crate::throttle::Throttle =
                                crate::throttle::Throttle::new();
                            if let Some(n) = SHORTAGE.allow() {
                                tracing::warn!(
                                    "balancer {}: {e}{}",
                                    config.name,
                                    crate::throttle::left_out(n)
                                );
                            }
                        } else {
                            tracing::debug!("balancer {}: {e}", config.name);
                        }
                        return Err(e);
                    }
                    let connect = e
                        .downcast_ref::<ProxyError>()
                        .is_some_and(ProxyError::is_connect);
                    let timeout = matches!(
                        e.downcast_ref::<ProxyError>(),
                        Some(ProxyError::ResponseTimeout(_))
                    );
                    let in_error = if connect {
                        lease.failure(Failure::Connect);
                        error_for(&lease, member.retry)
                    } else if timeout {
                        lease.failure(Failure::Timeout);
                        config.failontimeout && error_for(&lease, member.retry)
                    } else {
                        lease.failure(Failure::Other);
                        false
                    };
                    // One line per failed try, naming the member (the client is not told
                    // which): nginx and Apache log each at their default level.
                    tracing::warn!(
                        "{}: {e}{}",
                        MemberOf(Some(&config.name), &lease),
                        if in_error {
                            in_error_for(member.retry)
                        } else {
                            String::new()
                        }
                    );
                    if connect && req.is_some() {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// The first `max` slot freed among `full` members, each waited for up to its `waits`
/// entry: its index and the slot; `None` when every wait ran out.
async fn first_slot(
    full: &[(Arc<lb_core::Member>, Arc<MemberHttp>)],
    waits: &[Duration],
) -> Option<(usize, tokio::sync::OwnedSemaphorePermit)> {
    let mut pending: Vec<_> = full
        .iter()
        .zip(waits)
        .enumerate()
        .filter_map(|(i, ((_, m), wait))| {
            let sem = m.slots.clone()?;
            Some(Box::pin(async move {
                (
                    i,
                    tokio::time::timeout(*wait, sem.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok),
                )
            }))
        })
        .collect();
    while !pending.is_empty() {
        let ((i, permit), _, rest) = futures_util::future::select_all(pending).await;
        if let Some(p) = permit {
            return Some((i, p));
        }
        pending = rest;
    }
    None
}

/// The 503 for members that stayed at their `max` for their wait.
fn queue_timeout(waited: &[(&lb_core::Backend, Duration)]) -> BoxError {
    let addresses = waited
        .iter()
        .map(|(b, _)| b.address().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let member = if waited.len() > 1 {
        format!("members {addresses}")
    } else {
        format!("member {addresses}")
    };
    let waited = waited.iter().map(|(_, w)| *w).max().unwrap_or_default();
    BalanceError::QueueTimeout { member, waited }.into()
}

/// Puts the leased member in error for `retry` (Apache's `failonstatus` and
/// `failontimeout`), unless it ignores errors (`+I`), and says so in the log, naming the
/// balancer when known (a member may be in several).
pub(crate) fn put_in_error(
    balancer: Option<&str>,
    lease: &lb_core::Lease,
    retry: Duration,
    why: &str,
) {
    if error_for(lease, retry) {
        tracing::warn!(
            "{}: {why}{}",
            MemberOf(balancer, lease),
            in_error_for(retry)
        );
    }
}

/// How a log line names a member: `balancer NAME: member ADDRESS`.
pub(crate) struct MemberOf<'a>(pub(crate) Option<&'a str>, pub(crate) &'a lb_core::Lease);

impl std::fmt::Display for MemberOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(b) = self.0 {
            write!(f, "balancer {b}: ")?;
        }
        write!(f, "member {}", self.1.backend().address())
    }
}

/// The end of a log line for a member put in error for `retry`: with `retry=0` (Apache:
/// "always retry") it is used again at once.
fn in_error_for(retry: Duration) -> String {
    if retry.is_zero() {
        "; retry=0: used again at once".into()
    } else {
        format!("; in error for {retry:?}")
    }
}

/// Puts the leased member in error for `retry` unless it ignores errors; whether it did.
fn error_for(lease: &lb_core::Lease, retry: Duration) -> bool {
    let ignores = lease.member().state().ignores_errors();
    if !ignores {
        lease.set_error_for(retry);
    }
    !ignores
}

#[cfg(test)]
mod tests {
    //! The `max` slots: which member a request goes to when some are at their `max`.
    use super::*;
    use crate::member::MemberSpec;
    use crate::proxy::Target;
    use tower::Service;

    fn member(url: &str) -> lb_core::Backend {
        url.parse::<MemberSpec>().unwrap().to_backend().unwrap()
    }

    fn req(path: &str) -> Request<ProxyBody> {
        Request::get(path).body(crate::body::empty()).unwrap()
    }

    type Reply =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, BoxError>> + Send>>;

    /// Answers at once, except `/hold`, which waits for a permit of `gate`; names the
    /// member it was given in `x-served`.
    fn inner(
        gate: Arc<tokio::sync::Semaphore>,
    ) -> impl tower::Service<
        Request<ProxyBody>,
        Response = Response<ProxyBody>,
        Error = BoxError,
        Future = Reply,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |r: Request<ProxyBody>| {
            let gate = gate.clone();
            let who = r
                .extensions()
                .get::<Target>()
                .unwrap()
                .authority
                .to_string();
            let hold = r.uri().path() == "/hold";
            Box::pin(async move {
                if hold {
                    gate.acquire().await.unwrap().forget();
                }
                Ok::<_, BoxError>(
                    Response::builder()
                        .header("x-served", who)
                        .body(crate::body::empty())
                        .unwrap(),
                )
            }) as Reply
        })
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition never met");
    }

    fn stat(lb: &Balancer, port: &str) -> lb_core::BackendStats {
        lb.stats()
            .backends
            .into_iter()
            .find(|b| b.address.ends_with(port))
            .unwrap()
    }

    fn served(r: Result<Response<LeaseBody<ProxyBody>>, BoxError>) -> Result<String, String> {
        r.map(|r| r.headers()["x-served"].to_str().unwrap().to_string())
            .map_err(|e| e.to_string())
    }

    /// Runs a request held by its gate; its response is dropped (its `max` slot freed)
    /// as soon as it comes.
    fn hold(
        call: impl Future<Output = Result<Response<LeaseBody<ProxyBody>>, BoxError>> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<String, String>> {
        tokio::spawn(async move { served(call.await) })
    }

    fn first(backends: Vec<lb_core::Backend>, max_attempts: usize) -> Balancer {
        Balancer::builder()
            .backends(backends)
            .scheduler("first".parse::<lb_core::scheduler::AnyScheduler>().unwrap())
            .max_attempts(max_attempts)
            .build()
            .unwrap()
    }

    /// The balance service the tests call.
    trait BalanceSvc:
        tower::Service<
            Request<ProxyBody>,
            Response = Response<LeaseBody<ProxyBody>>,
            Error = BoxError,
            Future = ResponseFuture,
        >
    {
    }

    impl<T> BalanceSvc for T where
        T: tower::Service<
                Request<ProxyBody>,
                Response = Response<LeaseBody<ProxyBody>>,
                Error = BoxError,
                Future = ResponseFuture,
            >
    {
    }

    type Gate = Arc<tokio::sync::Semaphore>;

    /// A `first` balancer over `urls`, and a balance service over it whose `/hold` requests
    /// wait for a permit of the returned gate.
    fn service(urls: &[&str], max_attempts: usize) -> (Balancer, Gate, impl BalanceSvc) {
        let lb = first(urls.iter().map(|u| member(u)).collect(), max_attempts);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let svc =
            BalanceLayer::new(lb.clone(), BalanceConfig::default()).layer(inner(gate.clone()));
        (lb, gate, svc)
    }

    /// Lets one held request of `gate` go after `ms` milliseconds.
    fn free_after(gate: &Arc<tokio::sync::Semaphore>, ms: u64) {
        let g = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            g.add_permits(1);
        });
    }

    /// A hot standby serves only when every other member is unusable: one at its `max` is
    /// usable, and the request waits for its slot (review 7: the standby took it at once).
    #[tokio::test(start_paused = true)]
    async fn a_hot_standby_is_not_used_while_the_member_is_only_busy() {
        let (lb, gate, mut svc) = service(
            &[
                "http://127.0.0.1:9001,max=1",
                "http://127.0.0.1:9002,status=+H",
            ],
            0,
        );
        let held = hold(svc.call(req("/hold")));
        until(|| stat(&lb, ":9001").active == 1).await;
        // a frees its slot within the wait.
        free_after(&gate, 200);
        assert_eq!(
            served(svc.call(req("/")).await),
            Ok("127.0.0.1:9001".into())
        );
        held.await.unwrap().unwrap();
        // Busy past the wait: 503, still not the standby.
        let held = hold(svc.call(req("/hold")));
        until(|| stat(&lb, ":9001").active == 1).await;
        let e = served(svc.call(req("/")).await).unwrap_err();
        assert_eq!(e, "member 127.0.0.1:9001 busy: no slot within 1s");
        gate.add_permits(1);
        held.await.unwrap().unwrap();
        // Picked by the scheduler each time, and put back: it served neither (the
        // answers above), and is not busy.
        assert_eq!(stat(&lb, ":9002").active, 0);
    }

    /// A hot standby passed over while the member waited for was only busy is still there
    /// when that member then fails (review 8: it was marked tried, and the request failed).
    #[tokio::test(start_paused = true)]
    async fn a_hot_standby_passed_over_serves_when_the_awaited_member_fails() {
        let lb = first(
            vec![
                member("http://127.0.0.1:9001,max=1"),
                member("http://127.0.0.1:9002,status=+H"),
            ],
            0,
        );
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let inner = {
            let (inner, refuse) = (inner(gate.clone()), refuse.clone());
            tower::service_fn(move |r: Request<ProxyBody>| {
                let mut inner = inner.clone();
                let to_a =
                    r.extensions().get::<Target>().unwrap().authority.port_u16() == Some(9001);
                if to_a && refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    let e = crate::error::NotSent::new(
                        ProxyError::Connect("connection refused".into()),
                        r,
                    );
                    return Box::pin(async move { Err(BoxError::from(e)) }) as Reply;
                }
                inner.call(r)
            })
        };
        let mut svc = BalanceLayer::new(lb.clone(), BalanceConfig::default()).layer(inner);
        let held = hold(svc.call(req("/hold")));
        until(|| stat(&lb, ":9001").active == 1).await;
        // a goes down hard: its next connect is refused, once its slot frees.
        refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        free_after(&gate, 200);
        assert_eq!(
            served(svc.call(req("/")).await),
            Ok("127.0.0.1:9002".into())
        );
        assert_eq!(held.await.unwrap(), Ok("127.0.0.1:9001".into()));
    }

    /// A member passed over at its `max` does not count as busy with the request another
    /// member serves (review 7: it held a lease).
    #[tokio::test(start_paused = true)]
    async fn a_full_member_passed_over_is_not_busy_with_the_request() {
        let (lb, gate, mut svc) =
            service(&["http://127.0.0.1:9001,max=1", "http://127.0.0.1:9002"], 0);
        let first = hold(svc.call(req("/hold")));
        until(|| stat(&lb, ":9001").active == 1).await;
        let second = hold(svc.call(req("/hold")));
        until(|| stat(&lb, ":9002").active == 1).await;
        let a = stat(&lb, ":9001");
        gate.add_permits(2);
        assert_eq!(first.await.unwrap(), Ok("127.0.0.1:9001".into()));
        assert_eq!(second.await.unwrap(), Ok("127.0.0.1:9002".into()));
        // Busy with its own request only; picked for the second too, then passed over (the
        // total only grows).
        assert_eq!((a.active, a.total), (1, 2));
    }

    /// Members passed over at their `max` do not use up `maxattempts`: with two attempts,
    /// a third member with room still serves (review 7: 503).
    #[tokio::test(start_paused = true)]
    async fn full_members_do_not_use_up_max_attempts() {
        let (lb, gate, mut svc) = service(
            &[
                "http://127.0.0.1:9001,max=1",
                "http://127.0.0.1:9002,max=1",
                "http://127.0.0.1:9003",
            ],
            2,
        );
        let r1 = hold(svc.call(req("/hold")));
        until(|| stat(&lb, ":9001").active == 1).await;
        let r2 = hold(svc.call(req("/hold")));
        until(|| stat(&lb, ":9002").active == 1).await;
        assert_eq!(
            served(svc.call(req("/")).await),
            Ok("127.0.0.1:9003".into())
        );
        gate.add_permits(2);
        r1.await.unwrap().unwrap();
        r2.await.unwrap().unwrap();
    }

    /// Every member of the tier at its `max`: the first slot freed takes the request, and
    /// the 503 after the waits names them all.
    #[tokio::test(start_paused = true)]
    async fn all_full_the_first_slot_freed_takes_the_request() {
        let lb = first(
            vec![
                member("http://127.0.0.1:9001,max=1,acquire=5000"),
                member("http://127.0.0.1:9002,max=1,acquire=300"),
            ],
            0,
        );
        let gates = [
            Arc::new(tokio::sync::Semaphore::new(0)),
            Arc::new(tokio::sync::Semaphore::new(0)),
        ];
        // One gate per member: a `/hold` on a waits on the first, on b on the second.
        let mut svc_a =
            BalanceLayer::new(lb.clone(), BalanceConfig::default()).layer(inner(gates[0].clone()));
        let mut svc_b =
            BalanceLayer::new(lb.clone(), BalanceConfig::default()).layer(inner(gates[1].clone()));
        let ha = hold(svc_a.call(req("/hold")));
        until(|| stat(&lb, ":9001").active == 1).await;
        let hb = hold(svc_b.call(req("/hold")));
        until(|| stat(&lb, ":9002").active == 1).await;
        free_after(&gates[1], 100);
        assert_eq!(
            served(svc_a.call(req("/")).await),
            Ok("127.0.0.1:9002".into())
        );
        hb.await.unwrap().unwrap();
        // Both held past their waits: the 503 names both, with the longest wait.
        let hb = hold(svc_b.call(req("/hold")));
        until(|| stat(&lb, ":9002").active == 1).await;
        let e = served(svc_a.call(req("/")).await).unwrap_err();
        assert_eq!(
            e,
            "members 127.0.0.1:9001, 127.0.0.1:9002 busy: no slot within 5s"
        );
        gates[0].add_permits(1);
        gates[1].add_permits(1);
        ha.await.unwrap().unwrap();
        hb.await.unwrap().unwrap();
    }
}
