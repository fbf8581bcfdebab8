//! Task ids belong to the principal whose `tools/call` created them (session-hijack protection
//! for SEP-2663 / 2025-11-25 tasks), end to end: rmcp's upstream makes real tasks with its
//! `TaskManager`, the sentinel binds each id as the task handle streams past, and another
//! principal's message naming it — any `tasks/*` request or notification, `notifications/tasks/*`
//! — is answered 404 (-32602 "Task not found" for a request) without reaching the upstream;
//! `tasks/list` answers show each caller its own tasks. Raw HTTP, so statuses, ids and bodies
//! are seen as sent; both eras, and both answer shapes (SSE and JSON).

mod common;

use std::time::{Duration, Instant};

use common::bed::Bed;
use common::client::{
    ClientOptions, Era, RawResponse, connect, legacy_headers, modern_headers, modern_request,
    raw_post, tool_call,
};
use common::keys::{pairs, write_keys};
use common::upstream::UpstreamConfig;
use serde_json::{Value, json};

const ALICE_KEY: &str = "ak_alice_0123456789";
const BOB_KEY: &str = "ak_bob_9876543210";
const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";
const LEGACY_VERSION: &str = "2025-11-25";
const HIJACKS: &str = r#"mcp_sentinel_hijack_attempts_total{kind="task"}"#;
const SESSION_HIJACKS: &str = r#"mcp_sentinel_hijack_attempts_total{kind="session"}"#;
const TASK_DENIALS: &str =
    r#"mcp_sentinel_check_denials_total{check="session",reason="task_not_found"}"#;

/// An upstream served as `config` and a sentinel whose only authenticator is API keys for
/// alice and bob.
async fn keyed(config: UpstreamConfig) -> Bed {
    Bed::start("auth-tasks", config, |dir| {
        let keys = dir.path("keys.yaml");
        write_keys(&keys, &[(ALICE_KEY, "alice", &[]), (BOB_KEY, "bob", &[])]);
        format!(
            "policy: {{default: allow}}\nauth:\n  api_keys:\n    file: {}\n    reload_interval: 100ms\n",
            keys.display()
        )
    })
    .await
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

    /// A notification (no id), legacy only: the session headers and the body as given.
    async fn notify(&self, method: &str, params: Value) -> RawResponse {
        assert_eq!(self.mode, Mode::Legacy);
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        raw_post(&self.url, &self.headers, &body).await
    }

    /// `tasks/list`: the ids it shows, in order.
    async fn list(&self, id: i64) -> Vec<String> {
        let r = self.send(id, "tasks/list", json!({})).await;
        assert_eq!(r.status, 200, "tasks/list: {}", r.body);
        let answer = r.final_message().expect("an answer");
        assert_eq!(answer["id"], id, "{answer}");
        answer["result"]["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("no tasks: {answer}"))
            .iter()
            .map(|t| t["taskId"].as_str().expect("a task id").to_owned())
            .collect()
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

/// Whose task a message names, in the table below.
#[derive(Clone, Copy, Debug)]
enum Whose {
    /// alice's own task, sent by alice.
    Own,
    /// alice's task, sent by bob.
    Foreign,
    /// An id nobody created.
    Unknown,
}

/// Every message that names a task — requests and notifications, the methods the sentinel
/// knows, `tasks/delete`, a method nobody knows and `notifications/tasks/*` — reaches the
/// upstream only from the task's owner. Anyone else gets 404: with -32602 "Task not found" for
/// a request, the status alone for a notification (it has no id to answer). A `taskId` that is
/// not a string is 400 / -32602.
#[tokio::test]
async fn every_message_naming_a_task_is_checked_against_its_owner() {
    let bed = keyed(UpstreamConfig::default()).await;
    let url = &bed.sentinel.url;
    let up = &bed.upstream;
    let alice = Caller::open(url, ALICE_KEY, Mode::Legacy).await;
    let bob = Caller::open(url, BOB_KEY, Mode::Legacy).await;
    // A long task, so it is still there for every row; alice's own cancel comes last.
    let task = alice.background(1, "long", 60_000).await;
    let task = task["taskId"].as_str().unwrap().to_owned();

    let methods = [
        "tasks/get",
        "tasks/result",
        "tasks/update",
        "tasks/delete",
        "tasks/frobnicate",
        "notifications/tasks/status",
        "tasks/cancel",
    ];
    let mut id = 100;
    let mut hijacks = 0.0;
    for method in methods {
        for notification in [false, true] {
            if method.starts_with("notifications/") && !notification {
                continue;
            }
            for whose in [Whose::Foreign, Whose::Unknown, Whose::Own] {
                id += 1;
                let (caller, task_id) = match whose {
                    Whose::Own => (&alice, task.as_str()),
                    Whose::Foreign => (&bob, task.as_str()),
                    Whose::Unknown => (&alice, "no-such-task"),
                };
                let params = json!({ "taskId": task_id, "inputResponses": {} });
                let what = format!("{method} {whose:?} notification={notification}");
                let before = up.mcp_requests().len();
                let r = if notification {
                    caller.notify(method, params).await
                } else {
                    caller.send(id, method, params).await
                };
                match (whose, notification) {
                    (Whose::Own, _) => {
                        // Forwarded: the upstream saw it and answered (what it answers is its
                        // business: 200 with a result or an error, 202 for a notification).
                        assert_eq!(up.mcp_requests().len(), before + 1, "{what}");
                        let seen = up.mcp_requests().pop().unwrap().json().unwrap();
                        assert_eq!(seen["method"], method, "{what}");
                        assert_eq!(seen["params"]["taskId"], task, "{what}");
                        let want = if notification { 202 } else { 200 };
                        assert_eq!(r.status, want, "{what}: {}", r.body);
                    }
                    (_, false) => {
                        assert_task_not_found(&r, id, &what);
                        assert_eq!(up.mcp_requests().len(), before, "{what}");
                    }
                    (_, true) => {
                        assert_eq!(r.status, 404, "{what}: {}", r.body);
                        assert_eq!(r.body, "", "{what}: a notification gets no JSON-RPC body");
                        assert_eq!(up.mcp_requests().len(), before, "{what}");
                    }
                }
                if matches!(whose, Whose::Foreign) {
                    hijacks += 1.0;
                }
            }
        }
    }
    assert_eq!(bed.sentinel.metric(HIJACKS).await, hijacks);
    // Only alice's own cancels reached the upstream; the task is cancelled by her alone.
    assert_eq!(up.task_requests("tasks/cancel"), 1);
    // rmcp reads a notification of a method it has a handler for as an unknown one.
    for (method, n) in [
        ("tasks/cancel", 1),
        ("tasks/get", 1),
        ("tasks/delete", 2),
        ("tasks/frobnicate", 2),
        ("notifications/tasks/status", 1),
    ] {
        assert_eq!(up.custom(method), n, "{method}");
    }
    assert_eq!(alice.settled(900, &task).await["status"], "cancelled");

    // A task id that is not a string is refused before anything else looks at it.
    let before = up.mcp_requests().len();
    for (method, bad) in [
        ("tasks/get", json!(7)),
        ("tasks/delete", json!(null)),
        ("tasks/frobnicate", json!([task])),
        ("tasks/list", json!({ "id": task })),
    ] {
        let r = alice
            .send(950, method, json!({ "taskId": bad.clone() }))
            .await;
        assert_eq!(r.status, 400, "{method} {bad}: {}", r.body);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], 950, "{method}");
        assert_eq!(body["error"]["code"], -32602, "{method}");
        // A malformed message is not trusted to be a notification: JSON-RPC's answer to
        // what cannot be read, with a null id.
        let r = alice.notify(method, json!({ "taskId": bad.clone() })).await;
        assert_eq!(r.status, 400, "{method} {bad}: {}", r.body);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32602, "message": "Invalid params"}})
        );
    }
    assert_eq!(up.mcp_requests().len(), before);
}

