//! Stdio upstreams: a command the sentinel runs as its child, behind the same pipeline as an
//! HTTP upstream. Real peers (rmcp's stdio server, both eras) and a misbehaving Python server
//! for the faults; the sentinel in-process, and the binary for the command-line contracts.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::client::{
    Era, RawResponse, assert_progress_streams, connect, exercise_all, legacy_headers,
    modern_headers, modern_request, raw_legacy_session, raw_post, raw_request, tool_call,
};
use common::sentinel::{TempDir, TestSentinel, start, start_with};
use common::stdio::{OPEN, SENTINEL, demo_stdio, faulty, stdio_config};
use common::upstream::spawn_upstream;

const V: &str = "2025-06-18";

async fn stdio_sentinel(yaml: &str, argv: Vec<String>) -> TestSentinel {
    start_with(stdio_config(yaml, argv), true).await
}

async fn session(url: &str) -> String {
    let (sid, init) = raw_legacy_session(url, V).await;
    assert_eq!(init.status, 200, "initialize: {}", init.body);
    sid.expect("the bridge makes a session")
}

async fn call(url: &str, sid: &str, id: i64, tool: &str, args: Value) -> RawResponse {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": args}});
    raw_post(url, &legacy_headers(V, Some(sid)), &body).await
}

fn text_of(r: &RawResponse) -> String {
    let m = r
        .final_message()
        .unwrap_or_else(|| panic!("no message: {r:?}"));
    m["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result: {m}"))
        .to_string()
}

