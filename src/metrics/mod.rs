//! One Prometheus registry, owned by the app and handed to components. Every label comes from
//! a closed set; hot-path handles are resolved once at start.

pub mod exemplars;
pub mod exposition;
pub mod openmetrics;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, TraceId};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use exemplars::{Exemplar, ExemplarTable};
pub use exposition::{Exposition, Format};

use crate::denial::Reason;
use crate::mcp::Method;

const PREFIX: &str = "mcp_sentinel";

/// Latency buckets from 50 µs to 30 s: a proxy hop is sub-millisecond, a tool call may be slow.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// What a request was, for the `method` label: an MCP method, or an HTTP-level operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Mcp(Method),
    /// A 2025-03-26 JSON-RPC batch.
    Batch,
    /// A legacy GET that opens a server→client stream.
    StreamGet,
    /// A legacy DELETE that ends a session.
    SessionDelete,
    /// A request refused before its method could be read.
    Invalid,
}

const OP_COUNT: usize = Method::ALL.len() + 4;

impl Op {
    fn index(self) -> usize {
        let n = Method::ALL.len();
        match self {
            Op::Mcp(m) => m.index(),
            Op::Batch => n,
            Op::StreamGet => n + 1,
            Op::SessionDelete => n + 2,
            Op::Invalid => n + 3,
        }
    }

    fn all() -> impl Iterator<Item = Op> {
        Method::ALL.iter().map(|m| Op::Mcp(*m)).chain([
            Op::Batch,
            Op::StreamGet,
            Op::SessionDelete,
            Op::Invalid,
        ])
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Mcp(m) => m.as_str(),
            Op::Batch => "batch",
            Op::StreamGet => "stream_get",
            Op::SessionDelete => "session_delete",
            Op::Invalid => "invalid",
        }
    }
}

