//! Task ids belong to the principal whose `tools/call` created them (session-hijack protection
//! for SEP-2663 / 2025-11-25 tasks), end to end: rmcp's upstream makes real tasks with its
//! `TaskManager`, the sentinel binds each id as the task handle streams past, and another
//! principal's `tasks/get`, `tasks/result`, `tasks/cancel` or `tasks/update` for it is answered
//! 404 / -32602 "Task not found" without reaching the upstream. Raw HTTP, so statuses, ids and
//! bodies are seen as sent; both eras, and both answer shapes (SSE and JSON).

mod common;

use std::time::{Duration, Instant};

use common::client::{
    ClientOptions, Era, RawResponse, connect, legacy_headers, modern_headers, modern_request,
    raw_post, tool_call,
};
use common::keys::{pairs, write_keys};
use common::sentinel::{self, TempDir, TestSentinel};
use common::upstream::{Upstream, UpstreamConfig, spawn_upstream_with};
use serde_json::{Value, json};

const ALICE_KEY: &str = "ak_alice_0123456789";
const BOB_KEY: &str = "ak_bob_9876543210";
const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";
const LEGACY_VERSION: &str = "2025-11-25";
const HIJACKS: &str = r#"mcp_sentinel_hijack_attempts_total{kind="task"}"#;
const SESSION_HIJACKS: &str = r#"mcp_sentinel_hijack_attempts_total{kind="session"}"#;
const TASK_DENIALS: &str =
    r#"mcp_sentinel_check_denials_total{check="session",reason="task_not_found"}"#;

struct Bed {
    upstream: Upstream,
    sentinel: TestSentinel,
    _dir: TempDir,
}

/// An upstream served as `config` and a sentinel whose only authenticator is API keys for
/// alice and bob.
async fn keyed(config: UpstreamConfig) -> Bed {
    let upstream = spawn_upstream_with(config).await;
    let dir = TempDir::new("auth-tasks");
    let keys = dir.path("keys.yaml");
    write_keys(&keys, &[(ALICE_KEY, "alice", &[]), (BOB_KEY, "bob", &[])]);
    let yaml = format!(
        "policy: {{default: allow}}\nauth:\n  api_keys:\n    file: {}\n    reload_interval: 100ms\n",
        keys.display()
    );
    let cfg = sentinel::config_from_yaml(&yaml, &upstream.url());
    let sentinel = sentinel::start_with(cfg, true).await;
    Bed {
        upstream,
        sentinel,
        _dir: dir,
    }
}

/// Client capabilities declaring the tasks extension (what rmcp's `enable_tasks` sends).
fn tasks_capabilities() -> Value {
    json!({ "extensions": { TASKS_EXTENSION: {} } })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// 2025-11-25 with a session per principal, tasks declared at `initialize`.
    Legacy,
    /// 2026-07-28, stateless, tasks declared in each request's `_meta`.
    Modern,
}

/// One principal speaking to the sentinel in one era.
struct Caller {
    url: String,
    mode: Mode,
    /// Credential, and the legacy session headers.
    headers: Vec<(String, String)>,
}

