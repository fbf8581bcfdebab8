//! Tracing end to end (issue 18): a real OTLP receiver (the official protobuf definitions,
//! served over gRPC and over HTTP/protobuf) gets the sentinel's spans; a real rmcp upstream
//! reports the `traceparent` it was sent. Parent/child structure, names and attributes per the
//! MCP conventions, `_meta.traceparent` propagation, sampling, the answer-result metric, a
//! collector that is down or slow, and TLS to the collector (a CA file, mTLS, a wrong CA).

mod common;
// Only this target needs the receiver; not in common/mod.rs so the other test targets do not
// compile it.
#[path = "common/otlp.rs"]
mod otlp;

use std::time::{Duration, Instant};

use common::client::raw_post;
use common::keys::{pairs, write_keys};
use common::ratelimit::call_body;
use common::sentinel::{self, TempDir, TestSentinel};
use common::tls::{CertPair, TestCa, write_file};
use common::upstream::{UpstreamConfig, spawn_upstream_with};
use otlp::{
    CLIENT, Collector, INTERNAL, SERVER, STATUS_ERROR, named, start_collector, start_collector_tls,
};
use serde_json::{Value, json};

const KEY: &str = "ak_trace_alice_01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, parent: &str, sampled: bool) -> String {
    format!("00-{trace}-{parent}-{}", if sampled { "01" } else { "00" })
}

/// A sentinel with API-key auth, a policy (echo/add/fail/jsonrpc_error/slow allowed,
/// delete_file denied), a rate limit on `add`, audit to a file, and `tracing` as given.
async fn traced(upstream: &str, dir: &TempDir, tracing: &str) -> TestSentinel {
    let keys = dir.path("keys.yaml");
    write_keys(&keys, &[(KEY, "alice", &["dev"])]);
    let yaml = format!(
        "auth:\n  api_keys:\n    file: {keys}\npolicy:\n  default: deny\n  rules:\n    - {{name: dev-tools, effect: allow, groups: [dev], tools: [echo, add, fail, jsonrpc_error, slow]}}\n    - {{name: dev-lists, effect: allow, groups: [dev], methods: [initialize, tools/list, notifications/initialized, ping]}}\nrate_limits:\n  rules:\n    - name: add-budget\n      match: {{tools: [add]}}\n      limits: [{{rate: 1000/minute}}]\n      key: [subject]\naudit:\n  sinks:\n    - {{type: file, path: {audit}}}\ntracing:\n{tracing}",
        keys = keys.display(),
        audit = dir.path("audit.jsonl").display(),
    );
    sentinel::start_with(sentinel::config_from_yaml(&yaml, upstream), true).await
}

fn grpc(c: &Collector, ratio: f64) -> String {
    format!(
        "  enabled: true\n  endpoint: {}\n  service_name: sentinel-under-test\n  headers: {{x-tenant: t1}}\n  sample_ratio: {ratio}\n  scheduled_delay: 50ms\n",
        c.grpc
    )
}

fn headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = pairs(&[("X-API-Key", KEY), ("MCP-Protocol-Version", "2025-06-18")]);
    h.extend(pairs(extra));
    h
}

async fn call(s: &TestSentinel, id: i64, tool: &str, args: Value, extra: &[(&str, &str)]) -> Value {
    let r = raw_post(&s.url, &headers(extra), &call_body(id, tool, args)).await;
    serde_json::from_str(&r.body).unwrap_or(Value::String(r.body))
}

/// `echo` as alice, with `traceparent` when given.
async fn echo(s: &TestSentinel, id: i64, traceparent: Option<&str>) -> Value {
    let extra: Vec<(&str, &str)> = traceparent
        .map(|t| ("traceparent", t))
        .into_iter()
        .collect();
    call(s, id, "echo", json!({"text": "x"}), &extra).await
}

