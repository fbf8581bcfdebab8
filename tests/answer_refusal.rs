//! A refusal made after forwarding — an answer the policy must read but cannot — goes through
//! the same refusal path as every other: the client's answer, the request counter, the denial
//! counter and the audit record all say the same thing.
//!
//! The upstream here is a few lines of hyper, not an MCP SDK: no SDK compresses its answers
//! when asked for identity, or declares a charset other than UTF-8, which are exactly the
//! misbehaviours under test.

mod common;

use std::time::Duration;

use common::audit::{ALICE, audited, file_records, wait_records};
use common::scripted::upstream;
use common::sentinel::TempDir;
use serde_json::{Value, json};

/// An upstream that answers every request with a gzip-encoded JSON body.
async fn compressing_upstream() -> String {
    upstream(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        // The gzip magic and then nothing a reader could use.
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec(),
    )
    .await
}

/// A `tools/list` answer as one SSE event listing `delete_file`, which the policy hides.
const LISTED: &str =
    r#"data: {"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"},{"name":"delete_file"}]}}"#;

/// An SSE answer declared in UTF-16LE, which Python's httpx decodes it with: the policy, reading
/// UTF-8, would find no `data:` field in it (each byte of the field name is followed by a NUL)
/// and pass it; a client would read the whole list. The trailing U+0A0A is `0A 0A` in bytes: an
/// event's end to a UTF-8 reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_another_charset_the_policy_must_read_is_refused() {
    let utf16: Vec<u8> = format!("{LISTED}\n\n\u{0A0A}")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let declared = upstream(
        &[("content-type", "text/event-stream; charset=utf-16le")],
        utf16,
    )
    .await;
    let dir = TempDir::new("answer-charset");
    let file = dir.path("audit.jsonl");
    let audit = format!("  sinks:\n    - {{type: file, path: {}}}\n", file.display());
    let extra = "policy:\n  default: allow\n  rules:\n    - {name: no-delete, effect: deny, tools: [delete_file]}\n";
    let s = audited(&declared, extra, &audit, &dir).await;
    let resp = list(&s.url).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32603, "message": "Upstream unavailable"}})
    );
    assert_eq!(
        s.metric_eventually(
            r#"mcp_sentinel_check_denials_total{check="filter",reason="upstream_unavailable"}"#,
            1.0
        )
        .await,
        1.0
    );

    // The same answer declared in UTF-8 (quoted, in capitals) is read and filtered.
    let body = format!("{LISTED}\n\n").into_bytes();
    let utf8 = upstream(
        &[("content-type", "text/event-stream; charset=\"UTF-8\"")],
        body,
    )
    .await;
    let dir = TempDir::new("answer-charset-utf8");
    let file = dir.path("audit.jsonl");
    let audit = format!("  sinks:\n    - {{type: file, path: {}}}\n", file.display());
    let s = audited(&utf8, extra, &audit, &dir).await;
    let resp = list(&s.url).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#""name":"echo""#), "{text}");
    assert!(!text.contains("delete_file"), "{text}");
}

/// `tools/list` from ALICE.
async fn list(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("x-api-key", ALICE)
        .body(r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_answer_the_policy_must_read_is_refused_counted_and_audited_as_such() {
    let upstream = compressing_upstream().await;
    let dir = TempDir::new("answer-refusal");
    let file = dir.path("audit.jsonl");
    let audit = format!("  sinks:\n    - {{type: file, path: {}}}\n", file.display());
    // A rule that hides a tool, so a tools/list answer must be read to be filtered.
    let extra = "policy:\n  default: allow\n  rules:\n    - {name: no-delete, effect: deny, tools: [delete_file]}\n";
    let s = audited(&upstream, extra, &audit, &dir).await;

    let resp = list(&s.url).await;
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32603, "message": "Upstream unavailable"}})
    );

    assert_eq!(
        s.metric_eventually(
            r#"mcp_sentinel_requests_total{method="tools/list",outcome="upstream_error"}"#,
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        s.metric(r#"mcp_sentinel_requests_total{method="tools/list",outcome="forwarded"}"#)
            .await,
        0.0
    );
    assert_eq!(
        s.metric(
            r#"mcp_sentinel_check_denials_total{check="filter",reason="upstream_unavailable"}"#
        )
        .await,
        1.0
    );

    let records = wait_records(1, Duration::from_secs(5), || {
        let file = file.clone();
        async move { file_records(&file) }
    })
    .await;
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["method"] == "tools/list")
        .collect();
    assert_eq!(calls.len(), 1, "{records:?}");
    let r = calls[0];
    assert_eq!(r["outcome"], "upstream_error", "{r}");
    assert_eq!(r["denial"], "upstream_unavailable", "{r}");
    assert_eq!(r["status"], 502, "{r}");
    assert_eq!(r["jsonrpc_error"], -32603, "{r}");
}
