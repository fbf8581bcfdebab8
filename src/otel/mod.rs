//! OpenTelemetry tracing: the W3C trace context and baggage a request arrives with (headers,
//! or the body's `params._meta`), the spans the sentinel makes of it, and their export over
//! OTLP. Built only when the `tracing` section (or `OTEL_*`) turns it on: off, nothing here
//! runs. Spans are made with the OpenTelemetry API directly, so a request the sampler drops
//! costs a sampler call and two ids, no attribute is built for it.

pub mod export;
pub mod meta;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer, TracerProvider,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SdkTracer, SpanData, SpanEvents, SpanLinks,
};

use crate::config::otel::TraceSettings;
use crate::metrics::TraceCounters;
pub use meta::MetaTrace;

/// The instrumentation scope every span of the sentinel's is in.
const SCOPE: &str = "mcp-sentinel";

/// The tracer and what turns trace context into headers and back.
pub struct Otel {
    tracer: SdkTracer,
    /// Ids and scope for the spans below a server span ([`Child`]).
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    /// traceparent/tracestate and baggage.
    propagator: TextMapCompositePropagator,
    /// traceparent/tracestate alone, for the body's `_meta`.
    trace_context: TraceContextPropagator,
    export: export::Export,
}

impl Otel {
    pub fn start(settings: &TraceSettings, counters: TraceCounters) -> Result<Self, String> {
        let export = export::Export::start(settings, counters)?;
        let tracer = export.provider.tracer(SCOPE);
        Ok(Self {
            tracer,
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder(SCOPE).build(),
            propagator: TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]),
            trace_context: TraceContextPropagator::new(),
            export,
        })
    }

    /// Sends the spans still queued, within `deadline`, off the async threads (the SDK blocks
    /// while it flushes).
    pub async fn shutdown(&self, deadline: Duration) {
        let provider = self.export.provider.clone();
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(deadline)).await;
        if let Ok(Err(e)) = done {
            tracing::debug!(error = %e, "trace export shutdown");
        }
    }

    /// The caller's context: the headers' trace context and baggage, with the body's
    /// `_meta.traceparent` winning over the header when it is a valid one (it is the context of
    /// the MCP call itself, set by the client's MCP instrumentation).
    pub fn parent(&self, headers: &http::HeaderMap, meta: Option<&MetaTrace>) -> Context {
        let cx = self
            .propagator
            .extract_with_context(&Context::new(), &HeaderExtract(headers));
        match meta {
            Some(m) => self.trace_context.extract_with_context(&cx, m),
            None => cx,
        }
    }

    /// Starts a span under `parent`, at `start`. Attributes are for the sampler and are built
    /// only by callers that know the span will record (see [`Span::recording`]).
    pub fn span(
        &self,
        parent: &Context,
        name: Cow<'static, str>,
        kind: SpanKind,
        start: SystemTime,
    ) -> Span {
        let builder = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start);
        let span = self.tracer.build_with_context(builder, parent);
        let recording = opentelemetry::trace::Span::is_recording(&span);
        Span {
            cx: parent.with_span(span),
            recording,
        }
    }

    /// A span under `parent` (which must be recording) from `start`: a check's, or the
    /// upstream call's. It is made and recorded straight into the export queue — no context,
    /// no lock, no second sampling (the SDK's samplers keep every child of a kept span) — and
    /// ends when [`Child::end_at`] says or when dropped.
    pub fn child(
        &self,
        parent: &Span,
        name: Cow<'static, str>,
        kind: SpanKind,
        start: SystemTime,
    ) -> Child {
        let parent_span = parent.cx.span();
        let psc = parent_span.span_context();
        let span_context = SpanContext::new(
            psc.trace_id(),
            self.ids.new_span_id(),
            psc.trace_flags(),
            false,
            psc.trace_state().clone(),
        );
        Child {
            data: Some(SpanData {
                span_context,
                parent_span_id: psc.span_id(),
                parent_span_is_remote: false,
                span_kind: kind,
                name,
                start_time: start,
                end_time: start,
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: self.scope.clone(),
            }),
            queue: self.export.queue(),
        }
    }

    /// Writes `cx` as `traceparent`/`tracestate` (and its baggage) into `headers`, replacing
    /// what the client sent.
    pub fn inject(&self, cx: &Context, headers: &mut http::HeaderMap) {
        for name in [TRACEPARENT, TRACESTATE, BAGGAGE] {
            headers.remove(name);
        }
        self.propagator
            .inject_context(cx, &mut HeaderInject(headers));
    }
}

/// One span and the context it makes (baggage included) for its children and the upstream.
pub struct Span {
    cx: Context,
    /// Kept by the sampler (read once: the SDK answers it under a lock).
    recording: bool,
}

impl Span {
    pub fn context(&self) -> &Context {
        &self.cx
    }

    pub fn ids(&self) -> (TraceId, SpanId) {
        let span = self.cx.span();
        let sc = span.span_context();
        (sc.trace_id(), sc.span_id())
    }

    /// The ids, when the sampler kept the span (for an exemplar: a trace that can be found).
    pub fn sampled_ids(&self) -> Option<(TraceId, SpanId)> {
        self.recording().then(|| self.ids())
    }

    /// The sampler kept it: worth building attributes for.
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// The context to propagate for `child`: its ids, with this span's baggage.
    pub fn context_of(&self, child: &Child) -> Context {
        match &child.data {
            Some(d) => self.cx.with_remote_span_context(d.span_context.clone()),
            None => self.cx.clone(),
        }
    }

