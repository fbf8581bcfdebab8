//! Audit end to end on real sockets: every outcome of a request gives exactly one record in
//! every sink (file, Redis stream, PostgreSQL table) with the right fields and redacted
//! arguments; `audit verify` passes on the chains and names an edited or deleted record; the
//! default stdout sink is flushed on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::audit::{
    ALICE, audited, audited_ready, file_records, pg_exec, pg_records, redis_records, seqs,
    shared_pg_url, unique_name, verify, wait_records,
};
use common::client::{http_client, raw_post};
use common::keys::pairs;
use common::process::sigterm;
use common::ratelimit::{call_body, shared_redis_url};
use common::sentinel::{self, TempDir};
use common::upstream::{UpstreamConfig, spawn_upstream_with};
use serde_json::{Value, json};

const N: usize = 3;

fn headers(key: Option<&str>) -> Vec<(String, String)> {
    let mut h = pairs(&[
        ("MCP-Protocol-Version", "2025-06-18"),
        ("User-Agent", "audit-test/1"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]);
    if let Some(k) = key {
        h.push(("X-API-Key".into(), k.into()));
    }
    h
}

async fn call(url: &str, id: i64, tool: &str, args: Value) -> common::client::RawResponse {
    raw_post(url, &headers(Some(ALICE)), &call_body(id, tool, args)).await
}

/// A POST of `body` as alice, giving up after `timeout`.
async fn post_text(
    url: &str,
    body: String,
    timeout: Duration,
) -> reqwest::Result<reqwest::Response> {
    http_client()
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("X-API-Key", ALICE)
        .header("MCP-Protocol-Version", "2025-06-18")
        .timeout(timeout)
        .body(body)
        .send()
        .await
}

fn of<'a>(
    records: &'a [Value],
    instance: &str,
    outcome: &str,
    tool: Option<&str>,
) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["instance"] == instance && r["outcome"] == outcome)
        .filter(|r| tool.is_none_or(|t| r["target"]["name"] == t))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_recorded_once_in_every_sink() {
    let pg = shared_pg_url();
    let redis = shared_redis_url();
    let table = unique_name("outcomes");
    let stream = format!("mcp-sentinel-test:{table}");
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("audit-outcomes");
    let file = dir.path("audit.jsonl");
    let audit = format!(
        "  instance: outcomes\n  batch_size: 7\n  redact:\n    fields: [{{pointer: /password, action: drop}}]\n    tools:\n      echo: [{{pointer: /text, action: hash}}]\n  sinks:\n    - {{type: file, path: {}}}\n    - {{type: redis, url: '{redis}', stream: '{stream}'}}\n    - {{type: postgres, url: '{pg}', table: {table}}}\n",
        file.display()
    );
    let extra = "policy:\n  default: allow\n  answer: forbidden\n  rules:\n    - {name: no-delete, effect: deny, tools: [delete_file]}\nrate_limits:\n  rules:\n    - name: one-add\n      match: {tools: [add]}\n      limits: [{rate: 1/hour}]\n      key: [subject]\n";
    let s = audited(&upstream.url(), extra, &audit, &dir).await;
    // The same sinks behind a second sentinel whose upstream is gone: a second chain.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mcp", l.local_addr().unwrap())
    };
    let audit_dead = audit.replace("instance: outcomes", "instance: dead-upstream");
    let s_dead = audited_ready(&dead, "policy: {default: allow}", &audit_dead, &dir, false).await;

    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    for _ in 0..N {
        let r = call(
            &s.url,
            next(),
            "echo",
            json!({"text": "hello", "password": "hunter2", "note": "Bearer abcdef123"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = call(&s.url, next(), "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..N {
        let i = next();
        let r = call(&s.url, i, "add", json!({"a": 1, "b": 2})).await;
        assert_eq!(r.status, 429, "{}", r.body);
        let i = next();
        let r = call(&s.url, i, "delete_file", json!({"path": "/etc/passwd"})).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({"jsonrpc":"2.0","id":i,"error":{"code":-32600,"message":"Forbidden"}})
        );
        let r = call(&s.url, next(), "fail", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = call(&s.url, next(), "jsonrpc_error", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Malformed and unauthenticated.
        let r = post_text(&s.url, "{not json".into(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}})
        );
        let i = next();
        let r = raw_post(
            &s.url,
            &headers(None),
            &call_body(i, "echo", json!({"text": "x"})),
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.body);
        // The client gives up before the slow tool answers.
        let slow = call_body(next(), "slow", json!({"steps": 5, "delay_ms": 200}));
        let abandoned = post_text(&s.url, slow.to_string(), Duration::from_millis(150)).await;
        assert!(abandoned.is_err(), "the slow call should have timed out");
        // Upstream unreachable.
        let r = call(&s_dead.url, next(), "echo", json!({"text": "x"})).await;
        assert_eq!(r.status, 502, "{}", r.body);
    }

    // 1 add + 3 each of: echo, limited add, delete, fail, jsonrpc_error, malformed,
    // unauthenticated, abandoned; 3 on the dead-upstream sentinel.
    let total = 1 + 8 * N + N;
    let from_file = wait_records(total, Duration::from_secs(15), || async {
        file_records(&file)
    })
    .await;
    let from_redis = wait_records(total, Duration::from_secs(15), || {
        redis_records(&redis, &stream)
    })
    .await;
    let from_pg = wait_records(total, Duration::from_secs(15), || pg_records(&pg, &table)).await;
    for (sink, records) in [
        ("file", &from_file),
        ("redis", &from_redis),
        ("postgres", &from_pg),
    ] {
        assert_eq!(records.len(), total, "{sink}: {records:#?}");
        let main = records[0]["instance"].as_str().unwrap().to_string();
        let main = if main.starts_with("outcomes/") {
            main
        } else {
            records
                .iter()
                .find(|r| r["instance"].as_str().unwrap().starts_with("outcomes/"))
                .unwrap()["instance"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let dead_chain = records
            .iter()
            .find(|r| {
                r["instance"]
                    .as_str()
                    .unwrap()
                    .starts_with("dead-upstream/")
            })
            .unwrap()["instance"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            seqs(records, &main),
            (1..=(total - N) as u64).collect::<Vec<_>>(),
            "{sink}"
        );
        assert_eq!(
            seqs(records, &dead_chain),
            (1..=N as u64).collect::<Vec<_>>()
        );

        let echo = of(records, &main, "allowed", Some("echo"));
        assert_eq!(echo.len(), N, "{sink}");
        let e = echo[0];
        assert_eq!(e["v"], 1);
        assert_eq!(
            e["principal"],
            json!({"subject":"alice","groups":["dev"],"auth_method":"api_key"})
        );
        assert_eq!(e["method"], "tools/call");
        assert_eq!(e["era"], "legacy");
        assert_eq!(e["target"], json!({"kind":"tool","name":"echo"}));
        assert_eq!(
            e["decision"],
            json!({"effect":"allow","reason":"default","rule":"default"})
        );
        assert_eq!(e["rate_limit"], json!({"result":"allowed"}));
        assert_eq!(e["status"], 200);
        assert_eq!(e["is_error"], false);
        assert_eq!(e["jsonrpc_error"], Value::Null);
        assert_eq!(e["denial"], Value::Null);
        assert_eq!(
            e["client"],
            json!({"address":"127.0.0.1","user_agent":"audit-test/1"})
        );
        assert_eq!(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(e["bytes_in"].as_u64().unwrap() > 50 && e["bytes_out"].as_u64().unwrap() > 20);
        assert!(e["latency_us"].as_u64().unwrap() > 0);
        assert_eq!(e["id"].as_str().unwrap().len(), 16 + 1 + 12);
        // Redacted: text hashed (tool rule), password dropped (global), bearer masked.
        let hashed = format!("sha256:{}", common::keys::sha256_hex("\"hello\""));
        assert_eq!(
            e["arguments"],
            json!({"text": hashed, "note": "[redacted:bearer]"}),
            "{sink}"
        );

        let adds = of(records, &main, "allowed", Some("add"));
        assert_eq!(adds.len(), 1);
        assert_eq!(adds[0]["arguments"], json!({"a":1,"b":2}));
        let limited = of(records, &main, "rate_limited", Some("add"));
        assert_eq!(limited.len(), N);
        assert_eq!(limited[0]["status"], 429);
        assert_eq!(limited[0]["jsonrpc_error"], 429);
        assert_eq!(limited[0]["denial"], "rate_limited");
        assert_eq!(
            limited[0]["rate_limit"],
            json!({"result":"limited","policy":"one-add"})
        );

        let denied = of(records, &main, "denied", Some("delete_file"));
        assert_eq!(denied.len(), N);
        assert_eq!(denied[0]["status"], 403);
        assert_eq!(denied[0]["denial"], "policy_denied");
        assert_eq!(
            denied[0]["decision"],
            json!({"effect":"deny","reason":"rule","rule":"no-delete"})
        );
        assert_eq!(denied[0]["jsonrpc_error"], -32600);
        assert_eq!(denied[0]["arguments"], json!({"path":"/etc/passwd"}));

        let failed = of(records, &main, "allowed", Some("fail"));
        assert_eq!(failed.len(), N);
        assert_eq!(failed[0]["is_error"], true);
        let rpc = of(records, &main, "allowed", Some("jsonrpc_error"));
        assert_eq!(rpc.len(), N);
        assert_eq!(rpc[0]["jsonrpc_error"], -32603);

        let denied_all = of(records, &main, "denied", None);
        let malformed: Vec<_> = denied_all
            .iter()
            .filter(|r| r["denial"] == "parse_error")
            .collect();
        assert_eq!(malformed.len(), N);
        assert_eq!(malformed[0]["status"], 400);
        assert_eq!(malformed[0]["jsonrpc_error"], -32700);
        assert_eq!(malformed[0]["principal"], Value::Null);
        let unauth: Vec<_> = denied_all
            .iter()
            .filter(|r| r["denial"] == "unauthenticated")
            .collect();
        assert_eq!(unauth.len(), N);
        assert_eq!(unauth[0]["status"], 401);
        assert_eq!(unauth[0]["principal"], Value::Null);
        assert_eq!(unauth[0]["target"], json!({"kind":"tool","name":"echo"}));

        let gone = of(records, &main, "client_gone", Some("slow"));
        assert_eq!(gone.len(), N, "{sink}");
        assert_eq!(gone[0]["status"], 0);

        let up = of(records, &dead_chain, "upstream_error", None);
        assert_eq!(up.len(), N);
        assert_eq!(up[0]["status"], 502);
        assert_eq!(up[0]["jsonrpc_error"], -32603);
        assert_eq!(up[0]["denial"], "upstream_unavailable");
    }
    let m = s.metrics().await;
    for sink in ["file", "redis", "postgres"] {
        let series =
            format!("mcp_sentinel_audit_records_total{{result=\"delivered\",sink=\"{sink}\"}}");
        assert_eq!(
            common::metrics::metric_value(&m, &series),
            (total - N) as f64,
            "{series}"
        );
    }

    // Every sink's chains verify.
    let (code, out) = verify(&["--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("ok: {total} records in 2 chains")),
        "{out}"
    );
    let (code, out) = verify(&["--redis", &redis, "--stream", &stream]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&["--postgres", &pg, "--table", &table]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("ok: {total} records in 2 chains")),
        "{out}"
    );
    pg_exec(&pg, &format!("DROP TABLE {table}")).await;
    s.shutdown().await;
    s_dead.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_edited_or_deleted_row() {
    let pg = shared_pg_url();
    let table = unique_name("verify");
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("audit-verify");
    let audit = format!("  sinks:\n    - {{type: postgres, url: '{pg}', table: {table}}}\n");
    let s = audited(&upstream.url(), "policy: {default: allow}", &audit, &dir).await;
    for i in 1..=6 {
        assert_eq!(
            call(&s.url, i, "add", json!({"a": i, "b": 1})).await.status,
            200
        );
    }
    let records = wait_records(6, Duration::from_secs(10), || pg_records(&pg, &table)).await;
    assert_eq!(records.len(), 6);
    let (code, out) = verify(&["--postgres", &pg, "--table", &table]);
    assert_eq!(code, 0, "{out}");

    // One row's arguments edited (in the authoritative `line`).
    let id3 = records[2]["id"].as_str().unwrap();
    let n = pg_exec(
        &pg,
        &format!(
            "UPDATE {table} SET line = replace(line, '\"a\":3', '\"a\":300') WHERE id = '{id3}'"
        ),
    )
    .await;
    assert_eq!(n, 1);
    let (code, out) = verify(&["--postgres", &pg, "--table", &table]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("record {id3} (seq 3) was altered")),
        "{out}"
    );

    // Put it back, then delete another: the gap is named.
    pg_exec(
        &pg,
        &format!(
            "UPDATE {table} SET line = replace(line, '\"a\":300', '\"a\":3') WHERE id = '{id3}'"
        ),
    )
    .await;
    assert_eq!(verify(&["--postgres", &pg, "--table", &table]).0, 0);
    let id5 = records[4]["id"].as_str().unwrap();
    pg_exec(&pg, &format!("DELETE FROM {table} WHERE id = '{id5}'")).await;
    let (code, out) = verify(&["--postgres", &pg, "--table", &table]);
    assert_eq!(code, 1, "{out}");
    let id4 = records[3]["id"].as_str().unwrap();
    assert!(
        out.contains(&format!(
            "after record {id4} (seq 4) comes seq 6: 1 record missing (deleted)"
        )),
        "{out}"
    );
    pg_exec(&pg, &format!("DROP TABLE {table}")).await;
    s.shutdown().await;
}

/// No `audit` section: JSON lines on stdout; SIGTERM delivers every record before exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_stdout_sink_is_flushed_on_sigterm() {
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let mut bin = sentinel::spawn_binary(&upstream.url(), Stdio::piped());
    let stdout = bin.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| l.unwrap())
            .collect::<Vec<String>>()
    });
    let traffic = bin.traffic.clone();
    let mut child = bin.child;
    for i in 1..=3 {
        let r = raw_post(
            &traffic,
            &pairs(&[("MCP-Protocol-Version", "2025-06-18")]),
            &call_body(i, "add", json!({"a": i, "b": 1})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(sigterm(child.id()));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let out = reader.join().unwrap();
    assert_eq!(out.len(), 3, "{out:#?}");
    let recs: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
        assert_eq!(r["outcome"], "allowed");
        assert_eq!(r["arguments"], json!({"a": i + 1, "b": 1}));
        assert_eq!(r["principal"]["auth_method"], "anonymous");
    }
    let dir = TempDir::new("audit-stdout");
    let path = dir.path("out.jsonl");
    std::fs::write(&path, out.join("\n")).unwrap();
    let (code, report) = verify(&["--file", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}");
}

/// A 2025-03-26 batch is one request and one record, whose `elements` say what each message
/// was: its method, id, target and redacted arguments — in every sink, and the chains verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_element_is_recorded_with_its_own_call() {
    let pg = shared_pg_url();
    let redis = shared_redis_url();
    let table = unique_name("batch");
    let stream = format!("mcp-sentinel-test:{table}");
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("audit-batch");
    let file = dir.path("audit.jsonl");
    let audit = format!(
        "  instance: batch\n  redact:\n    tools:\n      echo: [{{pointer: /text, action: hash}}]\n  sinks:\n    - {{type: file, path: {}}}\n    - {{type: redis, url: '{redis}', stream: '{stream}'}}\n    - {{type: postgres, url: '{pg}', table: {table}}}\n",
        file.display()
    );
    let s = audited(&upstream.url(), "policy: {default: allow}", &audit, &dir).await;
    let secret = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let batch = json!([
        call_body(1, "echo", json!({"text": "hello"})),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        call_body(2, "add", json!({"a": 1, "b": 2, "note": secret})),
    ]);
    let mut h = headers(Some(ALICE));
    h.retain(|(k, _)| k != "MCP-Protocol-Version");
    h.push(("MCP-Protocol-Version".into(), "2025-03-26".into()));
    let r = raw_post(&s.url, &h, &batch).await;
    assert!(r.status < 500, "{}: {}", r.status, r.body);

    let hashed = format!(
        "sha256:{}",
        mcp_sentinel::audit::record::sha256_hex(b"\"hello\"")
    );
    let want = json!([
        {"method": "tools/call", "jsonrpc_id": 1, "target": {"kind": "tool", "name": "echo"},
         "arguments": {"text": hashed}},
        {"method": "notifications/initialized", "target": null},
        {"method": "tools/call", "jsonrpc_id": 2, "target": {"kind": "tool", "name": "add"},
         "arguments": {"a": 1, "b": 2, "note": "[redacted:github_token]"}}
    ]);
    let from_file =
        wait_records(1, Duration::from_secs(15), || async { file_records(&file) }).await;
    let from_redis = wait_records(1, Duration::from_secs(15), || {
        redis_records(&redis, &stream)
    })
    .await;
    let from_pg = wait_records(1, Duration::from_secs(15), || pg_records(&pg, &table)).await;
    for (sink, records) in [
        ("file", &from_file),
        ("redis", &from_redis),
        ("postgres", &from_pg),
    ] {
        assert_eq!(records.len(), 1, "{sink}: exactly one record: {records:#?}");
        let rec = &records[0];
        assert_eq!(rec["method"], "batch", "{sink}");
        assert_eq!(rec["principal"]["subject"], "alice", "{sink}");
        assert_eq!(rec["elements"], want, "{sink}: {rec:#}");
        assert!(rec.get("arguments").is_none(), "{sink}");
        assert!(!rec.to_string().contains(secret), "{sink}");
    }
    let (code, out) = verify(&["--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&["--redis", &redis, "--stream", &stream]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&["--postgres", &pg, "--table", &table]);
    assert_eq!(code, 0, "{out}");
}
