//! The test bed's wire, raw: what rmcp's clients put on the wire and how rmcp's server answers
//! malformed, mismatched or unsessioned requests, in both eras. These are the references the
//! sentinel's own checks and pass-through are compared with (see testbed.rs for the bed's
//! clients and upstream working together).

mod common;

use std::time::Duration;

use common::{
    client::{
        self, MODERN_VERSION, RawResponse, base64_header, exercise_all, legacy_headers,
        modern_headers, modern_request, raw_legacy_session, raw_post, raw_request, raw_send,
    },
    upstream::{CAFE_URI, UpstreamConfig, spawn_upstream, spawn_upstream_with},
};
use serde_json::{Value, json};

/// What rmcp's 2026-07-28 client puts on the wire, checked against the body.
/// The sentinel's header/body agreement checks must accept exactly this.
#[tokio::test]
async fn modern_client_headers_agree_with_the_body() {
    let up = spawn_upstream().await;
    let c = client::modern_client(&up.url()).await.expect("connect");
    exercise_all(&c).await;
    c.cancel().await.expect("close client");

    let requests = up.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.method, http::Method::POST, "modern clients only POST");
        assert!(r.header("mcp-session-id").is_none());
        assert_eq!(
            r.header("accept").as_deref(),
            Some(client::RMCP_ACCEPT),
            "{r:?}"
        );
        let body = r.json().expect("JSON body");
        let method = body["method"].as_str().expect("method").to_owned();
        assert_eq!(r.header("mcp-method"), Some(method.clone()));
        assert_eq!(
            r.header("mcp-protocol-version").as_deref(),
            Some(MODERN_VERSION)
        );
        let meta = &body["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            json!(MODERN_VERSION)
        );
        assert!(meta["io.modelcontextprotocol/clientCapabilities"].is_object());
        assert!(meta["io.modelcontextprotocol/clientInfo"].is_object());
        if method != "server/discover" {
            assert!(meta["progressToken"].is_number(), "rmcp tags every request");
        }
        let expected_name = match method.as_str() {
            "tools/call" | "prompts/get" => body["params"]["name"].as_str(),
            "resources/read" => body["params"]["uri"].as_str(),
            _ => None,
        };
        let name = r.header("mcp-name");
        match expected_name {
            None => assert_eq!(name, None, "{method}"),
            Some(CAFE_URI) => assert_eq!(name, Some(base64_header(CAFE_URI))),
            Some(expected) => assert_eq!(name.as_deref(), Some(expected)),
        }
        let region = r.header("mcp-param-region");
        if body["params"]["name"] == json!("route") {
            assert_eq!(region.as_deref(), Some("eu-west"));
        } else {
            assert_eq!(region, None);
        }
    }
    assert_eq!(requests[0].rpc_method().as_deref(), Some("server/discover"));
    assert_eq!(
        base64_header(CAFE_URI),
        "=?base64?ZmlsZTovLy9kb2NzL2NhZsOpLm1k?="
    );
}

/// What rmcp's legacy client does with a session: initialize, GET stream, DELETE.
#[tokio::test]
async fn legacy_client_session_lifecycle() {
    let up = spawn_upstream().await;
    for version in client::legacy_versions() {
        up.clear_requests();
        let c = client::legacy_client(&up.url(), Some(version.clone()))
            .await
            .expect("connect");
        c.list_all_tools().await.expect("tools/list");
        c.cancel().await.expect("close client");
        // The DELETE is sent from rmcp's transport worker as it shuts down.
        let mut requests = up.requests();
        for _ in 0..50 {
            if requests.iter().any(|r| r.method == http::Method::DELETE) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            requests = up.requests();
        }

        let init = &requests[0];
        assert_eq!(init.rpc_method().as_deref(), Some("initialize"));
        assert_eq!(init.header("mcp-protocol-version"), None, "{version}");
        assert_eq!(init.header("mcp-method"), None);
        let session = init.response_headers["mcp-session-id"]
            .to_str()
            .expect("session id is text")
            .to_owned();
        assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)));

        for r in &requests[1..] {
            assert_eq!(
                r.header("mcp-session-id").as_deref(),
                Some(&*session),
                "{r:?}"
            );
            assert_eq!(r.header("mcp-protocol-version"), Some(version.to_string()));
            assert_eq!(
                r.header("mcp-method"),
                None,
                "no SEP-2243 headers before 2026-07-28"
            );
        }
        let methods: Vec<(String, Option<String>, u16)> = requests
            .iter()
            .map(|r| (r.method.to_string(), r.rpc_method(), r.status.as_u16()))
            .collect();
        for expected in [
            (
                "POST".to_owned(),
                Some("notifications/initialized".to_owned()),
                202,
            ),
            ("GET".to_owned(), None, 200),
            ("POST".to_owned(), Some("tools/list".to_owned()), 200),
            ("DELETE".to_owned(), None, 202),
        ] {
            assert!(methods.contains(&expected), "{version}: {methods:?}");
        }
    }
}