impl Caller {
    /// For legacy, opens the principal's own session by hand (initialize + initialized).
    async fn open(url: &str, key: &str, mode: Mode) -> Caller {
        let mut headers = pairs(&[("X-API-Key", key)]);
        if mode == Mode::Legacy {
            let init = json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY_VERSION,
                    "capabilities": tasks_capabilities(),
                    "clientInfo": { "name": "raw", "version": "1" }
                }
            });
            let r = raw_post(url, &headers, &init).await;
            assert_eq!(r.status, 200, "initialize: {}", r.body);
            let result = &r.final_message().expect("initialize answer")["result"];
            assert_eq!(result["protocolVersion"], LEGACY_VERSION);
            // The upstream declares the extension.
            assert_eq!(
                result["capabilities"]["extensions"][TASKS_EXTENSION],
                json!({})
            );
            let sid = r.header("mcp-session-id").expect("a session");
            headers.extend(legacy_headers(LEGACY_VERSION, Some(&sid)));
            let ack = raw_post(
                url,
                &headers,
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
            assert_eq!(ack.status, 202, "initialized: {}", ack.body);
        }
        Caller {
            url: url.to_owned(),
            mode,
            headers,
        }
    }

    async fn send(&self, id: i64, method: &str, params: Value) -> RawResponse {
        let (headers, body) = match self.mode {
            Mode::Legacy => (
                self.headers.clone(),
                json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }),
            ),
            Mode::Modern => {
                // `Mcp-Name` is the tool for tools/call and the task id for tasks/* (rmcp
                // requires it on tasks/get, tasks/update and tasks/cancel).
                let name = params["name"]
                    .as_str()
                    .or(params["taskId"].as_str())
                    .map(str::to_owned);
                let mut headers = self.headers.clone();
                headers.extend(modern_headers(method, name.as_deref()));
                let mut body = modern_request(id, method, params);
                body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
                    tasks_capabilities();
                (headers, body)
            }
        };
        raw_post(&self.url, &headers, &body).await
    }

    /// `tools/call background`: the task handle's `result`.
    async fn background(&self, id: i64, text: &str, delay_ms: u64) -> Value {
        let r = self
            .send(
                id,
                "tools/call",
                json!({"name": "background", "arguments": {"text": text, "delay_ms": delay_ms}}),
            )
            .await;
        assert_eq!(r.status, 200, "background: {}", r.body);
        let answer = r.final_message().expect("an answer");
        assert_eq!(answer["id"], id, "{answer}");
        let result = answer["result"].clone();
        assert_eq!(result["resultType"], "task", "{answer}");
        assert_eq!(result["status"], "working", "{answer}");
        assert!(result["taskId"].is_string(), "{answer}");
        result
    }

    /// `tasks/get` that must succeed: the task's `result`.
    async fn get(&self, id: i64, task: &str) -> Value {
        let r = self.send(id, "tasks/get", json!({ "taskId": task })).await;
        assert_eq!(r.status, 200, "tasks/get {task}: {}", r.body);
        let answer = r.final_message().expect("an answer");
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["result"]["taskId"], task, "{answer}");
        answer["result"].clone()
    }

    /// Polls `tasks/get` (ids from `id` up) until the task is no longer `working`.
    async fn settled(&self, id: i64, task: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in 0.. {
            let result = self.get(id + n, task).await;
            if result["status"] != "working" {
                return result;
            }
            assert!(Instant::now() < deadline, "{task} still working: {result}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        unreachable!()
    }
}

/// The sentinel's answer to a task id the caller may not use: 404 and a JSON-RPC error for
/// the request's id.
fn assert_task_not_found(r: &RawResponse, id: i64, what: &str) {
    assert_eq!(r.status, 404, "{what}: {}", r.body);
    assert_eq!(r.content_type(), "application/json", "{what}");
    let body: Value = serde_json::from_str(&r.body).expect("a JSON body");
    assert_eq!(
        body,
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": -32602, "message": "Task not found" }
        }),
        "{what}"
    );
}

