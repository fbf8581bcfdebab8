//! Official-SDK MCP servers over stdio behind the sentinel (`upstream.command`): the Python SDK
//! (`mcp`, tests/fixtures/stdio/python_server.py) and the reference server-everything (npm),
//! both pinned and installed by scripts/mcp-peers.sh. rmcp clients reach them over streamable
//! HTTP through the sentinel in every era the server speaks; whatever a client gets talking to
//! the server directly over its stdio, it gets through the sentinel. The stdio front
//! (`mcp-sentinel stdio -- PROG`) is driven as a local client would: JSON lines on its stdin.
//!
//! A missing peer fails the test, saying how to install it: nothing here passes by skipping.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::client::{
    Answers, ClientOptions, Era, McpClient, TestClient, Transcript, call_with_progress,
    connect_client, legacy_headers, legacy_versions, lists, modern_headers, modern_request,
    outcome, raw_legacy_session, raw_post, raw_send, tool_call,
};
use common::peers::{installed, peers_dir};
use common::sentinel::{self, TempDir, TestSentinel};
use common::stdio::{OPEN, stdio_config};
use rmcp::model::{
    CallToolRequest, ClientRequest, GetPromptRequestParams, ProtocolVersion,
    ReadResourceRequestParams,
};
use rmcp::service::PeerRequestOptions;
use rmcp::{ClientServiceExt, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

// ---- the peers ---------------------------------------------------------------------------------

fn on_path(program: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH (Debian: apt-get install nodejs)"))
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

const PYTHON_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stdio/python_server.py"
);

/// One real MCP server the sentinel spawns, and what the tests do with it.
struct Peer {
    name: &'static str,
    command: Vec<String>,
    /// Every tool `tools/list` names for a client declaring roots, sampling and elicitation.
    tools: &'static [&'static str],
    /// `(tool, arguments, exact text of the result's first content)`.
    calls: Vec<(&'static str, Value, &'static str)>,
    /// `(tool, arguments)`: reports 3 progress notifications.
    progress: (&'static str, Value),
    /// `(tool, arguments)`: asks the client for sampling once.
    sampling: (&'static str, Value),
    /// `(tool, arguments)`: asks the client for a form elicitation once.
    elicitation: (&'static str, Value),
    resources: Vec<&'static str>,
    prompts: Vec<(&'static str, Option<Value>)>,
    /// `(a, b)` → a call answering `text` for the sum, for the concurrency test.
    sum: fn(i64, i64) -> (&'static str, Value, String),
}

fn python_peer() -> Peer {
    Peer {
        name: "python mcp",
        command: vec![
            common::peers::python("the Python SDK (mcp)"),
            PYTHON_SERVER.to_owned(),
        ],
        tools: &[
            "echo", "add", "slow", "ask_llm", "ask_name", "sleep", "events", "pid", "getenv", "cwd",
        ],
        calls: vec![
            ("echo", json!({"text": "hello"}), "hello"),
            ("add", json!({"a": 2, "b": 40}), "42"),
            ("no_such_tool", json!({}), "Unknown tool: no_such_tool"),
        ],
        progress: ("slow", json!({"steps": 3, "delay_ms": 10})),
        sampling: ("ask_llm", json!({"prompt": "six times seven?"})),
        elicitation: ("ask_name", json!({})),
        resources: vec!["peer://readme", "peer://items/7", "peer://nope"],
        prompts: vec![
            ("greet", Some(json!({"name": "Ada"}))),
            ("no_such_prompt", None),
        ],
        sum: |a, b| ("add", json!({"a": a, "b": b}), (a + b).to_string()),
    }
}

const EVERYTHING: &str = "node_modules/@modelcontextprotocol/server-everything";

fn everything_peer() -> Peer {
    Peer {
        name: "server-everything",
        command: vec![
            on_path("node"),
            installed(
                peers_dir()
                    .join("npm")
                    .join(EVERYTHING)
                    .join("dist/index.js"),
                "@modelcontextprotocol/server-everything",
            ),
            "stdio".to_owned(),
        ],
        tools: &[
            "echo",
            "get-annotated-message",
            "get-env",
            "get-resource-links",
            "get-resource-reference",
            "get-structured-content",
            "get-sum",
            "get-tiny-image",
            "gzip-file-as-resource",
            "toggle-simulated-logging",
            "toggle-subscriber-updates",
            "trigger-long-running-operation",
            "get-roots-list",
            "trigger-elicitation-request",
            "trigger-sampling-request",
            "simulate-research-query",
        ],
        calls: vec![
            ("echo", json!({"message": "hello"}), "Echo: hello"),
            (
                "get-sum",
                json!({"a": 2, "b": 40}),
                "The sum of 2 and 40 is 42.",
            ),
            (
                "no_such_tool",
                json!({}),
                "MCP error -32602: Tool no_such_tool not found",
            ),
        ],
        progress: (
            "trigger-long-running-operation",
            json!({"duration": 0.3, "steps": 3}),
        ),
        sampling: (
            "trigger-sampling-request",
            json!({"prompt": "six times seven?", "maxTokens": 16}),
        ),
        elicitation: ("trigger-elicitation-request", json!({})),
        resources: vec![
            "demo://resource/static/document/features.md",
            "demo://resource/static/document/architecture.md",
            "demo://no/such/resource",
        ],
        prompts: vec![
            ("simple-prompt", None),
            ("args-prompt", Some(json!({"city": "Paris", "state": "TX"}))),
            ("no_such_prompt", None),
        ],
        sum: |a, b| {
            (
                "get-sum",
                json!({"a": a, "b": b}),
                format!("The sum of {a} and {b} is {}.", a + b),
            )
        },
    }
}

fn answers() -> Answers {
    Answers {
        sampling: "forty-two".into(),
        model: "test-model".into(),
        elicitation: json!({"name": "Ada"}),
        delay: Duration::ZERO,
    }
}

// ---- helpers -----------------------------------------------------------------------------------

/// `fut`, or a panic naming `what` after `secs` seconds.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {secs}s"))
}

/// A sentinel whose upstream is `peer` over stdio, anyone allowed anything; `upstream` holds
/// the `upstream` section's keys beside `command`, as YAML lines indented by two.
async fn sentinel_with(peer: &Peer, upstream: &str) -> TestSentinel {
    let cfg = stdio_config(
        &format!("upstream:\n{upstream}{OPEN}"),
        peer.command.clone(),
    );
    within(
        START_SECS,
        "the sentinel starting",
        sentinel::start_with(cfg, true),
    )
    .await
}

/// [`sentinel_with`] passing PATH and HOME on; `stdio` is the `upstream.stdio` block's body.
async fn sentinel_for(peer: &Peer, stdio: &str) -> TestSentinel {
    sentinel_with(
        peer,
        &format!("  inherit_env: [PATH, HOME]\n  stdio: {{{stdio}}}\n"),
    )
    .await
}

/// How long a child may take to start and answer `initialize`: a Python SDK server takes about
/// 0.8 s of CPU to start, and the 20 of the concurrency test start at once on 2 shared cores.
const START_SECS: u64 = 120;
const SESSION_STDIO: &str = "sharing: session, pool: 1, max_children: 64, start_timeout: 120s";

/// `peer` spawned here, its stdio the client's transport: the reference answers.
async fn direct(peer: &Peer, era: &Era) -> (McpClient, Child) {
    let (client, child) = try_direct(peer, era).await;
    let client = client.unwrap_or_else(|e| panic!("{} {}: direct: {e}", peer.name, era.label()));
    (client, child)
}

async fn try_direct(
    peer: &Peer,
    era: &Era,
) -> (
    Result<McpClient, rmcp::service::ClientInitializeError>,
    Child,
) {
    let mut child = Command::new(&peer.command[0])
        .args(&peer.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: spawn {:?}: {e}", peer.name, peer.command));
    let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let client = TestClient::answering(era, answers());
    let client = match era {
        Era::Legacy(_) => within(START_SECS, "direct initialize", client.serve(io)).await,
        Era::Modern => {
            within(
                START_SECS,
                "direct discover",
                client.serve_with_lifecycle(
                    io,
                    rmcp::ClientLifecycleMode::Discover {
                        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                    },
                ),
            )
            .await
        }
    };
    (client, child)
}

async fn via_sentinel(s: &TestSentinel, peer: &Peer, era: &Era) -> McpClient {
    within(
        START_SECS,
        "connect through the sentinel",
        connect_client(
            &s.url,
            era,
            &ClientOptions::default(),
            TestClient::answering(era, answers()),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{} {}: through the sentinel: {e}", peer.name, era.label()))
}

fn first_text(value: &Value) -> String {
    value["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {value}"))
        .to_owned()
}

/// Everything `peer` offers, as `client` sees it: lists, calls, resources, prompts, progress,
/// sampling and elicitation round trips, and what the client was asked.
async fn transcript(client: &McpClient, peer: &Peer) -> Transcript {
    let mut t = lists(client).await;
    for (tool, arguments, _) in &peer.calls {
        let result = client.call_tool(tool_call(tool, arguments.clone())).await;
        t.insert(format!("tools/call {tool}"), outcome(result));
    }
    for uri in &peer.resources {
        let result = client
            .read_resource(ReadResourceRequestParams::new(*uri))
            .await;
        t.insert(format!("resources/read {uri}"), outcome(result));
    }
    for (name, arguments) in &peer.prompts {
        let mut params = GetPromptRequestParams::new(*name);
        if let Some(arguments) = arguments {
            params = params.with_arguments(common::client::args(arguments.clone()));
        }
        t.insert(
            format!("prompts/get {name}"),
            outcome(client.get_prompt(params).await),
        );
    }
    let (tool, arguments) = &peer.progress;
    let run = call_with_progress(client, tool, arguments.clone()).await;
    let mut steps: Vec<Value> = run
        .progress
        .iter()
        .map(|p| json!([p.progress, p.total, p.message]))
        .collect();
    steps.sort_by(|a, b| a[0].as_f64().unwrap().total_cmp(&b[0].as_f64().unwrap()));
    t.insert(
        format!("progress {tool}"),
        json!({"result": outcome(run.result), "progress": steps}),
    );
    for (tool, arguments) in [&peer.sampling, &peer.elicitation] {
        let result = client.call_tool(tool_call(tool, arguments.clone())).await;
        t.insert(format!("tools/call {tool}"), outcome(result));
    }
    t.insert("asked".into(), json!(client.service().asked()));
    t
}

/// The exact answers both peers owe: checked on the direct transcript, so a broken peer install
/// is told apart from a broken sentinel.
fn check_peer_answers(peer: &Peer, era: &Era, t: &Transcript) {
    let label = format!("{} {}", peer.name, era.label());
    let tools: BTreeSet<&str> = t["tools/list"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: tools/list: {}", t["tools/list"]))
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, peer.tools.iter().copied().collect(), "{label}");
    for (tool, _, text) in &peer.calls {
        assert_eq!(
            first_text(&t[&format!("tools/call {tool}")]),
            *text,
            "{label}: {tool}"
        );
    }
    let progress = &t[&format!("progress {}", peer.progress.0)]["progress"];
    let totals: Vec<(f64, f64)> = progress
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert_eq!(
        totals,
        [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)],
        "{label}: progress"
    );
    let asked = t["asked"].as_array().unwrap();
    let methods: Vec<&str> = asked.iter().map(|a| a[0].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        ["sampling/createMessage", "elicitation/create"],
        "{label}: what the client was asked"
    );
    let prompt = asked[0][1]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        prompt.ends_with("six times seven?"),
        "{label}: {}",
        asked[0][1]
    );
}

// ---- both eras through the sentinel ------------------------------------------------------------

/// Each legacy revision, then 2026-07-28 when the peer speaks it: the transcript through the
/// sentinel equals the one over the peer's own stdio, and holds the exact answers.
async fn same_as_direct(peer: Peer, eras: Vec<Era>) {
    let mut wants = Vec::new();
    for era in &eras {
        let label = format!("{} {}", peer.name, era.label());
        let (direct_client, _child) = direct(&peer, era).await;
        let want = within(60, &label, transcript(&direct_client, &peer)).await;
        check_peer_answers(&peer, era, &want);
        let _ = direct_client.cancel().await;
        wants.push(want);
    }
    let s = sentinel_for(&peer, SESSION_STDIO).await;
    for (era, want) in eras.iter().zip(wants) {
        let label = format!("{} {}", peer.name, era.label());
        let proxied = via_sentinel(&s, &peer, era).await;
        let got = within(60, &label, transcript(&proxied, &peer)).await;
        assert_eq!(
            serde_json::to_string_pretty(&got).unwrap(),
            serde_json::to_string_pretty(&want).unwrap(),
            "{label}: through the sentinel vs direct"
        );
        let _ = proxied.cancel().await;
    }
}

fn legacy_eras() -> Vec<Era> {
    legacy_versions().into_iter().map(Era::Legacy).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_in_every_era_same_as_direct() {
    let mut eras = legacy_eras();
    eras.push(Era::Modern);
    same_as_direct(python_peer(), eras).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_in_every_legacy_revision_same_as_direct() {
    same_as_direct(everything_peer(), legacy_eras()).await;
}

/// The exact answers of the Python peer through the sentinel, written out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exact_answers_through_the_sentinel() {
    let peer = python_peer();
    let s = sentinel_for(&peer, SESSION_STDIO).await;
    for era in [Era::Legacy(ProtocolVersion::V_2025_11_25), Era::Modern] {
        let label = era.label();
        let client = via_sentinel(&s, &peer, &era).await;
        let call = |tool: &'static str, arguments: Value| {
            let client = &client;
            async move {
                let result = client
                    .call_tool(tool_call(tool, arguments))
                    .await
                    .unwrap_or_else(|e| panic!("{tool}: {e}"));
                json!(result)
            }
        };
        let echo = call("echo", json!({"text": "hello"})).await;
        assert_eq!(
            echo["content"],
            json!([{"type": "text", "text": "hello"}]),
            "{label}"
        );
        assert_eq!(
            echo["structuredContent"],
            json!({"result": "hello"}),
            "{label}"
        );
        assert_eq!(echo["isError"], json!(false), "{label}");
        let llm = call("ask_llm", json!({"prompt": "six times seven?"})).await;
        assert_eq!(
            first_text(&llm),
            "llm said: forty-two (model test-model)",
            "{label}"
        );
        let name = call("ask_name", json!({})).await;
        assert_eq!(first_text(&name), "hello Ada", "{label}");
        let asked = client.service().asked();
        assert_eq!(asked.len(), 2, "{label}: {asked:?}");
        assert_eq!(
            asked[0],
            (
                "sampling/createMessage".to_owned(),
                json!({"messages": [{"role": "user", "content": {"type": "text", "text": "six times seven?"}}],
                       "maxTokens": 16})
            ),
            "{label}"
        );
        assert_eq!(asked[1].0, "elicitation/create", "{label}");
        assert_eq!(asked[1].1["message"], "What is your name?", "{label}");
        assert_eq!(
            asked[1].1["requestedSchema"]["required"],
            json!(["name"]),
            "{label}"
        );
        let readme = client
            .read_resource(ReadResourceRequestParams::new("peer://items/7"))
            .await
            .unwrap();
        assert_eq!(
            json!(readme)["contents"],
            json!([{"uri": "peer://items/7", "mimeType": "text/plain", "text": "item 7"}]),
            "{label}"
        );
        let prompt = client
            .get_prompt(
                GetPromptRequestParams::new("greet")
                    .with_arguments(common::client::args(json!({"name": "Ada"}))),
            )
            .await
            .unwrap();
        assert_eq!(
            json!(prompt)["messages"],
            json!([{"role": "user", "content": {"type": "text", "text": "Please greet Ada."}}]),
            "{label}"
        );
        let run = call_with_progress(&client, "slow", json!({"steps": 3, "delay_ms": 200})).await;
        assert_eq!(
            first_text(&json!(run.result.as_ref().expect("slow"))),
            "done after 3 steps",
            "{label}"
        );
        let mut steps = run.steps();
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(
            steps,
            [1.0, 2.0, 3.0].map(|i| (i, Some(format!("step {i}")))),
            "{label}"
        );
        // Streamed, not buffered: the first step came well before the result.
        assert!(
            run.first_progress_lead()
                .is_some_and(|lead| lead >= Duration::from_millis(250)),
            "{label}: progress lead {:?}",
            run.first_progress_lead()
        );
        let _ = client.cancel().await;
    }
}

/// server-everything speaks the legacy revisions only (its SDK, @modelcontextprotocol/sdk
/// 1.32.2, knows none later than 2025-11-25): it answers `server/discover` with -32601, so a
/// 2026-07-28 client cannot connect, through the sentinel as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_refuses_a_modern_client_as_it_does_directly() {
    let peer = everything_peer();
    let (direct_result, _child) = try_direct(&peer, &Era::Modern).await;
    let direct_error = direct_result
        .err()
        .expect("server-everything is legacy only");
    let s = sentinel_for(&peer, SESSION_STDIO).await;
    let proxied = within(
        START_SECS,
        "modern connect",
        connect_client(
            &s.url,
            &Era::Modern,
            &ClientOptions::default(),
            TestClient::answering(&Era::Modern, answers()),
        ),
    )
    .await;
    let proxied_error = proxied.err().expect("server-everything is legacy only");
    assert_eq!(
        proxied_error.to_string(),
        "JSON-RPC error: -32601: Method not found"
    );
    assert_eq!(proxied_error.to_string(), direct_error.to_string());
    // On the wire: the pool child's own answer, under the caller's id.
    let discover = raw_post(
        &s.url,
        &modern_headers("server/discover", None),
        &modern_request(5, "server/discover", json!({})),
    )
    .await;
    assert_eq!(discover.status, 200, "{}", discover.body);
    assert_eq!(
        discover.final_message().unwrap(),
        json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -32601, "message": "Method not found"}})
    );
}

