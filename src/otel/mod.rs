//! OpenTelemetry tracing: the W3C trace context and baggage a request arrives with (headers,
//! or the body's `params._meta`), the spans the sentinel makes of it, and their export over
//! OTLP. Built only when the `tracing` section (or `OTEL_*`) turns it on: off, nothing here
//! runs. The SDK's sampler decides once per request; only a span it keeps gets a record (the
//! SDK's `SpanData`, handed to its batch processor), so a request it drops costs the decision,
//! two ids and the `traceparent` written upstream: no span object, context, lock or attribute.

pub mod export;
pub mod meta;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents,
    SpanLinks,
};

use crate::config::otel::TraceSettings;
use crate::metrics::TraceCounters;
pub use meta::MetaTrace;

/// The instrumentation scope every span of the sentinel's is in.
const SCOPE: &str = "mcp-sentinel";

/// The sampler, the ids and the propagators; spans go to the export queue.
pub struct Otel {
    /// The configured sampler (the SDK's), asked once per request.
    sampler: Sampler,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    /// traceparent/tracestate, read from the headers and from the body's `_meta`.
    trace_context: TraceContextPropagator,
    baggage: BaggagePropagator,
    export: export::Export,
    /// Set when shutdown begins: from then on no span is made (as the SDK's tracer does once its
    /// provider is shut down), so nothing is queued for a processor that has stopped.
    shut: AtomicBool,
}

impl Otel {
    pub fn start(settings: &TraceSettings, counters: TraceCounters) -> Result<Self, String> {
        let export = export::Export::start(settings, counters)?;
        Ok(Self {
            sampler: export::sampler(settings),
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder(SCOPE).build(),
            trace_context: TraceContextPropagator::new(),
            baggage: BaggagePropagator::new(),
            export,
            shut: AtomicBool::new(false),
        })
    }

