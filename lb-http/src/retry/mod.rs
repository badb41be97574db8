//! `Retry`: sends an idempotent request again, to another member, when the response has one
//! of the configured statuses (HAProxy's `retry-on 503 504...`), up to a number of retries
//! and within a retry budget (Finagle's: retries may add at most a percentage of the
//! requests, plus a small floor), so retries cannot multiply load during an outage.
//!
//! Connect failures are handled by [`Balance`](crate::balance::Balance) itself (failover,
//! Apache `maxattempts`). `Retry` sits outside `Balance` and passes the members already tried
//! in a [`Tried`] extension so each retry goes elsewhere. Only idempotent methods are retried
//! (RFC 9110 section 9.2.2). A request body is read whole before the first try when its
//! `Content-Length` is at most [`RetryConfig::max_replay_body`] (64 KiB by default; HAProxy
//! likewise retries only requests that fit its buffer), so it can be sent again; larger or
//! chunked bodies stream through and their requests are not retried. lb's own 502 (a
//! member that closed or sent garbage instead of a response) and 504 (a response timeout)
//! count as those statuses, as nginx's `proxy_next_upstream error timeout` retries them;
//! HAProxy's `retry-on empty-response junk-response response-timeout` does too. When a
//! retry cannot be made (no other usable member) or fails, the client gets the answer that
//! was to be replaced, as the backend sent it or as lb gave it.

mod future;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, ServiceExt};

pub use future::ResponseFuture;

use crate::BoxError;
use crate::body::ProxyBody;
use crate::ext::Tried;

/// Settings of a [`Retry`].
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Statuses that cause a retry.
    pub statuses: Vec<u16>,
    /// Most retries per request (default 1).
    pub max_retries: usize,
    /// Retries may add at most this fraction of requests (default 0.2).
    pub budget_percent: f32,
    /// ... plus this many retries per second (default 10).
    ///
    /// The budget belongs to the [`RetryLayer`], so to each stack built from it: a server
    /// with a stack per worker thread, as lb-balancer has, keeps one budget per worker. The
    /// fraction holds overall; this floor is per worker. (One budget for all workers
    /// would be an atomic counter written by every core on every request.)
    pub budget_min_per_sec: u32,
    /// Bodies up to this size (by `Content-Length`) are read before the first try so the
    /// request can be retried (default 64 KiB; 0: only requests without a body are).
    pub max_replay_body: u64,
    /// While such a body is read, the longest the client may send nothing: then it gets
    /// `408`, as from the proxy (default 60 s; see
    /// [`ProxyConfig::client_body_timeout`](crate::proxy::ProxyConfig::client_body_timeout)).
    pub client_body_timeout: std::time::Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            statuses: vec![502, 503, 504],
            max_retries: 1,
            budget_percent: 0.2,
            budget_min_per_sec: 10,
            max_replay_body: 64 * 1024,
            client_body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Adds [`Retry`] to a service.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    config: Arc<RetryConfig>,
    budget: Arc<TpsBudget>,
}

impl RetryLayer {
    /// A layer with `config` and a fresh budget (10 s window).
    pub fn new(config: RetryConfig) -> Self {
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            config.budget_min_per_sec,
            config.budget_percent,
        );
        RetryLayer {
            config: Arc::new(config),
            budget: Arc::new(budget),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            config: self.config.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// The retrying service; see the module docs.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    config: Arc<RetryConfig>,
    budget: Arc<TpsBudget>,
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl<S, RB> tower::Service<Request<ProxyBody>> for Retry<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<RB>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> Self::Future {
        let inner = self.inner.clone();
        let config = self.config.clone();
        let budget = self.budget.clone();
        ResponseFuture::new(Box::pin(async move {
            budget.deposit();
            if !idempotent(req.method()) || config.max_retries == 0 {
                return inner.oneshot(req).await;
            }
            let body_len = req.body().size_hint().exact();
            let replay: Bytes = if req.body().is_end_stream() {
                Bytes::new()
            } else if body_len.is_some_and(|n| n <= config.max_replay_body) {
                // Small and of known length: read it now, so that it can be sent again.
                let (parts, body) = req.into_parts();
                // The client's failure (a stall, an abort, a bad chunk): a 408 or a 400, not
                // a backend's.
                let body = crate::proxy::upload::UploadBody::new(
                    body,
                    crate::proxy::upload::Progress::new(),
                    config.client_body_timeout,
                );
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| match e.downcast::<crate::error::ProxyError>() {
                        Ok(stalled) => *stalled,
                        Err(e) => crate::error::ProxyError::Request(format!(
                            "cannot read the request body: {e}"
                        )),
                    })?
                    .to_bytes();
                req = Request::from_parts(parts, crate::body::empty());
                bytes
            } else {
                return inner.oneshot(req).await;
            };
            let tried = Tried::default();
            let (mut parts, _) = req.into_parts();
            parts.extensions.insert(tried);
            let mut retries = 0;
            // The answer a retry was made to replace: the client gets it, unchanged, when
            // the retry fails (no other usable member, or that member failed too).
            let mut last: Option<Result<Response<RB>, BoxError>> = None;
            loop {
                let (mut p, ()) = Request::new(()).into_parts();
                p.method = parts.method.clone();
                p.uri = parts.uri.clone();
                p.version = parts.version;
                p.headers = parts.headers.clone();
                p.extensions = parts.extensions.clone();
                let body = if replay.is_empty() {
                    crate::body::empty()
                } else {
                    crate::body::full(replay.clone())
                };
                let answer = inner.clone().oneshot(Request::from_parts(p, body)).await;
                // The status the client would get: the member's, or lb's own for a member
                // that closed without answering (502) or answered too late (504). Connect
                // failures are not retried here: the balance layer has tried every member
                // it could already. Nor are failures no member is to blame for (the
                // client's, or this proxy's own shortage).
                let status = match &answer {
                    Ok(resp) => Some(resp.status().as_u16()),
                    Err(e) => crate::error::proxy_error(e)
                        .filter(|pe| !pe.is_connect() && !pe.is_not_the_backends())
                        .map(|pe| pe.status().as_u16()),
                };
                if let (Err(e), Some(earlier)) = (&answer, last.take()) {
                    tracing::debug!("retry failed ({e}); answering the earlier response");
                    return earlier;
                }
                let again = status.is_some_and(|s| config.statuses.contains(&s))
                    && retries < config.max_retries
                    && budget.withdraw();
                if !again {
                    return answer;
                }
                tracing::debug!("retrying after status {status:?}");
                retries += 1;
                last = Some(answer);
            }
        }))
    }
}