/// The child gets the environment the config gives it: `env`, the `inherit_env` names from the
/// sentinel's own environment and nothing else, and `cwd`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_server_runs_with_the_configured_environment() {
    let peer = python_peer();
    let dir = TempDir::new("stdio-env");
    // A variable of this process that the config does not pass on.
    let (private, _) = std::env::vars()
        .find(|(k, _)| k != "PATH" && k != "HOME")
        .expect("the test has some environment");
    let upstream = format!(
        "  env: {{PEER_GREETING: hello from the config}}\n  inherit_env: [PATH, HOME]\n  \
         cwd: {}\n  stdio: {{{SESSION_STDIO}}}\n",
        serde_json::to_string(dir.0.to_str().unwrap()).unwrap()
    );
    let s = sentinel_with(&peer, &upstream).await;
    let client = via_sentinel(&s, &peer, &Era::Legacy(ProtocolVersion::V_2025_11_25)).await;
    let mut seen = Vec::new();
    for (tool, arguments) in [
        ("getenv", json!({"name": "PEER_GREETING"})),
        ("getenv", json!({"name": "HOME"})),
        ("getenv", json!({"name": private})),
        ("cwd", json!({})),
    ] {
        let result = client.call_tool(tool_call(tool, arguments)).await.unwrap();
        seen.push(first_text(&json!(result)));
    }
    let home = std::env::var("HOME").unwrap();
    let cwd = dir.0.canonicalize().unwrap();
    assert_eq!(
        seen,
        [
            "hello from the config",
            home.as_str(),
            "<unset>",
            cwd.to_str().unwrap()
        ],
        "{private} must not reach the child"
    );
    let _ = client.cancel().await;
}

