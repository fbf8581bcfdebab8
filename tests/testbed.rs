//! The test bed on its own: rmcp clients straight against the rmcp upstream,
//! in every protocol revision (raw HTTP checks of the wire: testbed_wire.rs;
//! the metrics reader: testbed_metrics.rs). The proxy tests repeat these
//! through the sentinel, so a failure here means the bed is broken, not the
//! sentinel.

mod common;

use std::time::Duration;

use common::{
    client::{
        self, ClientOptions, EXERCISE_BIG_BYTES, Era, MODERN_VERSION, Transcript,
        call_with_progress, connect, exercise_all, legacy_headers, modern_headers, modern_request,
        raw_legacy_session, raw_send, tool_call,
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
