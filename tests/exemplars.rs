//! Exemplars (issue 18): asked for OpenMetrics, the admin port's `/metrics` puts the trace of the
//! latest sampled request on the request-duration bucket its duration fell in. The scrape is read
//! by a real OpenMetrics parser of another language, Python's `prometheus_client` (strict: it
//! refuses malformed OpenMetrics), pinned and installed by scripts/mcp-peers.sh; the trace is the
//! one a real OTLP receiver got. Without that `Accept`, the text format 0.0.4 is what it was.

mod common;
// Only the tracing targets need the receiver; not in common/mod.rs so the other test targets do
// not compile it. This one uses a part of it.
#[path = "common/otlp.rs"]
#[allow(dead_code)]
mod otlp;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::client::raw_post;
use common::keys::{pairs, write_keys};
use common::metrics::{om_family, parse_openmetrics, registry_text};
use common::ratelimit::call_body;
use common::sentinel::{self, TempDir, TestSentinel};
use common::upstream::{UpstreamConfig, spawn_upstream_with};
use otlp::{Collector, SERVER, start_collector};
use serde_json::{Value, json};

/// What Prometheus sends (its default scrape protocols).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const DURATION: &str = "mcp_sentinel_request_duration_seconds";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent(trace: &str, sampled: bool) -> String {
    format!(
        "00-{trace}-00f067aa0ba902b7-{}",
        if sampled { "01" } else { "00" }
    )
}

const KEY: &str = "ak_exemplar_alice_01";

/// A sentinel with most of what registers metrics on (API keys, a policy, a rate limit, audit to
/// a file), so the parser reads every kind of family; `tracing` as given.
async fn start(tracing: &str, dir: &TempDir) -> (TestSentinel, common::upstream::Upstream) {
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    let keys = dir.path("keys.yaml");
    write_keys(&keys, &[(KEY, "alice", &["dev"])]);
    let yaml = format!(
        "auth:\n  api_keys:\n    file: {keys}\npolicy:\n  default: deny\n  rules:\n    - {{name: dev, effect: allow, groups: [dev], tools: [echo]}}\nrate_limits:\n  rules:\n    - name: echo-budget\n      match: {{tools: [echo]}}\n      limits: [{{rate: 1000/minute}}]\n      key: [subject]\naudit:\n  sinks:\n    - {{type: file, path: {audit}}}\nlog: {{level: warn}}\ntracing:\n{tracing}",
        keys = keys.display(),
        audit = dir.path("audit.jsonl").display(),
    );
    let s = sentinel::start_with(sentinel::config_from_yaml(&yaml, &up.url()), true).await;
    (s, up)
}

fn traced(c: &Collector, ratio: f64) -> String {
    format!(
        "  enabled: true\n  endpoint: {}\n  sample_ratio: {ratio}\n  scheduled_delay: 50ms\n",
        c.grpc
    )
}