fn error_of(r: &RawResponse) -> (i64, String) {
    let m = r
        .final_message()
        .unwrap_or_else(|| panic!("no message: {r:?}"));
    (
        m["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error: {m}")),
        m["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn rmcp_stdio_server_answers_as_the_same_server_over_http_in_every_era() {
    let upstream = spawn_upstream().await;
    let over_http = start(&upstream.url()).await;
    let over_stdio = stdio_sentinel(OPEN, demo_stdio()).await;
    for era in Era::all() {
        let label = era.label();
        let a = connect(&over_http.url, &era, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("{label} over HTTP: {e}"));
        let b = connect(&over_stdio.url, &era, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("{label} over stdio: {e}"));
        let want = exercise_all(&a).await;
        let got = exercise_all(&b).await;
        assert_eq!(
            got, want,
            "{label}: the stdio server through the sentinel differs"
        );
        assert!(
            want.len() > 10,
            "{label}: the transcript covers the catalog"
        );
    }
}

#[tokio::test]
async fn each_legacy_session_gets_a_child_and_delete_ends_it() {
    let s = stdio_sentinel(OPEN, faulty(&[])).await;
    let sids = [
        session(&s.url).await,
        session(&s.url).await,
        session(&s.url).await,
    ];
    let mut pids = BTreeSet::new();
    for (i, sid) in sids.iter().enumerate() {
        pids.insert(text_of(
            &call(&s.url, sid, i as i64, "pid", json!({})).await,
        ));
    }
    assert_eq!(pids.len(), 3, "three sessions, three processes: {pids:?}");
    s.metric_eventually("mcp_sentinel_stdio_children{role=\"session\"}", 3.0)
        .await;
    let del = raw_request(
        reqwest::Method::DELETE,
        &s.url,
        &legacy_headers(V, Some(&sids[0])),
        None,
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.body);
    s.metric_eventually("mcp_sentinel_stdio_children{role=\"session\"}", 2.0)
        .await;
    let gone = call(&s.url, &sids[0], 9, "echo", json!({"text": "x"})).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert_eq!(error_of(&gone), (-32600, "Session not found".to_string()));
    assert_eq!(
        text_of(&call(&s.url, &sids[1], 10, "echo", json!({"text": "still here"})).await),
        "still here"
    );
}

#[tokio::test]
async fn policy_filters_the_list_and_refuses_calls_before_the_child_sees_them() {
    let yaml = "auth: {anonymous: allow}\npolicy:\n  default: deny\n  rules:\n    - name: echo\n      effect: allow\n      tools: [echo]\nlog: {level: warn}\n";
    let s = stdio_sentinel(yaml, faulty(&[])).await;
    let sid = session(&s.url).await;
    let list = raw_post(
        &s.url,
        &legacy_headers(V, Some(&sid)),
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    let names: Vec<String> = list.final_message().unwrap()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["echo"]);
    let denied = call(&s.url, &sid, 2, "crash", json!({})).await;
    assert_eq!(error_of(&denied).0, -32602, "{}", denied.body);
    // Had the call reached the child, it would have exited.
    assert_eq!(
        text_of(&call(&s.url, &sid, 3, "echo", json!({"text": "ok"})).await),
        "ok"
    );
    assert_eq!(
        s.metric("mcp_sentinel_stdio_child_exits_total{cause=\"crashed\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_crash_mid_call_fails_the_call_at_once_ends_the_session_and_backs_off() {
    let s = stdio_sentinel(OPEN, faulty(&[])).await;
    let sid = session(&s.url).await;
    let began = Instant::now();
    let crashed = call(&s.url, &sid, 1, "crash", json!({})).await;
    assert!(began.elapsed() < Duration::from_secs(3), "answered at once");
    assert_eq!(crashed.status, 200, "{}", crashed.body);
    assert_eq!(
        error_of(&crashed),
        (
            -32603,
            "the stdio server exited before answering".to_string()
        )
    );
    let after = call(&s.url, &sid, 2, "echo", json!({"text": "x"})).await;
    assert_eq!(
        after.status, 404,
        "the session ended with its child: {}",
        after.body
    );
    assert_eq!(
        s.metric("mcp_sentinel_stdio_child_exits_total{cause=\"crashed\"}")
            .await,
        1.0
    );
    // One caller's crash does not slow anyone down: a new session starts at once.
    let sid = session(&s.url).await;
    assert_eq!(
        text_of(&call(&s.url, &sid, 3, "echo", json!({"text": "back"})).await),
        "back"
    );
}

#[tokio::test]
async fn a_server_that_cannot_start_is_a_502_then_a_wait() {
    let s = start_with(stdio_config(OPEN, faulty(&["--exit-at-start"])), false).await;
    let (sid, first) = raw_legacy_session_unchecked(&s.url).await;
    assert_eq!(first.status, 502, "{}", first.body);
    assert_eq!(sid, None);
    assert_eq!(
        error_of(&first),
        (
            -32603,
            "the stdio server exited before answering initialize".to_string()
        )
    );
    // Children that die before they serve slow the next ones down: 503 with the wait.
    let (_, again) = raw_legacy_session_unchecked(&s.url).await;
    assert_eq!(again.status, 503, "{}", again.body);
    let wait: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        error_of(&again),
        (
            -32603,
            "the stdio server keeps exiting; retry later".to_string()
        )
    );
    assert_eq!(
        s.metric("mcp_sentinel_stdio_refused_total{reason=\"backoff\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_line_that_is_not_json_is_dropped_and_the_session_lives_on() {
    let s = stdio_sentinel(OPEN, faulty(&[])).await;
    let sid = session(&s.url).await;
    assert_eq!(
        text_of(&call(&s.url, &sid, 1, "garbage", json!({})).await),
        "after garbage"
    );
    assert_eq!(
        s.metric("mcp_sentinel_stdio_bad_lines_total{kind=\"not_json\"}")
            .await,
        1.0
    );
    assert_eq!(
        text_of(&call(&s.url, &sid, 2, "echo", json!({"text": "on"})).await),
        "on"
    );
}

#[tokio::test]
async fn a_line_over_the_limit_fails_its_call_and_is_never_held() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{max_line_bytes: 64KiB}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let sid = session(&s.url).await;
    let rss_before = rss_kib();
    for id in 1..=4 {
        let big = call(&s.url, &sid, id, "huge", json!({"bytes": 8 << 20})).await;
        assert_eq!(big.status, 200, "{}", big.body);
        let (code, message) = error_of(&big);
        assert_eq!(code, -32603);
        assert!(message.contains("over the line limit"), "{message}");
    }
    // Four 8 MiB lines went by; what the sentinel holds grew by far less than one.
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 4 * 1024, "RSS grew {grown} KiB");
    assert_eq!(
        s.metric("mcp_sentinel_stdio_bad_lines_total{kind=\"too_long\"}")
            .await,
        4.0
    );
    let small = call(&s.url, &sid, 9, "huge", json!({"bytes": 1000})).await;
    assert_eq!(text_of(&small).len(), 1000);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test]
async fn a_child_that_stops_reading_is_ended_after_the_write_timeout() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{write_timeout: 1s}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let sid = session(&s.url).await;
    assert_eq!(
        text_of(&call(&s.url, &sid, 1, "deaf", json!({})).await),
        "no longer reading"
    );
    // Its stdin pipe holds 64 KiB and the sentinel's queue a few messages: then it waits, for
    // the write timeout, and gives up on the child. Memory stays bounded: nothing piles up.
    let filler = "y".repeat(256 * 1024);
    let began = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let body = json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": filler}});
        let r = raw_post(&s.url, &legacy_headers(V, Some(&sid)), &body).await;
        statuses.push(r.status);
        if r.status != 202 {
            assert_eq!(r.status, 504, "{}", r.body);
            assert_eq!(error_of(&r).0, -32603);
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&504), "{statuses:?}");
    assert!(began.elapsed() < Duration::from_secs(15));
    assert_eq!(s.metric("mcp_sentinel_stdio_hung_total").await, 1.0);
    let after = call(&s.url, &sid, 50, "echo", json!({"text": "x"})).await;
    assert_eq!(after.status, 404, "{}", after.body);
}

