//! Body types shared by the services: a boxed streaming body and helpers for short
//! generated responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

use crate::BoxError;

/// The body type the proxy forwards and returns: a boxed stream of [`Bytes`] frames.
/// Nothing is buffered whole.
#[derive(Debug)]
pub struct ProxyBody(UnsyncBoxBody<Bytes, BoxError>);

impl Default for ProxyBody {
    fn default() -> Self {
        empty()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Boxes any body into a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    ProxyBody(body.map_err(Into::into).boxed_unsync())
}

/// A complete body from bytes (for generated responses).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody(
        Full::new(bytes.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}