/// How a request ended, for the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered and the answer reached the client (any status).
    Forwarded,
    /// A check refused it.
    Rejected,
    /// The upstream could not be reached, timed out or broke the response.
    UpstreamError,
    /// The client went away before the response began.
    ClientGone,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Forwarded,
        Outcome::Rejected,
        Outcome::UpstreamError,
        Outcome::ClientGone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Rejected => "rejected",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Why forwarding failed, for `upstream_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Vec<[IntCounter; 4]>,
    request_duration: Vec<Histogram>,
    /// The latest sampled trace per (method, bucket) of `request_duration`.
    request_exemplars: Arc<ExemplarTable>,
    pub upstream_duration: Histogram,
    pub in_flight: IntGauge,
    pub sse_open: IntGauge,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    /// Clients that left `[before the response head, during the response body]`.
    pub client_disconnects: [IntCounter; 2],
    upstream_errors: IntCounterVec,
    check_duration: HistogramVec,
    check_denials: IntCounterVec,
    pub ready: IntGauge,
    /// Traffic-port TLS handshakes that failed (bad or untrusted client certificate, no TLS,
    /// timeout).
    pub tls_handshake_failures: IntCounter,
    /// List items hidden from callers by the policy, by list.
    pub list_items_hidden: IntCounterVec,
    /// Server→client requests the policy kept from callers, by method.
    pub server_requests_blocked: IntCounterVec,
    /// Forwarded answers by what they said (ok, JSON-RPC error class, tool error).
    answers: AnswerCounters,
    /// Spans exported and lost (tracing on only).
    pub trace_spans: TraceCounters,
}

fn name(n: &str) -> String {
    format!("{PREFIX}_{n}")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };

        let requests_vec = IntCounterVec::new(
            Opts::new(
                name("requests_total"),
                "Requests on the MCP endpoint by method and outcome",
            ),
            &["method", "outcome"],
        )
        .expect("valid metric");
        let duration_vec = HistogramVec::new(
            HistogramOpts::new(
                name("request_duration_seconds"),
                "Time to complete a request (to the response head for SSE streams)",
            )
            .buckets(BUCKETS.to_vec()),
            &["method"],
        )
        .expect("valid metric");
        let requests = Op::all()
            .map(|op| {
                Outcome::ALL.map(|o| requests_vec.with_label_values(&[op.as_str(), o.as_str()]))
            })
            .collect();
        let request_duration = Op::all()
            .map(|op| duration_vec.with_label_values(&[op.as_str()]))
            .collect();
        let request_exemplars = Arc::new(ExemplarTable::new(
            name("request_duration_seconds"),
            "method",
            Op::all().map(Op::as_str).collect(),
            BUCKETS,
        ));
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                name("upstream_duration_seconds"),
                "Time from forwarding a request to the upstream's response head",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(name("in_flight_requests"), "Requests being served")
            .expect("valid metric");
        let sse_open = IntGauge::new(name("sse_streams_open"), "Open SSE response streams")
            .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                name("bytes_total"),
                "Body bytes through the proxy: in = from clients, out = to clients",
            ),
            &["direction"],
        )
        .expect("valid metric");
        let bytes_in = bytes.with_label_values(&["in"]);
        let bytes_out = bytes.with_label_values(&["out"]);
        let disconnects = IntCounterVec::new(
            Opts::new(
                name("client_disconnects_total"),
                "Clients that closed the connection before the response ended, by phase",
            ),
            &["phase"],
        )
        .expect("valid metric");
        let client_disconnects = ["before_response", "during_response"]
            .map(|phase| disconnects.with_label_values(&[phase]));
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                name("upstream_errors_total"),
                "Failures talking to the upstream",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for k in [
            UpstreamErrorKind::Connect,
            UpstreamErrorKind::Timeout,
            UpstreamErrorKind::Reset,
        ] {
            upstream_errors.with_label_values(&[k.as_str()]);
        }
        let check_duration = HistogramVec::new(
            HistogramOpts::new(
                name("check_duration_seconds"),
                "Time spent in each pipeline check",
            )
            .buckets(vec![
                0.000_001, 0.000_005, 0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.1,
                1.0,
            ]),
            &["check"],
        )
        .expect("valid metric");
        let check_denials = IntCounterVec::new(
            Opts::new(
                name("check_denials_total"),
                "Requests refused, by stage (check, forward, answer stage) and reason",
            ),
            &["check", "reason"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(name("build_info"), "Build information; always 1"),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let ready =
            IntGauge::new(name("ready"), "1 while /readyz answers 200").expect("valid metric");

        reg(Box::new(requests_vec));
        reg(Box::new(duration_vec));
        reg(Box::new(upstream_duration.clone()));
        reg(Box::new(in_flight.clone()));
        reg(Box::new(sse_open.clone()));
        reg(Box::new(bytes));
        reg(Box::new(disconnects));
        reg(Box::new(upstream_errors.clone()));
        reg(Box::new(check_duration.clone()));
        reg(Box::new(check_denials.clone()));
        reg(Box::new(build_info));
        reg(Box::new(ready.clone()));
        let tls_handshake_failures = IntCounter::new(
            name("tls_handshake_failures_total"),
            "Traffic-port TLS handshakes that failed or timed out",
        )
        .expect("valid metric");
        reg(Box::new(tls_handshake_failures.clone()));
        let list_items_hidden = IntCounterVec::new(
            Opts::new(
                name("list_items_hidden_total"),
                "Items taken out of list results because the caller may not use them, by list",
            ),
            &["list"],
        )
        .expect("valid metric");
        reg(Box::new(list_items_hidden.clone()));
        for list in ["tools", "prompts", "resources", "resource_templates"] {
            list_items_hidden.with_label_values(&[list]);
        }
        let server_requests_blocked = IntCounterVec::new(
            Opts::new(
                name("server_requests_blocked_total"),
                "Server-to-client requests the policy kept from the caller (answered to the upstream with an error), by method",
            ),
            &["method"],
        )
        .expect("valid metric");
        reg(Box::new(server_requests_blocked.clone()));
        let answers = AnswerCounters::new(&reg_fn(&registry));
        let trace_spans = trace_counters(&reg_fn(&registry));

        Self {
            answers,
            trace_spans,
            list_items_hidden,
            server_requests_blocked,
            registry,
            requests,
            request_duration,
            request_exemplars,
            upstream_duration,
            in_flight,
            sse_open,
            tls_handshake_failures,
            bytes_in,
            bytes_out,
            client_disconnects,
            upstream_errors,
            check_duration,
            check_denials,
            ready,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What the admin port's `/metrics` serves: the registry, with the request-duration
    /// exemplars.
    pub fn exposition(&self) -> Exposition {
        Exposition::with_exemplars(self.registry.clone(), self.request_exemplars.clone())
    }

    /// Resolves the duration histogram of a pipeline check (once, at start).
    pub fn check_histogram(&self, check: &str) -> Histogram {
        self.check_duration.with_label_values(&[check])
    }

    pub fn count_denial(&self, check: &str, reason: Reason) {
        self.check_denials
            .with_label_values(&[check, reason.as_str()])
            .inc();
    }

    /// Counts a request and observes its duration. `trace` is the request's server span (trace
    /// and span id) when it was traced and sampled: the duration's bucket then keeps it as its
    /// exemplar.
    pub fn count_request(
        &self,
        op: Op,
        outcome: Outcome,
        duration: Option<Duration>,
        trace: Option<(TraceId, SpanId)>,
    ) {
        let i = op.index();
        debug_assert!(i < OP_COUNT);
        let o = Outcome::ALL
            .iter()
            .position(|x| *x == outcome)
            .expect("outcome is in ALL");
        self.requests[i][o].inc();
        if let Some(d) = duration {
            let value = d.as_secs_f64();
            self.request_duration[i].observe(value);
            if let Some((trace_id, span_id)) = trace {
                self.request_exemplars.record(
                    i,
                    Exemplar {
                        trace_id,
                        span_id,
                        value,
                        at: SystemTime::now(),
                    },
                );
            }
        }
    }

    /// A forwarded answer that reached its end, by what it said.
    pub fn count_answer(&self, op: Op, result: AnswerResult) {
        self.answers.cells[op.index()][result as usize]
            .get_or_init(|| {
                self.answers
                    .vec
                    .with_label_values(&[op.as_str(), result.as_str()])
            })
            .inc();
    }

    pub fn count_upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .with_label_values(&[kind.as_str()])
            .inc();
    }
}

/// What a forwarded answer said, for `answers_total{result}`: a closed set, so an SLO on tool
/// errors can be written without a tool label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerResult {
    Ok,
    /// A tool result with `isError: true`.
    ToolError,
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InternalError,
    /// -32000 to -32099.
    ServerError,
    /// Any other JSON-RPC error code (MCP's own, an application's).
    OtherError,
    /// An HTTP error status with no JSON-RPC error read from the body.
    HttpError,
}

impl AnswerResult {
    const COUNT: usize = 10;

    /// From what the answer tap saw and the response status.
    pub fn of(error_code: Option<i64>, is_error: Option<bool>, status: u16) -> Self {
        match error_code {
            Some(-32700) => AnswerResult::ParseError,
            Some(-32600) => AnswerResult::InvalidRequest,
            Some(-32601) => AnswerResult::MethodNotFound,
            Some(-32602) => AnswerResult::InvalidParams,
            Some(-32603) => AnswerResult::InternalError,
            Some(-32099..=-32000) => AnswerResult::ServerError,
            Some(_) => AnswerResult::OtherError,
            None if is_error == Some(true) => AnswerResult::ToolError,
            None if status >= 400 => AnswerResult::HttpError,
            None => AnswerResult::Ok,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AnswerResult::Ok => "ok",
            AnswerResult::ToolError => "tool_error",
            AnswerResult::ParseError => "parse_error",
            AnswerResult::InvalidRequest => "invalid_request",
            AnswerResult::MethodNotFound => "method_not_found",
            AnswerResult::InvalidParams => "invalid_params",
            AnswerResult::InternalError => "internal_error",
            AnswerResult::ServerError => "server_error",
            AnswerResult::OtherError => "other_error",
            AnswerResult::HttpError => "http_error",
        }
    }

    pub fn is_ok(self) -> bool {
        self == AnswerResult::Ok
    }
}

/// `answers_total`, its cells resolved the first time each is counted (most never are).
struct AnswerCounters {
    vec: IntCounterVec,
    cells: Vec<[OnceLock<IntCounter>; AnswerResult::COUNT]>,
}

type Register<'a> = Box<dyn Fn(Box<dyn prometheus::core::Collector>) + 'a>;

fn reg_fn(registry: &Registry) -> Register<'_> {
    Box::new(move |c| registry.register(c).expect("metric names are unique"))
}

impl AnswerCounters {
    fn new(reg: &Register<'_>) -> Self {
        let vec = IntCounterVec::new(
            Opts::new(
                name("answers_total"),
                "Forwarded answers read to their end, by method and result: ok, tool_error \
                 (isError: true), a JSON-RPC error class, or http_error",
            ),
            &["method", "result"],
        )
        .expect("valid metric");
        reg(Box::new(vec.clone()));
        Self {
            vec,
            cells: (0..OP_COUNT)
                .map(|_| std::array::from_fn(|_| OnceLock::new()))
                .collect(),
        }
    }
}

/// What the trace export counts (`trace_spans_*`).
#[derive(Clone)]
pub struct TraceCounters {
    /// Refused because the export queue was full.
    pub dropped_queue_full: IntCounter,
    /// Lost in an export that failed or timed out.
    pub dropped_export_failed: IntCounter,
    pub exported: IntCounter,
}

fn trace_counters(reg: &Register<'_>) -> TraceCounters {
    let dropped = IntCounterVec::new(
        Opts::new(
            name("trace_spans_dropped_total"),
            "Spans not exported: queue_full (the collector is slower than traffic) or \
             export_failed (an export failed or timed out)",
        ),
        &["reason"],
    )
    .expect("valid metric");
    let exported = IntCounter::new(
        name("trace_spans_exported_total"),
        "Spans the collector accepted",
    )
    .expect("valid metric");
    reg(Box::new(dropped.clone()));
    reg(Box::new(exported.clone()));
    TraceCounters {
        dropped_queue_full: dropped.with_label_values(&["queue_full"]),
        dropped_export_failed: dropped.with_label_values(&["export_failed"]),
        exported,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart() {
        let of = AnswerResult::of;
        assert_eq!(of(None, None, 200), AnswerResult::Ok);
        assert_eq!(of(None, Some(false), 200), AnswerResult::Ok);
        assert_eq!(of(None, Some(true), 200), AnswerResult::ToolError);
        assert_eq!(
            of(Some(-32603), Some(true), 200),
            AnswerResult::InternalError
        );
        assert_eq!(of(Some(-32042), None, 200), AnswerResult::ServerError);
        assert_eq!(of(Some(-32002), None, 200), AnswerResult::ServerError);
        assert_eq!(of(Some(42), None, 200), AnswerResult::OtherError);
        assert_eq!(of(None, None, 502), AnswerResult::HttpError);
        let m = Metrics::new();
        m.count_answer(Op::Mcp(Method::ToolsCall), AnswerResult::ToolError);
        m.count_answer(Op::Mcp(Method::ToolsCall), AnswerResult::ToolError);
        let text = String::from_utf8(m.exposition().encode(Format::Text)).unwrap();
        assert!(
            text.contains(
                "mcp_sentinel_answers_total{method=\"tools/call\",result=\"tool_error\"} 2"
            )
        );
        // Cells never counted are not exposed.
        assert!(!text.contains("result=\"ok\""));
    }

    #[test]
    fn exposition_has_prefixed_bounded_series() {
        let m = Metrics::new();
        m.count_request(
            Op::Mcp(Method::ToolsCall),
            Outcome::Forwarded,
            Some(Duration::from_millis(3)),
            None,
        );
        m.count_request(Op::Invalid, Outcome::Rejected, None, None);
        let text = String::from_utf8(m.exposition().encode(Format::Text)).unwrap();
        assert!(text.contains(
            "mcp_sentinel_requests_total{method=\"tools/call\",outcome=\"forwarded\"} 1"
        ));
        assert!(
            text.contains("mcp_sentinel_requests_total{method=\"invalid\",outcome=\"rejected\"} 1")
        );
        assert!(text.contains("mcp_sentinel_build_info{version=\""));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("mcp_sentinel_"), "{line}");
        }
    }

    #[test]
    fn a_sampled_request_is_the_exemplar_of_its_bucket_in_openmetrics_only() {
        let m = Metrics::new();
        let call = Op::Mcp(Method::ToolsCall);
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        m.count_request(
            call,
            Outcome::Forwarded,
            Some(Duration::from_millis(3)),
            None,
        );
        let text_before = m.exposition().encode(Format::Text);
        let om_before = String::from_utf8(m.exposition().encode(Format::OpenMetrics)).unwrap();
        assert!(!om_before.contains(" # {"), "{om_before}");

        m.count_request(
            call,
            Outcome::Forwarded,
            Some(Duration::from_micros(3500)),
            Some((trace, span)),
        );
        // Text 0.0.4 is what the crate writes, exemplar or not.
        let text = m.exposition().encode(Format::Text);
        let mut crate_text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &m.registry().gather(),
            &mut crate_text,
        )
        .unwrap();
        assert_eq!(text, crate_text);
        assert!(
            !String::from_utf8(text.clone())
                .unwrap()
                .contains("trace_id")
        );
        assert_ne!(text, text_before, "the second request was counted");

        let om = String::from_utf8(m.exposition().encode(Format::OpenMetrics)).unwrap();
        let with: Vec<&str> = om.lines().filter(|l| l.contains(" # {")).collect();
        assert_eq!(with.len(), 1, "{om}");
        let line = with[0];
        // 3.5 ms falls in the 5 ms bucket.
        assert!(
            line.starts_with(
                "mcp_sentinel_request_duration_seconds_bucket{method=\"tools/call\",le=\"0.005\"} 2 \
                 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.0035 "
            ),
            "{line}"
        );
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn every_counter_is_named_for_openmetrics() {
        let m = Metrics::new();
        for mf in m.registry().gather() {
            if mf.get_field_type() == prometheus::proto::MetricType::COUNTER {
                assert!(mf.name().ends_with("_total"), "{}", mf.name());
            }
        }
    }
}
