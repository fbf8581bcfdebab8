//! `mcp-sentinel pin`: the binary against real servers — rmcp's streamable HTTP server (SSE
//! and JSON answers, over TCP and a Unix socket), rmcp's stdio server, a paging Python stdio
//! server and a small hyper server — compared with what those servers list when asked
//! directly.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mcp_sentinel::integrity::fingerprint::{Definition, Kind};
use mcp_sentinel::integrity::pins::{PinSet, Verdict};
use serde_json::{Value, json};

use common::client::{legacy_headers, raw_legacy_session, raw_post};
use common::sentinel::TempDir;
use common::stdio::{SENTINEL, demo_stdio, python};
use common::upstream::{UpstreamConfig, catalog, spawn_upstream, spawn_upstream_with};

const V: &str = "2025-06-18";
const PAGED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pin/paged_server.py"
);
const LISTS: [(Kind, &str, &str); 3] = [
    (Kind::Tool, "tools/list", "tools"),
    (Kind::Prompt, "prompts/list", "prompts"),
    (
        Kind::Template,
        "resources/templates/list",
        "resourceTemplates",
    ),
];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `mcp-sentinel pin ARGS` without blocking the runtime the test's servers run on.
async fn pin(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(SENTINEL)
        .arg("pin")
        .args(args)
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("pin ends")
        .expect("pin runs")
        .into()
}

fn pin_sync(args: &[&str]) -> Run {
    Command::new(SENTINEL)
        .arg("pin")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("pin runs")
        .into()
}

/// Exit code 1, nothing on stdout, and `message` on stderr.
fn assert_fails(run: &Run, message: &str) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains(message), "{}", run.stderr);
}

/// What an rmcp HTTP server lists, asked directly: (kind, item as listed).
async fn listed_over_http(url: &str) -> Vec<(Kind, Value)> {
    let (sid, init) = raw_legacy_session(url, V).await;
    assert_eq!(init.status, 200, "{}", init.body);
    let mut items = Vec::new();
    for (i, (kind, method, member)) in LISTS.into_iter().enumerate() {
        let body = json!({"jsonrpc": "2.0", "id": i + 1, "method": method, "params": {}});
        let r = raw_post(url, &legacy_headers(V, sid.as_deref()), &body).await;
        let m = r
            .final_message()
            .unwrap_or_else(|| panic!("{method}: {r:?}"));
        assert!(m["result"].get("nextCursor").is_none(), "one page: {m}");
        let page = m["result"][member].as_array().expect("a list").clone();
        items.extend(page.into_iter().map(|v| (kind, v)));
    }
    items
}

