//! The response future of [`Balance`](super::Balance).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use super::LeaseBody;
use crate::BoxError;
use crate::body::ProxyBody;

type Inner = Pin<Box<dyn Future<Output = Result<Response<LeaseBody<ProxyBody>>, BoxError>> + Send>>;

/// Picks, waits for a slot, forwards and fails over; resolves to the response with the lease
/// attached to its body.
pub struct ResponseFuture {
    inner: Inner,
}

impl ResponseFuture {
    pub(crate) fn new(inner: Inner) -> Self {
        ResponseFuture { inner }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<LeaseBody<ProxyBody>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