#[tokio::test]
async fn a_child_that_never_answers_initialize_is_a_504() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{start_timeout: 1s}}\n");
    let s = stdio_sentinel(&yaml, faulty(&["--no-init"])).await;
    let began = Instant::now();
    let (sid, init) = raw_legacy_session_unchecked(&s.url).await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(init.status, 504, "{}", init.body);
    assert_eq!(sid, None);
    let (code, message) = error_of(&init);
    assert_eq!(code, -32603);
    assert!(message.contains("did not answer initialize"), "{message}");
    assert_eq!(
        s.metric("mcp_sentinel_stdio_refused_total{reason=\"start_timeout\"}")
            .await,
        1.0
    );
    s.metric_eventually("mcp_sentinel_stdio_children{role=\"session\"}", 0.0)
        .await;
}

async fn raw_legacy_session_unchecked(url: &str) -> (Option<String>, RawResponse) {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": V, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let r = raw_post(url, &[], &init).await;
    (r.header("mcp-session-id"), r)
}

#[tokio::test]
async fn children_get_only_the_configured_environment_and_their_limits() {
    let yaml = format!(
        "{OPEN}upstream:\n  env: {{FOO: bar}}\n  inherit_env: [PATH]\n  stdio:\n    limits: {{memory: 512MiB, cpu_time: 1h, open_files: 64}}\n"
    );
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let sid = session(&s.url).await;
    let env: Vec<String> =
        serde_json::from_str(&text_of(&call(&s.url, &sid, 1, "env", json!({})).await)).unwrap();
    // Python itself may add LC_CTYPE (PEP 538) when the locale is C.
    let env: Vec<&str> = env
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "LC_CTYPE")
        .collect();
    assert_eq!(env, ["FOO", "PATH"]);
    let limits: Value =
        serde_json::from_str(&text_of(&call(&s.url, &sid, 2, "limits", json!({})).await)).unwrap();
    assert_eq!(
        limits,
        // No signal blocked: the launcher's own mask (it waits for signals) is not inherited.
        json!({"RLIMIT_AS": 512u64 << 20, "RLIMIT_CPU": 3600, "RLIMIT_NOFILE": 64,
            "SigBlk": "0000000000000000"})
    );
}

