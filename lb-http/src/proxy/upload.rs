//! A request body on its way to a backend, watched from both ends.
//!
//! - The client's end: a body that brings no byte for [`ProxyConfig::client_body_timeout`]
//!   while the proxy waits for one fails with [`ProxyError::ClientBodyTimeout`] (408, as
//!   nginx's `client_body_timeout` and Apache's `RequestReadTimeout body=` answer), and the
//!   member is not blamed.
//! - The backend's end: the response timeout measures the backend's waits only. While the
//!   body waits for the client, the backend is not the one late; each frame handed on, and
//!   the body's end, start its wait afresh. So an upload that keeps moving may take longer
//!   than the response timeout (nginx's `proxy_send_timeout` and `proxy_read_timeout` count
//!   from the last write too), and a client that stalls its upload is not a backend timeout.
//!
//! [`ProxyConfig::client_body_timeout`]: super::ProxyConfig::client_body_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::BoxError;
use crate::body::ProxyBody;
use crate::error::ProxyError;

/// What the body tells the response timer (and, in a tunnel, what the two connections tell
/// the idle timer): one word, so that a reader on another thread never pairs a new state
/// with an old time.
#[derive(Debug)]
pub(crate) struct Progress {
    base: Instant,
    /// When the body last moved (a frame handed on, or its end), in nanoseconds after
    /// `base`; or [`AWAITING_CLIENT`], or [`CLIENT_FAILED`].
    state: AtomicU64,
}

/// The body's last poll found nothing: the client is the one awaited.
const AWAITING_CLIENT: u64 = u64::MAX;
/// The client's body failed (it stalled, or broke off): whatever follows is the client's.
const CLIENT_FAILED: u64 = u64::MAX - 1;

impl Progress {
    pub(crate) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            base: Instant::now(),
            state: AtomicU64::new(0),
        })
    }

    /// When a backend wait of `timeout` that began no earlier than the body's last move
    /// ends; `None` while the client is the one awaited, or once its body failed.
    pub(crate) fn backend_deadline(&self, timeout: Duration) -> Option<Instant> {
        let state = self.state.load(Ordering::Relaxed);
        (state < CLIENT_FAILED).then(|| self.base + Duration::from_nanos(state) + timeout)
    }

    /// Whether the backend waits on the client now, or waited on a client whose body failed.
    pub(crate) fn on_the_client(&self) -> bool {
        self.state.load(Ordering::Relaxed) >= CLIENT_FAILED
    }

    /// Whether the client's body failed.
    pub(crate) fn client_failed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == CLIENT_FAILED
    }

    /// Something moved: a frame handed on, the body's end, bytes through a tunnel.
    pub(crate) fn moved(&self) {
        let since = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.set(since.min(CLIENT_FAILED - 1));
    }

    fn set(&self, state: u64) {
        // After a failure nothing moves again.
        if self.state.load(Ordering::Relaxed) != CLIENT_FAILED {
            self.state.store(state, Ordering::Relaxed);
        }
    }
}

/// An error of the client's request body, as it reached the proxy: marked, so that hyper's
/// report of it (an error of the body it was sending) is known for the client's.
#[derive(Debug)]
pub(crate) struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

pin_project_lite::pin_project! {
    /// The client's request body, as sent on to the backend.
    #[derive(Debug)]
    pub(crate) struct UploadBody {
        #[pin]
        inner: ProxyBody,
        progress: Arc<Progress>,
        // The client's stall, from the first poll that found nothing.
        #[pin]
        stall: Option<Sleep>,
        timeout: Duration,
    }
}

impl UploadBody {
    pub(crate) fn new(inner: ProxyBody, progress: Arc<Progress>, timeout: Duration) -> Self {
        UploadBody {
            inner,
            progress,
            stall: None,
            timeout,
        }
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.stall.set(None);
                this.progress.set(CLIENT_FAILED);
                return Poll::Ready(Some(Err(ClientBodyError(e).into())));
            }
            Poll::Ready(frame) => {
                this.stall.set(None);
                this.progress.moved();
                return Poll::Ready(frame);
            }
            Poll::Pending => {}
        }
        this.progress.set(AWAITING_CLIENT);
        if this.stall.is_none() {
            this.stall
                .set(Some(tokio::time::sleep_until(deadline(*this.timeout))));
        }
        if let Some(stall) = this.stall.as_pin_mut() {
            ready!(stall.poll(cx));
        }
        this.progress.set(CLIENT_FAILED);
        Poll::Ready(Some(Err(
            ProxyError::ClientBodyTimeout(*this.timeout).into()
        )))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `timeout` from now, or far in the future for a timeout too long to add.
pub(crate) fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// The client's part in a failed exchange through hyper's client: hyper reports an error
/// of the body it was sending as the user's, with that error as its source. `None` when
/// the failure is not the client's body's.
pub(crate) fn client_side(e: &hyper::Error) -> Option<ProxyError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(ProxyError::ClientBodyTimeout(d)) = s.downcast_ref::<ProxyError>() {
            return Some(ProxyError::ClientBodyTimeout(*d));
        }
        if s.is::<ClientBodyError>() {
            return Some(ProxyError::ClientBody(super::error_chain(e)));
        }
        source = s.source();
    }
    None
}
