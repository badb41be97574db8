//! Bodies that keep a [`Lease`] alive and count bytes on it.

use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use lb_core::{Failure, Lease};
use tokio::sync::OwnedSemaphorePermit;

use crate::BoxError;
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
        // Milliseconds a stalled body puts the member in error for; `NO_ERROR`: it does not.
        error_for_ms: u32,
        // The lease records the exchange's outcome when the body ends.
        outcome: bool,
        // The balancer's name, for the log.
        balancer: Option<Arc<str>>,
    }
}

/// `error_for_ms` when a stalled body does not put the member in error.
const NO_ERROR: u32 = u32::MAX;

impl<B> LeaseBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, lease: Arc<Lease>, permit: Option<OwnedSemaphorePermit>) -> Self {
        LeaseBody {
            inner,
            lease: Some(lease),
            permit,
            error_for_ms: NO_ERROR,
            outcome: false,
            balancer: None,
        }
    }

    /// Names the balancer in the lines this body logs about its member.
    pub fn in_balancer(mut self, name: Arc<str>) -> Self {
        self.balancer = Some(name);
        self
    }

    /// With [`records_outcome`](Self::records_outcome): a body that stalls (a
    /// [`ProxyError::BodyTimeout`]) puts the member in error for `retry`, as a response head
    /// that does not come in time does (Apache's `failontimeout`).
    pub fn in_error_on_timeout(mut self, retry: Option<Duration>) -> Self {
        self.error_for_ms = retry.map_or(NO_ERROR, |r| {
            u32::try_from(r.as_millis()).map_or(NO_ERROR - 1, |ms| ms.min(NO_ERROR - 1))
        });
        self
    }
}

impl<B: Body> LeaseBody<B> {
    /// The lease records the exchange's outcome when the body ends: a success once the body
    /// is read to its end (at once when there is nothing to read), a failure when reading it
    /// fails ([`Failure::Timeout`] for a stalled body, [`Failure::Other`] otherwise). A body
    /// dropped before its end (the client left) records nothing. Without this, the outcome
    /// is the caller's to record.
    pub fn records_outcome(mut self) -> Self {
        if self.inner.is_end_stream() {
            if let Some(lease) = &self.lease {
                lease.success();
            }
        } else {
            self.outcome = true;
        }
        self
    }
}

/// The [`ProxyError`] `e` is (as it is, or boxed), if any.
fn proxy_error<E: 'static>(e: &E) -> Option<&ProxyError> {
    let any: &dyn Any = e;
    any.downcast_ref::<ProxyError>().or_else(|| {
        any.downcast_ref::<BoxError>()
            .and_then(|b| b.downcast_ref::<ProxyError>())
    })
}

impl<B> Body for LeaseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(lease) = this.lease.as_ref() {
                    if let Some(data) = f.data_ref() {
                        lease.add_bytes_in(data.len() as u64);
                    }
                    // The last frame: the body will not be polled again.
                    if this.inner.is_end_stream() {
                        if *this.outcome {
                            lease.success();
                        }
                        this.lease.take();
                        this.permit.take();
                    }
                }
            }
            Some(Err(e)) => {
                let error = proxy_error(e);
                // The client's failure (its upload broke off while this body was read)
                // says nothing of the member.
                let members = !error.is_some_and(ProxyError::is_not_the_backends);
                if let (Some(lease), true, true) = (this.lease.take(), *this.outcome, members) {
                    match error {
                        Some(ProxyError::BodyTimeout(t)) => {
                            lease.failure(Failure::Timeout);
                            if *this.error_for_ms != NO_ERROR {
                                super::put_in_error(
                                    this.balancer.as_deref(),
                                    &lease,
                                    Duration::from_millis(u64::from(*this.error_for_ms)),
                                    &format!("response body stalled for {t:?}"),
                                );
                            } else {
                                tracing::warn!(
                                    "{}: response body stalled for {t:?}",
                                    super::MemberOf(this.balancer.as_deref(), &lease)
                                );
                            }
                        }
                        // A response the member cut off in its body: the client sees it
                        // end early, and the log says which member did it, as it does for
                        // a failure before the head (Apache logs "error reading response").
                        other => {
                            lease.failure(Failure::Other);
                            tracing::warn!(
                                "{}: response body failed: {}",
                                super::MemberOf(this.balancer.as_deref(), &lease),
                                other.map_or_else(|| "error".to_string(), ToString::to_string)
                            );
                        }
                    }
                }
                this.lease.take();
                this.permit.take();
            }
            None => {
                // End of body: the request is done.
                if let (Some(lease), true) = (this.lease.take(), *this.outcome) {
                    lease.success();
                }
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