    /// Sends the spans still queued, within `deadline`, off the async threads (the SDK blocks
    /// while it flushes).
    pub async fn shutdown(&self, deadline: Duration) {
        self.shut.store(true, Ordering::Release);
        let provider = self.export.provider.clone();
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(deadline)).await;
        if let Ok(Err(e)) = done {
            tracing::debug!(error = %e, "trace export shutdown");
        }
    }

    /// The caller's context: the headers' trace context and baggage, with the body's
    /// `_meta.traceparent` winning over the header when it is a valid one (it is the context of
    /// the MCP call itself, set by the client's MCP instrumentation). The caller's
    /// `traceparent`, `tracestate` and `baggage` leave `headers` here: what the upstream gets is
    /// what [`Otel::inject`] writes.
    pub fn parent(&self, headers: &mut http::HeaderMap, meta: Option<&MetaTrace>) -> Context {
        let taken = Taken {
            traceparent: headers.remove(TRACEPARENT),
            tracestate: headers.remove(TRACESTATE),
            baggage: headers.remove(BAGGAGE),
        };
        let mut cx = Context::new();
        if taken.traceparent.is_some() {
            cx = self.trace_context.extract_with_context(&cx, &taken);
        }
        if taken.baggage.is_some() {
            cx = self.baggage.extract_with_context(&cx, &taken);
        }
        match meta {
            Some(m) => self.trace_context.extract_with_context(&cx, m),
            None => cx,
        }
    }

    /// The server span under `parent` (the caller's context), from `start`: the sampler
    /// decides as the SDK's tracer would (a span id, the parent's trace id or a new one, the
    /// parent's flags), and only a kept span gets a record — named `mcp` until
    /// [`Span::rename`], attributes added by callers that know it records
    /// ([`Span::recording`]).
    pub fn span(&self, parent: Context, kind: SpanKind, started: Instant) -> Span {
        if self.shut.load(Ordering::Acquire) {
            return Span {
                sc: SpanContext::empty_context(),
                parent,
                record: Child { record: None },
            };
        }
        // What the parent gives, read out so the context moves into the span without a copy
        // of its trace state.
        let (valid, parent_trace, parent_flags, parent_id, parent_remote) = {
            let p = parent.span();
            let c = p.span_context();
            (
                c.is_valid(),
                c.trace_id(),
                c.trace_flags(),
                c.span_id(),
                c.is_remote(),
            )
        };
        let span_id = self.ids.new_span_id();
        let trace_id = if valid {
            parent_trace
        } else {
            self.ids.new_trace_id()
        };
        let name = Cow::Borrowed("mcp");
        let verdict = self
            .sampler
            .should_sample(Some(&parent), trace_id, &name, &kind, &[], &[]);
        let base = if valid {
            parent_flags
        } else {
            TraceFlags::default()
        };
        let (flags, record) = match verdict.decision {
            SamplingDecision::RecordAndSample => (base.with_sampled(true), true),
            SamplingDecision::RecordOnly => (base.with_sampled(false), true),
            SamplingDecision::Drop => (TraceFlags::default(), false),
        };
        let sc = SpanContext::new(trace_id, span_id, flags, false, verdict.trace_state);
        let record = record.then(|| {
            // The wall clock is read only for a kept span.
            let now = SystemTime::now();
            let start = now.checked_sub(started.elapsed()).unwrap_or(now);
            let mut data = self.data(sc.clone(), parent_id, kind, name, start);
            data.parent_span_is_remote = parent_remote;
            data.attributes = verdict.attributes;
            Box::new(Record {
                data,
                queue: self.export.queue(),
            })
        });
        Span {
            sc,
            parent,
            record: Child { record },
        }
    }

    /// A span under `parent` (which must be recording) from `start`: a check's, or the
    /// upstream call's. The SDK's samplers keep every child of a kept span, so it is not
    /// sampled again; it goes to the export queue when [`Child::end_at`] says or when dropped.
    pub fn child(
        &self,
        parent: &Span,
        name: Cow<'static, str>,
        kind: SpanKind,
        start: SystemTime,
    ) -> Child {
        let psc = &parent.sc;
        let span_context = SpanContext::new(
            psc.trace_id(),
            self.ids.new_span_id(),
            psc.trace_flags(),
            false,
            psc.trace_state().clone(),
        );
        Child {
            record: parent.recording().then(|| {
                Box::new(Record {
                    data: self.data(span_context, psc.span_id(), kind, name, start),
                    queue: self.export.queue(),
                })
            }),
        }
    }

    fn data(
        &self,
        span_context: SpanContext,
        parent_span_id: SpanId,
        kind: SpanKind,
        name: Cow<'static, str>,
        start: SystemTime,
    ) -> SpanData {
        SpanData {
            span_context,
            parent_span_id,
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
        }
    }

    /// Writes the context of `span` — or of `child`, its upstream call's span, when that one
    /// records — as `traceparent` (and `tracestate`), and the caller's baggage, into
    /// `headers`, which [`Otel::parent`] cleared of the client's.
    pub fn inject(&self, span: &Span, child: Option<&Child>, headers: &mut http::HeaderMap) {
        if let Some(sc) = span.upstream_context(child) {
            if let Some(v) = traceparent(sc).header() {
                headers.insert(TRACEPARENT, v);
            }
            let state = sc.trace_state().header();
            if !state.is_empty()
                && let Ok(v) = http::HeaderValue::from_str(&state)
            {
                headers.insert(TRACESTATE, v);
            }
        }
        if !span.parent.baggage().is_empty() {
            self.baggage
                .inject_context(&span.parent, &mut HeaderInject(headers));
        }
    }
}

/// A server span: its context, the caller's (for baggage), and its record while it is open,
/// when the sampler kept it.
pub struct Span {
    sc: SpanContext,
    parent: Context,
    record: Child,
}

impl Span {
    pub fn ids(&self) -> (TraceId, SpanId) {
        (self.sc.trace_id(), self.sc.span_id())
    }

    /// When the span started, when the sampler kept it.
    pub fn start_time(&self) -> Option<SystemTime> {
        self.record.record.as_ref().map(|r| r.data.start_time)
    }

