//! Bodies that keep a [`Lease`] alive and count bytes on it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use lb_core::{Failure, Lease};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ProxyError;

pin_project_lite::pin_project! {
    /// A response body holding the member's lease (and its `max` slot) until the body ends or
    /// is dropped, counting the bytes received from the member.
    #[derive(Debug)]
    pub struct LeaseBody<B> {
        #[pin]
        inner: B,
        lease: Option<Arc<Lease>>,
        permit: Option<OwnedSemaphorePermit>,
        // How long a body timeout puts the member in error, if it does.
        error_for: Option<Duration>,
    }
}

impl<B> LeaseBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, lease: Arc<Lease>, permit: Option<OwnedSemaphorePermit>) -> Self {
        LeaseBody {
            inner,
            lease: Some(lease),
            permit,
            error_for: None,
        }
    }

    /// A body that stalls (a [`ProxyError::BodyTimeout`]) puts the member in error for
    /// `retry`, as a response head that does not come in time does (Apache's
    /// `failontimeout`). Either timeout counts as a [`Failure::Timeout`] for passive health
    /// anyway.
    pub fn in_error_on_timeout(mut self, retry: Option<Duration>) -> Self {
        self.error_for = retry;
        self
    }
}

impl<B> Body for LeaseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: AsRef<dyn std::error::Error + Send + Sync>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(lease)) = (f.data_ref(), this.lease.as_ref()) {
                    lease.add_bytes_in(data.len() as u64);
                }
            }
            Some(Err(e)) => {
                let timeout = e.as_ref().downcast_ref::<ProxyError>();
                if let (Some(ProxyError::BodyTimeout(t)), Some(lease)) =
                    (timeout, this.lease.as_ref())
                {
                    lease.failure(Failure::Timeout);
                    if let Some(retry) = *this.error_for {
                        super::put_in_error(
                            lease,
                            retry,
                            &format!("response body stalled for {t:?}"),
                        );
                    }
                }
                this.lease.take();
                this.permit.take();
            }
            None => {
                // End of body: the request is done.
                this.lease.take();
                this.permit.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body counting the bytes sent to the member on its lease.
    #[derive(Debug)]
    pub struct CountBody<B> {
        #[pin]
        inner: B,
        lease: Arc<LeaseSlot>,
    }
}

/// The lease a [`CountBody`] counts on, replaced when a request that was not sent goes to
/// another member with its body.
pub(crate) type LeaseSlot = arc_swap::ArcSwapOption<Lease>;

impl<B> CountBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, lease: Arc<Lease>) -> Self {
        CountBody::counting_on(inner, Arc::new(LeaseSlot::from(Some(lease))))
    }

    /// Wraps `inner`, counting on whichever lease `slot` holds.
    pub(crate) fn counting_on(inner: B, slot: Arc<LeaseSlot>) -> Self {
        CountBody { inner, lease: slot }
    }
}

impl<B: Body<Data = Bytes>> Body for CountBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(lease)) = (f.data_ref(), &*this.lease.load()) {
                    lease.add_bytes_out(data.len() as u64);
                }
            }
            _ => {
                this.lease.store(None);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