/// 2026-07-28 requests go to a pool of children. The Python SDK seals `requestState` with a key
/// of its own process, so the retry of an `input_required` round must reach the child that asked.
/// Here it would not by load alone: the first round goes to the second child while another
/// client's `sleep` keeps the first busy, and the retry comes when both are idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_modern_input_rounds_with_a_pool_of_two() {
    let peer = python_peer();
    let s = sentinel_for(
        &peer,
        "sharing: session, pool: 2, max_children: 8, start_timeout: 120s",
    )
    .await;
    let sleeper = via_sentinel(&s, &peer, &Era::Modern).await;
    let slow_answers = Answers {
        delay: Duration::from_millis(1500),
        ..answers()
    };
    let asker = within(
        START_SECS,
        "connect",
        connect_client(
            &s.url,
            &Era::Modern,
            &ClientOptions::default(),
            TestClient::answering(&Era::Modern, slow_answers),
        ),
    )
    .await
    .unwrap();
    for (tool, arguments, want) in [
        (
            "ask_llm",
            json!({"prompt": "six times seven?"}),
            "llm said: forty-two (model test-model)",
        ),
        ("ask_name", json!({}), "hello Ada"),
    ] {
        let busy = sleeper.call_tool(tool_call("sleep", json!({"seconds": 0.5})));
        let ask = async {
            // Let `sleep` reach the first child before the question goes out.
            tokio::time::sleep(Duration::from_millis(100)).await;
            asker.call_tool(tool_call(tool, arguments)).await
        };
        let (slept, answer) = within(30, tool, futures_util::future::join(busy, ask)).await;
        assert_eq!(first_text(&json!(slept.unwrap())), "slept 0.5");
        let answer = answer.unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert_eq!(first_text(&json!(answer)), want, "{tool}");
    }
    assert_eq!(asker.service().asked().len(), 2);
    let _ = sleeper.cancel().await;
    let _ = asker.cancel().await;
}