    /// The ids, when the sampler kept the span (for an exemplar: a trace that can be found).
    pub fn sampled_ids(&self) -> Option<(TraceId, SpanId)> {
        self.recording().then(|| self.ids())
    }

    /// The sampler kept it: worth building attributes for.
    pub fn recording(&self) -> bool {
        self.record.record.is_some()
    }

    /// Names the span (once the sampler kept it: a dropped span's name is never read).
    pub fn rename(&mut self, name: Cow<'static, str>) {
        if let Some(r) = &mut self.record.record {
            r.data.name = name;
        }
    }

    pub fn set(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.record.set(attributes);
    }

    /// Marks the span failed: `error.type` (a word from a closed set) and the status.
    pub fn fail(&mut self, error_type: impl Into<opentelemetry::Value>, description: String) {
        self.record.fail(error_type, description);
    }

    pub fn end_at(self, at: SystemTime) {
        self.record.end_at(at);
    }

    /// The context the upstream gets: `child`'s (the upstream call's span) when it records,
    /// else this span's; none once shut down (the SDK's propagator writes none for an invalid
    /// context).
    fn upstream_context<'a>(&'a self, child: Option<&'a Child>) -> Option<&'a SpanContext> {
        let sc = child.and_then(Child::span_context).unwrap_or(&self.sc);
        sc.is_valid().then_some(sc)
    }

    /// The W3C `traceparent` [`Otel::inject`] writes for this span and `child`, for the body's
    /// `_meta`.
    pub fn upstream_traceparent(&self, child: Option<&Child>) -> Option<String> {
        self.upstream_context(child)
            .map(|sc| traceparent(sc).into_string())
    }
}

/// A `traceparent` value, `00-{trace id}-{span id}-{flags}`: 55 ASCII characters.
struct Traceparent([u8; 55]);

impl Traceparent {
    fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn header(&self) -> Option<http::HeaderValue> {
        http::HeaderValue::from_bytes(&self.0).ok()
    }

    fn into_string(self) -> String {
        self.as_str().to_owned()
    }
}

/// The W3C `traceparent` of a span context (version 00; of the flags, only `sampled`), as the
/// SDK's `TraceContextPropagator` writes it, without the formatting machinery: this runs for
/// every request, sampled or not.
fn traceparent(sc: &SpanContext) -> Traceparent {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let mut put = |at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[usize::from(b >> 4)];
            out[at + 2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
    };
    put(3, &sc.trace_id().to_bytes());
    put(36, &sc.span_id().to_bytes());
    put(
        53,
        &[sc.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()],
    );
    Traceparent(out)
}

/// A span below the server span (or the server span's own record): `None` when the sampler
/// dropped the trace, or once recorded. Boxed: a dropped request moves only a pointer.
pub struct Child {
    record: Option<Box<Record>>,
}

/// A kept span's record while it is open, and the queue it goes to when it ends.
struct Record {
    data: SpanData,
    queue: export::Queue,
}

impl Child {
    pub fn set(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(r) = &mut self.record {
            r.data.attributes.extend(attributes);
        }
    }

    /// Marks the span failed: `error.type` (a word from a closed set) and the status.
    pub fn fail(&mut self, error_type: impl Into<opentelemetry::Value>, description: String) {
        if let Some(r) = &mut self.record {
            r.data
                .attributes
                .push(KeyValue::new("error.type", error_type));
            r.data.status = Status::error(description);
        }
    }

    fn span_context(&self) -> Option<&SpanContext> {
        self.record.as_ref().map(|r| &r.data.span_context)
    }

    pub fn end_at(mut self, at: SystemTime) {
        self.record(at);
    }

    fn record(&mut self, at: SystemTime) {
        if let Some(r) = self.record.take() {
            let Record { mut data, queue } = *r;
            data.end_time = at;
            queue.push(data);
        }
    }
}

impl Drop for Child {
    /// Like an SDK span, a span dropped unended ends where it is dropped.
    fn drop(&mut self) {
        self.record(SystemTime::now());
    }
}