/// The four task methods, each naming `task`.
fn task_requests(task: &str) -> [(&'static str, Value); 4] {
    [
        ("tasks/get", json!({ "taskId": task })),
        ("tasks/result", json!({ "taskId": task })),
        ("tasks/cancel", json!({ "taskId": task })),
        (
            "tasks/update",
            json!({ "taskId": task, "inputResponses": {} }),
        ),
    ]
}

/// The whole story in one era against one upstream answer shape.
async fn tasks_belong_to_their_creator(config: UpstreamConfig, mode: Mode, sse: bool) {
    let bed = keyed(config).await;
    let url = &bed.sentinel.url;
    let up = &bed.upstream;
    let alice = Caller::open(url, ALICE_KEY, mode).await;
    let bob = Caller::open(url, BOB_KEY, mode).await;
    let sessions = if mode == Mode::Legacy { 2.0 } else { 0.0 };
    assert_eq!(bed.sentinel.metric("mcp_sentinel_bindings").await, sessions);

    // alice starts a task; the handle comes in the shape this upstream answers with.
    let r = alice
        .send(
            10,
            "tools/call",
            json!({"name": "background", "arguments": {"text": "for alice"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.is_sse(), sse, "{}", r.content_type());
    let handle = r.final_message().expect("a task handle");
    assert_eq!(handle["id"], 10);
    assert_eq!(handle["result"]["resultType"], "task", "{handle}");
    let task = handle["result"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("no task id: {handle}"))
        .to_owned();
    assert_eq!(up.tasks_created(), 1);
    assert_eq!(
        bed.sentinel.metric("mcp_sentinel_bindings").await,
        sessions + 1.0,
        "the task id is bound"
    );

    // alice's own task: 200 with the task, completed with the echo.
    let done = alice.settled(11, &task).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["content"],
        json!([{ "type": "text", "text": "for alice" }]),
        "{done}"
    );
    let gets = up.task_requests("tasks/get");
    assert!(gets >= 1);

    // bob, in his own session, presents alice's task id to every task method: 404 each, and
    // not one of those requests reaches the upstream.
    let before = up.mcp_requests().len();
    for (n, (method, params)) in task_requests(&task).into_iter().enumerate() {
        let id = 20 + n as i64;
        let r = bob.send(id, method, params).await;
        assert_task_not_found(&r, id, &format!("bob {method} alice's task"));
    }
    assert_eq!(up.mcp_requests().len(), before, "bob's requests stayed out");
    assert_eq!(up.task_requests("tasks/get"), gets);
    assert_eq!(up.task_requests("tasks/cancel"), 0);
    assert_eq!(up.task_requests("tasks/update"), 0);
    assert_eq!(bed.sentinel.metric(HIJACKS).await, 4.0);

    // Task ids nobody created: 404 for either principal, and not hijack attempts.
    for (caller, id) in [(&alice, 30), (&bob, 31)] {
        let r = caller
            .send(id, "tasks/get", json!({ "taskId": "no-such-task" }))
            .await;
        assert_task_not_found(&r, id, "made-up task id");
    }
    assert_eq!(up.mcp_requests().len(), before);
    assert_eq!(bed.sentinel.metric(HIJACKS).await, 4.0);
    assert_eq!(bed.sentinel.metric(TASK_DENIALS).await, 6.0);

    // alice's task is untouched by bob's attempts.
    assert_eq!(alice.get(40, &task).await, done);

    // A long task: bob's cancel is refused and alice's own cancel is honoured.
    let long = alice.background(50, "slow one", 60_000).await;
    let long = long["taskId"].as_str().unwrap().to_owned();
    assert_ne!(long, task);
    let r = bob
        .send(51, "tasks/cancel", json!({ "taskId": long }))
        .await;
    assert_task_not_found(&r, 51, "bob cancels alice's long task");
    assert_eq!(alice.get(52, &long).await["status"], "working");
    let r = alice
        .send(53, "tasks/cancel", json!({ "taskId": long }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.final_message().unwrap()["result"]["resultType"],
        "complete"
    );
    assert_eq!(up.task_requests("tasks/cancel"), 1, "only alice's cancel");
    assert_eq!(alice.settled(54, &long).await["status"], "cancelled");

    // And the other way round: bob's task is bob's.
    let bobs = bob.background(60, "for bob", 0).await;
    let bobs = bobs["taskId"].as_str().unwrap().to_owned();
    assert_eq!(bob.settled(61, &bobs).await["status"], "completed");
    let r = alice.send(70, "tasks/get", json!({ "taskId": bobs })).await;
    assert_task_not_found(&r, 70, "alice gets bob's task");

    assert_eq!(up.tasks_created(), 3);
    assert_eq!(bed.sentinel.metric(HIJACKS).await, 6.0);
    assert_eq!(bed.sentinel.metric(SESSION_HIJACKS).await, 0.0);
    assert_eq!(
        bed.sentinel.metric("mcp_sentinel_bindings").await,
        sessions + 3.0
    );
}

#[tokio::test]
async fn legacy_sse_task_ids_belong_to_their_creator() {
    tasks_belong_to_their_creator(UpstreamConfig::default(), Mode::Legacy, true).await;
}

#[tokio::test]
async fn modern_sse_task_ids_belong_to_their_creator() {
    tasks_belong_to_their_creator(UpstreamConfig::default(), Mode::Modern, true).await;
}

#[tokio::test]
async fn modern_json_task_ids_belong_to_their_creator() {
    tasks_belong_to_their_creator(UpstreamConfig::json(), Mode::Modern, false).await;
}

/// A task bound in one era is just as foreign to another principal in the other era.
#[tokio::test]
async fn a_task_id_is_foreign_across_eras_too() {
    let bed = keyed(UpstreamConfig::default()).await;
    let url = &bed.sentinel.url;
    let alice = Caller::open(url, ALICE_KEY, Mode::Modern).await;
    let bob = Caller::open(url, BOB_KEY, Mode::Legacy).await;
    let task = alice.background(1, "cross", 0).await;
    let task = task["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        bed.sentinel.metric("mcp_sentinel_bindings").await,
        2.0,
        "bob's session and alice's task are bound"
    );
    let before = bed.upstream.mcp_requests().len();
    let r = bob.send(2, "tasks/get", json!({ "taskId": task })).await;
    assert_task_not_found(&r, 2, "legacy bob gets modern alice's task");
    assert_eq!(bed.upstream.mcp_requests().len(), before);
    assert_eq!(bed.sentinel.metric(HIJACKS).await, 1.0);
    // alice, now in a legacy session of her own, still owns it.
    let alice_legacy = Caller::open(url, ALICE_KEY, Mode::Legacy).await;
    assert_eq!(alice_legacy.settled(3, &task).await["status"], "completed");
    assert_eq!(bed.sentinel.metric(HIJACKS).await, 1.0);
}

/// Clients that do not declare the tasks extension get `background`'s result inline, through
/// the sentinel, in every era; nothing is bound and their task requests are refused by rmcp.
#[tokio::test]
async fn clients_without_the_tasks_extension_get_inline_results() {
    let bed = keyed(UpstreamConfig::default()).await;
    for era in Era::all() {
        let client = connect(&bed.sentinel.url, &era, &ClientOptions::bearer(ALICE_KEY))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", era.label()));
        let result = client
            .call_tool(tool_call("background", json!({"text": "inline"})))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", era.label()));
        assert_eq!(
            serde_json::to_value(&result.content).unwrap(),
            json!([{ "type": "text", "text": "inline" }]),
            "{}",
            era.label()
        );
        assert_ne!(result.is_error, Some(true), "{}", era.label());
        client.cancel().await.unwrap();
    }
    assert_eq!(bed.upstream.calls("background"), Era::all().len());
    assert_eq!(bed.upstream.tasks_created(), 0);
    assert_eq!(bed.sentinel.metric(HIJACKS).await, 0.0);
}