// ---- cancellation ------------------------------------------------------------------------------

/// The client gives up on a call: the call ends for it at once, the Python server is told (its
/// tool sees the cancellation) and the session goes on.
async fn a_cancelled_call_reaches_the_python_server(era: Era) {
    let peer = python_peer();
    let s = sentinel_for(&peer, SESSION_STDIO).await;
    let label = era.label();
    let client = via_sentinel(&s, &peer, &era).await;
    let handle = client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(tool_call(
                "sleep",
                json!({"seconds": 30}),
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: send: {e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    within(5, "cancel", handle.cancel(Some("test gives up".into())))
        .await
        .unwrap_or_else(|e| panic!("{label}: cancel: {e}"));
    assert!(started.elapsed() < Duration::from_secs(2), "{label}");
    // The server records the cancellation when its task is cut short. In the modern era the
    // pool has one child, so `events` asks the one that ran `sleep`.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = client
            .call_tool(tool_call("events", json!({})))
            .await
            .unwrap_or_else(|e| panic!("{label}: events: {e}"));
        let events = first_text(&json!(events));
        if events == r#"["cancelled sleep 30"]"# {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: the server never saw the cancellation: {events}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_legacy_call_reaches_the_python_server() {
    a_cancelled_call_reaches_the_python_server(Era::Legacy(ProtocolVersion::V_2025_11_25)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_modern_call_reaches_the_python_server() {
    a_cancelled_call_reaches_the_python_server(Era::Modern).await;
}

/// Legacy, on the wire: `notifications/cancelled` reaches the child whether or not the client
/// still reads the call's response stream (a closed stream is no cancellation in the legacy
/// era, and no reason to lose the one that follows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_cancellation_reaches_the_child_after_the_stream_closed() {
    let peer = python_peer();
    let s = sentinel_for(&peer, SESSION_STDIO).await;
    for keep_stream in [true, false] {
        let (session, _) = raw_legacy_session(&s.url, "2025-11-25").await;
        let h = legacy_headers("2025-11-25", session.as_deref());
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                          "params": {"name": "sleep", "arguments": {"seconds": 30}}});
        let stream = raw_send(reqwest::Method::POST, &s.url, &h, Some(&call)).await;
        assert_eq!(stream.status(), 200);
        let held = keep_stream.then_some(stream);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 7, "reason": "gave up"}});
        assert_eq!(raw_post(&s.url, &h, &cancel).await.status, 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                            "params": {"name": "events", "arguments": {}}});
        let answer = raw_post(&s.url, &h, &events).await;
        assert_eq!(
            first_text(&answer.final_message().unwrap()["result"]),
            r#"["cancelled sleep 30"]"#,
            "stream kept open: {keep_stream}"
        );
        drop(held);
    }
}

