//! What the official SDKs' clients read from answers the list filter edits, for answers an
//! upstream shaped to carry a hidden tool past it. The bytes the sentinel sends are read by the
//! TypeScript SDK's SSE reader itself — Node's `eventsource-parser` behind `TextDecoderStream`,
//! as the SDK pipes a response — and by Python's `str.splitlines`, with which httpx-sse before
//! 0.4.2 (the Python SDK's 1.x lock) cut SSE lines.
//!
//! The upstream is scripted (`common::scripted`): no SDK server sends these answers.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::scripted::upstream;
use common::sentinel::{TestSentinel, config_from_yaml, start_with};

/// The tool the policy hides.
const HIDDEN: &str = "delete_file";

/// A response to a `tools/list` the client sent as id 7, listing `echo` and the hidden tool.
const LIST7: &str =
    r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"},{"name":"delete_file"}]}}"#;

/// Anonymous callers, a policy that hides one tool.
async fn sentinel(upstream_url: &str) -> TestSentinel {
    let yaml = "auth: {anonymous: allow}\npolicy:\n  default: allow\n  rules:\n    - {name: no-delete, effect: deny, tools: [delete_file]}\n";
    start_with(config_from_yaml(yaml, upstream_url), true).await
}

/// The bytes the client gets for `request` when the upstream answers with `content_type` and
/// `body`.
async fn through(content_type: &'static str, body: Vec<u8>, request: &str) -> Vec<u8> {
    let headers: &'static [(&str, &str)] = match content_type {
        "text/event-stream" => &[("content-type", "text/event-stream")],
        _ => &[("content-type", "application/json")],
    };
    let url = upstream(headers, body).await;
    let s = sentinel(&url).await;
    let resp = reqwest::Client::new()
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(request.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

/// `tools/call` of `echo` as id 3.
const CALL3: &str =
    r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
/// `tools/list` as id 7.
const LIST_REQUEST: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;

/// Each event's data as the TypeScript SDK's reader dispatches it.
fn node_events(stream: &[u8]) -> Vec<String> {
    let npm = common::peers::peers_dir().join("npm");
    common::peers::installed(
        npm.join("node_modules/eventsource-parser"),
        "eventsource-parser (server-everything's TypeScript SDK)",
    );
    const SCRIPT: &str = r#"
import { EventSourceParserStream } from "eventsource-parser/stream";
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const body = new ReadableStream({ start(c) { c.enqueue(new Uint8Array(Buffer.concat(chunks))); c.close(); } });
const events = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
for await (const e of events) console.log(JSON.stringify(e.data));
"#;
    let out = run(
        Command::new("node")
            .args(["--input-type=module", "-e", SCRIPT])
            .current_dir(npm),
        stream,
    );
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON string per event"))
        .collect()
}

/// Each line of the stream that `str.splitlines` makes a `data` line, with its value.
fn splitlines_data(stream: &[u8]) -> Vec<String> {
    const SCRIPT: &str = "import sys\nfor line in sys.stdin.buffer.read().decode().splitlines():\n    if line.startswith('data:'):\n        print(line[5:].strip())\n";
    let python = common::peers::python("the Python SDK's virtualenv");
    run(Command::new(python).args(["-c", SCRIPT]), stream)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn run(cmd: &mut Command, stdin: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the reader starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The list the client reads, filtered: `echo` is in it, the hidden tool nowhere.
fn filtered(read: &[String]) {
    assert!(
        read.iter().any(|d| d.contains(r#""name":"echo""#)),
        "{read:?}"
    );
    assert!(!read.iter().any(|d| d.contains(HIDDEN)), "{read:?}");
}

/// Clients match a response to their pending request by id, on whatever stream it comes: a
/// `tools/list` response sent on the stream of a `tools/call` resolves the client's
/// `listTools()`. It is filtered there too, as SSE and as a JSON batch; so is a `tasks/list`
/// response, cut to the caller's own tasks (none here: no task was created through the
/// sentinel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_answered_on_another_requests_stream_is_filtered() {
    let call3 = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
    let tasks8 = r#"{"jsonrpc":"2.0","id":8,"result":{"tasks":[{"taskId":"someone-elses"}]}}"#;
    let sse = format!("data: {LIST7}\n\ndata: {tasks8}\n\ndata: {call3}\n\n").into_bytes();
    let out = through("text/event-stream", sse, CALL3).await;
    let events = node_events(&out);
    assert_eq!(events.len(), 3, "{events:?}");
    filtered(&events);
    let tasks: serde_json::Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(
        tasks["result"]["tasks"],
        serde_json::json!([]),
        "{events:?}"
    );
    assert!(events[2].contains(r#""text":"hi""#), "{events:?}");

    let batch = format!("[{LIST7},{call3}]").into_bytes();
    let out = through("application/json", batch, CALL3).await;
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    filtered(&[v.to_string()]);
    assert_eq!(v[1]["result"]["content"][0]["text"], "hi", "{v}");
}

/// `eventsource-parser` drops `ï»¿` (a BOM read as Latin-1) from the start of a stream, and
/// the SDK's `TextDecoderStream` a BOM before it: the sentinel reads the events from after
/// them too, so the list it filters is the list the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_behind_what_clients_drop_at_the_start_is_filtered() {
    let latin1_bom = "\u{EF}\u{BB}\u{BF}";
    for prefix in [latin1_bom.as_bytes(), b"\xEF\xBB\xBF\xEF\xBB\xBF"] {
        let sse = [prefix, format!("data: {LIST7}\n\n").as_bytes()].concat();
        let out = through("text/event-stream", sse, LIST_REQUEST).await;
        let events = node_events(&out);
        assert_eq!(events.len(), 1, "{prefix:?}: {events:?}");
        filtered(&events);
    }
}

/// A comment holding U+2028 is one line to the sentinel and two to `str.splitlines`, the second
/// a `data:` line: such a line is not passed on, and neither is an `id:` line holding one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_a_python_client_would_cut_in_two_are_not_passed_on() {
    let sse = format!(":\u{2028}data: {LIST7}\n\nid: 1\u{2029}data: {LIST7}\ndata: {LIST7}\n\n")
        .into_bytes();
    let out = through("text/event-stream", sse, LIST_REQUEST).await;
    let lines = splitlines_data(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    filtered(&lines);
    filtered(&node_events(&out));
}
