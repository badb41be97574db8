//! The response future of [`Proxy`](super::Proxy).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::BoxError;
use crate::body::ProxyBody;
use crate::error::ProxyError;

use super::{Prepared, Proxy, Timed};

/// An exchange with a backend: boxed where it is made, so that the futures holding it
/// (and the copies made of them as they are built) stay small.
pub(crate) type Exchange =
    Pin<Box<dyn Future<Output = Result<(Response<ProxyBody>, Prepared, Proxy), BoxError>> + Send>>;

pin_project_lite::pin_project! {
    /// Waits for the backend's response head, within the response timeout.
    pub struct ResponseFuture {
        #[pin]
        waiting: Option<Timed<Exchange>>,
        failed: Option<ProxyError>,
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl ResponseFuture {
    pub(crate) fn new(exchange: Timed<Exchange>) -> Self {
        ResponseFuture {
            waiting: Some(exchange),
            failed: None,
        }
    }

    pub(crate) fn failed(error: ProxyError) -> Self {
        ResponseFuture {
            waiting: None,
            failed: Some(error),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.waiting.as_pin_mut() {
            Some(exchange) => exchange.poll(cx),
            None => Poll::Ready(Err(this
                .failed
                .take()
                .unwrap_or(ProxyError::NoTarget)
                .into())),
        }
    }
}