#[tokio::test]
async fn shared_mode_serves_everyone_from_one_child_and_answers_never_cross() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{sharing: shared}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let sids: Vec<String> = futures_join(5, |_| session(&s.url)).await;
    let answers = futures_join(5, |i| {
        let sid = sids[i].clone();
        let url = s.url.clone();
        // Every caller uses id 1: the child sees ids of the bridge's own.
        async move {
            text_of(
                &call(
                    &url,
                    &sid,
                    1,
                    "echo",
                    json!({"text": format!("caller {i}")}),
                )
                .await,
            )
        }
    })
    .await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &format!("caller {i}"));
    }
    let pids: BTreeSet<String> = futures_join(5, |i| {
        let sid = sids[i].clone();
        let url = s.url.clone();
        async move { text_of(&call(&url, &sid, 2, "pid", json!({})).await) }
    })
    .await
    .into_iter()
    .collect();
    assert_eq!(pids.len(), 1, "one child for all: {pids:?}");
    assert_eq!(
        s.metric("mcp_sentinel_stdio_children{role=\"shared\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("mcp_sentinel_stdio_children{role=\"session\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn modern_requests_use_the_warm_pool_and_answers_never_cross() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{pool: 2}}\n");
    let s = stdio_sentinel(&yaml, demo_stdio()).await;
    assert_eq!(
        s.metric("mcp_sentinel_stdio_children{role=\"pool\"}").await,
        2.0
    );
    let answers = futures_join(20, |i| {
        let url = s.url.clone();
        async move {
            let body = modern_request(
                7,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": format!("modern {i}")}}),
            );
            let r = raw_post(&url, &modern_headers("tools/call", Some("echo")), &body).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.final_message().unwrap()["id"], 7);
            text_of(&r)
        }
    })
    .await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &format!("modern {i}"));
    }
    assert_eq!(
        s.metric("mcp_sentinel_stdio_children{role=\"session\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn beyond_max_children_a_new_session_gets_503_and_a_wait() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{pool: 1, max_children: 2}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let _first = session(&s.url).await;
    let (sid, full) = raw_legacy_session_unchecked(&s.url).await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(sid, None);
    assert_eq!(full.header("retry-after").as_deref(), Some("5"));
    let (code, message) = error_of(&full);
    assert_eq!(code, -32603);
    assert!(message.contains("max_children"), "{message}");
    assert_eq!(
        s.metric("mcp_sentinel_stdio_refused_total{reason=\"capacity\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn idle_sessions_are_ended_with_their_child() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{idle_ttl: 1s}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let sid = session(&s.url).await;
    s.metric_eventually("mcp_sentinel_stdio_children{role=\"session\"}", 1.0)
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let gone = call(&s.url, &sid, 1, "echo", json!({"text": "x"})).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    s.metric_eventually("mcp_sentinel_stdio_children{role=\"session\"}", 0.0)
        .await;
}

/// `n` futures made by `make(i)`, run together; their outputs in order.
async fn futures_join<F, T>(n: usize, make: impl Fn(usize) -> F) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    futures_util::future::join_all((0..n).map(make)).await
}

// ── The binary: the command-line contracts ────────────────────────────────────────────────

struct Running {
    child: std::process::Child,
    url: String,
    log: std::sync::mpsc::Receiver<String>,
}

/// `mcp-sentinel run --config examples/passthrough.yaml --listen .. --admin-listen .. -- argv`
fn run_binary(argv: &[String]) -> Running {
    let mut child = Command::new(SENTINEL)
        .args([
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/passthrough.yaml"),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--",
        ])
        .args(argv)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (tx, log) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = wait_log(&log, |v| v["message"] == "mcp-sentinel started");
    Running {
        child,
        url: format!("http://{}/mcp", started["traffic"].as_str().unwrap()),
        log,
    }
}

fn wait_log(log: &std::sync::mpsc::Receiver<String>, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the log line never came"));
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && want(&v)
        {
            return v;
        }
    }
}

fn alive(pid: &str) -> bool {
    // A zombie (exited, not yet reaped by whoever inherited it) is not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_dead(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} outlived the sentinel"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn run_dash_dash_prog_serves_logs_stderr_and_leaves_no_process_behind() {
    let dir = TempDir::new("stdio-run");
    let grandchild = dir.path("grandchild.pid");
    let argv = faulty(&[
        "--stderr",
        "hello-from-the-server",
        "--grandchild",
        grandchild.to_str().unwrap(),
    ]);
    for signal in ["-TERM", "-KILL"] {
        let mut s = run_binary(&argv);
        // The warm pool started: the child's stderr is in the sentinel's log, tagged.
        let logged = wait_log(&s.log, |v| v["line"] == "hello-from-the-server");
        assert_eq!(logged["target"], "mcp_sentinel::stdio::stderr", "{logged}");
        assert!(logged["pid"].as_u64().is_some(), "{logged}");
        let sid = session(&s.url).await;
        let pid = text_of(&call(&s.url, &sid, 1, "pid", json!({})).await);
        let grand = std::fs::read_to_string(&grandchild).unwrap();
        assert!(alive(&pid) && alive(&grand));
        let killed = Command::new("kill")
            .args([signal, &s.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = s.child.wait().unwrap();
        if signal == "-TERM" {
            assert!(status.success(), "drained and exited 0: {status}");
        }
        // Stopped with the sentinel (SIGTERM) or without it (SIGKILL): child and grandchild.
        wait_dead(&pid);
        wait_dead(&grand);
    }
}

#[tokio::test]
async fn the_stdio_front_speaks_lines_with_policy_and_audit() {
    let dir = TempDir::new("stdio-front");
    let mut upstream = vec!["--".to_string()];
    upstream.extend(demo_stdio());
    let mut child = common::stdio::front(
        &dir,
        "auth:\n  stdio: {subject: alice, groups: [dev]}\npolicy:\n  default: deny\n  rules:\n    - name: dev-echo\n      effect: allow\n      groups: [dev]\n      tools: [echo]\nlog: {level: warn}\n",
        &upstream,
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ask = |msg: Value| -> Value {
        let text = match msg {
            Value::String(raw) => raw,
            other => other.to_string(),
        };
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
        let line = out.next().expect("an answer line").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("stdout is MCP only: {line}"))
    };
    let init = ask(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": V, "capabilities": {}, "clientInfo": {"name": "desk", "version": "1"}}}),
    );
    assert_eq!(init["result"]["protocolVersion"], V, "{init}");
    let list = ask(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"], "{list}");
    let denied = ask(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}));
    assert_eq!(denied["id"], 3);
    assert_eq!(denied["error"]["code"], -32602, "{denied}");
    let echoed = ask(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "from the desktop"}}}));
    assert_eq!(echoed["result"]["content"][0]["text"], "from the desktop");
    // A line that is not JSON (written raw): a parse error, id null.
    let parse = ask(json!("this is not JSON"));
    assert_eq!(
        parse,
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}})
    );
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(out.next().is_none(), "nothing more on stdout");
    // The audit trail (a stdout sink by default) went to stderr, with the caller.
    let stderr = String::from_utf8(output.stderr).unwrap();
    let records: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("hash").is_some())
        .collect();
    let call_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["method"] == "tools/call")
        .collect();
    assert_eq!(call_records.len(), 2, "{stderr}");
    assert_eq!(call_records[0]["principal"]["subject"], "alice");
    assert_eq!(call_records[0]["principal"]["auth_method"], "stdio");
    assert_eq!(call_records[0]["outcome"], "denied");
    assert_eq!(call_records[1]["outcome"], "allowed");
}