/// The upstream lists every task it holds; each caller sees only the tasks it created, in
/// both eras and both answer shapes.
async fn task_lists_show_only_own_tasks(config: UpstreamConfig, mode: Mode, sse: bool) {
    let bed = keyed(config).await;
    let url = &bed.sentinel.url;
    let alice = Caller::open(url, ALICE_KEY, mode).await;
    let bob = Caller::open(url, BOB_KEY, mode).await;
    let a1 = alice.background(1, "a1", 60_000).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let b1 = bob.background(2, "b1", 60_000).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let a2 = alice.background(3, "a2", 0).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The upstream lists all three to anyone; the sentinel shows each caller its own.
    let r = alice.send(4, "tasks/list", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.is_sse(), sse, "{}", r.content_type());
    let answer = r.final_message().unwrap();
    let shown: Vec<&str> = answer["result"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(shown, [a1.as_str(), a2.as_str()]);
    assert_eq!(alice.list(5).await, [a1.clone(), a2.clone()]);
    assert_eq!(bob.list(6).await, [b1]);
    assert_eq!(
        bed.upstream.custom("tasks/list"),
        3,
        "each list was the upstream's"
    );
    // bob's task hidden from alice twice, alice's two from bob.
    let hidden = r#"mcp_sentinel_list_items_hidden_total{list="tasks"}"#;
    assert_eq!(bed.sentinel.metric(hidden).await, 4.0);
}

#[tokio::test]
async fn legacy_sse_task_lists_show_only_own_tasks() {
    task_lists_show_only_own_tasks(UpstreamConfig::default(), Mode::Legacy, true).await;
}

#[tokio::test]
async fn modern_json_task_lists_show_only_own_tasks() {
    task_lists_show_only_own_tasks(UpstreamConfig::json(), Mode::Modern, false).await;
}