    /// Names the span (once the sampler kept it: a dropped span's name is never read).
    pub fn rename(&self, name: Cow<'static, str>) {
        self.cx.span().update_name(name);
    }

    pub fn set(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// Marks the span failed: `error.type` (a word from a closed set) and the status.
    pub fn fail(&self, error_type: impl Into<opentelemetry::Value>, description: String) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", error_type));
        span.set_status(Status::error(description));
    }

    pub fn end_at(&self, at: SystemTime) {
        self.cx.span().end_with_timestamp(at);
    }

    pub fn end(&self) {
        self.cx.span().end();
    }

    /// The W3C `traceparent` of this span.
    pub fn traceparent(&self) -> String {
        traceparent(self.cx.span().span_context())
    }
}

/// The W3C `traceparent` of a span context.
fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// A span below the server span, recorded directly (see [`Otel::child`]).
pub struct Child {
    /// `None` once recorded.
    data: Option<SpanData>,
    queue: export::Queue,
}

impl Child {
    pub fn set(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(d) = &mut self.data {
            d.attributes.extend(attributes);
        }
    }

    /// Marks the span failed: `error.type` (a word from a closed set) and the status.
    pub fn fail(&mut self, error_type: impl Into<opentelemetry::Value>, description: String) {
        if let Some(d) = &mut self.data {
            d.attributes.push(KeyValue::new("error.type", error_type));
            d.status = Status::error(description);
        }
    }

    /// The W3C `traceparent` of this span (`None` once ended).
    pub fn traceparent(&self) -> Option<String> {
        self.data.as_ref().map(|d| traceparent(&d.span_context))
    }

    pub fn end_at(mut self, at: SystemTime) {
        self.record(at);
    }

    fn record(&mut self, at: SystemTime) {
        if let Some(mut d) = self.data.take() {
            d.end_time = at;
            self.queue.push(d);
        }
    }
}

impl Drop for Child {
    /// Like an SDK span, a child dropped unended ends where it is dropped.
    fn drop(&mut self) {
        self.record(SystemTime::now());
    }
}

struct HeaderExtract<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInject<'a>(&'a mut http::HeaderMap);

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

impl Injector for HeaderInject<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing (W3C: it may be left out).
        if value.is_empty() {
            return;
        }
        let name = match key {
            "traceparent" => TRACEPARENT,
            "tracestate" => TRACESTATE,
            "baggage" => BAGGAGE,
            other => match http::HeaderName::from_bytes(other.as_bytes()) {
                Ok(n) => n,
                Err(_) => return,
            },
        };
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            self.0.insert(name, value);
        }
    }
}

impl Extractor for MetaTrace {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(&self.traceparent),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// A request's spans: the sentinel's server span, and the upstream call's (a client span)
/// while the answer streams. Both end when the response body ends or is dropped.
pub struct RequestTrace {
    pub server: Span,
    pub upstream: Option<Child>,
}

/// How a request ended, for its spans.
pub struct Ending {
    pub status: u16,
    pub outcome: crate::metrics::Outcome,
    /// The body reached its end.
    pub complete: bool,
    /// What the answer said, when it was forwarded and read to its end.
    pub answer: Option<crate::metrics::AnswerResult>,
    pub error_code: Option<i64>,
}

impl RequestTrace {
    /// Notes how the request ended and ends its spans.
    pub fn end(self, e: &Ending) {
        use crate::metrics::{AnswerResult, Outcome};
        let server = &self.server;
        if server.recording() {
            server.set([KeyValue::new(
                "http.response.status_code",
                i64::from(e.status),
            )]);
            if let Some(code) = e.error_code {
                server.set([KeyValue::new("rpc.response.status_code", code.to_string())]);
            }
        }
        // What failed, as the MCP conventions classify it for a server: internal and server
        // errors, and tool results with `isError`; a client's error (invalid params, say)
        // keeps its code but not an error status. Refusals were marked when refused.
        let failure = match (e.outcome, e.answer) {
            (Outcome::UpstreamError, _) => Some(("upstream_error".to_string(), "upstream failed")),
            (Outcome::Forwarded, Some(AnswerResult::ToolError)) => {
                Some(("tool_error".to_string(), "tool result with isError"))
            }
            (Outcome::Forwarded, Some(AnswerResult::InternalError | AnswerResult::ServerError)) => {
                Some((
                    e.error_code.map_or("_OTHER".into(), |c| c.to_string()),
                    "JSON-RPC error",
                ))
            }
            (Outcome::Forwarded, Some(AnswerResult::HttpError)) => {
                Some((e.status.to_string(), "upstream HTTP error"))
            }
            (Outcome::Forwarded, Some(r)) if !r.is_ok() => {
                if server.recording() {
                    server.set([KeyValue::new(
                        "error.type",
                        e.error_code.map_or("_OTHER".into(), |c| c.to_string()),
                    )]);
                }
                None
            }
            // The caller left (a modern client cancels by closing its stream): noted, not
            // an error of the server's.
            (Outcome::ClientGone, _) | (Outcome::Forwarded, _) if !e.complete => {
                if server.recording() {
                    server.set([KeyValue::new("mcp_sentinel.client_gone", true)]);
                }
                None
            }
            _ => None,
        };
        let now = SystemTime::now();
        if let Some(mut up) = self.upstream {
            if let Some((kind, why)) = &failure {
                up.fail(kind.clone(), (*why).to_string());
            }
            up.end_at(now);
        }
        if let Some((kind, why)) = failure {
            server.fail(kind, why.to_string());
        }
        server.end_at(now);
    }
}
