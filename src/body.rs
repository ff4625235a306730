//! Body: the one response body type every handler returns, and helpers to build it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of every handler: streamed upstream bodies and our own pages alike.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body from bytes held in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any streaming body (an upstream response) without buffering it.
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
