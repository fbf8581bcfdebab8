//! The test bed on its own: rmcp clients straight against the rmcp upstream,
//! in every protocol revision, plus raw HTTP checks of the wire. The proxy
//! tests repeat these through the sentinel, so a failure here means the bed is
//! broken, not the sentinel.

mod common;

use std::time::Duration;

use common::{
    client::{
        self, ClientOptions, EXERCISE_BIG_BYTES, Era, MODERN_VERSION, RawResponse, Transcript,
        base64_header, call_with_progress, connect, exercise_all, legacy_headers, modern_headers,
        modern_request, raw_legacy_session, raw_post, raw_request, raw_send, tool_call,
    },
    upstream::{
        self, BIG_BYTES, CAFE_URI, README_URI, SECRET_URI, UpstreamConfig, spawn_upstream,
        spawn_upstream_with,
    },
};
use serde_json::{Value, json};

fn first_text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("<no text>")
}

fn error_code(result: &Value) -> i64 {
    result["jsonrpc_error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected a JSON-RPC error, got {result}"))
}

/// What every era must see, whatever the transport details.
fn check_transcript(t: &Transcript, era: &Era) {
    let label = era.label();
    let names = |key: &str, list: &str, field: &str| -> Vec<String> {
        t[key][list]
            .as_array()
            .unwrap_or_else(|| panic!("{label}: {key} is not a list: {}", t[key]))
            .iter()
            .map(|item| item[field].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let tools: Vec<String> = upstream::catalog::tools()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names("tools/list", "tools", "name"), tools, "{label}");
    assert_eq!(
        names("resources/list", "resources", "uri"),
        [README_URI, SECRET_URI, CAFE_URI],
        "{label}"
    );
    assert_eq!(
        names(
            "resources/templates/list",
            "resourceTemplates",
            "uriTemplate"
        ),
        [upstream::LOG_TEMPLATE],
        "{label}"
    );
    assert_eq!(
        names("prompts/list", "prompts", "name"),
        ["greet", "admin_prompt"],
        "{label}"
    );

    assert_eq!(first_text(&t["tools/call echo"]), "hello", "{label}");
    assert_eq!(first_text(&t["tools/call add"]), "42", "{label}");
    assert_eq!(first_text(&t["tools/call route"]), "eu-west:hi", "{label}");
    assert_eq!(
        first_text(&t["tools/call delete_file"]),
        "deleted /tmp/x",
        "{label}"
    );
    assert_eq!(t["tools/call fail"]["isError"], json!(true), "{label}");
    assert_eq!(
        first_text(&t["tools/call fail"]),
        "tool failed on purpose",
        "{label}"
    );
    assert_eq!(
        error_code(&t["tools/call jsonrpc_error"]),
        -32603,
        "{label}"
    );
    assert_eq!(error_code(&t["tools/call no_such_tool"]), -32602, "{label}");
    assert_eq!(
        t["tools/call big"]["len"],
        json!(EXERCISE_BIG_BYTES),
        "{label}"
    );
    assert_eq!(
        t["tools/call slow"],
        json!({
            "result": t["tools/call slow"]["result"].clone(),
            "progress": [[1.0, "step 1/3"], [2.0, "step 2/3"], [3.0, "step 3/3"]]
        }),
        "{label}"
    );
    assert_eq!(
        first_text(&t["tools/call slow"]["result"]),
        "done after 3 steps"
    );

    let read = |uri: &str| t[&format!("resources/read {uri}")]["contents"][0]["text"].clone();
    assert_eq!(
        read(README_URI),
        json!("# Demo upstream\n\nServes both MCP eras.\n")
    );
    assert_eq!(read(SECRET_URI), json!("API_KEY=not-a-real-key\n"));
    assert_eq!(read(CAFE_URI), json!("# Café\n"));
    assert_eq!(
        read("file:///logs/2025-01-01.log"),
        json!("log for 2025-01-01\n")
    );
    // rmcp maps resource-not-found -32002 to -32602 for 2026-07-28 peers.
    let not_found = if *era == Era::Modern { -32602 } else { -32002 };
    assert_eq!(
        error_code(&t["resources/read file:///nope.txt"]),
        not_found,
        "{label}"
    );

    assert_eq!(
        t["prompts/get greet"]["messages"][0]["content"]["text"],
        json!("Hello, Ada!"),
        "{label}"
    );
    assert_eq!(
        t["prompts/get admin_prompt"]["messages"][0]["role"],
        json!("user"),
        "{label}"
    );
    assert_eq!(
        error_code(&t["prompts/get no_such_prompt"]),
        -32602,
        "{label}"
    );

    // Era-specific result shapes: modern results carry cache hints.
    let modern = *era == Era::Modern;
    assert_eq!(t["tools/list"]["resultType"].is_string(), modern, "{label}");
    assert_eq!(
        t["tools/list"]["cacheScope"].as_str(),
        modern.then_some("private"),
        "{label}"
    );
    let expected_version = match era {
        Era::Legacy(v) => v.to_string(),
        Era::Modern => MODERN_VERSION.to_owned(),
    };
    assert_eq!(
        t["peer_info"]["protocolVersion"],
        json!(expected_version),
        "{label}"
    );
}

#[tokio::test]
async fn every_era_exercises_every_feature() {
    let up = spawn_upstream().await;
    for era in Era::all() {
        let c = connect(&up.url(), &era, &ClientOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: connect: {e}", era.label()));
        let t = exercise_all(&c).await;
        check_transcript(&t, &era);
        c.cancel().await.expect("close client");
    }
    let eras = Era::all().len();
    for tool in [
        "echo",
        "add",
        "fail",
        "jsonrpc_error",
        "route",
        "big",
        "slow",
    ] {
        assert_eq!(up.calls(tool), eras, "{tool}");
    }
    assert_eq!(up.reads(CAFE_URI), eras);
    assert_eq!(up.prompt_gets("greet"), eras);
    assert_eq!(up.completions("slow"), eras);
}

#[tokio::test]
async fn json_response_upstream_serves_every_era() {
    let up = spawn_upstream_with(UpstreamConfig::json()).await;
    for era in Era::all() {
        let c = connect(&up.url(), &era, &ClientOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: connect: {e}", era.label()));
        check_transcript(&exercise_all(&c).await, &era);
        c.cancel().await.expect("close client");
    }
    // No sessions in this mode: nobody got an Mcp-Session-Id or opened a GET stream.
    let requests = up.requests();
    assert!(
        requests
            .iter()
            .all(|r| !r.response_headers.contains_key("mcp-session-id"))
    );
    assert!(requests.iter().all(|r| r.method == http::Method::POST));
}

/// The property the proxy tests rely on: a transcript depends only on the
/// upstream's answers, not on the client instance, the port or the run.
#[tokio::test]
async fn transcripts_are_deterministic() {
    let first = spawn_upstream().await;
    let second = spawn_upstream().await;
    for era in [
        Era::Legacy(rmcp::model::ProtocolVersion::V_2025_11_25),
        Era::Modern,
    ] {
        let a = connect(&first.url(), &era, &ClientOptions::default())
            .await
            .expect("connect a");
        let b = connect(&second.url(), &era, &ClientOptions::default())
            .await
            .expect("connect b");
        let (ta, tb) = (exercise_all(&a).await, exercise_all(&b).await);
        assert_eq!(ta, tb, "{}", era.label());
        let again = exercise_all(&a).await;
        assert_eq!(ta, again, "{}", era.label());
    }
}

#[tokio::test]
async fn progress_notifications_arrive_before_the_result() {
    for config in [UpstreamConfig::default(), UpstreamConfig::json()] {
        let up = spawn_upstream_with(config.clone()).await;
        for era in [
            Era::Legacy(rmcp::model::ProtocolVersion::V_2025_11_25),
            Era::Modern,
        ] {
            let label = format!("{} json={}", era.label(), config.json_response);
            let c = connect(&up.url(), &era, &ClientOptions::default())
                .await
                .expect("connect");
            let run = call_with_progress(&c, "slow", json!({ "steps": 4, "delay_ms": 150 })).await;
            let result = run.result.as_ref().expect("slow succeeds");
            assert_eq!(
                result.content[0].as_text().map(|t| t.text.as_str()),
                Some("done after 4 steps")
            );
            let progress: Vec<f64> = run.progress.iter().map(|p| p.progress).collect();
            assert_eq!(progress, [1.0, 2.0, 3.0, 4.0], "{label}");
            assert!(run.progress.iter().all(|p| p.total == Some(4.0)), "{label}");
            // Streamed, not buffered: the first step arrived ~600 ms before the result.
            let lead = run.first_progress_lead().expect("progress before result");
            assert!(lead >= Duration::from_millis(300), "{label}: lead {lead:?}");
            c.cancel().await.expect("close client");
        }
    }
}

#[tokio::test]
async fn ten_mib_result_arrives_whole() {
    for config in [UpstreamConfig::default(), UpstreamConfig::json()] {
        let up = spawn_upstream_with(config.clone()).await;
        for era in [
            Era::Legacy(rmcp::model::ProtocolVersion::V_2025_11_25),
            Era::Modern,
        ] {
            let c = connect(&up.url(), &era, &ClientOptions::default())
                .await
                .expect("connect");
            let result = c
                .call_tool(tool_call("big", json!({ "bytes": BIG_BYTES })))
                .await
                .unwrap_or_else(|e| panic!("{}: big: {e}", era.label()));
            let text = &result.content[0].as_text().expect("text content").text;
            assert_eq!(text.len(), BIG_BYTES, "{}", era.label());
            assert!(text.bytes().all(|b| b == b'x'));
            c.cancel().await.expect("close client");
        }
    }
}

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

/// Closing a modern response stream cancels the handler; dropping a legacy
/// POST stream does not.
#[tokio::test]
async fn disconnect_cancels_only_in_the_modern_era() {
    let up = spawn_upstream().await;
    let url = up.url();
    let slow = json!({
        "name": "slow",
        "arguments": { "steps": 20, "delay_ms": 100 },
        "_meta": { "progressToken": "cancel-me" }
    });
    let mut response = raw_send(
        reqwest::Method::POST,
        &url,
        &modern_headers("tools/call", Some("slow")),
        Some(&modern_request(1, "tools/call", slow.clone())),
    )
    .await;
    let first = response.chunk().await.expect("read").expect("chunk");
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
    drop(response);
    wait_for(|| up.cancellations("slow") == 1, "modern cancellation").await;
    assert_eq!(up.completions("slow"), 0);

    let (session, _) = raw_legacy_session(&url, "2025-11-25").await;
    let legacy_slow = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "slow", "arguments": { "steps": 3, "delay_ms": 100 },
                    "_meta": { "progressToken": "keep-going" } }
    });
    let mut response = raw_send(
        reqwest::Method::POST,
        &url,
        &legacy_headers("2025-11-25", session.as_deref()),
        Some(&legacy_slow),
    )
    .await;
    response.chunk().await.expect("read").expect("chunk");
    drop(response);
    wait_for(|| up.completions("slow") == 1, "legacy completion").await;
    assert_eq!(up.cancellations("slow"), 1);
}

