//! The response body the sentinel sends: a denial, or the upstream's body passed through frame
//! by frame (never buffered). It carries the request's guard, so the request is counted and
//! logged exactly once, when the body ends or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::guard::RequestGuard;
use super::rewrite::Rewriter;
use super::tap::TaskTap;
use super::upstream::Lease;
use crate::ratelimit::concurrency::Permits;

pub struct ProxyBody {
    inner: Inner,
    guard: Option<RequestGuard>,
    /// Sees the body as it passes (task handles of `tools/call` answers).
    tap: Option<Box<TaskTap>>,
    /// Concurrency-limit slots, returned when the body ends (or is dropped).
    permits: Option<Permits>,
}

enum Inner {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        /// Resolves when open SSE streams must close (shutdown grace over).
        close: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        /// The upstream connection, returned to the pool when the body ends cleanly.
        lease: Lease,
    },
    /// Another body with a per-message edit applied (list filtering, blocked server requests).
    Rewrite {
        source: Box<Inner>,
        rewriter: Box<Rewriter>,
        done: bool,
    },
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn full(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Full(if bytes.is_empty() { None } else { Some(bytes) }),
            guard: None,
            tap: None,
            permits: None,
        }
    }

    pub fn upstream(
        body: Incoming,
        close: Option<WaitForCancellationFutureOwned>,
        lease: Lease,
    ) -> Self {
        let mut lease = lease;
        // hyper never polls a body that is already at its end (a 202 with no content, say):
        // the connection is free now.
        if body.is_end_stream() {
            lease.release();
        }
        Self {
            inner: Inner::Upstream {
                body,
                close: close.map(Box::pin),
                lease,
            },
            guard: None,
            tap: None,
            permits: None,
        }
    }

    /// Edits the body message by message. The length changes, so the caller drops any
    /// `Content-Length` of the response.
    pub fn with_rewriter(mut self, rewriter: Rewriter) -> Self {
        let source = std::mem::replace(&mut self.inner, Inner::Full(None));
        self.inner = Inner::Rewrite {
            source: Box::new(source),
            rewriter: Box::new(rewriter),
            done: false,
        };
        self
    }

    pub fn with_tap(mut self, tap: TaskTap) -> Self {
        self.tap = Some(Box::new(tap));
        self
    }

    pub fn with_permits(mut self, permits: Permits) -> Self {
        if !self.is_end_stream() {
            self.permits = Some(permits);
        }
        self
    }

    pub fn with_guard(mut self, mut guard: RequestGuard) -> Self {
        // Likewise: an empty body is complete without ever being polled.
        if self.is_end_stream() {
            guard.complete();
        }
        self.guard = Some(guard);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let item = ready!(this.inner.poll_source(cx));
        if let (Inner::Rewrite { rewriter, .. }, Some(guard)) = (&mut this.inner, &mut this.guard) {
            let notes = rewriter.take_notes();
            if !notes.is_empty() {
                guard.integrity(notes);
            }
        }
        if let (Some(tap), Some(Ok(frame))) = (&mut this.tap, &item)
            && let Some(data) = frame.data_ref()
        {
            tap.feed(data);
            if let Some(guard) = &mut this.guard {
                guard.seen(tap.seen);
            }
        }
        let ended = match &item {
            Some(Ok(_)) => this.is_end_stream(),
            None => true,
            Some(Err(_)) => false,
        };
        if ended && let Some(tap) = &mut this.tap {
            // A last event closed by a bare CR is complete only now.
            tap.finish();
            if let Some(guard) = &mut this.guard {
                guard.seen(tap.seen);
            }
        }
        if ended {
            this.permits = None;
        }
        if let Some(guard) = &mut this.guard {
            match &item {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        guard.add_bytes_out(data.len());
                    }
                    // A body of known length is not polled again after its last frame.
                    if ended {
                        guard.complete();
                    }
                }
                Some(Err(_)) => guard.upstream_broke(),
                None => guard.complete(),
            }
        }
        Poll::Ready(item)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream {
                body, close: None, ..
            } => body.size_hint(),
            Inner::Upstream { .. } | Inner::Rewrite { .. } => SizeHint::default(),
        }
    }
}

impl Inner {
    /// The next frame of the body. The upstream connection is released when its body ends
    /// cleanly; a body cut short by shutdown ends for the client, but its connection is not
    /// reusable, so its lease is dropped (closing it), not released.
    fn poll_source(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream { body, close, lease } => {
                if close
                    .as_mut()
                    .is_some_and(|c| c.as_mut().poll(cx).is_ready())
                {
                    return Poll::Ready(None);
                }
                // The upstream connection feeds this body: drive it first.
                lease.poll_conn(cx);
                let item = ready!(Pin::new(&mut *body).poll_frame(cx));
                let ended = match &item {
                    Some(Ok(_)) => body.is_end_stream(),
                    None => true,
                    Some(Err(_)) => false,
                };
                if ended {
                    lease.release();
                }
                Poll::Ready(item)
            }
            Inner::Rewrite {
                source,
                rewriter,
                done,
            } => loop {
                if *done {
                    return Poll::Ready(None);
                }
                match ready!(source.poll_source(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            let out = rewriter.feed(&data);
                            if !out.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                        }
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => {
                        *done = true;
                        let out = rewriter.finish();
                        return Poll::Ready((!out.is_empty()).then(|| Ok(Frame::data(out))));
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Rewrite { done, .. } => *done,
        }
    }
}
