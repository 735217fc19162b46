//! Body plumbing between hyper and a component: small request bodies read
//! before the component runs, response bodies read into memory so the
//! instance is free before the durability wait, and a body that tells the
//! component's task when hyper is done with it.

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

/// The body type every response has on its way to hyper.
pub type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// A body of these bytes, all there.
pub(super) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Bodies up to this size whose length is declared are read before the
/// component runs.
const BUFFERED_BODY: u64 = 64 << 10;

/// Reads a small request body (an open's ticket, a wrap's terms) while the
/// connection's own task is running, so the component then finds it in
/// memory instead of waiting on hyper's body channel, a hand-off between two
/// tasks on every request that has a body. Larger or unsized bodies stream
/// to the component as they arrive. `None`: the client broke the body off.
pub(super) async fn buffer_small_body(request: hyper::Request<Incoming>) -> Option<hyper::Request<Body>> {
    let declared: Option<u64> =
        request.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let (parts, body) = request.into_parts();
    let body = match declared {
        _ if http_body::Body::is_end_stream(&body) => full(Bytes::new()),
        Some(n) if n <= BUFFERED_BODY => full(body.collect().await.ok()?.to_bytes()),
        _ => body.map_err(ErrorCode::from_hyper_request_error).boxed_unsync(),
    };
    Some(hyper::Request::from_parts(parts, body))
}

/// Response bodies up to this size are read into memory before the durability
/// wait; a larger one keeps its instance until hyper has sent the rest.
const BUFFERED_RESPONSE: usize = 1 << 20;

/// Reads a component's response body (every frame, trailers too) until it
/// ends or passes `BUFFERED_RESPONSE`, and answers a body that replays what
/// was read, then streams whatever is left.
pub(super) async fn read_response_body(mut body: Body) -> Result<Body> {
    let mut frames = VecDeque::new();
    let mut size = 0;
    while size <= BUFFERED_RESPONSE {
        match body.frame().await {
            None => return Ok(Replay { frames, rest: None }.boxed_unsync()),
            Some(Err(code)) => bail!("the component's response body broke off: {code:?}"),
            Some(Ok(frame)) => {
                size += frame.data_ref().map_or(0, |data| data.len());
                frames.push_back(frame);
            }
        }
    }
    Ok(Replay { frames, rest: Some(body) }.boxed_unsync())
}

/// Frames read ahead, then the rest of the body (if any).
struct Replay {
    frames: VecDeque<http_body::Frame<Bytes>>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let read: u64 = self.frames.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
        match &self.rest {
            None => http_body::SizeHint::with_exact(read),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = http_body::SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint.set_lower(rest.lower() + read);
                hint
            }
        }
    }
}

/// `body`, which drops `done` when hyper is done with it.
pub(super) fn notify_on_drop(body: Body, done: oneshot::Sender<()>) -> Body {
    NotifyOnDrop { body, _done: done }.boxed_unsync()
}

/// A response body that tells the component task when hyper is done with it.
struct NotifyOnDrop {
    body: Body,
    _done: oneshot::Sender<()>,
}

impl http_body::Body for NotifyOnDrop {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
