//! The response future of [`Proxy`](super::Proxy).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::BoxError;
use crate::body::ProxyBody;
use crate::error::ProxyError;

type Exchange = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, BoxError>> + Send>>;

/// Waits for the backend's response head, within the response timeout.
pub struct ResponseFuture {
    state: State,
}

enum State {
    Waiting(Exchange),
    Failed(Option<ProxyError>),
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl ResponseFuture {
    pub(crate) fn new(
        exchange: impl Future<Output = Result<Response<ProxyBody>, BoxError>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting(Box::pin(exchange)),
        }
    }

    pub(crate) fn failed(error: ProxyError) -> Self {
        ResponseFuture {
            state: State::Failed(Some(error)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Waiting(exchange) => exchange.as_mut().poll(cx),
            State::Failed(error) => {
                Poll::Ready(Err(error.take().unwrap_or(ProxyError::NoTarget).into()))
            }
        }
    }
}
