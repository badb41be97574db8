//! Body types shared by the services: a streaming body that carries hyper's own body and
//! short generated bodies as they are, and boxes anything else.

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::body::Incoming;

use crate::BoxError;

/// The body type the proxy forwards and returns: a stream of [`Bytes`] frames. Nothing is
/// buffered whole.
///
/// Bodies received by hyper (the common case: a client's request, a backend's response) and
/// generated ones are held as they are; other bodies are boxed. Wrapping a `ProxyBody` in
/// another through [`boxed`] returns it unchanged, so layers can convert freely without
/// stacking boxes.
#[derive(Debug)]
pub struct ProxyBody(Kind);

#[derive(Debug)]
enum Kind {
    /// A body read by hyper.
    Incoming(Incoming),
    /// A backend's response body on a pooled connection (hyper's client: bodies and
    /// upgrades, the rarer case). Boxed so that it does not set the size of every body.
    Pooled(Box<crate::proxy::pool::PooledBody>),
    /// A backend's response body read straight from its connection.
    Direct(crate::proxy::h1::DirectBody),
    /// A complete body (possibly empty) not yet sent.
    Full(Option<Bytes>),
    /// Anything else.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

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
        match &mut self.0 {
            Kind::Incoming(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Kind::Pooled(b) => Pin::new(b.as_mut()).poll_frame(cx),
            Kind::Direct(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Kind::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Incoming(b) => b.is_end_stream(),
            Kind::Pooled(b) => b.is_end_stream(),
            Kind::Direct(b) => b.is_end_stream(),
            Kind::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Incoming(b) => b.size_hint(),
            Kind::Pooled(b) => b.size_hint(),
            Kind::Direct(b) => b.size_hint(),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

/// Turns any body into a [`ProxyBody`]: a `ProxyBody` is returned as it is, hyper's
/// [`Incoming`] is held without a box, anything else is boxed.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    let any: &mut dyn Any = &mut slot;
    if let Some(b) = any.downcast_mut::<Option<ProxyBody>>() {
        if let Some(b) = b.take() {
            return b;
        }
    }
    if let Some(b) = any.downcast_mut::<Option<Incoming>>() {
        if let Some(b) = b.take() {
            return ProxyBody(Kind::Incoming(b));
        }
    }
    match slot {
        Some(body) => ProxyBody(Kind::Boxed(body.map_err(Into::into).boxed_unsync())),
        None => empty(),
    }
}

/// A body read by hyper, unboxed.
pub(crate) fn incoming(body: Incoming) -> ProxyBody {
    ProxyBody(Kind::Incoming(body))
}

/// A backend's response body on a pooled connection, unboxed.
pub(crate) fn pooled(body: crate::proxy::pool::PooledBody) -> ProxyBody {
    ProxyBody(Kind::Pooled(Box::new(body)))
}

/// A backend's response body read straight from its connection, unboxed.
pub(crate) fn direct(body: crate::proxy::h1::DirectBody) -> ProxyBody {
    ProxyBody(Kind::Direct(body))
}

/// A complete body from bytes (for generated responses).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody(Kind::Full(Some(bytes.into())))
}

/// An empty body.
pub fn empty() -> ProxyBody {
    ProxyBody(Kind::Full(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn boxing_keeps_frames_and_does_not_nest() {
        let b = boxed(boxed(full("abc")));
        assert!(matches!(b.0, Kind::Full(_)));
        assert_eq!(b.size_hint().exact(), Some(3));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abc");

        let e = empty();
        assert!(e.is_end_stream());
        assert_eq!(e.collect().await.unwrap().to_bytes(), "");

        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from("x"))),
            Ok(Frame::data(Bytes::from("yz"))),
        ]);
        let s = boxed(StreamBody::new(chunks));
        assert!(matches!(s.0, Kind::Boxed(_)));
        let s = boxed(s);
        assert!(matches!(s.0, Kind::Boxed(_)));
        assert_eq!(s.collect().await.unwrap().to_bytes(), "xyz");

        let f = boxed(Full::new(Bytes::from("q")));
        assert_eq!(f.collect().await.unwrap().to_bytes(), "q");
    }
}
