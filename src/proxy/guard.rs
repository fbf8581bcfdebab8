//! One guard per request: counts it, times it and logs it exactly once, whichever way the
//! request ends (answered, refused, upstream failure, or the client going away). With audit
//! on it also carries the request's audit record, submitted from the same place, once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::Auditor;
use crate::audit::record::{AuditOutcome, Draft};
use crate::metrics::{AnswerResult, Metrics, Op, Outcome};
use crate::otel::{Ending, RequestTrace};
use crate::proxy::tap::Seen;

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
    audit: Option<Box<(Arc<Auditor>, Draft)>>,
    /// What the answer tap read (error code, `isError`), for `answers_total` and the spans.
    seen: Seen,
    /// The request's spans, tracing on.
    trace: Option<Box<RequestTrace>>,
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
            audit: None,
            seen: Seen::default(),
            trace: None,
        }
    }

    /// Makes this request's spans end with it.
    pub fn trace(&mut self, trace: RequestTrace) {
        self.trace = Some(Box::new(trace));
    }

    /// The request's spans, tracing on.
    pub fn spans(&self) -> Option<&RequestTrace> {
        self.trace.as_deref()
    }

    pub fn spans_mut(&mut self) -> Option<&mut RequestTrace> {
        self.trace.as_deref_mut()
    }

    /// Makes this request's record, submitted when the guard drops.
    pub fn audit(&mut self, auditor: Arc<Auditor>, draft: Draft) {
        self.audit = Some(Box::new((auditor, draft)));
    }

    /// The record being gathered, when auditing.
    pub fn draft(&mut self) -> Option<&mut Draft> {
        self.audit.as_mut().map(|a| &mut a.1)
    }

    /// What the response body showed (tool result `isError`, JSON-RPC error code).
    pub fn seen(&mut self, seen: Seen) {
        self.seen = seen;
        if let Some(d) = self.draft() {
            d.is_error = seen.is_error.or(d.is_error);
            d.jsonrpc_error = d.jsonrpc_error.or(seen.error_code);
        }
    }

    /// Integrity findings in the answer.
    pub fn integrity(&mut self, notes: Vec<crate::integrity::Note>) {
        if let Some(d) = self.draft() {
            d.integrity.extend(notes);
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
        // A sampled trace explains the duration (the exemplar); tracing off, this is `None`.
        let sampled = self.trace.as_deref().and_then(|t| t.server.sampled_ids());
        self.metrics
            .count_request(self.op, outcome, observed, sampled);
        // An answer read to its end says whether the call worked.
        let answer = (self.outcome == Some(Outcome::Forwarded) && self.complete).then(|| {
            let r = AnswerResult::of(self.seen.error_code, self.seen.is_error, self.status);
            self.metrics.count_answer(self.op, r);
            r
        });
        self.metrics.bytes_out.inc_by(self.bytes_out);
        self.metrics.in_flight.dec();
        if self.sse {
            self.metrics.sse_open.dec();
        }
        if let Some(audit) = self.audit.take() {
            let (auditor, mut d) = *audit;
            d.status = self.status;
            d.latency_us = elapsed.as_micros() as u64;
            d.bytes_out = self.bytes_out;
            d.outcome = Some(match (self.outcome, self.complete) {
                (None, _) | (Some(Outcome::ClientGone), _) => AuditOutcome::ClientGone,
                (Some(Outcome::UpstreamError), _) => AuditOutcome::UpstreamError,
                (Some(Outcome::Rejected), _) => d.outcome.unwrap_or(AuditOutcome::Denied),
                (Some(Outcome::Forwarded), false) => AuditOutcome::ClientGone,
                (Some(Outcome::Forwarded), true) => AuditOutcome::Allowed,
            });
            // A tool result read to its end without `isError: true` and without an error.
            if d.outcome == Some(AuditOutcome::Allowed)
                && d.method.as_deref() == Some("tools/call")
                && d.jsonrpc_error.is_none()
                && (200..300).contains(&self.status)
            {
                d.is_error.get_or_insert(false);
            }
            auditor.submit(d);
        }
        let ids = self.trace.as_ref().map(|t| t.server.ids());
        if let Some(trace) = self.trace.take() {
            trace.end(&Ending {
                status: self.status,
                outcome,
                complete: self.complete,
                answer,
                error_code: self.seen.error_code,
            });
        }
        tracing::debug!(
            request = self.id,
            trace_id = ids.map(|i| tracing::field::display(i.0)),
            span_id = ids.map(|i| tracing::field::display(i.1)),
            method = self.op.as_str(),
            status = self.status,
            outcome = outcome.as_str(),
            duration_us = elapsed.as_micros() as u64,
            bytes_out = self.bytes_out,
            "request done"
        );
    }
}
