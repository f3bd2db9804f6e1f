//! The client's request body on its way upstream, watched: a malformed body (bad chunk framing)
//! or one that stops arriving for longer than the body-read timeout ends the upstream request
//! with an error (so the upstream connection is discarded, never reused with half a message),
//! and the handler learns it was the client's fault (400 / 408, not 502). It also tells the
//! handler when the body has been read to the end, so the upstream timeout counts from the
//! moment the request was sent rather than from its start. A request without a body is not
//! watched at all and costs nothing extra.
#![allow(clippy::disallowed_methods)] // the body-stall timer is reset per chunk: tokio's resettable Sleep, no allocation each time

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::Sleep;

/// What became of a watched body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// The client sent a body hyper could not parse (chunk framing, length mismatch).
    Malformed,
    /// The client stopped sending for longer than the body-read timeout.
    Stalled,
}

const READING: u8 = 0;
const DONE: u8 = 1;
const MALFORMED: u8 = 2;
const STALLED: u8 = 3;

/// Shared between the body (read by the upstream connection) and the handler.
#[derive(Debug, Default)]
pub struct BodyProgress {
    state: AtomicU8,
    frames: AtomicU64,
    finished: Notify,
}

impl BodyProgress {
    fn finish(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        // `notify_one` keeps a permit when nobody waits yet: the waiter cannot miss it.
        self.finished.notify_one();
    }

    /// Waits until the body was read to the end or failed.
    pub async fn finished(&self) {
        if self.state.load(Ordering::Acquire) == READING {
            self.finished.notified().await;
        }
    }

    /// Frames forwarded so far: a count that stops moving means the upstream stopped reading.
    pub fn progress_count(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }

    /// How the body failed, if it did.
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.state.load(Ordering::Acquire) {
            MALFORMED => Some(BodyFailure::Malformed),
            STALLED => Some(BodyFailure::Stalled),
            _ => None,
        }
    }
}

/// Why the body ended early (the error the upstream connection sees).
#[derive(Debug)]
pub struct ClientBodyError(BodyFailure);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            BodyFailure::Malformed => f.write_str("the client sent a malformed request body"),
            BodyFailure::Stalled => f.write_str("the client stopped sending its request body"),
        }
    }
}

impl std::error::Error for ClientBodyError {}

struct Watch {
    progress: Arc<BodyProgress>,
    stall: Pin<Box<Sleep>>,
    stall_after: Duration,
}

/// The request body forwarded upstream.
pub struct ClientBody {
    inner: Incoming,
    watch: Option<Watch>,
}

impl ClientBody {
    /// Wraps `inner`; a body that is already at its end is not watched (`None`).
    pub fn new(inner: Incoming, stall_after: Duration) -> (ClientBody, Option<Arc<BodyProgress>>) {
        if inner.is_end_stream() {
            return (ClientBody { inner, watch: None }, None);
        }
        let progress = Arc::new(BodyProgress::default());
        let watch = Watch { progress: progress.clone(), stall: Box::pin(tokio::time::sleep(stall_after)), stall_after };
        (ClientBody { inner, watch: Some(watch) }, Some(progress))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(w) = this.watch.as_mut() else {
            return polled.map_err(Into::into);
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                w.progress.frames.fetch_add(1, Ordering::AcqRel);
                if this.inner.is_end_stream() {
                    // The connection may not poll again once it knows the body is complete.
                    w.progress.finish(DONE);
                } else {
                    let deadline = tokio::time::Instant::now() + w.stall_after;
                    w.stall.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                w.progress.finish(DONE);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!("request body error: {e}");
                w.progress.finish(MALFORMED);
                Poll::Ready(Some(Err(Box::new(ClientBodyError(BodyFailure::Malformed)))))
            }
            Poll::Pending => match w.stall.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    w.progress.finish(STALLED);
                    Poll::Ready(Some(Err(Box::new(ClientBodyError(BodyFailure::Stalled)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        // The upstream stopped reading (it answered early, or the exchange failed): the handler
        // must not wait for a body nobody reads.
        if let Some(w) = &self.watch {
            if w.progress.state.load(Ordering::Acquire) == READING {
                w.progress.finish(DONE);
            }
        }
    }
}