/// What a stdio server lists, asked directly over its stdin and stdout.
fn listed_over_stdio(argv: &[String]) -> Vec<(Kind, Value)> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the stdio server starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ask = |id: usize, method: &str, params: Value| -> Value {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{msg}").unwrap();
        loop {
            let line = lines.next().expect("an answer").unwrap();
            let m: Value = serde_json::from_str(&line).unwrap();
            if m["id"] == json!(id) && m.get("method").is_none() {
                return m["result"].clone();
            }
        }
    };
    let init = json!({"protocolVersion": V, "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}});
    ask(0, "initialize", init);
    let mut items = Vec::new();
    for (i, (kind, method, member)) in LISTS.into_iter().enumerate() {
        let result = ask(i + 1, method, json!({}));
        assert!(result.get("nextCursor").is_none(), "one page: {result}");
        let page = result[member].as_array().expect("a list").clone();
        items.extend(page.into_iter().map(|v| (kind, v)));
    }
    let _ = child.kill();
    let _ = child.wait();
    items
}

/// The pins file holds exactly the listed items, each with the fingerprint of the item as the
/// server listed it, and the whole catalog of the test upstream.
fn assert_pins(stdout: &str, listed: &[(Kind, Value)], source: &str) {
    let set = PinSet::parse(stdout).unwrap_or_else(|e| panic!("{e:?}\n{stdout}"));
    assert_eq!(set.source.as_deref(), Some(source));
    assert_eq!(set.len(), listed.len(), "{stdout}");
    for (kind, item) in listed {
        let def = Definition::of(*kind, item).expect("a named item");
        let pin = set
            .get(*kind, &def.name)
            .unwrap_or_else(|| panic!("{} {} is pinned", kind.as_str(), def.name));
        assert_eq!(pin.fingerprint, def.fingerprint, "{}", def.name);
        assert_eq!(set.verdict(&def), Verdict::Match);
    }
    let catalog_names = catalog::tools()
        .into_iter()
        .map(|t| (Kind::Tool, t.name.to_string()))
        .chain(
            catalog::prompts()
                .into_iter()
                .map(|p| (Kind::Prompt, p.name.to_string())),
        )
        .chain(
            catalog::resource_templates()
                .into_iter()
                .map(|t| (Kind::Template, t.uri_template.to_string())),
        );
    let mut n = 0;
    for (kind, name) in catalog_names {
        assert!(set.get(kind, &name).is_some(), "{name} of the catalog");
        n += 1;
    }
    assert_eq!(n, set.len(), "the catalog and nothing else");
}

#[tokio::test]
async fn pins_every_definition_an_http_server_lists_and_the_same_bytes_twice() {
    for config in [UpstreamConfig::default(), UpstreamConfig::json()] {
        let upstream = spawn_upstream_with(config).await;
        let url = upstream.url();
        let first = pin(&["--upstream", &url]).await;
        assert_eq!(first.code, 0, "{}", first.stderr);
        let listed = listed_over_http(&url).await;
        assert_pins(&first.stdout, &listed, &url);
        let second = pin(&["--upstream", &url]).await;
        assert_eq!(second.code, 0, "{}", second.stderr);
        assert_eq!(first.stdout, second.stdout, "deterministic");
        assert!(
            first.stderr.contains("tools/list: 11 pinned"),
            "{}",
            first.stderr
        );
    }
}

#[tokio::test]
async fn pins_over_a_unix_socket_and_the_source_has_no_query() {
    let upstream = spawn_upstream().await;
    let dir = TempDir::new("pin-unix");
    let sock = dir.0.join("mcp.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let target = upstream.addr;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            });
        }
    });
    let url = format!("unix:{}:/mcp", sock.display());
    let run = pin(&["--upstream", &format!("{url}?token=s3cret")]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // rmcp refuses a Host it does not know: the Unix form sends `localhost`.
    let seen = upstream
        .last_request("tools/list")
        .expect("tools/list seen");
    assert_eq!(seen.header("host").as_deref(), Some("localhost"));
    assert_pins(&run.stdout, &listed_over_http(&upstream.url()).await, &url);
    assert!(!run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"));
}

#[test]
fn pins_every_definition_a_stdio_server_lists_and_the_same_bytes_twice() {
    let argv = demo_stdio();
    let mut args = vec!["--"];
    args.extend(argv.iter().map(String::as_str));
    let first = pin_sync(&args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_pins(&first.stdout, &listed_over_stdio(&argv), &argv[0]);
    let second = pin_sync(&args);
    assert_eq!(first.stdout, second.stdout, "deterministic");
}

#[tokio::test]
async fn headers_reach_the_server_on_every_request_and_are_never_printed() {
    const TOKEN: &str = "Bearer x-pin-test-token-7f3a";
    let upstream = spawn_upstream().await;
    let run = pin(&[
        "--upstream",
        &upstream.url(),
        "--header",
        &format!("Authorization: {TOKEN}"),
        "--header",
        "X-Tenant:  blue ",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("7f3a") && !run.stderr.contains("7f3a"));
    let seen = upstream.requests();
    let methods: Vec<String> = seen
        .iter()
        .map(|r| r.rpc_method().unwrap_or_else(|| r.method.to_string()))
        .collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "prompts/list",
            "resources/templates/list",
            "DELETE"
        ],
        "the session is ended"
    );
    let sid = seen[0]
        .response_headers
        .get("mcp-session-id")
        .expect("a session")
        .to_str()
        .unwrap()
        .to_string();
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(r.header("authorization").as_deref(), Some(TOKEN), "{i}");
        assert_eq!(r.header("x-tenant").as_deref(), Some("blue"), "{i}");
        if i > 0 {
            assert_eq!(r.header("mcp-session-id").as_deref(), Some(&*sid), "{i}");
            assert_eq!(r.header("mcp-protocol-version").as_deref(), Some(V), "{i}");
        }
    }
    let init = seen[0].json().unwrap();
    assert_eq!(init["params"]["protocolVersion"], V);
    assert_eq!(init["params"]["clientInfo"]["name"], "mcp-sentinel-pin");
    assert_eq!(
        init["params"]["clientInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(init["params"]["capabilities"], json!({}));
}

#[test]
fn every_page_is_pinned_and_server_pings_are_answered() {
    let py = python();
    let run = pin_sync(&["--", &py, PAGED, "--tools", "7", "--chatty"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = PinSet::parse(&run.stdout).unwrap();
    assert_eq!(set.len(), 7, "{}", run.stdout);
    for i in 0..7 {
        let listed = json!({"name": format!("tool{i}"), "description": format!("Tool number {i}"),
            "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}},
            "annotations": {"readOnlyHint": i % 2 == 0}});
        let def = Definition::of(Kind::Tool, &listed).unwrap();
        assert_eq!(set.verdict(&def), Verdict::Match, "tool{i}");
    }
    // The source is the program only; the child's stderr is passed through.
    assert_eq!(set.source.as_deref(), Some(py.as_str()));
    assert!(
        run.stderr.contains("paged_server: pinged the client"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_repeated_cursor_fails_with_a_clear_message() {
    let run = pin_sync(&["--", &python(), PAGED, "--repeat-cursor"]);
    assert_fails(
        &run,
        "pin: tools/list: the server repeated the cursor \"2\"",
    );
}

#[test]
fn a_list_that_never_ends_fails_after_1000_pages() {
    let run = pin_sync(&["--", &python(), PAGED, "--tools", "2010"]);
    assert_fails(&run, "pin: tools/list: more than 1000 pages");
}

#[test]
fn a_server_that_does_not_answer_times_out_and_is_stopped() {
    let started = std::time::Instant::now();
    let run = pin_sync(&["--timeout", "1s", "--", &python(), PAGED, "--silent"]);
    assert_fails(&run, "pin: tools/list: no answer in 1s");
    // The child saw its stdin close and left: no wait for SIGTERM.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_json_rpc_error_on_stdio_fails_naming_the_step() {
    let run = pin_sync(&["--", &python(), PAGED, "--list-error"]);
    assert_fails(
        &run,
        "pin: tools/list: JSON-RPC error -32601 Method not found",
    );
}

/// A streamable-HTTP MCP server in a few lines: JSON answers, no session; tools/list fails.
async fn failing_http_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await?.to_bytes();
                let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let answer = match msg["method"].as_str() {
                    _ if msg.get("id").is_none() => None,
                    Some("initialize") => Some(json!({"jsonrpc": "2.0", "id": msg["id"],
                        "result": {"protocolVersion": V, "capabilities": {"tools": {}},
                                   "serverInfo": {"name": "failing", "version": "1"}}})),
                    _ => Some(json!({"jsonrpc": "2.0", "id": msg["id"],
                        "error": {"code": -32601, "message": "Method not found"}})),
                };
                let resp = match answer {
                    None => http::Response::builder().status(202).body(Full::default()),
                    Some(a) => http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(bytes::Bytes::from(a.to_string()))),
                };
                Ok::<_, hyper::Error>(resp.unwrap())
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service),
            );
        }
    });
    format!("http://{addr}/mcp")
}

