//! Every malformed or unacceptable request gets the exact HTTP status and JSON-RPC error, a
//! metric, and never reaches the upstream; upstream failures become 502/504 with the request id.

mod common;

use std::time::Duration;

use common::client::{modern_request, raw_legacy_session, raw_request};
use common::keys::pairs;
use common::metrics::{counter_before, metric_value};
use common::sentinel::{self, TestSentinel};
use common::upstream::spawn_upstream;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Sends raw bytes with full control of the headers (no defaults added).
async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("sentinel answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

const JSON_CT: (&str, &str) = ("content-type", "application/json");
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

fn error_body(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// One refused request and its exact answer.
struct Case {
    name: &'static str,
    method: Method,
    url: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<Vec<u8>>,
    status: u16,
    /// The exact body; `None` for a status-only answer.
    body_json: Option<Value>,
    reason: &'static str,
}

impl Case {
    /// A POST of `body` to `url` with the right Content-Type and Accept; no answer yet.
    fn post(name: &'static str, url: &str, body: &[u8]) -> Self {
        Self {
            name,
            method: Method::POST,
            url: url.to_string(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(body.to_vec()),
            status: 0,
            body_json: None,
            reason: "",
        }
    }

    /// These headers instead of the defaults.
    fn headers(mut self, headers: &[(&'static str, &'static str)]) -> Self {
        self.headers = headers.to_vec();
        self
    }

    /// These headers after the defaults.
    fn with(mut self, headers: &[(&'static str, &'static str)]) -> Self {
        self.headers.extend_from_slice(headers);
        self
    }

    /// Answered `status` with this JSON-RPC error, counted as a denial for `reason`.
    fn answers(
        mut self,
        status: u16,
        id: Value,
        code: i64,
        message: &str,
        reason: &'static str,
    ) -> Self {
        self.status = status;
        self.body_json = Some(error_body(id, code, message));
        self.reason = reason;
        self
    }
}

#[tokio::test]
async fn every_bad_input_gets_its_exact_answer() {
    let upstream = spawn_upstream().await;
    let mut cfg = sentinel::passthrough_config(&upstream.url());
    cfg.limits.max_body_bytes = 64 * 1024;
    let s = sentinel::start_with(cfg, true).await;
    let url = s.url.clone();
    let other = url.replace("/mcp", "/other");
    let call = |id: i64| {
        serde_json::to_vec(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})).unwrap()
    };
    let too_big = serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x".repeat(70 * 1024)}}})).unwrap();
    let modern_call = serde_json::to_vec(&modern_request(
        11,
        "tools/call",
        json!({"name":"echo","arguments":{"text":"x"}}),
    ))
    .unwrap();
    let modern_note = serde_json::to_vec(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})).unwrap();
    let batch =
        br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#
            .to_vec();

    let post = |name, body: &[u8]| Case::post(name, &url, body);
    let modern = |name: &'static str| {
        [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ]
    };
    const AMBIGUOUS: &str = "Invalid request: it can be read more than one way";
    const MISMATCH: i64 = -32020;
    const ACCEPT_BOTH: &str = "Accept must list application/json and text/event-stream";
    let cases = vec![
        post("malformed JSON", b"{\"jsonrpc\":").answers(400, Value::Null, -32700, "Parse error", "parse_error"),
        post("JSON but not an object", b"42").answers(400, Value::Null, -32600, "Invalid request", "invalid_request"),
        post("wrong jsonrpc version keeps the id", br#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#)
            .answers(400, json!(9), -32600, "Invalid request", "invalid_request"),
        post("tools/call without a string name", br#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{"name":5}}"#)
            .answers(400, json!("q"), -32602, "Invalid params", "invalid_params"),
        post("wrong Content-Type", &call(1))
            .headers(&[("content-type", "text/plain"), ACCEPT])
            .answers(415, Value::Null, -32600, "Content-Type must be application/json", "unsupported_media_type"),
        post("Accept without text/event-stream", &call(1))
            .headers(&[JSON_CT, ("accept", "application/json")])
            .answers(406, Value::Null, -32600, ACCEPT_BOTH, "not_acceptable"),
        Case { method: Method::GET, body: None, ..post("GET without text/event-stream", b"") }
            .headers(&[("accept", "application/json")])
            .answers(406, Value::Null, -32600, ACCEPT_BOTH, "not_acceptable"),
        post("session id with a space", &call(1))
            .with(&[("mcp-session-id", "a b")])
            .answers(400, Value::Null, -32600, "Invalid session id", "invalid_session_id"),
        post("body over the limit (Content-Length)", &too_big)
            .answers(413, Value::Null, -32600, "Request body too large", "body_too_large"),
        Case { url: other, ..post("other path", &call(1)) }
            .answers(404, Value::Null, -32600, "Not found", "not_found"),
        Case { method: Method::PUT, ..post("PUT", &call(1)) }
            .answers(405, Value::Null, -32600, "Method not allowed", "method_not_allowed"),
        post("modern Mcp-Name disagrees with the body", &modern_call)
            .with(&modern("add"))
            .answers(400, json!(11), MISMATCH, "Header mismatch: Mcp-Name header differs from the body's params.name/params.uri", "header_mismatch"),
        post("modern Mcp-Name missing", &modern_call)
            .with(&modern("")[..2])
            .answers(400, json!(11), MISMATCH, "Header mismatch: Mcp-Name header missing (body has the target)", "header_mismatch"),
        post("modern version header disagrees with _meta", &modern_call)
            .with(&[("mcp-protocol-version", "2026-09-01"), ("mcp-method", "tools/call"), ("mcp-name", "echo")])
            .answers(400, json!(11), MISMATCH, "Header mismatch: MCP-Protocol-Version differs from _meta", "header_mismatch"),
        post("a key repeated in one object", br#"{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"echo","name":"add"}}"#)
            .answers(400, Value::Null, -32600, AMBIGUOUS, "ambiguous"),
        post("a protocol field in another case", br#"{"jsonrpc":"2.0","id":22,"method":"ping","Method":"tools/call"}"#)
            .answers(400, Value::Null, -32600, AMBIGUOUS, "ambiguous"),
        post("argument keys equal under case folding", br#"{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a","TEXT":"b"}}}"#)
            .answers(400, Value::Null, -32600, AMBIGUOUS, "ambiguous"),
        post("a body that is not UTF-8", b"{\"jsonrpc\":\"2.0\",\"id\":24,\"method\":\"ping\",\"params\":{\"x\":\"\xff\"}}")
            .answers(400, Value::Null, -32600, AMBIGUOUS, "ambiguous"),
        post("legacy Mcp-Method disagrees with the body", &call(25))
            .with(&[("mcp-method", "tools/list")])
            .answers(400, json!(25), MISMATCH, "Header mismatch: Mcp-Method header differs from the body's method", "header_mismatch"),
        post("Mcp-Session-Id sent twice", &call(30))
            .with(&[("mcp-session-id", "s-1"), ("mcp-session-id", "s-2")])
            .answers(400, Value::Null, MISMATCH, "Header mismatch: mcp-session-id sent more than once", "header_mismatch"),
        post("Mcp-Name sent twice", &call(26))
            .with(&[("mcp-name", "echo"), ("mcp-name", "echo")])
            .answers(400, json!(26), MISMATCH, "Header mismatch: mcp-name sent more than once", "header_mismatch"),
        post("an MCP header spelled with an underscore", &call(27))
            .with(&[("mcp_method", "tools/call")])
            .answers(400, Value::Null, MISMATCH, "Header mismatch: mcp_method is not an MCP header name (spelled with '_')", "header_mismatch"),
        post("Mcp-Param header that mirrors no argument", &call(28))
            .with(&[("mcp-param-text", "y")])
            .answers(400, json!(28), MISMATCH, "Header mismatch: Mcp-Param-* header differs from the argument it mirrors", "header_mismatch"),
        post("a protocol version that is a list", &call(29))
            .with(&[("mcp-protocol-version", "2025-06-18, 2026-07-28")])
            .answers(400, Value::Null, -32600, "Invalid MCP-Protocol-Version header", "invalid_request"),
        Case {
            status: 400,
            reason: "header_mismatch",
            ..post("modern notification with a wrong Mcp-Method: status only", &modern_note)
                .with(&modern("")[..2])
        },
        post("batch in 2025-06-18", &batch)
            .with(&[("mcp-protocol-version", "2025-06-18")])
            .answers(400, Value::Null, -32600, "Batches are not allowed in this protocol version", "batch_not_allowed"),
    ];

    let calls_before = upstream.total_calls();
    for case in &cases {
        let series = format!(
            "mcp_sentinel_check_denials_total{{check=\"{}\",reason=\"{}\"}}",
            if matches!(
                case.reason,
                "parse_error"
                    | "invalid_request"
                    | "invalid_params"
                    | "header_mismatch"
                    | "ambiguous"
                    | "batch_not_allowed"
            ) {
                "parse"
            } else {
                "transport"
            },
            case.reason
        );
        let before = counter_before(&s.metrics().await, &series);
        let (status, headers, body) = send(
            case.method.clone(),
            &case.url,
            &case.headers,
            case.body.clone(),
        )
        .await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        match &case.body_json {
            Some(want) => {
                assert_eq!(
                    headers.get("content-type").unwrap(),
                    "application/json",
                    "{}",
                    case.name
                );
                let got: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|_| panic!("{}: body {body:?}", case.name));
                assert_eq!(&got, want, "{}", case.name);
            }
            None => assert_eq!(body, "", "{}", case.name),
        }
        if case.status == 405 {
            assert_eq!(headers.get("allow").unwrap(), "GET, POST, DELETE");
        }
        let after = metric_value(&s.metrics().await, &series);
        assert_eq!(after, before + 1.0, "{}: metric {series}", case.name);
    }
    assert_eq!(
        upstream.total_calls(),
        calls_before,
        "no refused request reached the upstream"
    );
    let rejected = metric_value(
        &s.metrics().await,
        "mcp_sentinel_requests_total{method=\"invalid\",outcome=\"rejected\"}",
    );
    assert!(
        rejected >= 5.0,
        "rejections are counted by outcome: {rejected}"
    );
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_while_streaming() {
    let upstream = spawn_upstream().await;
    let mut cfg = sentinel::passthrough_config(&upstream.url());
    cfg.limits.max_body_bytes = 1024;
    let s = sentinel::start_with(cfg, true).await;
    // A streamed body has no Content-Length, so the limit must be enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"pad\":\"".to_vec()),
        Ok(vec![b'x'; 4096]),
        Ok(b"\"}}".to_vec()),
    ];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = reqwest::Client::new()
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, error_body(Value::Null, -32600, "Request body too large"));
}

#[tokio::test]
async fn the_default_limit_is_4_mib() {
    let upstream = spawn_upstream().await;
    let s = sentinel::start(&upstream.url()).await;
    let pad = |n: usize| {
        let head = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"p":""#;
        let tail = br#""}}"#;
        let mut b = head.to_vec();
        b.extend(std::iter::repeat_n(b'x', n - head.len() - tail.len()));
        b.extend_from_slice(tail);
        b
    };
    let (status, _, _) = send(
        Method::POST,
        &s.url,
        &[JSON_CT, ACCEPT],
        Some(pad(4 * 1024 * 1024 + 1)),
    )
    .await;
    assert_eq!(status, 413);
    // Exactly at the limit is read and forwarded (the upstream decides what to make of it).
    let (status, _, _) = send(
        Method::POST,
        &s.url,
        &[JSON_CT, ACCEPT],
        Some(pad(4 * 1024 * 1024)),
    )
    .await;
    assert_ne!(status, 413);
}

async fn post_call(url: &str, id: i64) -> (u16, String) {
    let r = raw_request(
        Method::POST,
        url,
        &pairs(&[("content-type", "application/json")]),
        Some(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})),
    )
    .await;
    (r.status, r.body)
}