/// The `traceparent` the upstream got with the last `tools/call`: (trace id, parent id, flags).
fn upstream_traceparent(up: &common::upstream::Upstream) -> (String, String, String) {
    let seen = up
        .last_request("tools/call")
        .expect("the call reached the upstream");
    let tp = seen
        .header("traceparent")
        .expect("the upstream got a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_one_server_span_with_children_and_the_upstream_continues_the_trace() {
    let collector = start_collector().await;
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("trace-grpc");
    let s = traced(&up.url(), &dir, &grpc(&collector, 1.0)).await;

    let tp = traceparent(TRACE, PARENT, true);
    let answer = call(
        &s,
        7,
        "add",
        json!({"a": 2, "b": 3}),
        &[
            ("traceparent", &tp),
            ("tracestate", "vendor=abc"),
            ("baggage", "tenant=acme"),
        ],
    )
    .await;
    assert_eq!(answer["result"]["content"][0]["text"], "5", "{answer}");

    let spans = collector.trace(TRACE, 5).await;
    let server = named(&spans, "tools/call add");
    let server = spans
        .iter()
        .find(|x| x.kind == SERVER && x.name == server.name)
        .expect("a server span");
    // The client's span is the parent; the sentinel's spans hang under the server span.
    assert_eq!(server.parent, PARENT);
    assert_eq!(server.service, "sentinel-under-test");
    for (k, v) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "add"),
        ("gen_ai.operation.name", "execute_tool"),
        ("jsonrpc.request.id", "7"),
        ("mcp.protocol.version", "2025-06-18"),
        ("client.address", "127.0.0.1"),
        ("http.response.status_code", "200"),
        ("network.transport", "tcp"),
    ] {
        assert_eq!(server.attr(k), Some(v), "{k}: {server:#?}");
    }
    assert_eq!(server.attr("error.type"), None);
    assert_ne!(server.status, STATUS_ERROR);
    for child in ["authenticate", "authorize", "rate_limit"] {
        let c = named(&spans, child);
        assert_eq!(c.kind, INTERNAL, "{child}");
        assert_eq!(c.parent, server.span_id, "{child}");
        assert!(
            c.start_ns >= server.start_ns && c.end_ns <= server.end_ns,
            "{child} inside"
        );
    }
    assert_eq!(
        named(&spans, "authenticate").attr("mcp_sentinel.auth.method"),
        Some("api_key")
    );
    let authz = named(&spans, "authorize");
    assert_eq!(authz.attr("mcp_sentinel.authz.decision"), Some("allow"));
    assert_eq!(authz.attr("mcp_sentinel.authz.rule"), Some("dev-tools"));
    assert_eq!(
        named(&spans, "rate_limit").attr("mcp_sentinel.ratelimit.result"),
        Some("allowed")
    );
    let client = spans
        .iter()
        .find(|x| x.kind == CLIENT)
        .expect("an upstream client span");
    assert_eq!(client.name, "tools/call add");
    assert_eq!(client.parent, server.span_id);

    // The upstream continues the trace under the client span, with the caller's state and
    // baggage.
    let (trace, parent, flags) = upstream_traceparent(&up);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_eq!(parent, client.span_id);
    let seen = up.last_request("tools/call").unwrap();
    assert_eq!(seen.header("tracestate").as_deref(), Some("vendor=abc"));
    assert_eq!(seen.header("baggage").as_deref(), Some("tenant=acme"));
    // Headers from the config went with the export; no token went into any attribute.
    assert!(
        collector
            .headers()
            .iter()
            .any(|(k, v)| k == "x-tenant" && v == "t1")
    );
    for sp in &spans {
        assert!(
            sp.attrs.values().all(|v| !v.contains(KEY)),
            "a token in a span: {sp:#?}"
        );
    }

    // The audit record names the same trace and the sentinel's span.
    let records = common::audit::wait_records(1, Duration::from_secs(5), || async {
        common::audit::file_records(&dir.path("audit.jsonl"))
    })
    .await;
    let call = records
        .iter()
        .find(|r| r["method"] == "tools/call")
        .expect("a record of the call");
    assert_eq!(call["trace_id"], TRACE);
    assert_eq!(call["span_id"], server.span_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_traceparent_is_the_parent_and_is_rewritten_in_place_over_http_protobuf() {
    let collector = start_collector().await;
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("trace-meta");
    let tracing = format!(
        "  enabled: true\n  protocol: http/protobuf\n  endpoint: {}\n  scheduled_delay: 50ms\n",
        collector.http
    );
    let s = traced(&up.url(), &dir, &tracing).await;

    let meta_trace = "0af7651916cd43dd8448eb211c80319c";
    let meta_tp = traceparent(meta_trace, "b7ad6b7169203331", true);
    let body = json!({"jsonrpc":"2.0","id":"req-1","method":"tools/call","params":{
        "name":"echo","arguments":{"text":"hi"},"_meta":{"traceparent": meta_tp, "progressToken": 5}}});
    // A header context too: the body's wins.
    let header_tp = traceparent(TRACE, PARENT, true);
    let r = raw_post(&s.url, &headers(&[("traceparent", &header_tp)]), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let spans = collector.trace(meta_trace, 4).await;
    let server = spans.iter().find(|x| x.kind == SERVER).unwrap();
    assert_eq!(server.name, "tools/call echo");
    assert_eq!(server.parent, "b7ad6b7169203331");
    assert_eq!(server.attr("jsonrpc.request.id"), Some("req-1"));
    let client = spans.iter().find(|x| x.kind == CLIENT).unwrap();

    // The body reached the upstream with only the traceparent's value changed.
    let seen = up.last_request("tools/call").unwrap();
    let sent = serde_json::to_vec(&body).unwrap();
    let new_tp = traceparent(meta_trace, &client.span_id, true);
    let want = String::from_utf8(sent).unwrap().replace(&meta_tp, &new_tp);
    assert_eq!(String::from_utf8(seen.body.to_vec()).unwrap(), want);
    assert_eq!(seen.header("traceparent"), Some(new_tp));

    // Without `_meta.traceparent` the body is forwarded byte for byte.
    let plain = call_body(9, "echo", json!({"text": "traceparent"}));
    let r = raw_post(&s.url, &headers(&[]), &plain).await;
    assert_eq!(r.status, 200);
    let seen = up.last_request("tools/call").unwrap();
    assert_eq!(seen.body.to_vec(), serde_json::to_vec(&plain).unwrap());
    assert!(
        seen.header("traceparent").is_some(),
        "a new trace is propagated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_apart_and_set_the_span_status() {
    let collector = start_collector().await;
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("trace-errors");
    let s = traced(&up.url(), &dir, &grpc(&collector, 1.0)).await;

    let cases = [
        ("echo", json!({"text": "x"}), "ok", None),
        ("fail", json!({}), "tool_error", Some("tool_error")),
        ("jsonrpc_error", json!({}), "internal_error", Some("-32603")),
        ("add", json!({"a": "x", "b": 1}), "invalid_params", None),
        (
            "delete_file",
            json!({"path": "/x"}),
            "denied",
            Some("policy_denied"),
        ),
    ];
    for (i, (tool, args, _, _)) in cases.iter().enumerate() {
        let trace = format!("{:032x}", 0xabc0 + i);
        let tp = traceparent(&trace, PARENT, true);
        call(&s, i as i64, tool, args.clone(), &[("traceparent", &tp)]).await;
    }
    for (i, (tool, _, result, error)) in cases.iter().enumerate() {
        let trace = format!("{:032x}", 0xabc0 + i);
        let spans = collector.trace(&trace, 1).await;
        let server = spans.iter().find(|x| x.kind == SERVER).unwrap();
        match error {
            Some(e) => {
                assert_eq!(server.attr("error.type"), Some(*e), "{tool}");
                assert_eq!(server.status, STATUS_ERROR, "{tool}");
            }
            None => assert_ne!(server.status, STATUS_ERROR, "{tool}: {server:#?}"),
        }
        if *result == "denied" {
            let spans = collector.trace(&trace, 3).await;
            let authz = named(&spans, "authorize");
            assert_eq!(authz.attr("mcp_sentinel.authz.decision"), Some("deny"));
            assert_eq!(authz.status, STATUS_ERROR);
            continue;
        }
        let series =
            format!("mcp_sentinel_answers_total{{method=\"tools/call\",result=\"{result}\"}}");
        assert_eq!(s.metric_eventually(&series, 1.0).await, 1.0, "{series}");
    }
    // A client error keeps its code on the span, without an error status.
    let spans = collector.trace(&format!("{:032x}", 0xabc3), 1).await;
    let server = spans.iter().find(|x| x.kind == SERVER).unwrap();
    assert_eq!(server.attr("rpc.response.status_code"), Some("-32602"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_keeps_a_ratio_of_new_traces_and_follows_the_caller() {
    let collector = start_collector().await;
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("trace-sampling");
    // Ratio 0: new traces are never kept; a caller's sampled flag still is (parent-based).
    let s = traced(&up.url(), &dir, &grpc(&collector, 0.0)).await;

    for i in 0..5 {
        echo(&s, i, None).await;
    }
    // The upstream still gets a context, marked not sampled.
    let (_, _, flags) = upstream_traceparent(&up);
    assert_eq!(flags, "00");
    let sampled = traceparent(TRACE, PARENT, true);
    echo(&s, 9, Some(&sampled)).await;
    let unsampled_trace = "11111111111111111111111111111111";
    let unsampled = traceparent(unsampled_trace, PARENT, false);
    echo(&s, 10, Some(&unsampled)).await;
    let (trace, _, flags) = upstream_traceparent(&up);
    assert_eq!((trace.as_str(), flags.as_str()), (unsampled_trace, "00"));

    collector.trace(TRACE, 5).await;
    let all = collector.settle(Duration::from_millis(400)).await;
    let traces: std::collections::BTreeSet<&str> =
        all.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(
        traces.into_iter().collect::<Vec<_>>(),
        [TRACE],
        "only the sampled caller's trace"
    );

    // Ratio 1: every new trace is kept, and a caller's "not sampled" is still followed.
    let collector = start_collector().await;
    let dir = TempDir::new("trace-sampling-all");
    let s = traced(&up.url(), &dir, &grpc(&collector, 1.0)).await;
    for i in 0..3 {
        echo(&s, i, None).await;
    }
    echo(&s, 10, Some(&unsampled)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector
        .spans()
        .iter()
        .filter(|s| s.kind == SERVER)
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "{:#?}", collector.spans());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = collector.settle(Duration::from_millis(400)).await;
    let roots: Vec<_> = all.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(roots.len(), 3, "{roots:#?}");
    assert!(
        roots
            .iter()
            .all(|r| r.parent.is_empty() && r.trace_id != unsampled_trace)
    );
}

/// Exactly one `tools/call` counted as an `ok` answer.
async fn one_ok_answer(s: &TestSentinel) {
    let series = "mcp_sentinel_answers_total{method=\"tools/call\",result=\"ok\"}";
    assert_eq!(s.metric_eventually(series, 1.0).await, 1.0, "{series}");
}

/// `n` calls, each answered right and within 500 ms.
async fn answer_quickly(s: &TestSentinel, n: i64) {
    for i in 0..n {
        let t = Instant::now();
        let answer = echo(s, i, None).await;
        assert_eq!(answer["result"]["content"][0]["text"], "x");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "request {i}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_slow_collector_costs_requests_nothing_and_drops_are_counted() {
    let up = spawn_upstream_with(UpstreamConfig::json()).await;

    // Down: nothing listens. Every request still answers at once; exports fail and count.
    let dead = otlp::dead_address().await;
    let dir = TempDir::new("trace-dead");
    let tracing = format!(
        "  enabled: true\n  endpoint: http://{dead}\n  scheduled_delay: 20ms\n  export_timeout: 200ms\n  max_export_batch_size: 8\n"
    );
    let s = traced(&up.url(), &dir, &tracing).await;
    answer_quickly(&s, 40).await;
    let series = "mcp_sentinel_trace_spans_dropped_total{reason=\"export_failed\"}";
    let dropped = s
        .metric_until(series, Duration::from_secs(10), |v| v >= 40.0)
        .await;
    assert!(dropped >= 40.0, "{series} = {dropped}");

    // Slow: the collector takes 3 s per export, past the 100 ms timeout, and the queue holds
    // 16 spans: requests stay fast, the overflow is counted as queue_full.
    let collector = start_collector().await;
    collector.slow_down(Duration::from_secs(3));
    let dir = TempDir::new("trace-slow");
    let tracing = format!(
        "  enabled: true\n  endpoint: {}\n  scheduled_delay: 20ms\n  export_timeout: 100ms\n  max_queue_size: 16\n  max_export_batch_size: 4\n",
        collector.grpc
    );
    let s = traced(&up.url(), &dir, &tracing).await;
    let started = Instant::now();
    answer_quickly(&s, 100).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let full = s
        .metric_until(
            "mcp_sentinel_trace_spans_dropped_total{reason=\"queue_full\"}",
            Duration::from_secs(5),
            |v| v > 0.0,
        )
        .await;
    assert!(full > 0.0, "queue_full drops counted");
    let failed = s
        .metric_until(series, Duration::from_secs(10), |v| v > 0.0)
        .await;
    assert!(failed > 0.0, "timed-out exports counted");
    // 5 spans per request (server, authenticate, authorize, rate_limit, client), none
    // counted twice.
    let exported = s.metric("mcp_sentinel_trace_spans_exported_total").await;
    assert!(
        exported + full + failed <= 500.0,
        "exported {exported} + queue_full {full} + export_failed {failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_answer_ends_its_span_when_the_stream_ends() {
    let collector = start_collector().await;
    // rmcp's default: answers that send progress first stream as SSE.
    let up = spawn_upstream_with(UpstreamConfig {
        legacy_sessions: false,
        ..UpstreamConfig::default()
    })
    .await;
    let dir = TempDir::new("trace-sse");
    let s = traced(&up.url(), &dir, &grpc(&collector, 1.0)).await;
    let tp = traceparent(TRACE, PARENT, true);
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"slow","arguments":{"steps":3,"delay_ms":150},"_meta":{"progressToken":"p"}}});
    let r = raw_post(&s.url, &headers(&[("traceparent", &tp)]), &body).await;
    assert!(r.is_sse(), "{:?}", r.headers);
    let spans = collector.trace(TRACE, 5).await;
    let server = spans.iter().find(|x| x.kind == SERVER).unwrap();
    let client = spans.iter().find(|x| x.kind == CLIENT).unwrap();
    assert!(
        server.duration() >= Duration::from_millis(450),
        "{:?}",
        server.duration()
    );
    assert!(
        client.duration() >= Duration::from_millis(450),
        "{:?}",
        client.duration()
    );
    one_ok_answer(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_forwards_the_callers_context_untouched() {
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("trace-off");
    let s = traced(&up.url(), &dir, "  enabled: false\n").await;
    let tp = traceparent(TRACE, PARENT, true);
    echo(&s, 1, Some(&tp)).await;
    let seen = up.last_request("tools/call").unwrap();
    assert_eq!(seen.header("traceparent"), Some(tp));
    assert_eq!(
        s.metric("mcp_sentinel_trace_spans_exported_total").await,
        0.0
    );
    // The answer metric does not need tracing.
    one_ok_answer(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_upstream_is_covered_by_the_same_spans() {
    use common::client::{legacy_headers, raw_legacy_session};
    use common::stdio::{OPEN, demo_stdio, stdio_config};

    let collector = start_collector().await;
    let yaml = format!("{OPEN}tracing:\n{}", grpc(&collector, 1.0));
    let s = sentinel::start_with(stdio_config(&yaml, demo_stdio()), true).await;
    let (sid, init) = raw_legacy_session(&s.url, "2025-06-18").await;
    assert_eq!(init.status, 200, "{}", init.body);
    let sid = sid.expect("the bridge makes a session");
    let meta_tp = traceparent(TRACE, "b7ad6b7169203331", true);
    let body = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{
        "name":"echo","arguments":{"text":"over stdio"},"_meta":{"traceparent": meta_tp}}});
    let r = raw_post(&s.url, &legacy_headers("2025-06-18", Some(&sid)), &body).await;
    assert!(r.body.contains("over stdio"), "{}", r.body);

    let spans = collector.trace(TRACE, 2).await;
    let server = spans
        .iter()
        .find(|x| x.kind == SERVER)
        .expect("a server span");
    assert_eq!(server.name, "tools/call echo");
    assert_eq!(server.parent, "b7ad6b7169203331");
    // The session, hashed as the audit record hashes it.
    let hashed = format!("sha256:{}", &common::keys::sha256_hex(&sid)[..16]);
    assert_eq!(server.attr("mcp.session.id"), Some(hashed.as_str()));
    let client = spans
        .iter()
        .find(|x| x.kind == CLIENT)
        .expect("the upstream hop");
    assert_eq!(client.parent, server.span_id);
    assert!(
        server.attrs.values().all(|v| !v.contains(&sid)),
        "raw session id in a span"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_mid_stream_is_noted_not_an_error() {
    let collector = start_collector().await;
    let up = spawn_upstream_with(UpstreamConfig {
        legacy_sessions: false,
        ..UpstreamConfig::default()
    })
    .await;
    let dir = TempDir::new("trace-gone");
    let s = traced(&up.url(), &dir, &grpc(&collector, 1.0)).await;
    let tp = traceparent(TRACE, PARENT, true);
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"slow","arguments":{"steps":10,"delay_ms":200},"_meta":{"progressToken":"p"}}});
    let sent = common::client::http_client()
        .post(&s.url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .header("X-API-Key", KEY)
        .header("traceparent", &tp)
        .timeout(Duration::from_millis(500))
        .body(body.to_string())
        .send()
        .await;
    // The head arrives; the body is cut by the timeout.
    if let Ok(r) = sent {
        assert!(r.text().await.is_err(), "the stream should not have ended");
    }
    // Server, its three check spans and the client span: the server span ends last.
    let spans = collector.trace(TRACE, 5).await;
    let server = spans.iter().find(|x| x.kind == SERVER).unwrap();
    assert_eq!(
        server.attr("mcp_sentinel.client_gone"),
        Some("true"),
        "{server:#?}"
    );
    assert_ne!(server.status, STATUS_ERROR);
    assert_eq!(server.attr("error.type"), None);
}

/// The receiver's TLS: `server` (certificate, key) and, when given, a client certificate
/// issued by `client_ca` required.
fn collector_tls(server: &CertPair, client_ca: Option<&str>) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = CertificateDer::pem_slice_iter(server.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.1.as_bytes()).unwrap();
    builder.with_single_cert(chain, key).unwrap()
}

/// `tracing` for an `https://` receiver, with `tls` (indented keys) as given.
fn over_tls(protocol: &str, endpoint: &str, tls: &str) -> String {
    format!(
        "  enabled: true\n  protocol: {protocol}\n  endpoint: {endpoint}\n  scheduled_delay: 50ms\n  export_timeout: 2s\n  tls:\n{tls}"
    )
}

/// Both protocols of `c`: (protocol, endpoint, the trace id its call uses).
fn protocols<'a>(c: &'a Collector, traces: [&'a str; 2]) -> [(&'static str, &'a str, &'a str); 2] {
    [
        ("grpc", c.grpc.as_str(), traces[0]),
        ("http/protobuf", c.http.as_str(), traces[1]),
    ]
}

const EXPORT_FAILED: &str = "mcp_sentinel_trace_spans_dropped_total{reason=\"export_failed\"}";

/// A call with trace `trace`, answered right and at once, whose spans then fail to export
/// (counted) and never reach `collector`.
async fn refused_by_tls(s: &TestSentinel, collector: &Collector, trace: &str, what: &str) {
    let t = Instant::now();
    let answer = echo(s, 1, Some(&traceparent(trace, PARENT, true))).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "x",
        "{what}: {answer}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{what}: {:?}",
        t.elapsed()
    );
    let failed = s
        .metric_until(EXPORT_FAILED, Duration::from_secs(15), |v| v > 0.0)
        .await;
    assert!(failed > 0.0, "{what}: {EXPORT_FAILED} = {failed}");
    assert_eq!(
        s.metric("mcp_sentinel_trace_spans_exported_total").await,
        0.0,
        "{what}"
    );
    let delivered = collector
        .spans()
        .into_iter()
        .filter(|x| x.trace_id == trace)
        .count();
    assert_eq!(delivered, 0, "{what}: spans were delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_https_verified_against_a_ca_file_on_both_protocols() {
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let ca = TestCa::new();
    let dir = TempDir::new("trace-tls");
    let ca_file = write_file(&dir, "otel-ca.crt", &ca.ca_pem());
    let collector = start_collector_tls(collector_tls(&ca.server_cert(&["127.0.0.1"]), None)).await;
    assert!(collector.grpc.starts_with("https://"));
    let tls = format!("    ca_file: {}\n", ca_file.display());
    for (protocol, endpoint, trace) in protocols(
        &collector,
        [
            "11111111111111111111111111111111",
            "22222222222222222222222222222222",
        ],
    ) {
        let dir = TempDir::new("trace-tls-one");
        let s = traced(&up.url(), &dir, &over_tls(protocol, endpoint, &tls)).await;
        let answer = echo(&s, 1, Some(&traceparent(trace, PARENT, true))).await;
        assert_eq!(answer["result"]["content"][0]["text"], "x", "{answer}");
        let spans = collector.trace(trace, 2).await;
        let server = spans.iter().find(|x| x.kind == SERVER).unwrap();
        assert_eq!(server.name, "tools/call echo", "{protocol}");
        assert_eq!(server.parent, PARENT, "{protocol}");
        let exported = s
            .metric_until(
                "mcp_sentinel_trace_spans_exported_total",
                Duration::from_secs(5),
                |v| v >= 2.0,
            )
            .await;
        assert!(exported >= 2.0, "{protocol}: exported {exported}");
        assert_eq!(s.metric(EXPORT_FAILED).await, 0.0, "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_requires_a_client_certificate_gets_spans_only_with_it() {
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let ca = TestCa::new();
    let clients = TestCa::named("otel clients");
    let dir = TempDir::new("trace-mtls");
    let ca_file = write_file(&dir, "otel-ca.crt", &ca.ca_pem());
    let (cert, key) = clients.client_cert(Some("mcp-sentinel"), None, None);
    let cert_file = write_file(&dir, "otel-client.crt", &cert);
    let key_file = write_file(&dir, "otel-client.key", &key);
    let collector = start_collector_tls(collector_tls(
        &ca.server_cert(&["127.0.0.1"]),
        Some(&clients.ca_pem()),
    ))
    .await;
    let with_cert = format!(
        "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    );
    let without = format!("    ca_file: {}\n", ca_file.display());
    let traces_with = protocols(
        &collector,
        [
            "33333333333333333333333333333333",
            "55555555555555555555555555555555",
        ],
    );
    let traces_without = protocols(
        &collector,
        [
            "44444444444444444444444444444444",
            "66666666666666666666666666666666",
        ],
    );
    for ((protocol, endpoint, with_trace), (_, _, without_trace)) in
        traces_with.into_iter().zip(traces_without)
    {
        let dir = TempDir::new("trace-mtls-with");
        let s = traced(&up.url(), &dir, &over_tls(protocol, endpoint, &with_cert)).await;
        echo(&s, 1, Some(&traceparent(with_trace, PARENT, true))).await;
        let spans = collector.trace(with_trace, 2).await;
        assert!(spans.iter().any(|x| x.kind == SERVER), "{protocol}");

        let dir = TempDir::new("trace-mtls-without");
        let s = traced(&up.url(), &dir, &over_tls(protocol, endpoint, &without)).await;
        refused_by_tls(
            &s,
            &collector,
            without_trace,
            &format!("{protocol} without a client certificate"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_the_ca_file_does_not_vouch_for_gets_nothing() {
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let ca = TestCa::new();
    let stranger = TestCa::named("another CA");
    let dir = TempDir::new("trace-wrong-ca");
    let wrong = write_file(&dir, "wrong-ca.crt", &stranger.ca_pem());
    let collector = start_collector_tls(collector_tls(&ca.server_cert(&["127.0.0.1"]), None)).await;
    let tls = format!("    ca_file: {}\n", wrong.display());
    for (protocol, endpoint, trace) in protocols(
        &collector,
        [
            "77777777777777777777777777777777",
            "88888888888888888888888888888888",
        ],
    ) {
        let dir = TempDir::new("trace-wrong-ca-one");
        let s = traced(&up.url(), &dir, &over_tls(protocol, endpoint, &tls)).await;
        refused_by_tls(
            &s,
            &collector,
            trace,
            &format!("{protocol} with the wrong CA"),
        )
        .await;
        answer_quickly(&s, 5).await;
    }
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}