async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..250 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn clients_send_bearer_and_custom_headers() {
    let up = spawn_upstream().await;
    let options = ClientOptions::bearer("t0ken").header("x-testbed", "1");
    for era in [
        Era::Legacy(rmcp::model::ProtocolVersion::V_2025_06_18),
        Era::Modern,
    ] {
        up.clear_requests();
        let c = connect(&up.url(), &era, &options).await.expect("connect");
        c.call_tool(tool_call("echo", json!({ "text": "hi" })))
            .await
            .expect("echo");
        c.cancel().await.expect("close client");
        let requests = up.requests();
        assert!(requests.len() >= 2);
        for r in requests.iter().filter(|r| r.method == http::Method::POST) {
            assert_eq!(r.header("authorization").as_deref(), Some("Bearer t0ken"));
            assert_eq!(r.header("x-testbed").as_deref(), Some("1"));
        }
    }
}

#[tokio::test]
async fn counters_only_count_what_reached_the_handler() {
    let up = spawn_upstream().await;
    let c = client::modern_client(&up.url()).await.expect("connect");
    for _ in 0..2 {
        c.call_tool(tool_call("echo", json!({ "text": "x" })))
            .await
            .expect("echo");
    }
    c.read_resource(rmcp::model::ReadResourceRequestParams::new(SECRET_URI))
        .await
        .expect("read");
    assert_eq!(
        (up.calls("echo"), up.calls("add"), up.total_calls()),
        (2, 0, 2)
    );
    assert_eq!((up.reads(SECRET_URI), up.reads(README_URI)), (1, 0));
    let last = up.last_request("resources/read").expect("seen");
    assert_eq!(
        last.json().expect("json")["params"]["uri"],
        json!(SECRET_URI)
    );
    c.cancel().await.expect("close client");
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let up = spawn_upstream().await;
    let addr = up.addr;
    up.shutdown().await;
    let result = client::http_client()
        .post(format!("http://{addr}/mcp"))
        .send()
        .await;
    assert!(result.is_err(), "still answering after shutdown");
}