/// Posts a call with `id` and asserts the exact upstream-failure answer and that it is counted
/// under `kind`; returns how long the answer took.
async fn assert_upstream_failure(
    s: &TestSentinel,
    id: i64,
    status: u16,
    message: &str,
    kind: &str,
) -> Duration {
    let started = std::time::Instant::now();
    let (got, body) = post_call(&s.url, id).await;
    let took = started.elapsed();
    assert_eq!(got, status);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error_body(json!(id), -32603, message)
    );
    let series = format!("mcp_sentinel_upstream_errors_total{{kind=\"{kind}\"}}");
    assert_eq!(s.metric(&series).await, 1.0);
    took
}

/// An upstream that reads each request, then closes the connection without answering, or
/// (`hold`) keeps it open and never answers.
async fn mute_upstream(hold: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            if hold {
                held.push(sock);
            }
        }
    });
    format!("http://{addr}/mcp")
}

#[tokio::test]
async fn upstream_refused_is_502_with_the_request_id() {
    // A port that was just free: nothing listens there.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let s = sentinel::start_with(
        sentinel::passthrough_config(&format!("http://{addr}/mcp")),
        false,
    )
    .await;
    assert_upstream_failure(&s, 41, 502, "Upstream unavailable", "connect").await;
    let series = "mcp_sentinel_requests_total{method=\"tools/call\",outcome=\"upstream_error\"}";
    assert_eq!(s.metric_eventually(series, 1.0).await, 1.0);
    let (status, body) = s.get_admin("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"ready": false, "blockers": ["upstream"]})
    );
}

