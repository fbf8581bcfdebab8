//! One guard per request: counts it, times it and logs it exactly once, whichever way the
//! request ends (answered, refused, upstream failure, or the client going away).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, Op, Outcome};

pub struct RequestGuard {
    metrics: Arc<Metrics>,
    id: u64,
    started: Instant,
    op: Op,
    status: u16,
    /// How the request ended; `None` until the response head is decided, so a guard dropped
    /// before that means the client went away first.
    outcome: Option<Outcome>,
    /// The response body reached its end.
    complete: bool,
    sse: bool,
    /// Time to the response head, recorded for SSE streams.
    head: Option<Duration>,
    bytes_out: u64,
}

impl RequestGuard {
    pub fn new(metrics: Arc<Metrics>, id: u64, started: Instant) -> Self {
        metrics.in_flight.inc();
        Self {
            metrics,
            id,
            started,
            op: Op::Invalid,
            status: 0,
            outcome: None,
            complete: false,
            sse: false,
            head: None,
            bytes_out: 0,
        }
    }

    pub fn set_op(&mut self, op: Op) {
        self.op = op;
    }

    /// The response head is decided.
    pub fn respond(&mut self, status: u16, outcome: Outcome, sse: bool) {
        self.status = status;
        self.outcome = Some(outcome);
        if sse {
            self.sse = true;
            self.head = Some(self.started.elapsed());
            self.metrics.sse_open.inc();
        }
    }

    pub fn add_bytes_out(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    pub fn complete(&mut self) {
        self.complete = true;
    }

    pub fn upstream_broke(&mut self) {
        self.outcome = Some(Outcome::UpstreamError);
        self.complete = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::ClientGone);
        match (self.outcome, self.complete) {
            (None, _) => self.metrics.client_disconnects[0].inc(),
            (Some(_), false) => self.metrics.client_disconnects[1].inc(),
            (Some(_), true) => {}
        }
        let elapsed = self.started.elapsed();
        let observed = if self.sse { self.head } else { Some(elapsed) };
        self.metrics.count_request(self.op, outcome, observed);
        self.metrics.bytes_out.inc_by(self.bytes_out);
        self.metrics.in_flight.dec();
        if self.sse {
            self.metrics.sse_open.dec();
        }
        tracing::debug!(
            request = self.id,
            method = self.op.as_str(),
            status = self.status,
            outcome = outcome.as_str(),
            duration_us = elapsed.as_micros() as u64,
            bytes_out = self.bytes_out,
            "request done"
        );
    }
}