// ── Real peers: progress, server→client requests, cancellation, concurrency ───────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_streams_through_in_both_eras() {
    let s = stdio_sentinel(OPEN, demo_stdio()).await;
    assert_progress_streams(&s.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_request_reaches_its_caller_and_the_answer_its_child() {
    let s = stdio_sentinel(OPEN, demo_stdio()).await;
    let client = connect(
        &s.url,
        &Era::Legacy(rmcp::model::ProtocolVersion::V_2025_06_18),
        &Default::default(),
    )
    .await
    .unwrap();
    let r = client
        .call_tool(tool_call("roots", json!({})))
        .await
        .unwrap();
    // The test client has one root.
    let text = serde_json::to_value(&r).unwrap()["content"][0]["text"].clone();
    assert_eq!(text, json!("roots: 1"), "{r:?}");
    assert_eq!(client.service().roots_asked(), 1);
    let _ = client.cancel().await;
}

#[tokio::test]
async fn cancellations_reach_the_child_under_its_own_ids() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{pool: 1}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    // Legacy: the client's notifications/cancelled names its own id; the child gets its own.
    let sid = session(&s.url).await;
    let waiting = tokio::spawn({
        let (url, sid) = (s.url.clone(), sid.clone());
        async move { call(&url, &sid, 77, "wait", json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client stops reading first: in the legacy era that cancels nothing, and the
    // cancellation that follows must still reach the call.
    waiting.abort();
    let _ = waiting.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 77, "reason": "changed my mind"}});
    let r = raw_post(&s.url, &legacy_headers(V, Some(&sid)), &cancel).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let seen: Vec<Value> = serde_json::from_str(&text_of(
        &call(&s.url, &sid, 78, "cancelled", json!({})).await,
    ))
    .unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_ne!(seen[0], json!(77), "the child's id, not the caller's");
    // Modern: closing the stream is the cancellation (one warm child: the same one answers).
    let modern = |name: &str, id: i64| {
        let body = modern_request(id, "tools/call", json!({"name": name, "arguments": {}}));
        let headers = modern_headers("tools/call", Some(name));
        let url = s.url.clone();
        async move { raw_post(&url, &headers, &body).await }
    };
    let gone = tokio::spawn(modern("wait", 5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gone.abort();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen: Vec<Value> =
            serde_json::from_str(&text_of(&modern("cancelled", 6).await)).unwrap();
        if seen.len() == 1 {
            assert_ne!(seen[0], json!(5), "the child's id, not the caller's");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cancellation reached the child: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_of_ten_calls_each_get_their_own_answers() {
    let s = stdio_sentinel(OPEN, demo_stdio()).await;
    let results = futures_join(20, |i| {
        let url = s.url.clone();
        async move {
            let client = connect(
                &url,
                &Era::Legacy(rmcp::model::ProtocolVersion::V_2025_06_18),
                &Default::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
            let mut texts = Vec::new();
            for j in 0..10 {
                let r = client
                    .call_tool(tool_call("echo", json!({"text": format!("{i}.{j}")})))
                    .await
                    .unwrap();
                texts.push(serde_json::to_value(&r).unwrap()["content"][0]["text"].clone());
            }
            (client, texts)
        }
    })
    .await;
    s.metric_eventually("mcp_sentinel_stdio_children{role=\"session\"}", 20.0)
        .await;
    for (i, (client, texts)) in results.into_iter().enumerate() {
        let want: Vec<Value> = (0..10).map(|j| json!(format!("{i}.{j}"))).collect();
        assert_eq!(texts, want);
        let _ = client.cancel().await;
    }
}

// ── What a fresh-eyes attack found, each kept out ─────────────────────────────────────────

#[tokio::test]
async fn a_line_break_in_a_body_cannot_smuggle_a_second_message_to_the_child() {
    let yaml = "auth: {anonymous: allow}\npolicy:\n  default: deny\n  rules:\n    - name: echo\n      effect: allow\n      tools: [echo]\nlog: {level: warn}\n";
    let s = stdio_sentinel(yaml, faulty(&[])).await;
    let sid = session(&s.url).await;
    // Valid JSON (line breaks between tokens) that a line reader would split in three.
    let body = "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"a\",\"k\":\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"crash\",\"arguments\":{}}}\r\n}}}";
    let resp = reqwest::Client::new()
        .post(&s.url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", V)
        .header("Mcp-Session-Id", &sid)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(answer["id"], "x");
    assert_eq!(answer["result"]["content"][0]["text"], "a", "{answer}");
    // The smuggled `crash` never ran: the child lives and the session with it.
    assert_eq!(
        text_of(&call(&s.url, &sid, 3, "echo", json!({"text": "alive"})).await),
        "alive"
    );
    assert_eq!(
        s.metric("mcp_sentinel_stdio_child_exits_total{cause=\"crashed\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn in_a_shared_child_a_caller_cancels_only_its_own_calls() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{sharing: shared}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let (alice, bob) = (session(&s.url).await, session(&s.url).await);
    let waiting = tokio::spawn({
        let (url, alice) = (s.url.clone(), alice.clone());
        async move { call(&url, &alice, 7, "wait", json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 7}});
    // Bob names Alice's id: he has no call 7, nothing reaches the child.
    let r = raw_post(&s.url, &legacy_headers(V, Some(&bob)), &cancel).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let seen = text_of(&call(&s.url, &bob, 8, "cancelled", json!({})).await);
    assert_eq!(seen, "[]");
    // Alice can.
    let r = raw_post(&s.url, &legacy_headers(V, Some(&alice)), &cancel).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let seen: Vec<Value> = serde_json::from_str(&text_of(
        &call(&s.url, &bob, 9, "cancelled", json!({})).await,
    ))
    .unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    waiting.abort();
}

#[tokio::test]
async fn a_shared_childs_own_requests_reach_no_caller_and_are_refused() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{sharing: shared}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let (alice, bob) = (session(&s.url).await, session(&s.url).await);
    // Bob has a call streaming when the child asks: he must not get the request.
    let bobs = tokio::spawn({
        let (url, bob) = (s.url.clone(), bob.clone());
        async move { call(&url, &bob, 1, "wait", json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = call(&s.url, &alice, 2, "ask", json!({})).await;
    let reply: Value = serde_json::from_str(&text_of(&asked)).unwrap();
    assert_eq!(reply["error"]["code"], -32601, "{reply}");
    assert_eq!(asked.messages().len(), 1, "only the answer: {}", asked.body);
    bobs.abort();
    assert_eq!(
        s.metric("mcp_sentinel_stdio_messages_dropped_total").await,
        1.0
    );
}

#[tokio::test]
async fn a_shared_child_is_initialized_once_whatever_its_callers_send() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{sharing: shared}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let sid = session(&s.url).await;
    let again = json!({"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {"roots": {}},
        "clientInfo": {"name": "x", "version": "1"}}});
    let r = raw_post(&s.url, &legacy_headers(V, Some(&sid)), &again).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.final_message().unwrap()["result"]["protocolVersion"],
        "2025-11-25"
    );
    let _ = session(&s.url).await;
    assert_eq!(
        text_of(&call(&s.url, &sid, 6, "inits", json!({})).await),
        "1"
    );
}

#[tokio::test]
async fn concurrent_initializes_never_start_more_than_max_children() {
    let yaml = format!("{OPEN}upstream:\n  stdio: {{pool: 1, max_children: 3}}\n");
    let s = stdio_sentinel(&yaml, faulty(&[])).await;
    let statuses = futures_join(10, |_| {
        let url = s.url.clone();
        async move { raw_legacy_session_unchecked(&url).await.1.status }
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|c| **c == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|c| **c == 503).count(),
        8,
        "{statuses:?}"
    );
    assert_eq!(
        s.metric("mcp_sentinel_stdio_children{role=\"session\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn what_a_session_has_nobody_reading_is_bounded_in_bytes() {
    let s = stdio_sentinel(OPEN, faulty(&[])).await;
    let sid = session(&s.url).await;
    let before = rss_kib();
    // 40 notifications of 1 MB after its answer, and no GET stream to take them.
    let r = call(
        &s.url,
        &sid,
        1,
        "flood",
        json!({"count": 40, "bytes": 1_000_000}),
    )
    .await;
    assert_eq!(text_of(&r), "flooding");
    let dropped = s
        .metric_eventually_above("mcp_sentinel_stdio_messages_dropped_total", 31.0)
        .await;
    // 8 MiB wait for a reader: 8 of them fit, the rest are dropped.
    assert_eq!(dropped, 32.0);
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew {grown} KiB");
}

#[tokio::test]
async fn a_2025_03_26_batch_is_answered_element_by_element_in_order() {
    let s = stdio_sentinel(OPEN, faulty(&[])).await;
    let (sid, init) = raw_legacy_session(&s.url, "2025-03-26").await;
    assert_eq!(init.status, 200, "{}", init.body);
    let sid = sid.unwrap();
    let batch = json!([
        {"jsonrpc": "2.0", "id": "b", "method": "tools/call",
         "params": {"name": "echo", "arguments": {"text": "second"}}},
        {"jsonrpc": "2.0", "method": "notifications/progress",
         "params": {"progressToken": "none", "progress": 1}},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "echo", "arguments": {"text": "first"}}},
    ]);
    let r = raw_post(&s.url, &legacy_headers("2025-03-26", Some(&sid)), &batch).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let answers: Vec<Value> = serde_json::from_str(&r.body).unwrap_or_else(|_| {
        panic!("a JSON array: {}", r.body);
    });
    let got: Vec<(Value, Value)> = answers
        .iter()
        .map(|a| (a["id"].clone(), a["result"]["content"][0]["text"].clone()))
        .collect();
    assert_eq!(
        got,
        [(json!("b"), json!("second")), (json!(1), json!("first"))]
    );
}
