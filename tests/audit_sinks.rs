//! Audit sinks that go away: a PostgreSQL cluster and a Redis server of the test's own are
//! stopped mid-run and started again — records spool meanwhile and arrive afterwards, none
//! lost, none twice, in order; a spool left by a stopped sentinel is delivered by the next
//! one; fail-closed mode refuses calls while a record cannot be stored.

mod common;

use std::time::{Duration, Instant};

use common::audit::{
    ALICE, OwnPostgres, audited, pg_records, redis_records, seqs, verify, wait_records,
};
use common::client::raw_post;
use common::keys::pairs;
use common::ratelimit::{OwnRedis, call_body};
use common::sentinel::{TempDir, TestSentinel};
use common::upstream::{Upstream, UpstreamConfig, spawn_upstream_with};
use serde_json::{Value, json};

async fn add(s: &TestSentinel, i: i64) -> common::client::RawResponse {
    raw_post(
        &s.url,
        &pairs(&[("X-API-Key", ALICE), ("MCP-Protocol-Version", "2025-06-18")]),
        &call_body(i, "add", json!({"a": i, "b": 1})),
    )
    .await
}

async fn calls(s: &TestSentinel, ids: std::ops::RangeInclusive<i64>) {
    for i in ids {
        let r = add(s, i).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// Exactly `n` records of one chain, seq 1..=n in arrival order, every id once, the
/// arguments of call i in record i.
fn assert_complete(records: &[Value], n: usize) {
    assert_eq!(records.len(), n, "{records:#?}");
    let instance = records[0]["instance"].as_str().unwrap();
    assert_eq!(seqs(records, instance), (1..=n as u64).collect::<Vec<_>>());
    let mut ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate record ids");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["arguments"]["a"], i as i64 + 1);
    }
}

/// The `audit` section: a spool in `dir` (when given) and one sink, retried every 200 ms.
fn audit_yaml(spool: Option<&TempDir>, sink: &str) -> String {
    let spool = spool.map_or(String::new(), |d| {
        format!("  spool: {{dir: {}}}\n", d.path("spool").display())
    });
    format!("  retry_interval: 200ms\n{spool}  sinks:\n    - {sink}\n")
}

/// The sink section for the `audit` table of PostgreSQL at `url`.
fn postgres_sink(url: &str) -> String {
    format!("{{type: postgres, url: '{url}', table: audit, timeout: 1s}}")
}

/// The sink section for the `audit` stream of Redis at `url`.
fn redis_sink(url: &str) -> String {
    format!("{{type: redis, url: '{url}', stream: audit, timeout: 1s}}")
}

/// A sentinel that allows every call, audited as `audit` says.
async fn allowing(upstream: &Upstream, audit: &str, dir: &TempDir) -> TestSentinel {
    audited(&upstream.url(), "policy: {default: allow}", audit, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_run_loses_nothing() {
    let mut pg = OwnPostgres::start("audit-pg-down");
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("audit-pg-down-s");
    let audit = audit_yaml(Some(&dir), &postgres_sink(&pg.url()));
    let s = allowing(&upstream, &audit, &dir).await;
    calls(&s, 1..=10).await;
    let url = pg.url();
    assert_eq!(
        wait_records(10, Duration::from_secs(10), || pg_records(&url, "audit"))
            .await
            .len(),
        10
    );

    pg.stop();
    calls(&s, 11..=25).await;
    let spooled = s
        .metric_eventually_above(
            "mcp_sentinel_audit_records_total{result=\"spooled\",sink=\"postgres\"}",
            14.0,
        )
        .await;
    assert_eq!(spooled, 15.0);
    assert_eq!(
        s.metric("mcp_sentinel_audit_sink_up{sink=\"postgres\"}")
            .await,
        0.0
    );
    assert_eq!(
        s.metric("mcp_sentinel_audit_spool_records{sink=\"postgres\"}")
            .await,
        15.0
    );

    pg.restart();
    calls(&s, 26..=30).await;
    let records = wait_records(30, Duration::from_secs(15), || pg_records(&url, "audit")).await;
    assert_complete(&records, 30);
    assert_eq!(
        s.metric("mcp_sentinel_audit_spool_records{sink=\"postgres\"}")
            .await,
        0.0
    );
    assert_eq!(
        s.metric("mcp_sentinel_audit_records_total{result=\"dropped\",sink=\"postgres\"}")
            .await,
        0.0
    );
    let (code, out) = verify(&["--postgres", &url, "--table", "audit"]);
    assert_eq!(code, 0, "{out}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_loses_nothing() {
    let mut redis = OwnRedis::start("audit-redis-down");
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("audit-redis-down-s");
    let audit = audit_yaml(Some(&dir), &redis_sink(&redis.url()));
    let s = allowing(&upstream, &audit, &dir).await;
    let url = redis.url();
    calls(&s, 1..=10).await;
    assert_eq!(
        wait_records(10, Duration::from_secs(10), || redis_records(&url, "audit"))
            .await
            .len(),
        10
    );
    // A stopped redis-server without persistence loses its data: freeze it instead (the
    // hanging Redis: every delivery times out), then let it go.
    redis.freeze(true);
    calls(&s, 11..=25).await;
    let spooled = s
        .metric_eventually_above(
            "mcp_sentinel_audit_records_total{result=\"spooled\",sink=\"redis\"}",
            14.0,
        )
        .await;
    assert_eq!(spooled, 15.0);
    redis.freeze(false);
    calls(&s, 26..=30).await;
    let records = wait_records(30, Duration::from_secs(15), || redis_records(&url, "audit")).await;
    // The batch that timed out may have been added by Redis after all: the delivered-seq
    // hash makes its redelivery a no-op.
    assert_complete(&records, 30);
    let (code, out) = verify(&["--redis", &url, "--stream", "audit"]);
    assert_eq!(code, 0, "{out}");

    // Killed (connections refused), then back empty: the records made meanwhile arrive.
    redis.stop();
    calls(&s, 31..=35).await;
    s.metric_eventually_above(
        "mcp_sentinel_audit_records_total{result=\"spooled\",sink=\"redis\"}",
        19.0,
    )
    .await;
    redis.restart();
    let records = wait_records(5, Duration::from_secs(15), || redis_records(&url, "audit")).await;
    let got: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, [31, 32, 33, 34, 35]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_at_shutdown_is_delivered_after_a_restart() {
    let mut pg = OwnPostgres::start("audit-restart");
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("audit-restart-s");
    let audit = audit_yaml(Some(&dir), &postgres_sink(&pg.url()));
    let url = pg.url();
    pg.stop();
    let first = allowing(&upstream, &audit, &dir).await;
    calls(&first, 1..=10).await;
    let first_instance = {
        let deadline = Instant::now() + Duration::from_secs(10);
        while first
            .metric("mcp_sentinel_audit_spool_records{sink=\"postgres\"}")
            .await
            < 10.0
        {
            assert!(Instant::now() < deadline, "records were not spooled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first
            .metric("mcp_sentinel_audit_spool_records{sink=\"postgres\"}")
            .await
    };
    assert_eq!(first_instance, 10.0);
    first.shutdown().await;
    let segments: Vec<_> = std::fs::read_dir(dir.path("spool").join("postgres"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .collect();
    assert!(!segments.is_empty(), "the spool is on disk");

    pg.restart();
    let second = allowing(&upstream, &audit, &dir).await;
    calls(&second, 11..=15).await;
    let records = wait_records(15, Duration::from_secs(15), || pg_records(&url, "audit")).await;
    assert_eq!(records.len(), 15, "{records:#?}");
    // The earlier run's chain first, in order, then the new run's.
    let a = records[0]["instance"].as_str().unwrap().to_string();
    let b = records[10]["instance"].as_str().unwrap().to_string();
    assert_ne!(a, b);
    assert_eq!(seqs(&records[..10], &a), (1..=10).collect::<Vec<u64>>());
    assert_eq!(seqs(&records[10..], &b), (1..=5).collect::<Vec<u64>>());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["arguments"]["a"], i as i64 + 1);
    }
    let (code, out) = verify(&["--postgres", &url, "--table", "audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 15 records in 2 chains"), "{out}");
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_calls_while_the_sink_is_down() {
    let mut pg = OwnPostgres::start("audit-fail-closed");
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("audit-fail-closed-s");
    // No spool: a record is stored only once PostgreSQL has it.
    let audit = "  fail_closed: true\n".to_string() + &audit_yaml(None, &postgres_sink(&pg.url()));
    let url = pg.url();
    let s = allowing(&upstream, &audit, &dir).await;
    calls(&s, 1..=3).await;
    pg.stop();
    // The first record after the stop finds PostgreSQL gone; from then on calls are refused.
    let mut refused = None;
    for i in 4..=40 {
        let r = add(&s, i).await;
        if r.status == 503 {
            refused = Some((i, r));
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (i, r) = refused.expect("calls are refused while PostgreSQL is down");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"jsonrpc":"2.0","id":i,"error":{"code":-32603,"message":"Audit log unavailable"}})
    );
    let upstream_calls = upstream.calls("add");
    for j in i + 1..=i + 3 {
        assert_eq!(add(&s, j).await.status, 503);
    }
    assert_eq!(
        upstream.calls("add"),
        upstream_calls,
        "refused calls never ran"
    );
    assert_eq!(
        s.metric("mcp_sentinel_check_denials_total{check=\"audit\",reason=\"audit_unavailable\"}")
            .await,
        4.0
    );

    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut next = i + 4;
    loop {
        let r = add(&s, next).await;
        next += 1;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            Instant::now() < deadline,
            "calls still refused after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every request — refused ones included — was recorded once, in order.
    let total = (next - 1) as usize;
    let records = wait_records(total, Duration::from_secs(15), || pg_records(&url, "audit")).await;
    assert_eq!(records.len(), total);
    let instance = records[0]["instance"].as_str().unwrap();
    assert_eq!(
        seqs(&records, instance),
        (1..=total as u64).collect::<Vec<_>>()
    );
    let refusals = records
        .iter()
        .filter(|r| r["denial"] == "audit_unavailable")
        .count();
    assert!(refusals >= 4, "{refusals}");
    s.shutdown().await;
}
