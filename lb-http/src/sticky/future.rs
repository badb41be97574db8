//! The response future of [`Sticky`](super::Sticky).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;

use super::{CookieCache, StickyConfig, on_response};

pin_project_lite::pin_project! {
    /// Waits for the inner response and sets the route cookie on it when needed.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        route: Option<String>,
        app_cookie: bool,
        config: Arc<StickyConfig>,
        cookies: Arc<CookieCache>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        route: Option<String>,
        app_cookie: bool,
        config: Arc<StickyConfig>,
        cookies: Arc<CookieCache>,
    ) -> Self {
        ResponseFuture {
            inner,
            route,
            app_cookie,
            config,
            cookies,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        on_response(
            &mut resp,
            this.route.as_deref(),
            *this.app_cookie,
            this.config,
            this.cookies,
        );
        Poll::Ready(Ok(resp))
    }
}
