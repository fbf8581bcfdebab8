//! End to end through the sentinel with real peers: an rmcp client and an rmcp upstream on real
//! sockets, in every protocol revision. Whatever a client gets directly, it gets through the
//! sentinel; bytes, headers and SSE framing pass unchanged.

mod common;

use std::time::Duration;

use common::client::{
    ClientOptions, Era, assert_progress_streams, connect, exercise_all, legacy_headers,
    modern_headers, modern_request, parse_sse, raw_legacy_session, raw_post, raw_request, raw_send,
    tool_call,
};
use common::metrics::metric_value;
use common::sentinel;
use common::upstream::{UpstreamConfig, spawn_upstream, spawn_upstream_with};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_era_gets_the_same_results_through_the_sentinel() {
    for upstream_cfg in [UpstreamConfig::default(), UpstreamConfig::json()] {
        let upstream = spawn_upstream_with(upstream_cfg.clone()).await;
        let s = sentinel::start(&upstream.url()).await;
        for era in Era::all() {
            let label = format!("{} ({upstream_cfg:?})", era.label());
            let direct = connect(&upstream.url(), &era, &ClientOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{label}: direct connect: {e}"));
            let want = exercise_all(&direct).await;
            let proxied = connect(&s.url, &era, &ClientOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{label}: connect through the sentinel: {e}"));
            let got = exercise_all(&proxied).await;
            assert_eq!(got, want, "{label}");
            let _ = direct.cancel().await;
            let _ = proxied.cancel().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_client_before_the_result() {
    let upstream = spawn_upstream().await;
    let s = sentinel::start(&upstream.url()).await;
    assert_progress_streams(&s.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_result_streams_through() {
    for cfg in [UpstreamConfig::default(), UpstreamConfig::json()] {
        let upstream = spawn_upstream_with(cfg).await;
        let s = sentinel::start(&upstream.url()).await;
        let client = connect(&s.url, &Era::Modern, &ClientOptions::default())
            .await
            .unwrap();
        let result = client
            .call_tool(tool_call("big", json!({"bytes": 10 * 1024 * 1024})))
            .await
            .expect("big result");
        let text = result.content[0].as_text().expect("text content");
        assert_eq!(text.text.len(), 10 * 1024 * 1024);
        assert!(
            s.metric("mcp_sentinel_bytes_total{direction=\"out\"}")
                .await
                > 10.0 * 1024.0 * 1024.0
        );
        let _ = client.cancel().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_of_twenty_calls() {
    let upstream = spawn_upstream().await;
    let s = sentinel::start(&upstream.url()).await;
    let mut tasks = Vec::new();
    for session in 0..50 {
        let url = s.url.clone();
        tasks.push(tokio::spawn(async move {
            let era = if session % 2 == 0 {
                Era::Legacy(rmcp::model::ProtocolVersion::V_2025_06_18)
            } else {
                Era::Modern
            };
            let client = connect(&url, &era, &ClientOptions::default())
                .await
                .expect("connect");
            for call in 0..20 {
                let text = format!("s{session}-c{call}");
                let r = client
                    .call_tool(tool_call("echo", json!({"text": text})))
                    .await
                    .expect("echo");
                assert_eq!(r.content[0].as_text().unwrap().text, text);
                let r = client
                    .call_tool(tool_call("add", json!({"a": session, "b": call})))
                    .await
                    .expect("add");
                assert_eq!(
                    r.content[0].as_text().unwrap().text,
                    (session + call).to_string()
                );
            }
            let _ = client.cancel().await;
        }));
    }
    for t in tasks {
        t.await.expect("session task");
    }
    assert_eq!(upstream.calls("echo"), 1000);
    assert_eq!(upstream.calls("add"), 1000);
    let forwarded = s
        .metric_eventually(
            "mcp_sentinel_requests_total{method=\"tools/call\",outcome=\"forwarded\"}",
            2000.0,
        )
        .await;
    assert_eq!(forwarded, 2000.0);
}

#[tokio::test]
async fn bytes_and_headers_reach_the_upstream_as_they_should() {
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let s = sentinel::start(&upstream.url()).await;
    // Odd spacing and key order: the upstream must see exactly these bytes.
    let body = "{ \"params\" : {\"arguments\":{\"text\":\"spaced\"},  \"name\":\"echo\"}, \"id\":\"x-1\",\"method\":\"tools/call\",\"jsonrpc\":\"2.0\" }";
    let resp = reqwest::Client::new()
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret-hop")
        .header("mcp-param-text", "spaced")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("user-agent", "sentinel-test")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "x-1");
    let seen = upstream
        .last_request("tools/call")
        .expect("the upstream saw the call");
    assert_eq!(
        seen.body.as_ref(),
        body.as_bytes(),
        "original bytes forwarded"
    );
    assert_eq!(seen.header("host").unwrap(), upstream.addr.to_string());
    assert_eq!(
        seen.header("x-forwarded-for").unwrap(),
        "203.0.113.9, 127.0.0.1"
    );
    assert_eq!(seen.header("x-forwarded-proto").unwrap(), "http");
    assert_eq!(seen.header("mcp-param-text").unwrap(), "spaced");
    assert_eq!(seen.header("mcp-protocol-version").unwrap(), "2025-06-18");
    assert_eq!(seen.header("user-agent").unwrap(), "sentinel-test");
    assert_eq!(seen.header("content-type").unwrap(), "application/json");
    assert_eq!(
        seen.header("accept").unwrap(),
        "application/json, text/event-stream"
    );
    assert!(
        seen.header("x-hop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert!(
        seen.header("connection")
            .is_none_or(|c| !c.contains("x-hop"))
    );
}

#[tokio::test]
async fn modern_headers_are_forwarded() {
    let upstream = spawn_upstream().await;
    let s = sentinel::start(&upstream.url()).await;
    let mut hs = modern_headers("tools/call", Some("echo"));
    hs.push(("Mcp-Param-Text".into(), "m".into()));
    let r = raw_post(
        &s.url,
        &hs,
        &modern_request(
            3,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "m"}}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.final_message().unwrap()["result"]["content"][0]["text"],
        "m"
    );
    let seen = upstream.last_request("tools/call").unwrap();
    assert_eq!(seen.header("mcp-method").unwrap(), "tools/call");
    assert_eq!(seen.header("mcp-name").unwrap(), "echo");
    assert_eq!(seen.header("mcp-param-text").unwrap(), "m");
    assert_eq!(seen.header("mcp-protocol-version").unwrap(), "2026-07-28");
}

#[tokio::test]
async fn sse_framing_passes_unchanged() {
    let cfg = UpstreamConfig {
        sse_retry: Some(Duration::from_millis(1500)),
        ..UpstreamConfig::default()
    };
    let upstream = spawn_upstream_with(cfg).await;
    let s = sentinel::start(&upstream.url()).await;
    let call = json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"slow","arguments":{"steps":3,"delay_ms":5},"_meta":{"progressToken":"p"}}});
    let mut shapes = Vec::new();
    for url in [upstream.url(), s.url.clone()] {
        let (session, _) = raw_legacy_session(&url, "2025-11-25").await;
        let hs = legacy_headers("2025-11-25", session.as_deref());
        let r = raw_post(&url, &hs, &call).await;
        assert!(r.is_sse(), "{url}: {}", r.content_type());
        if url == s.url {
            assert_eq!(r.header("x-accel-buffering").as_deref(), Some("no"));
        }
        let events = parse_sse(&r.body);
        // The shape of the stream: which fields each event carries, and the data of each.
        let shape: Vec<(bool, Option<String>, String)> = events
            .iter()
            .map(|e| (e.id.is_some(), e.retry.clone(), e.data.clone()))
            .collect();
        shapes.push(shape);
    }
    assert!(
        shapes[0].iter().any(|(_, retry, _)| retry.is_some()),
        "the upstream primes with retry: {:?}",
        shapes[0]
    );
    assert_eq!(shapes[1], shapes[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_get_stream_stays_open_and_delete_ends_the_session() {
    let cfg = UpstreamConfig {
        sse_keep_alive: None,
        ..UpstreamConfig::default()
    };
    let upstream = spawn_upstream_with(cfg).await;
    let mut sc = sentinel::passthrough_config(&upstream.url());
    // A short upstream timeout must never cut an SSE stream.
    sc.upstream.timeout = Duration::from_millis(500);
    let s = sentinel::start_with(sc, true).await;
    let (session, _) = raw_legacy_session(&s.url, "2025-06-18").await;
    let session = session.unwrap();
    let hs = vec![
        ("Accept".to_string(), "text/event-stream".to_string()),
        ("Mcp-Session-Id".to_string(), session.clone()),
        ("MCP-Protocol-Version".to_string(), "2025-06-18".to_string()),
    ];
    let stream = raw_send(Method::GET, &s.url, &hs, None).await;
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["x-accel-buffering"], "no");
    assert_eq!(s.metric("mcp_sentinel_sse_streams_open").await, 1.0);
    let mut body = stream.bytes_stream();
    // Silent for longer than the upstream timeout: still open.
    let idle = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            match body.next().await {
                Some(Ok(chunk)) if chunk.iter().all(|b| b.is_ascii_whitespace()) => continue,
                Some(Ok(chunk))
                    if chunk.starts_with(b":")
                        || chunk.starts_with(b"retry")
                        || chunk.starts_with(b"id:")
                        || chunk.starts_with(b"data: \n")
                        || chunk.starts_with(b"data:\n") =>
                {
                    continue;
                }
                other => return other.map(|r| r.map(|b| String::from_utf8_lossy(&b).into_owned())),
            }
        }
    })
    .await;
    assert!(
        idle.is_err(),
        "the GET stream ended or carried a message: {idle:?}"
    );
    let del = raw_request(Method::DELETE, &s.url, &hs[1..], None).await;
    assert!(del.status < 300, "DELETE: {} {}", del.status, del.body);
    // Ending the session ends the stream.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream closed after DELETE");
    assert_eq!(
        s.metric_eventually("mcp_sentinel_sse_streams_open", 0.0)
            .await,
        0.0
    );
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let s = sentinel::start(&upstream.url()).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "3");
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let s = sentinel::start(&upstream.url()).await;
    let client = connect(&s.url, &Era::Modern, &ClientOptions::default())
        .await
        .unwrap();
    for i in 0..7 {
        client
            .call_tool(tool_call("echo", json!({"text": i.to_string()})))
            .await
            .unwrap();
    }
    client.list_tools(None).await.unwrap();
    client.list_tools(None).await.unwrap();
    let _ = client.cancel().await;
    let calls = "mcp_sentinel_requests_total{method=\"tools/call\",outcome=\"forwarded\"}";
    assert_eq!(s.metric_eventually(calls, 7.0).await, 7.0);
    let lists = "mcp_sentinel_requests_total{method=\"tools/list\",outcome=\"forwarded\"}";
    assert_eq!(s.metric_eventually(lists, 2.0).await, 2.0);
    let text = s.metrics().await;
    let discover = metric_value(
        &text,
        "mcp_sentinel_requests_total{method=\"server/discover\",outcome=\"forwarded\"}",
    );
    assert!(discover >= 1.0, "the modern client discovered first");
    let count = metric_value(
        &text,
        "mcp_sentinel_request_duration_seconds_count{method=\"tools/call\"}",
    );
    assert_eq!(count, 7.0);
    let upstream_count = metric_value(&text, "mcp_sentinel_upstream_duration_seconds_count");
    assert!(upstream_count >= 9.0, "{upstream_count}");
    assert!(metric_value(&text, "mcp_sentinel_bytes_total{direction=\"in\"}") > 0.0);
    assert_eq!(
        s.metric_eventually("mcp_sentinel_in_flight_requests", 0.0)
            .await,
        0.0
    );
    assert!(text.contains("mcp_sentinel_build_info{version=\""));
    assert!(text.contains("mcp_sentinel_check_duration_seconds_count{check=\"transport\"}"));
    assert_eq!(s.metric("mcp_sentinel_ready").await, 1.0);
}