/// `(label, headers, JSON-RPC method, params)`
type MismatchCase = (&'static str, Vec<(String, String)>, &'static str, Value);

fn assert_header_mismatch(response: &RawResponse, id: i64, label: &str) {
    assert_eq!(response.status, 400, "{label}: {}", response.body);
    assert_eq!(response.content_type(), "application/json", "{label}");
    let body: Value = serde_json::from_str(&response.body).expect("JSON error body");
    assert_eq!(body["jsonrpc"], json!("2.0"), "{label}");
    assert_eq!(body["id"], json!(id), "{label}");
    assert_eq!(body["error"]["code"], json!(-32020), "{label}: {body}");
}

/// rmcp's own header/body agreement rules for 2026-07-28 requests: the
/// reference the sentinel's checks are compared with.
#[tokio::test]
async fn modern_header_body_disagreement_is_400_header_mismatch() {
    let up = spawn_upstream().await;
    let url = up.url();
    let echo = json!({ "name": "echo", "arguments": { "text": "x" } });
    let route = json!({ "name": "route", "arguments": { "region": "eu", "text": "x" } });
    let cafe = json!({ "uri": CAFE_URI });
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let v = MODERN_VERSION;
    let cafe_b64 = base64_header(CAFE_URI);
    let wrong_b64 = base64_header("file:///docs/other.md");
    let cases: Vec<MismatchCase> = vec![
        (
            "Mcp-Name differs",
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "add"),
            ]),
            "tools/call",
            echo.clone(),
        ),
        (
            "Mcp-Name missing",
            h(&[("MCP-Protocol-Version", v), ("Mcp-Method", "tools/call")]),
            "tools/call",
            echo.clone(),
        ),
        (
            "Mcp-Method differs",
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "tools/list"),
                ("Mcp-Name", "echo"),
            ]),
            "tools/call",
            echo.clone(),
        ),
        (
            "Mcp-Method missing",
            h(&[("MCP-Protocol-Version", v), ("Mcp-Name", "echo")]),
            "tools/call",
            echo.clone(),
        ),
        (
            "MCP-Protocol-Version differs from _meta",
            h(&[
                ("MCP-Protocol-Version", "2025-11-25"),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "echo"),
            ]),
            "tools/call",
            echo.clone(),
        ),
        (
            "MCP-Protocol-Version missing",
            h(&[("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")]),
            "tools/call",
            echo.clone(),
        ),
        (
            "non-ASCII Mcp-Name sent raw-ASCII-different",
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "resources/read"),
                ("Mcp-Name", "file:///docs/cafe.md"),
            ]),
            "resources/read",
            cafe.clone(),
        ),
        (
            "base64 Mcp-Name of another value",
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "resources/read"),
                ("Mcp-Name", &wrong_b64),
            ]),
            "resources/read",
            cafe.clone(),
        ),
        (
            "base64 Mcp-Name not base64",
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "resources/read"),
                ("Mcp-Name", "=?base64?***?="),
            ]),
            "resources/read",
            cafe.clone(),
        ),
        (
            "Mcp-Param-Region differs",
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "route"),
                ("Mcp-Param-Region", "us"),
            ]),
            "tools/call",
            route.clone(),
        ),
        (
            "Mcp-Param-Region missing",
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "route"),
            ]),
            "tools/call",
            route.clone(),
        ),
    ];
    for (id, (label, headers, method, params)) in (1..).zip(cases) {
        let response = raw_post(&url, &headers, &modern_request(id, method, params)).await;
        assert_header_mismatch(&response, id, label);
    }
    assert_eq!(up.total_calls(), 0, "rejected before the handler");
    assert_eq!(up.reads(CAFE_URI), 0);

    // The agreeing forms are accepted, including the base64-wrapped name.
    let ok = [
        (
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "resources/read"),
                ("Mcp-Name", &cafe_b64),
            ]),
            "resources/read",
            cafe.clone(),
        ),
        (
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "route"),
                ("Mcp-Param-Region", "eu"),
            ]),
            "tools/call",
            route.clone(),
        ),
        (
            h(&[
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "=?base64?ZWNobw==?="),
            ]),
            "tools/call",
            echo.clone(),
        ),
    ];
    for (headers, method, params) in ok {
        let response = raw_post(&url, &headers, &modern_request(99, method, params)).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(response.final_message().expect("result")["result"].is_object());
    }
}