/// server-everything does not stop its tool when cancelled, but the call ends for the client
/// and the session goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_to_server_everything_ends_and_the_session_goes_on() {
    let peer = everything_peer();
    let s = sentinel_for(&peer, SESSION_STDIO).await;
    let era = Era::Legacy(ProtocolVersion::V_2025_11_25);
    let client = via_sentinel(&s, &peer, &era).await;
    let handle = client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(tool_call(
                "trigger-long-running-operation",
                json!({"duration": 30, "steps": 30}),
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    within(5, "cancel", handle.cancel(Some("test gives up".into())))
        .await
        .unwrap();
    let echo = within(
        10,
        "echo after the cancel",
        client.call_tool(tool_call("echo", json!({"message": "still here"}))),
    )
    .await
    .unwrap();
    assert_eq!(first_text(&json!(echo)), "Echo: still here");
    let _ = client.cancel().await;
}

// ---- concurrency -------------------------------------------------------------------------------

/// The servers this process runs (its descendants, launchers aside) whose command line contains
/// `marker`. Each child starts as `mcp-sentinel launch-child ... -- PROG ARGS`, which stays as
/// the server's parent.
fn servers_running(marker: &str) -> BTreeSet<u32> {
    let mut procs = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        procs.insert(pid, (ppid, String::from_utf8_lossy(&cmdline).into_owned()));
    }
    let me = std::process::id();
    let descends_from_me = |mut pid: u32| {
        while let Some((ppid, _)) = procs.get(&pid) {
            if *ppid == me {
                return true;
            }
            pid = *ppid;
        }
        false
    };
    procs
        .iter()
        .filter(|(_, (_, cmdline))| cmdline.contains(marker) && !cmdline.contains("launch-child"))
        .map(|(pid, _)| *pid)
        .filter(|pid| descends_from_me(*pid))
        .collect()
}

