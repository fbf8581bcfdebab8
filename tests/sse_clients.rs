//! What the official SDKs' clients read from answers the list filter edits, for answers an
//! upstream shaped to carry a hidden tool past it. The bytes the sentinel sends are read by the
//! TypeScript SDK's SSE reader itself — Node's `eventsource-parser` behind `TextDecoderStream`,
//! as the SDK pipes a response — and by Python's `str.splitlines`, with which httpx-sse before
//! 0.4.2 (the Python SDK's 1.x lock) cut SSE lines.
//!
//! The upstream is scripted (`common::scripted`): no SDK server sends these answers.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::scripted::upstream;
use common::sentinel::{TempDir, TestSentinel, config_from_yaml, start_with};

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

/// Each event's data as a reader that cuts lines as the Go SDK's client does (`bufio.Scanner`, LF
/// only): tests/fixtures/parsers/sse_lines.go.
fn go_events(stream: &[u8]) -> Vec<String> {
    go_output("sse_lines", stream)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON string per event"))
        .collect()
}

/// The tools a Go client decoding `answer` with `encoding/json` reads:
/// tests/fixtures/parsers/list_go.go.
fn go_tools(answer: &[u8]) -> Vec<String> {
    go_output("list_go", answer)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What the Go program tests/fixtures/parsers/`name`.go, built here, writes for `stdin`.
fn go_output(name: &str, stdin: &[u8]) -> String {
    let dir = TempDir::new(name);
    let bin = dir.path(name);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parsers")
        .join(format!("{name}.go"));
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(fixture)
        .env("GO111MODULE", "off")
        .status()
        .expect("go is needed by this test (make test installs it)");
    assert!(built.success(), "go build of {name}.go failed");
    run(&mut Command::new(&bin), stdin)
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

/// No message a client could read lists the hidden tool (data that is not JSON is no message).
fn nothing_readable_lists_the_hidden_tool(read: &[String]) {
    for d in read {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(d) {
            assert!(!v.to_string().contains(HIDDEN), "{read:?}");
        }
    }
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

/// A bare CR ends a line for the sentinel, Node and Python (as the SSE spec says), but not for
/// Go's `bufio.Scanner`, with which the Go SDK's client reads events: to it the rest of the line
/// is more data, and an event ending in CRs runs on into the next. A list cut there read as JSON
/// (CR and LF are JSON whitespace) to a Go client and as two fragments to the filter. Such events
/// now reach every reader as the sentinel read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_behind_a_bare_cr_reaches_no_client() {
    let (head, tail) = LIST7.split_at(LIST7.find(r#""result""#).unwrap());
    let (head2, tail2) = LIST7.split_at(LIST7.find(r#"{"tools""#).unwrap());
    for sse in [
        format!("data: {head}\r{tail}\n\n"),
        format!("data: {head2}\r\r\ndata: {tail2}\n\n"),
    ] {
        // What a Go client read before: the whole list, hidden tool and all.
        let unedited = go_events(sse.as_bytes());
        assert!(
            unedited
                .iter()
                .any(|d| serde_json::from_str::<serde_json::Value>(d)
                    .is_ok_and(|v| v.to_string().contains(HIDDEN))),
            "{unedited:?}"
        );
        let out = through("text/event-stream", sse.into_bytes(), LIST_REQUEST).await;
        assert!(!out.contains(&b'\r'), "{:?}", String::from_utf8_lossy(&out));
        nothing_readable_lists_the_hidden_tool(&go_events(&out));
        nothing_readable_lists_the_hidden_tool(&node_events(&out));
        nothing_readable_lists_the_hidden_tool(&splitlines_data(&out));
    }
}

/// The stdio front (`mcp-sentinel stdio --upstream URL`) writes each answer as one line. Data
/// sent in several `data:` lines was joined and its line feeds taken out: where they cut a key
/// (`"to` / `ols"`), the filter and every HTTP client read no JSON, and the line written was a
/// whole list. Now only data that is JSON is written; a list split between tokens is still
/// filtered and relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_front_writes_only_what_the_filter_read() {
    let (head, tail) = LIST7.split_at(LIST7.find("ols").unwrap());
    let in_a_key = format!("event: message\ndata: {head}\ndata: {tail}\n\n");
    let (head, tail) = LIST7.split_at(LIST7.find(r#"{"tools""#).unwrap());
    let between_tokens = format!("event: message\ndata: {head}\ndata: {tail}\n\n");
    let lines = |sse: String| async move {
        let url = upstream(&[("content-type", "text/event-stream")], sse.into_bytes()).await;
        let dir = TempDir::new("sse-front");
        let yaml = "auth:\n  stdio: {subject: alice}\npolicy:\n  default: allow\n  rules:\n    - {name: no-delete, effect: deny, tools: [delete_file]}\nlog: {level: warn}\n";
        let mut child = common::stdio::front(&dir, yaml, &["--upstream".into(), url]);
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#).unwrap();
        writeln!(stdin, "{LIST_REQUEST}").unwrap();
        drop(stdin);
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        common::process::stdout_of(out)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let cut = lines(in_a_key).await;
    nothing_readable_lists_the_hidden_tool(&cut);
    let relayed = lines(between_tokens).await;
    assert!(
        !relayed.is_empty(),
        "the list split between tokens is relayed"
    );
    filtered(&relayed);
}

/// Go's `encoding/json` matches keys under case folding (`ſ` is `s`) and takes the last: a list
/// spelled `"Result"`, `"NAME"` or `"toolſ"` beside the one the filter reads would show a Go
/// client the hidden tool. Such an answer is not passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_go_reads_another_way_reaches_no_go_client() {
    for answer in [
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"}]},"Result":{"tools":[{"name":"echo"},{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo","NAME":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"}],"toolſ":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"Result":{"Tools":[{"Name":"delete_file"}]}}"#,
    ] {
        assert!(
            go_tools(answer.as_bytes()).contains(&HIDDEN.to_string()),
            "Go reads the hidden tool in {answer}"
        );
        let out = through("application/json", answer.as_bytes().to_vec(), LIST_REQUEST).await;
        assert!(
            go_tools(&out).is_empty(),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "Answer could not be filtered", "{v}");
    }
    // The same list spelled as the filter reads it: filtered, and Go reads what is left.
    let plain = LIST7.as_bytes().to_vec();
    let out = through("application/json", plain, LIST_REQUEST).await;
    assert_eq!(go_tools(&out), ["echo"]);
}