#[tokio::test]
async fn upstream_reset_is_502_and_timeout_is_504() {
    let reset = mute_upstream(false).await;
    let s = sentinel::start_with(sentinel::passthrough_config(&reset), false).await;
    assert_upstream_failure(&s, 42, 502, "Upstream unavailable", "reset").await;

    let silent = mute_upstream(true).await;
    let mut cfg = sentinel::passthrough_config(&silent);
    cfg.upstream.timeout = Duration::from_millis(300);
    let s = sentinel::start_with(cfg, false).await;
    let took = assert_upstream_failure(&s, 43, 504, "Upstream timed out", "timeout").await;
    assert!(took < Duration::from_secs(3), "timed out promptly");
}

#[tokio::test]
async fn an_ended_session_passes_through_as_404() {
    let upstream = spawn_upstream().await;
    let s = sentinel::start(&upstream.url()).await;
    let (session, init) = raw_legacy_session(&s.url, "2025-06-18").await;
    assert_eq!(init.status, 200);
    let session = session.expect("the upstream issues a session");
    let hs = pairs(&[
        ("mcp-session-id", &session),
        ("mcp-protocol-version", "2025-06-18"),
    ]);
    // The upstream ends the session on its own (here: a DELETE that bypasses the sentinel).
    let del = raw_request(Method::DELETE, &upstream.url(), &hs, None).await;
    assert!(
        del.status == 200 || del.status == 204 || del.status == 202,
        "DELETE: {}",
        del.status
    );
    let mut hs2 = hs.clone();
    hs2.push(("content-type".into(), "application/json".into()));
    let list = json!({"jsonrpc":"2.0","id":5,"method":"tools/list"});
    let after = raw_request(Method::POST, &s.url, &hs2, Some(&list)).await;
    assert_eq!(after.status, 404, "{}", after.body);
    let series = "mcp_sentinel_requests_total{method=\"tools/list\",outcome=\"forwarded\"}";
    assert_eq!(s.metric_eventually(series, 1.0).await, 1.0);
    // The upstream's 404 also ended the sentinel's binding: the next try is answered here.
    let again = raw_request(Method::POST, &s.url, &hs2, Some(&list)).await;
    assert_eq!(again.status, 404);
    let body: serde_json::Value = serde_json::from_str(&again.body).unwrap();
    assert_eq!(body["id"], 5);
    assert_eq!(body["error"]["message"], "Session not found");
    assert_eq!(s.metric(series).await, 1.0);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let upstream = spawn_upstream().await;
    let mut cfg = sentinel::passthrough_config(&upstream.url());
    cfg.limits.body_read_timeout = Duration::from_millis(300);
    let s = sentinel::start_with(cfg, true).await;
    // Declares 100 bytes, sends 10, then stalls.
    let mut sock = tokio::net::TcpStream::connect(
        s.url.trim_start_matches("http://").trim_end_matches("/mcp"),
    )
    .await
    .unwrap();
    use tokio::io::AsyncWriteExt;
    sock.write_all(b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\"")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Request body timed out"}}"#), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let series = "mcp_sentinel_check_denials_total{check=\"transport\",reason=\"body_timeout\"}";
    assert_eq!(s.metric(series).await, 1.0);
}
