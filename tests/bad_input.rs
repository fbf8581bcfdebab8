//! Every malformed or unacceptable request gets the exact HTTP status and JSON-RPC error, a
//! metric, and never reaches the upstream; upstream failures become 502/504 with the request id.

mod common;

use std::time::Duration;

use common::client::{modern_request, raw_legacy_session, raw_request};
use common::metrics::{counter_before, metric_value};
use common::sentinel;
use common::upstream::spawn_upstream;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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
    let cases = vec![
        Case {
            name: "malformed JSON",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(b"{\"jsonrpc\":".to_vec()),
            status: 400,
            body_json: Some(error_body(Value::Null, -32700, "Parse error")),
            reason: "parse_error",
        },
        Case {
            name: "JSON but not an object",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(b"42".to_vec()),
            status: 400,
            body_json: Some(error_body(Value::Null, -32600, "Invalid request")),
            reason: "invalid_request",
        },
        Case {
            name: "wrong jsonrpc version keeps the id",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(br#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#.to_vec()),
            status: 400,
            body_json: Some(error_body(json!(9), -32600, "Invalid request")),
            reason: "invalid_request",
        },
        Case {
            name: "tools/call without a string name",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(
                br#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{"name":5}}"#.to_vec(),
            ),
            status: 400,
            body_json: Some(error_body(json!("q"), -32602, "Invalid params")),
            reason: "invalid_params",
        },
        Case {
            name: "wrong Content-Type",
            method: Method::POST,
            url: url.clone(),
            headers: vec![("content-type", "text/plain"), ACCEPT],
            body: Some(call(1)),
            status: 415,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Content-Type must be application/json",
            )),
            reason: "unsupported_media_type",
        },
        Case {
            name: "Accept without text/event-stream",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ("accept", "application/json")],
            body: Some(call(1)),
            status: 406,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Accept must list application/json and text/event-stream",
            )),
            reason: "not_acceptable",
        },
        Case {
            name: "GET without text/event-stream",
            method: Method::GET,
            url: url.clone(),
            headers: vec![("accept", "application/json")],
            body: None,
            status: 406,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Accept must list application/json and text/event-stream",
            )),
            reason: "not_acceptable",
        },
        Case {
            name: "session id with a space",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT, ("mcp-session-id", "a b")],
            body: Some(call(1)),
            status: 400,
            body_json: Some(error_body(Value::Null, -32600, "Invalid session id")),
            reason: "invalid_session_id",
        },
        Case {
            name: "body over the limit (Content-Length)",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(too_big),
            status: 413,
            body_json: Some(error_body(Value::Null, -32600, "Request body too large")),
            reason: "body_too_large",
        },
        Case {
            name: "other path",
            method: Method::POST,
            url: other,
            headers: vec![JSON_CT, ACCEPT],
            body: Some(call(1)),
            status: 404,
            body_json: Some(error_body(Value::Null, -32600, "Not found")),
            reason: "not_found",
        },
        Case {
            name: "PUT",
            method: Method::PUT,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(call(1)),
            status: 405,
            body_json: Some(error_body(Value::Null, -32600, "Method not allowed")),
            reason: "method_not_allowed",
        },
        Case {
            name: "modern Mcp-Name disagrees with the body",
            method: Method::POST,
            url: url.clone(),
            headers: vec![
                JSON_CT,
                ACCEPT,
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "add"),
            ],
            body: Some(modern_call.clone()),
            status: 400,
            body_json: Some(error_body(
                json!(11),
                -32020,
                "Header mismatch: Mcp-Name header differs from the body's params.name/params.uri",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "modern Mcp-Name missing",
            method: Method::POST,
            url: url.clone(),
            headers: vec![
                JSON_CT,
                ACCEPT,
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
            ],
            body: Some(modern_call.clone()),
            status: 400,
            body_json: Some(error_body(
                json!(11),
                -32020,
                "Header mismatch: Mcp-Name header missing (body has the target)",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "modern version header disagrees with _meta",
            method: Method::POST,
            url: url.clone(),
            headers: vec![
                JSON_CT,
                ACCEPT,
                ("mcp-protocol-version", "2026-09-01"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
            ],
            body: Some(modern_call),
            status: 400,
            body_json: Some(error_body(
                json!(11),
                -32020,
                "Header mismatch: MCP-Protocol-Version differs from _meta",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "a key repeated in one object",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(br#"{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"echo","name":"add"}}"#.to_vec()),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Invalid request: it can be read more than one way",
            )),
            reason: "ambiguous",
        },
        Case {
            name: "a protocol field in another case",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(br#"{"jsonrpc":"2.0","id":22,"method":"ping","Method":"tools/call"}"#.to_vec()),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Invalid request: it can be read more than one way",
            )),
            reason: "ambiguous",
        },
        Case {
            name: "argument keys equal under case folding",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(br#"{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a","TEXT":"b"}}}"#.to_vec()),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Invalid request: it can be read more than one way",
            )),
            reason: "ambiguous",
        },
        Case {
            name: "a body that is not UTF-8",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT],
            body: Some(b"{\"jsonrpc\":\"2.0\",\"id\":24,\"method\":\"ping\",\"params\":{\"x\":\"\xff\"}}".to_vec()),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Invalid request: it can be read more than one way",
            )),
            reason: "ambiguous",
        },
        Case {
            name: "legacy Mcp-Method disagrees with the body",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT, ("mcp-method", "tools/list")],
            body: Some(call(25)),
            status: 400,
            body_json: Some(error_body(
                json!(25),
                -32020,
                "Header mismatch: Mcp-Method header differs from the body's method",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "Mcp-Session-Id sent twice",
            method: Method::POST,
            url: url.clone(),
            headers: vec![
                JSON_CT,
                ACCEPT,
                ("mcp-session-id", "s-1"),
                ("mcp-session-id", "s-2"),
            ],
            body: Some(call(30)),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32020,
                "Header mismatch: mcp-session-id sent more than once",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "Mcp-Name sent twice",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT, ("mcp-name", "echo"), ("mcp-name", "echo")],
            body: Some(call(26)),
            status: 400,
            body_json: Some(error_body(
                json!(26),
                -32020,
                "Header mismatch: mcp-name sent more than once",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "an MCP header spelled with an underscore",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT, ("mcp_method", "tools/call")],
            body: Some(call(27)),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32020,
                "Header mismatch: mcp_method is not an MCP header name (spelled with '_')",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "Mcp-Param header that mirrors no argument",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT, ("mcp-param-text", "y")],
            body: Some(call(28)),
            status: 400,
            body_json: Some(error_body(
                json!(28),
                -32020,
                "Header mismatch: Mcp-Param-* header differs from the argument it mirrors",
            )),
            reason: "header_mismatch",
        },
        Case {
            name: "a protocol version that is a list",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT, ("mcp-protocol-version", "2025-06-18, 2026-07-28")],
            body: Some(call(29)),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Invalid MCP-Protocol-Version header",
            )),
            reason: "invalid_request",
        },
        Case {
            name: "modern notification with a wrong Mcp-Method: status only",
            method: Method::POST,
            url: url.clone(),
            headers: vec![
                JSON_CT,
                ACCEPT,
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
            ],
            body: Some(modern_note),
            status: 400,
            body_json: None,
            reason: "header_mismatch",
        },
        Case {
            name: "batch in 2025-06-18",
            method: Method::POST,
            url: url.clone(),
            headers: vec![JSON_CT, ACCEPT, ("mcp-protocol-version", "2025-06-18")],
            body: Some(batch),
            status: 400,
            body_json: Some(error_body(
                Value::Null,
                -32600,
                "Batches are not allowed in this protocol version",
            )),
            reason: "batch_not_allowed",
        },
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
        &h(&[("content-type", "application/json")]),
        Some(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})),
    )
    .await;
    (r.status, r.body)
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
    let (status, body) = post_call(&s.url, 41).await;
    assert_eq!(status, 502);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error_body(json!(41), -32603, "Upstream unavailable")
    );
    assert_eq!(
        s.metric("mcp_sentinel_upstream_errors_total{kind=\"connect\"}")
            .await,
        1.0
    );
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
    // An upstream that reads the request, then closes the connection without answering.
    let reset = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = reset.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = reset.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            drop(sock);
        }
    });
    let s = sentinel::start_with(
        sentinel::passthrough_config(&format!("http://{reset_addr}/mcp")),
        false,
    )
    .await;
    let (status, body) = post_call(&s.url, 42).await;
    assert_eq!(status, 502);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error_body(json!(42), -32603, "Upstream unavailable")
    );
    assert_eq!(
        s.metric("mcp_sentinel_upstream_errors_total{kind=\"reset\"}")
            .await,
        1.0
    );

    // An upstream that reads the request and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut sock, _)) = silent.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            held.push(sock);
        }
    });
    let mut cfg = sentinel::passthrough_config(&format!("http://{silent_addr}/mcp"));
    cfg.upstream.timeout = Duration::from_millis(300);
    let s = sentinel::start_with(cfg, false).await;
    let started = std::time::Instant::now();
    let (status, body) = post_call(&s.url, 43).await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timed out promptly"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error_body(json!(43), -32603, "Upstream timed out")
    );
    assert_eq!(
        s.metric("mcp_sentinel_upstream_errors_total{kind=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_ended_session_passes_through_as_404() {
    let upstream = spawn_upstream().await;
    let s = sentinel::start(&upstream.url()).await;
    let (session, init) = raw_legacy_session(&s.url, "2025-06-18").await;
    assert_eq!(init.status, 200);
    let session = session.expect("the upstream issues a session");
    let hs = h(&[
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
