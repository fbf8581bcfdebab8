//! A refusal made after forwarding — an answer the policy must read but cannot — goes through
//! the same refusal path as every other: the client's answer, the request counter, the denial
//! counter and the audit record all say the same thing.
//!
//! The upstream here is a few lines of hyper, not an MCP SDK: no SDK compresses its answers
//! when asked for identity, which is exactly the misbehaviour under test.

mod common;

use std::time::Duration;

use common::audit::{ALICE, audited, file_records, wait_records};
use common::sentinel::TempDir;
use serde_json::{Value, json};

/// An upstream that answers every request with a gzip-encoded JSON body.
async fn compressing_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: http::Request<_>| async {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .header("content-encoding", "gzip")
                            // The gzip magic and then nothing a reader could use.
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                b"\x1f\x8b\x08\x00\x00\x00\x00\x00",
                            )))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/mcp")
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

    let resp = reqwest::Client::new()
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("x-api-key", ALICE)
        .body(r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
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
