//! Body types shared by the services: a boxed streaming body and helpers for short
//! generated responses.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

use crate::BoxError;

/// The body type the proxy forwards and returns: a boxed stream of [`Bytes`] frames.
/// Nothing is buffered whole.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A complete body from bytes (for generated responses).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}