/// The caller's trace headers, taken out of the request by [`Otel::parent`].
struct Taken {
    traceparent: Option<http::HeaderValue>,
    tracestate: Option<http::HeaderValue>,
    baggage: Option<http::HeaderValue>,
}

impl Taken {
    fn value(&self, key: &str) -> Option<&http::HeaderValue> {
        match key {
            "traceparent" => self.traceparent.as_ref(),
            "tracestate" => self.tracestate.as_ref(),
            "baggage" => self.baggage.as_ref(),
            _ => None,
        }
    }
}

impl Extractor for Taken {
    fn get(&self, key: &str) -> Option<&str> {
        self.value(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        ["traceparent", "tracestate", "baggage"]
            .into_iter()
            .filter(|k| self.value(k).is_some())
            .collect()
    }
}

struct HeaderInject<'a>(&'a mut http::HeaderMap);

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

impl Injector for HeaderInject<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty value says nothing (W3C: it may be left out).
        if value.is_empty() {
            return;
        }
        let name = match key {
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
    /// What the upstream call's span will be named and given, built with the server span's
    /// (empty for a trace the sampler dropped).
    pub call_name: Cow<'static, str>,
    pub call_attributes: Vec<KeyValue>,
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
        let mut server = self.server;
        // A dropped trace has nothing to end (and no upstream call's span).
        if !server.recording() {
            return;
        }
        server.set([KeyValue::new(
            "http.response.status_code",
            i64::from(e.status),
        )]);
        if let Some(code) = e.error_code {
            server.set([KeyValue::new("rpc.response.status_code", code.to_string())]);
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
                server.set([KeyValue::new(
                    "error.type",
                    e.error_code.map_or("_OTHER".into(), |c| c.to_string()),
                )]);
                None
            }
            // The caller left (a modern client cancels by closing its stream): noted, not
            // an error of the server's.
            (Outcome::ClientGone, _) | (Outcome::Forwarded, _) if !e.complete => {
                server.set([KeyValue::new("mcp_sentinel.client_gone", true)]);
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::{TraceState, Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use prometheus::IntCounter;

    use super::*;
    use crate::config::otel::{OtlpProtocol, SamplerKind};

    fn settings(sampler: SamplerKind, ratio: f64) -> TraceSettings {
        TraceSettings {
            protocol: OtlpProtocol::HttpProtobuf,
            // Nothing listens: what is exported here is lost, counted as failed.
            endpoint: "http://127.0.0.1:9/v1/traces".into(),
            headers: Default::default(),
            service_name: "test".into(),
            resource: Vec::new(),
            sampler,
            ratio,
            max_queue_size: 64,
            max_export_batch_size: 8,
            scheduled_delay: Duration::from_secs(60),
            export_timeout: Duration::from_millis(100),
            tls: None,
        }
    }

    fn otel(sampler: SamplerKind, ratio: f64) -> Otel {
        let counter = |n: &str| IntCounter::new(n, "test").unwrap();
        let counters = TraceCounters {
            dropped_queue_full: counter("q"),
            dropped_export_failed: counter("f"),
            exported: counter("e"),
        };
        Otel::start(&settings(sampler, ratio), counters).unwrap()
    }

    fn remote(flags: TraceFlags, state: &str) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            true,
            state.parse::<TraceState>().unwrap(),
        ))
    }

    /// What the SDK's propagators write for `cx`.
    fn sdk_headers(cx: &Context) -> HashMap<String, String> {
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut out);
        BaggagePropagator::new().inject_context(cx, &mut out);
        out.retain(|_, v| !v.is_empty());
        sorted_baggage(out)
    }

    fn written(h: &http::HeaderMap) -> HashMap<String, String> {
        sorted_baggage(
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect(),
        )
    }

    /// Baggage members in one order (the SDK writes them in its map's).
    fn sorted_baggage(mut h: HashMap<String, String>) -> HashMap<String, String> {
        if let Some(b) = h.get_mut("baggage") {
            let mut members: Vec<&str> = b.split(',').collect();
            members.sort_unstable();
            *b = members.join(",");
        }
        h
    }

    #[test]
    fn traceparent_is_what_the_sdk_propagator_writes() {
        for flags in [0x00, 0x01, 0x03, 0xff] {
            let cx = remote(TraceFlags::new(flags), "");
            let sc = cx.span().span_context().clone();
            assert_eq!(
                traceparent(&sc).as_str(),
                sdk_headers(&cx)["traceparent"],
                "flags {flags:#04x}"
            );
        }
    }

    #[test]
    fn the_sampler_decides_as_the_sdk_tracer_does() {
        let cases = [
            (SamplerKind::ParentBasedTraceIdRatio, 1.0),
            (SamplerKind::ParentBasedTraceIdRatio, 0.0),
            (SamplerKind::ParentBasedAlwaysOff, 1.0),
            (SamplerKind::ParentBasedAlwaysOn, 1.0),
            (SamplerKind::TraceIdRatio, 0.0),
            (SamplerKind::TraceIdRatio, 0.5),
            (SamplerKind::AlwaysOn, 1.0),
            (SamplerKind::AlwaysOff, 1.0),
        ];
        let mut kept_by_id = Vec::new();
        for (kind, ratio) in cases {
            let o = otel(kind, ratio);
            let sdk = SdkTracerProvider::builder()
                .with_sampler(export::sampler(&settings(kind, ratio)))
                .build()
                .tracer("sdk");
            // A ratio sampler reads the trace id's low half: all zeros is kept at 0.5, all
            // ones dropped — the sampler must be asked about the parent's trace id.
            let by_id = |hex: &str| {
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_hex(hex).unwrap(),
                    SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                ))
            };
            for parent in [
                Context::new(),
                remote(TraceFlags::SAMPLED, "k=v"),
                remote(TraceFlags::default(), ""),
                by_id("4bf92f3577b34da60000000000000000"),
                by_id("4bf92f3577b34da6ffffffffffffffff"),
            ] {
                let psc = parent.span().span_context().clone();
                let what = format!("{kind:?} {ratio}, parent {psc:?}");
                let ours = o.span(parent.clone(), SpanKind::Server, Instant::now());
                let theirs = sdk.build_with_context(sdk.span_builder("mcp"), &parent);
                let tsc = opentelemetry::trace::Span::span_context(&theirs).clone();
                // A new trace at 0.5 gets a random id, ours and the SDK's each their own.
                let decided = psc.is_valid() || ratio != 0.5;
                if decided {
                    assert_eq!(
                        ours.recording(),
                        opentelemetry::trace::Span::is_recording(&theirs),
                        "{what}"
                    );
                    assert_eq!(ours.sc.trace_flags(), tsc.trace_flags(), "{what}");
                }
                assert_eq!(ours.sc.trace_state(), tsc.trace_state(), "{what}");
                assert!(ours.sc.is_valid() && !ours.sc.is_remote(), "{what}");
                if psc.is_valid() {
                    assert_eq!(ours.sc.trace_id(), psc.trace_id(), "{what}");
                }
                if let (true, Some(r)) = (decided, &ours.record.record) {
                    let d = &r.data;
                    let t = theirs.exported_data().unwrap();
                    assert_eq!(d.parent_span_id, t.parent_span_id, "{what}");
                    assert_eq!(d.parent_span_is_remote, t.parent_span_is_remote, "{what}");
                    assert_eq!(d.span_kind, SpanKind::Server, "{what}");
                    assert_eq!(d.span_context, ours.sc, "{what}");
                }
                if (kind, ratio) == (SamplerKind::TraceIdRatio, 0.5) && psc.is_valid() {
                    kept_by_id.push(ours.recording());
                }
            }
        }
        // The 0.5 ratio read the parents' trace ids: only the one whose low half is zero kept.
        assert_eq!(kept_by_id, [false, false, true, false]);
    }

    /// The upstream gets the context the SDK's propagators would write: the upstream call's
    /// span when it records, else the server span's, under the parent the SDK's propagators read
    /// from the same headers (the caller's tracestate and baggage kept, anything else of theirs
    /// replaced).
    #[test]
    fn inject_writes_what_the_sdk_propagators_write() {
        let header_sets: Vec<Vec<(&str, String)>> = vec![
            vec![],
            vec![("traceparent", tp("01")), ("tracestate", "k=v,a=b".into())],
            vec![("traceparent", tp("00")), ("tracestate", "k=v".into())],
            vec![
                ("traceparent", tp("01")),
                ("tracestate", "k=v".into()),
                ("baggage", "user=alice,team=ops".into()),
            ],
            vec![("baggage", "user=alice".into())],
            // A tracestate without a traceparent, and one beside an invalid traceparent: both
            // are the caller's stale context, not sent on.
            vec![("tracestate", "stale=1".into())],
            vec![
                (
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01".into(),
                ),
                ("tracestate", "stale=1".into()),
            ],
            vec![("traceparent", "garbage".into()), ("baggage", "x=1".into())],
        ];
        for ratio in [1.0, 0.0] {
            let o = otel(SamplerKind::ParentBasedTraceIdRatio, ratio);
            for set in &header_sets {
                let mut incoming = http::HeaderMap::new();
                for (k, v) in set {
                    incoming.insert(*k, v.parse().unwrap());
                }
                let what = format!("ratio {ratio}, headers {set:?}");
                let theirs = sdk_extract(&incoming);
                let mut out = incoming.clone();
                out.insert("x-other", "kept".parse().unwrap());
                let parent = o.parent(&mut out, None);
                assert_eq!(
                    parent.span().span_context(),
                    theirs.span().span_context(),
                    "{what}"
                );
                assert_eq!(pairs(&parent), pairs(&theirs), "{what}");
                let server = o.span(parent, SpanKind::Server, Instant::now());
                let child = o.child(&server, "up".into(), SpanKind::Client, SystemTime::now());
                assert_eq!(child.span_context().is_some(), server.recording(), "{what}");
                o.inject(&server, Some(&child), &mut out);
                let shown = child.span_context().unwrap_or(&server.sc).clone();
                let mut expected = sdk_headers(&theirs.with_remote_span_context(shown));
                expected.insert("x-other".into(), "kept".into());
                assert_eq!(written(&out), expected, "{what}");
            }
        }
    }

    fn pairs(cx: &Context) -> Vec<(String, String)> {
        let mut v: Vec<_> = cx
            .baggage()
            .iter()
            .map(|(k, (v, _))| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    /// Once shutdown has begun no span is made and no context goes upstream (the caller's is
    /// still removed; baggage still passes), as with the SDK's tracer after its provider's
    /// shutdown.
    #[tokio::test]
    async fn after_shutdown_no_span_and_no_context() {
        let o = otel(SamplerKind::AlwaysOn, 1.0);
        o.shutdown(Duration::from_millis(100)).await;
        let mut incoming = http::HeaderMap::new();
        incoming.insert(TRACEPARENT, tp("01").parse().unwrap());
        incoming.insert(BAGGAGE, "user=alice".parse().unwrap());
        let mut out = incoming.clone();
        let server = o.span(o.parent(&mut out, None), SpanKind::Server, Instant::now());
        assert!(!server.recording());
        assert_eq!(server.upstream_traceparent(None), None);
        let child = o.child(&server, "up".into(), SpanKind::Client, SystemTime::now());
        o.inject(&server, Some(&child), &mut out);
        assert_eq!(
            written(&out),
            HashMap::from([("baggage".to_string(), "user=alice".to_string())])
        );
    }

    /// A caller's `traceparent` with these flags.
    fn tp(flags: &str) -> String {
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}")
    }

    /// The SDK's own reading of trace context and baggage from headers.
    fn sdk_extract(headers: &http::HeaderMap) -> Context {
        opentelemetry::propagation::TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ])
        .extract(&written(headers))
    }
}