/// 20 legacy sessions at once, 10 concurrent calls each: every answer right, and every session
/// its own child (20 more servers running while they are open).
async fn twenty_sessions_ten_calls_each(peer: Peer, marker: &str) {
    let s = sentinel_for(&peer, SESSION_STDIO).await;
    // Ready means the pool's launcher runs; its server may still be on its way (exec).
    let deadline = std::time::Instant::now() + Duration::from_secs(START_SECS);
    let before = loop {
        let running = servers_running(marker);
        if running.len() == 1 {
            break running;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: the pool's one server never came up: {running:?}",
            peer.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let era = Era::Legacy(ProtocolVersion::V_2025_11_25);
    let sessions = futures_util::future::join_all((0..20).map(|i| {
        let (s, peer, era) = (&s, &peer, &era);
        async move {
            let client = via_sentinel(s, peer, era).await;
            let calls = futures_util::future::join_all((0..10).map(|k| {
                let client = &client;
                async move {
                    let (tool, arguments, want) = (peer.sum)(i * 100, k);
                    let result = client
                        .call_tool(tool_call(tool, arguments))
                        .await
                        .unwrap_or_else(|e| panic!("session {i} call {k}: {e}"));
                    assert_eq!(first_text(&json!(result)), want, "session {i} call {k}");
                }
            }));
            calls.await;
            client
        }
    }));
    let clients = within(2 * START_SECS, "20 sessions x 10 calls", sessions).await;
    let during = servers_running(marker);
    assert_eq!(
        during.difference(&before).count(),
        20,
        "{}: one child per session (before {before:?}, during {during:?})",
        peer.name
    );
    if peer.name == "python mcp" {
        let mut pids = BTreeSet::new();
        for client in &clients {
            let pid = client.call_tool(tool_call("pid", json!({}))).await.unwrap();
            pids.insert(first_text(&json!(pid)).parse::<u32>().unwrap());
        }
        assert_eq!(pids.len(), 20, "each session answered by its own process");
        assert!(pids.is_subset(&during), "{pids:?} ⊄ {during:?}");
    }
    for client in clients {
        let _ = client.cancel().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_20_sessions_x_10_calls() {
    twenty_sessions_ten_calls_each(python_peer(), "python_server.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_20_sessions_x_10_calls() {
    twenty_sessions_ten_calls_each(everything_peer(), "server-everything").await;
}

// ---- the stdio front ---------------------------------------------------------------------------

/// `mcp-sentinel stdio --config <config> -- <peer>`, its stdin and stdout piped.
fn spawn_stdio_front(dir: &TempDir, peer: &Peer, config: &str) -> Child {
    let path = dir.path("stdio.yaml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-sentinel"));
    command
        .arg("stdio")
        .arg("--config")
        .arg(&path)
        .arg("--")
        .args(&peer.command)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn mcp-sentinel stdio: {e}"))
}

/// Alice (group staff) may call `echo` and `add` and nothing else.
const STDIO_FRONT_CONFIG: &str = "\
auth:
  stdio: {subject: alice, groups: [staff]}
policy:
  default: deny
  rules:
    - {name: staff-tools, effect: allow, groups: [staff], tools: [echo, add, get-sum, ask_llm]}
";

/// A JSON-lines conversation with a child's stdin/stdout.
struct Lines {
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Lines {
    fn of(child: &mut Child) -> Self {
        Self {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
        }
    }

    async fn send(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.expect("write to stdin");
        self.stdin.flush().await.unwrap();
    }

    /// The next message on stdout.
    async fn next(&mut self) -> Value {
        let line = within(START_SECS, "a line on stdout", self.stdout.next_line())
            .await
            .expect("read stdout")
            .expect("stdout closed");
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        // stdout is the MCP channel: nothing else (logs, audit records) may be on it.
        assert_eq!(message["jsonrpc"], "2.0", "not a JSON-RPC message: {line}");
        message
    }

    /// The answer to request `id`; notifications and server requests before it are skipped.
    async fn answer(&mut self, id: i64) -> Value {
        loop {
            let message = self.next().await;
            if message["id"] == json!(id) && message.get("method").is_none() {
                return message;
            }
        }
    }

    async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.answer(id).await
    }
}

/// JSON lines by hand through `mcp-sentinel stdio` to the Python server: the handshake, a
/// filtered tools/list, an allowed call and a denied one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_front_json_lines_to_the_python_server() {
    let peer = python_peer();
    let dir = TempDir::new("stdio-front");
    let mut child = spawn_stdio_front(&dir, &peer, STDIO_FRONT_CONFIG);
    let mut lines = Lines::of(&mut child);
    let init = lines
        .request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
                   "clientInfo": {"name": "lines", "version": "1.0.0"}}),
        )
        .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(
        init["result"]["serverInfo"],
        json!({"name": "python-stdio-peer", "version": "1.0.0"}),
        "{init}"
    );
    lines
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    let list = lines.request(2, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "add", "ask_llm"], "{list}");
    let add = lines
        .request(
            3,
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 40}}),
        )
        .await;
    assert_eq!(
        add,
        json!({"jsonrpc": "2.0", "id": 3, "result": {
            "content": [{"type": "text", "text": "42"}],
            "structuredContent": {"result": "42"},
            "isError": false
        }})
    );
    let denied = lines
        .request(
            4,
            "tools/call",
            json!({"name": "getenv", "arguments": {"name": "HOME"}}),
        )
        .await;
    assert_eq!(
        denied,
        json!({"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "tool not found"}})
    );
    // A sampling round trip by hand: the server's request comes out on stdout between the call
    // and its answer, and the client's answer goes back in under the id it came with.
    lines
        .send(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                     "params": {"name": "ask_llm", "arguments": {"prompt": "six times seven?"}}}))
        .await;
    let asked = lines.next().await;
    assert_eq!(asked["method"], "sampling/createMessage", "{asked}");
    assert_eq!(
        asked["params"],
        json!({"messages": [{"role": "user", "content": {"type": "text", "text": "six times seven?"}}],
               "maxTokens": 16})
    );
    lines
        .send(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": "forty-two"}, "model": "by-hand"}}))
        .await;
    let llm = lines.answer(5).await;
    assert_eq!(
        llm["result"]["content"],
        json!([{"type": "text", "text": "llm said: forty-two (model by-hand)"}]),
        "{llm}"
    );
    drop(lines);
    let status = within(20, "mcp-sentinel stdio exiting on EOF", child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

/// An rmcp client over `mcp-sentinel stdio`'s own stdio, for each peer: the handshake, the
/// policy's tools, a call, a denied call, and a sampling round trip (the server's request goes
/// out on the front's stdout and the client's answer back in on its stdin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_front_rmcp_client_to_both_peers() {
    for peer in [python_peer(), everything_peer()] {
        let label = peer.name;
        let dir = TempDir::new("stdio-front-rmcp");
        let mut child = spawn_stdio_front(&dir, &peer, STDIO_FRONT_CONFIG);
        let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
        let era = Era::Legacy(ProtocolVersion::V_2025_11_25);
        let client = within(
            START_SECS,
            "initialize over the stdio front",
            TestClient::answering(&era, answers()).serve(io),
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        let tools: BTreeSet<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        let allowed: BTreeSet<String> = ["echo", "add", "get-sum", "ask_llm"]
            .into_iter()
            .filter(|t| peer.tools.contains(t))
            .map(str::to_owned)
            .collect();
        assert_eq!(tools, allowed, "{label}");
        let (tool, arguments, want) = (peer.sum)(2, 40);
        let sum = client.call_tool(tool_call(tool, arguments)).await.unwrap();
        assert_eq!(first_text(&json!(sum)), want, "{label}");
        let denied = client
            .call_tool(tool_call(peer.progress.0, peer.progress.1.clone()))
            .await
            .expect_err("denied");
        assert_eq!(
            denied.to_string(),
            "Mcp error: -32602: tool not found",
            "{label}"
        );
        if peer.name == "python mcp" {
            let llm = client
                .call_tool(tool_call("ask_llm", json!({"prompt": "six times seven?"})))
                .await
                .unwrap();
            assert_eq!(
                first_text(&json!(llm)),
                "llm said: forty-two (model test-model)"
            );
        }
        let _ = client.cancel().await;
        let status = within(20, "mcp-sentinel stdio exiting", child.wait())
            .await
            .unwrap();
        assert!(status.success(), "{label}: {status}");
    }
}

/// The peers are where scripts/mcp-peers.sh puts them, at the pinned versions.
#[test]
fn peers_are_installed_at_the_pinned_versions() {
    let dir = peers_dir();
    let version = std::process::Command::new(dir.join("python/bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('mcp'))",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the Python SDK venv in {}: {e}: run scripts/mcp-peers.sh",
                dir.display()
            )
        });
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "2.3.0");
    let package: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(&dir)
                .join("npm")
                .join(EVERYTHING)
                .join("package.json"),
        )
        .unwrap_or_else(|e| {
            panic!(
                "server-everything in {}: {e}: run scripts/mcp-peers.sh",
                dir.display()
            )
        }),
    )
    .unwrap();
    assert_eq!(package["version"], "2026.8.31");
}