/// Status codes and error bodies of rmcp's modern path (pass-through reference).
#[tokio::test]
async fn modern_error_shapes() {
    let up = spawn_upstream().await;
    let url = up.url();

    let unsupported = {
        let mut body = modern_request(1, "tools/list", json!({}));
        body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
        let headers = vec![
            ("MCP-Protocol-Version".to_owned(), "2099-01-01".to_owned()),
            ("Mcp-Method".to_owned(), "tools/list".to_owned()),
        ];
        raw_post(&url, &headers, &body).await
    };
    assert_eq!(unsupported.status, 400, "{}", unsupported.body);
    let body: Value = serde_json::from_str(&unsupported.body).expect("JSON");
    assert_eq!(body["error"]["code"], json!(-32022));
    assert_eq!(body["error"]["data"]["requested"], json!("2099-01-01"));

    let unknown = raw_post(
        &url,
        &modern_headers("foo/bar", None),
        &modern_request(2, "foo/bar", json!({})),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(
        serde_json::from_str::<Value>(&unknown.body).expect("JSON")["error"]["code"],
        json!(-32601)
    );

    let mut no_caps = modern_request(3, "tools/list", json!({}));
    no_caps["params"]["_meta"]
        .as_object_mut()
        .expect("meta")
        .remove("io.modelcontextprotocol/clientCapabilities");
    let no_caps = raw_post(&url, &modern_headers("tools/list", None), &no_caps).await;
    assert_eq!(no_caps.status, 400, "{}", no_caps.body);
    assert_eq!(
        serde_json::from_str::<Value>(&no_caps.body).expect("JSON")["error"]["code"],
        json!(-32602)
    );

    // Tool-level errors stay in-band: 200, SSE by default.
    let failing = raw_post(
        &url,
        &modern_headers("tools/call", Some("jsonrpc_error")),
        &modern_request(4, "tools/call", json!({ "name": "jsonrpc_error" })),
    )
    .await;
    assert_eq!(failing.status, 200);
    assert!(failing.is_sse());
    assert_eq!(
        failing.final_message().expect("message")["error"]["code"],
        json!(-32603)
    );

    let notification = raw_post(
        &url,
        &modern_headers("notifications/cancelled", None),
        &json!({ "jsonrpc": "2.0", "method": "notifications/cancelled", "params": { "requestId": 1 } }),
    )
    .await;
    assert_eq!(notification.status, 202);
    assert!(notification.body.is_empty());

    let get = raw_request(
        reqwest::Method::GET,
        &url,
        &modern_headers("tools/list", None),
        None,
    )
    .await;
    assert_eq!(get.status, 405, "modern era has no GET stream");
}

/// The two answer shapes of a modern `tools/list`: SSE (default) and JSON.
#[tokio::test]
async fn modern_answers_as_sse_or_json() {
    let sse = spawn_upstream().await;
    let json_up = spawn_upstream_with(UpstreamConfig::json()).await;
    let request = modern_request(7, "tools/list", json!({}));
    let headers = modern_headers("tools/list", None);

    let r = raw_post(&sse.url(), &headers, &request).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "text/event-stream");
    assert_eq!(r.header("x-accel-buffering").as_deref(), Some("no"));
    let events = r.sse_events();
    assert_eq!(
        events.len(),
        1,
        "no priming event on the stateless path: {events:?}"
    );
    assert_eq!(events[0].id, None);
    let message: Value = serde_json::from_str(&events[0].data).expect("JSON data");
    assert_eq!(message["id"], json!(7));
    assert_eq!(message["result"]["cacheScope"], json!("private"));

    let r = raw_post(&json_up.url(), &headers, &request).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), "application/json");
    let message: Value = serde_json::from_str(&r.body).expect("JSON body");
    assert_eq!(message["result"]["tools"][0]["name"], json!("echo"));

    // JSON mode falls back to SSE once the handler sends a notification first.
    let slow = modern_request(
        8,
        "tools/call",
        json!({ "name": "slow", "arguments": { "steps": 2, "delay_ms": 1 }, "_meta": { "progressToken": "p" } }),
    );
    let r = raw_post(
        &json_up.url(),
        &modern_headers("tools/call", Some("slow")),
        &slow,
    )
    .await;
    assert!(r.is_sse(), "{}", r.content_type());
    let methods: Vec<Value> = r.messages().iter().map(|m| m["method"].clone()).collect();
    assert_eq!(
        methods,
        [
            json!("notifications/progress"),
            json!("notifications/progress"),
            Value::Null
        ]
    );
}