/// `echo`, with `traceparent` when given.
async fn echo(s: &TestSentinel, id: i64, traceparent: Option<&str>) {
    let mut headers = pairs(&[("X-API-Key", KEY), ("MCP-Protocol-Version", "2025-06-18")]);
    if let Some(tp) = traceparent {
        headers.push(("traceparent".to_owned(), tp.to_owned()));
    }
    let r = raw_post(
        &s.url,
        &headers,
        &call_body(id, "echo", json!({"text": "x"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `/metrics` with `accept` (none: reqwest's `*/*`): the content type and the body.
async fn scrape(s: &TestSentinel, accept: Option<&str>) -> (String, String) {
    let mut req = common::client::http_client().get(format!("{}/metrics", s.admin));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let resp = req.send().await.expect("the admin port answers");
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (ctype, resp.text().await.expect("a body"))
}

/// Every sample with an exemplar: (family, sample).
fn with_exemplars(families: &[Value]) -> Vec<(&str, &Value)> {
    families
        .iter()
        .flat_map(|f| {
            f["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |s| (f["name"].as_str().unwrap_or_default(), s))
        })
        .filter(|(_, s)| !s["exemplar"].is_null())
        .collect()
}

/// The `tools/call` series of the duration histogram: its count.
fn tools_call_count(families: &[Value]) -> f64 {
    om_family(families, DURATION)["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == format!("{DURATION}_count") && s["labels"]["method"] == "tools/call")
        .and_then(|s| s["value"].as_f64())
        .expect("a tools/call series")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_request_is_the_exemplar_of_its_duration_bucket() {
    let collector = start_collector().await;
    let dir = TempDir::new("exemplars");
    let (s, _up) = start(&traced(&collector, 1.0), &dir).await;
    let before = unix_now();
    echo(&s, 1, Some(&traceparent(TRACE, true))).await;
    // A caller's "not sampled" is followed: no exemplar of it, none replaced by it.
    echo(&s, 2, Some(&traceparent(&"1".repeat(32), false))).await;
    let after = unix_now();
    let spans = collector.trace(TRACE, 1).await;
    let server = spans.iter().find(|x| x.kind == SERVER).unwrap();

    let (ctype, text) = scrape(&s, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(ctype, OPENMETRICS);
    let families = parse_openmetrics(&text);
    assert_eq!(tools_call_count(&families), 2.0);
    let hits = with_exemplars(&families);
    assert_eq!(hits.len(), 1, "one exemplar: {hits:#?}");
    let (name, sample) = hits[0];
    assert_eq!(name, DURATION);
    assert_eq!(sample["name"], format!("{DURATION}_bucket"));
    assert_eq!(sample["labels"]["method"], "tools/call");
    let e = &sample["exemplar"];
    assert_eq!(
        e["labels"],
        json!({"trace_id": TRACE, "span_id": server.span_id})
    );
    let t = e["timestamp"].as_f64().expect("a timestamp");
    assert!(
        before - 1.0 <= t && t <= after + 1.0,
        "{t} not in {before}..{after}"
    );
    // The bucket the value falls in: at most its bound, above the bound before it.
    let value = e["value"].as_f64().expect("a value");
    let bounds: Vec<f64> = om_family(&families, DURATION)["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["labels"]["method"] == "tools/call" && s["labels"]["le"].is_string())
        .map(|s| s["labels"]["le"].as_str().unwrap().parse().unwrap())
        .collect();
    let le: f64 = sample["labels"]["le"].as_str().unwrap().parse().unwrap();
    let below = bounds
        .iter()
        .copied()
        .filter(|b| *b < le)
        .fold(0.0, f64::max);
    assert!(below < value && value <= le, "{value} in ({below}, {le}]");
    assert!(value > 0.0 && value < 5.0, "{value}");

    // Counters as OpenMetrics has them: the family without `_total`, the sample with it.
    let requests = om_family(&families, "mcp_sentinel_requests");
    assert_eq!(requests["type"], "counter");
    assert!(
        requests["samples"].as_array().unwrap().iter().any(|s| {
            s["name"] == "mcp_sentinel_requests_total"
                && s["labels"] == json!({"method": "tools/call", "outcome": "forwarded"})
                && s["value"] == 2.0
        }),
        "{requests:#}"
    );

    // The parser read the other components' families too.
    for (name, kind) in [
        ("mcp_sentinel_authn", "counter"),
        ("mcp_sentinel_ratelimit", "counter"),
        ("mcp_sentinel_audit_records", "counter"),
        ("mcp_sentinel_api_keys", "gauge"),
        ("mcp_sentinel_check_duration_seconds", "histogram"),
    ] {
        assert_eq!(om_family(&families, name)["type"], kind, "{name}");
    }

    // Without the header: text 0.0.4, exactly what the crate writes, no exemplar.
    let registry = s.sentinel().metrics().registry();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let expected = registry_text(registry);
        let (ctype, text) = scrape(&s, None).await;
        assert_eq!(ctype, "text/plain; version=0.0.4");
        assert!(
            !text.contains("trace_id") && !text.contains("# EOF"),
            "{text}"
        );
        // The export counters move in the background: compare a scrape between two equal reads.
        if registry_text(registry) == expected {
            assert_eq!(text, expected);
            break;
        }
        assert!(Instant::now() < deadline, "the registry never stood still");
    }
    let (ctype, _) = scrape(&s, Some("text/plain;version=0.0.4")).await;
    assert_eq!(ctype, "text/plain; version=0.0.4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_exemplar_without_a_sampled_trace() {
    // Tracing off: a sampled caller's context is forwarded, nothing is recorded.
    let dir = TempDir::new("exemplars-off");
    let (s, _up) = start("  enabled: false\n", &dir).await;
    echo(&s, 1, Some(&traceparent(TRACE, true))).await;
    let (ctype, text) = scrape(&s, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(ctype, OPENMETRICS);
    let families = parse_openmetrics(&text);
    assert_eq!(tools_call_count(&families), 1.0);
    assert_eq!(with_exemplars(&families).len(), 0, "{text}");

    // Tracing on, nothing sampled: new traces at ratio 0, and a caller's "not sampled".
    let collector = start_collector().await;
    let dir = TempDir::new("exemplars-unsampled");
    let (s, _up) = start(&traced(&collector, 0.0), &dir).await;
    echo(&s, 1, None).await;
    echo(&s, 2, Some(&traceparent(TRACE, false))).await;
    let (_, text) = scrape(&s, Some(PROMETHEUS_ACCEPT)).await;
    let families = parse_openmetrics(&text);
    assert_eq!(tools_call_count(&families), 2.0);
    assert_eq!(with_exemplars(&families).len(), 0, "{text}");
}