#[tokio::test]
async fn a_json_rpc_error_over_http_fails_naming_the_step() {
    let url = failing_http_server().await;
    let run = pin(&["--upstream", &url]).await;
    assert_fails(
        &run,
        "pin: tools/list: JSON-RPC error -32601 Method not found",
    );
}

#[tokio::test]
async fn nothing_listening_fails_naming_the_step() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let run = pin(&["--upstream", &format!("http://127.0.0.1:{port}/mcp")]).await;
    assert_fails(&run, "pin: initialize: cannot connect to");
    let run = pin(&["--", "/nonexistent/mcp-server"]).await;
    assert_fails(&run, "pin: start: cannot run");
}

#[test]
fn usage_errors_exit_2_and_never_show_a_header_value() {
    let url = "http://127.0.0.1:9/mcp";
    for args in [
        vec![],
        vec!["--upstream", url, "--", "prog"],
        vec!["--upstream", url, "--header", "Authorization Bearer s3cret"],
        vec!["--header", "Authorization: Bearer s3cret", "--", "prog"],
        vec!["--upstream", url, "--timeout", "soon"],
        vec!["--upstream", "https://example.com/mcp"],
    ] {
        let run = pin_sync(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}");
        assert!(!run.stderr.contains("s3cret"), "{args:?}: {}", run.stderr);
    }
}

#[tokio::test]
async fn a_closed_stdout_ends_with_141_without_a_panic() {
    let upstream = spawn_upstream().await;
    let mut child = tokio::process::Command::new(SENTINEL)
        .args(["pin", "--upstream", &upstream.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before pin has anything to write (it has a server to ask first).
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panic"), "{stderr}");
}