/// Legacy session rules over raw HTTP: the reference for pass-through.
#[tokio::test]
async fn legacy_session_rules() {
    let up = spawn_upstream().await;
    let url = up.url();
    let v = "2025-11-25";
    let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });

    let r = raw_post(&url, &legacy_headers(v, None), &list).await;
    assert_eq!(r.status, 400, "no session: {}", r.body);
    let r = raw_post(&url, &legacy_headers(v, Some("nope")), &list).await;
    assert_eq!(r.status, 404, "unknown session: {}", r.body);

    let (session, init) = raw_legacy_session(&url, v).await;
    let session = session.expect("stateful upstream makes a session");
    assert!(init.is_sse());
    let events = init.sse_events();
    // A priming event (empty data, id 0, retry) precedes the result.
    assert_eq!(events[0].data, "");
    assert_eq!(events[0].id.as_deref(), Some("0"));
    assert_eq!(events[0].retry.as_deref(), Some("3000"));
    assert_eq!(
        init.final_message().expect("result")["result"]["protocolVersion"],
        json!(v)
    );

    let r = raw_post(&url, &legacy_headers(v, Some(&session)), &list).await;
    assert_eq!(r.status, 200);
    let ids: Vec<Option<String>> = r.sse_events().into_iter().map(|e| e.id).collect();
    assert!(
        ids.iter().all(Option::is_some),
        "event ids on every event: {ids:?}"
    );

    // A batch is not accepted by rmcp at all, even for 2025-03-26.
    let batch = json!([list.clone()]);
    let r = raw_post(&url, &legacy_headers("2025-03-26", Some(&session)), &batch).await;
    assert_eq!(r.status, 415, "{}", r.body);

    let mut stream = raw_send(
        reqwest::Method::GET,
        &url,
        &legacy_headers(v, Some(&session)),
        None,
    )
    .await;
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("priming event in time")
        .expect("read chunk")
        .expect("a chunk");
    assert_eq!(&first[..], b"data: \nid: 0\nretry: 3000\n\n");
    drop(stream);

    let r = raw_request(
        reqwest::Method::DELETE,
        &url,
        &legacy_headers(v, Some(&session)),
        None,
    )
    .await;
    assert_eq!(r.status, 202);
    let r = raw_post(&url, &legacy_headers(v, Some(&session)), &list).await;
    assert_eq!(r.status, 404, "ended session: {}", r.body);
    let r = raw_request(
        reqwest::Method::GET,
        &url,
        &legacy_headers(v, Some(&session)),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

/// rmcp's transport guards, which the sentinel must satisfy on its upstream hop.
#[tokio::test]
async fn transport_guards() {
    let up = spawn_upstream().await;
    let url = up.url();
    let ping = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" });
    let header = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];

    let r = raw_post(&url, &header("Host", "mcp.example.com"), &ping).await;
    assert_eq!(r.status, 403, "non-loopback Host: {}", r.body);
    let r = raw_post(&url, &header("Host", "localhost:1"), &ping).await;
    assert_ne!(r.status, 403, "any port of an allowed host passes");

    let huge = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "text": "x".repeat(4 * 1024 * 1024) } }
    });
    let r = raw_post(&url, &[], &huge).await;
    assert_eq!(r.status, 413, "{}", r.body);

    let r = raw_post(&url, &header("Accept", "application/json"), &ping).await;
    assert_eq!(r.status, 406);
    let r = raw_request(reqwest::Method::PUT, &url, &[], None).await;
    assert_eq!(r.status, 405);
    let other = format!("{}/other", up.origin());
    let r = raw_post(&other, &[], &ping).await;
    assert_eq!(r.status, 404);

    let open = spawn_upstream_with(UpstreamConfig {
        allowed_hosts: Vec::new(),
        ..UpstreamConfig::default()
    })
    .await;
    let (session, _) = raw_legacy_session(&open.url(), "2025-11-25").await;
    assert!(session.is_some());
    let mut headers = legacy_headers("2025-11-25", session.as_deref());
    headers.push(("Host".to_owned(), "mcp.example.com".to_owned()));
    let r = raw_post(&open.url(), &headers, &ping).await;
    assert_eq!(r.status, 200, "allowed_hosts empty accepts any Host");
}
