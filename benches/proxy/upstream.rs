//! The fast upstream: a minimal MCP-shaped HTTP/1.1 server on one thread, so that what the bench
//! measures is the proxy in front of it. It answers statelessly by the JSON-RPC method in the body
//! and runs as its own process (the bench re-executes itself) so its CPU is not the driver's.
//!
//! The same answers over stdio (`sentinel-stdio`'s server, [`main_stdio`]): one JSON-RPC message
//! per line on stdin, its answer as lines on stdout; the progress tool's ten notifications are
//! lines before its result, which the sentinel's bridge turns into the same SSE stream.
//!
//! Two tools serve the memory scenarios (memory.rs): `hold` answers as SSE with one progress
//! event and then stays open, sending nothing more, until the client goes; `large` answers with
//! a [`LARGE_BYTES`] JSON result (with a Content-Length), written as fast as the reader takes it.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Tools in the `tools/list` answer; the load generator checks the count.
pub const TOOL_COUNT: usize = 20;
/// Tools in the `tools/list` answer to a request whose cursor is [`FIFTY_CURSOR`] (the
/// integrity bench's list).
pub const FIFTY_TOOLS: usize = 50;
pub const FIFTY_CURSOR: &str = "fifty";
/// The tool whose result is [`TEXT64K_BYTES`] of log-like text, lines and all (the integrity
/// bench's result).
pub const TEXT64K_TOOL: &str = "text64k";
pub const TEXT64K_BYTES: usize = 64 << 10;
/// `notifications/progress` events before the result on the SSE workload.
pub const PROGRESS_EVENTS: usize = 10;
/// The tool whose call is answered as an SSE stream.
pub const PROGRESS_TOOL: &str = "progress";
/// The tool whose SSE answer stays open after its first event.
pub const HOLD_TOOL: &str = "hold";
/// The tool whose result is [`LARGE_BYTES`] of text.
pub const LARGE_TOOL: &str = "large";
/// The size of the `large` tool's text (the whole answer is some 80 bytes more).
pub const LARGE_BYTES: usize = 10 << 20;
/// The last bytes of the `large` tool's text, which the memory scenario checks for.
pub const LARGE_END: &str = "END-OF-LARGE-RESULT";

const CALL_RESULT: &str =
    r#"{"content":[{"type":"text","text":"hello from the bench upstream"}],"isError":false}"#;
const INIT_RESULT: &str = r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"bench-upstream","version":"0.1.0"}}"#;
const PARSE_ERROR: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
    #[serde(borrow, default)]
    cursor: Option<&'a str>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, default, rename = "progressToken")]
    progress_token: Option<&'a RawValue>,
}

/// Runs the upstream until the driver closes our stdin. Prints the bound address as the first
/// line on stdout.
pub fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the upstream runtime")?;
    rt.block_on(serve())
}

async fn serve() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }

    // The driver holds our stdin open; EOF means it is gone, so never outlive it.
    tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });

    let shared = Arc::new(Shared {
        canned: Canned::new(),
        large: large_text(),
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What every connection's answers are made of, built once.
struct Shared {
    canned: Canned,
    /// The `large` tool's text, shared by every answer that carries it.
    large: Bytes,
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != "/mcp" {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    if req.method() != Method::POST {
        // A stateless server offers no GET stream and no sessions to DELETE.
        return Ok(empty(StatusCode::METHOD_NOT_ALLOWED));
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(empty(StatusCode::BAD_REQUEST)),
    };
    Ok(answer(&body, &shared))
}

/// What the upstream answers to one message, whatever carries it.
enum Reply {
    /// One JSON-RPC message (a result, or an error with this HTTP status).
    Json(StatusCode, String),
    /// `notifications/progress` × [`PROGRESS_EVENTS`] for this token, then the result for `id`.
    Progress { id: String, token: String },
    /// One `notifications/progress` for this token, then nothing: the answer stays open.
    Hold { token: String },
    /// The `large` tool's result for `id`.
    Large { id: String },
    /// A notification or a client's response: nothing to say.
    Nothing,
}

/// The answers built once: the two tool lists and the 64 KiB result.
struct Canned {
    tools_list: String,
    tools_list50: String,
    text64k: String,
}

impl Canned {
    fn new() -> Self {
        Self {
            tools_list: tools_list_result(TOOL_COUNT),
            tools_list50: tools_list_result(FIFTY_TOOLS),
            text64k: text64k_result(),
        }
    }
}

fn reply(body: &[u8], canned: &Canned) -> Reply {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return Reply::Json(StatusCode::BAD_REQUEST, PARSE_ERROR.into());
    };
    let (Some(method), Some(id)) = (envelope.method, envelope.id) else {
        return Reply::Nothing;
    };
    let params = envelope.params;
    let tool = params.as_ref().and_then(|p| p.name);
    let ok = |text: String| Reply::Json(StatusCode::OK, text);
    let token = || {
        params
            .as_ref()
            .and_then(|p| p.meta.as_ref())
            .and_then(|m| m.progress_token)
            .map_or_else(|| r#""bench""#.to_owned(), |t| t.get().to_owned())
    };
    match method {
        "tools/call" if tool == Some(PROGRESS_TOOL) => Reply::Progress {
            id: id.get().to_owned(),
            token: token(),
        },
        "tools/call" if tool == Some(HOLD_TOOL) => Reply::Hold { token: token() },
        "tools/call" if tool == Some(LARGE_TOOL) => Reply::Large {
            id: id.get().to_owned(),
        },
        "tools/call" if tool == Some(TEXT64K_TOOL) => ok(result(id, &canned.text64k)),
        "tools/call" => ok(result(id, CALL_RESULT)),
        "tools/list" if params.as_ref().and_then(|p| p.cursor) == Some(FIFTY_CURSOR) => {
            ok(result(id, &canned.tools_list50))
        }
        "tools/list" => ok(result(id, &canned.tools_list)),
        "initialize" => ok(result(id, INIT_RESULT)),
        "ping" => ok(result(id, "{}")),
        _ => ok(format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32601,"message":"Method not found"}}}}"#,
            id.get()
        )),
    }
}

fn answer(body: &[u8], shared: &Shared) -> Response<Body> {
    match reply(body, &shared.canned) {
        Reply::Json(status, text) => json(status, text),
        Reply::Progress { id, token } => sse_progress(id, token),
        Reply::Hold { token } => sse_hold(&token),
        Reply::Large { id } => large(&id, shared.large.clone()),
        // Notifications and client responses: accepted, no body.
        Reply::Nothing => empty(StatusCode::ACCEPTED),
    }
}

/// Message `n` of a progress call: notifications 0..PROGRESS_EVENTS, then the result.
fn progress_message(n: usize, token: &str, id: &str) -> String {
    if n < PROGRESS_EVENTS {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{token},"progress":{},"total":{PROGRESS_EVENTS}}}}}"#,
            n + 1
        )
    } else {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{CALL_RESULT}}}"#)
    }
}

/// Serves [`reply`] over stdin/stdout, one message a line, on this thread, until stdin ends.
/// Each message goes out with its own write (flushed), as the HTTP upstream sends each SSE event
/// as its own frame.
pub fn main_stdio() -> Result<()> {
    use std::io::BufRead;
    let canned = Canned::new();
    let mut input = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = Vec::with_capacity(4096);
    let mut send = |text: &str| -> Result<()> {
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    };
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match reply(&line, &canned) {
            Reply::Json(_, text) => send(&text)?,
            Reply::Progress { id, token } => {
                for n in 0..=PROGRESS_EVENTS {
                    send(&progress_message(n, &token, &id))?;
                }
            }
            Reply::Hold { token } => send(&progress_message(0, &token, ""))?,
            Reply::Large { id } => {
                let (head, tail) = large_ends(&id);
                let text = String::from_utf8_lossy(&large_text()).into_owned();
                send(&format!("{head}{text}{tail}"))?;
            }
            Reply::Nothing => {}
        }
    }
}

fn result(id: &RawValue, result: &str) -> String {
    let mut out = String::with_capacity(40 + id.get().len() + result.len());
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id.get());
    out.push_str(r#","result":"#);
    out.push_str(result);
    out.push('}');
    out
}

/// Ten progress notifications, then the result, one SSE event per body frame. The task yields
/// between events so hyper flushes each one as its own write, as a server doing real work would.
fn sse_progress(id: String, token: String) -> Response<Body> {
    let events = futures_util::stream::unfold((0usize, token, id), |(n, token, id)| async move {
        if n > PROGRESS_EVENTS {
            return None;
        }
        if n > 0 {
            tokio::task::yield_now().await;
        }
        let data = progress_message(n, &token, &id);
        let event = format!("id: {}\nevent: message\ndata: {data}\n\n", n + 1);
        Some((Ok(Frame::data(Bytes::from(event))), (n + 1, token, id)))
    });
    sse_response(events)
}

/// An SSE answer of `events`.
fn sse_response(
    events: impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(events).boxed_unsync())
        .expect("static response parts are valid")
}

/// One progress event, then an answer that stays open until the client (the proxy) goes: what a
/// long-running call or a session's GET stream looks like between events.
fn sse_hold(token: &str) -> Response<Body> {
    let data = progress_message(0, token, "");
    let first = Bytes::from(format!("id: 1\nevent: message\ndata: {data}\n\n"));
    let events = futures_util::stream::once(async move { Ok::<_, Infallible>(Frame::data(first)) })
        .chain(futures_util::stream::pending());
    sse_response(events)
}

/// The text of the `large` tool: [`LARGE_BYTES`] of JSON-safe ASCII ending in [`LARGE_END`].
fn large_text() -> Bytes {
    let mut text = Vec::with_capacity(LARGE_BYTES);
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.";
    while text.len() < LARGE_BYTES - LARGE_END.len() {
        let room = LARGE_BYTES - LARGE_END.len() - text.len();
        text.extend_from_slice(&line[..line.len().min(room)]);
    }
    text.extend_from_slice(LARGE_END.as_bytes());
    Bytes::from(text)
}

/// The JSON-RPC response around the large text for `id`: what goes before it and after it.
fn large_ends(id: &str) -> (String, &'static str) {
    (
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":""#),
        r#""}],"isError":false}}"#,
    )
}

/// The large result as three frames (the shared text in the middle, not copied), with its
/// Content-Length, so it is written as fast as the reader (the proxy) takes it.
fn large(id: &str, text: Bytes) -> Response<Body> {
    let (head, tail) = large_ends(id);
    let length = head.len() + text.len() + tail.len();
    let frames = [Bytes::from(head), text, Bytes::from_static(tail.as_bytes())]
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, length)
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        .expect("static response parts are valid")
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("static response parts are valid")
}

fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Empty::new().boxed_unsync())
        .expect("static response parts are valid")
}

/// The bench's tool definitions: `count` tools with input schemas (twenty are about 8 KB).
pub fn tools(count: usize) -> Vec<serde_json::Value> {
    (0..count)
        .map(|i| {
            let name = match i {
                0 => "echo".to_owned(),
                1 => PROGRESS_TOOL.to_owned(),
                _ => format!("tool_{i:02}"),
            };
            serde_json::json!({
                "name": name,
                "title": format!("Synthetic tool {i}"),
                "description": format!(
                    "Synthetic tool number {i} for the proxy benchmark: looks something up and \
                     returns a short text answer."
                ),
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "What to look up"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                        "verbose": {"type": "boolean", "default": false},
                        "tags": {"type": "array", "items": {"type": "string"}}
                    },
                    "required": ["query"]
                },
                "annotations": {"readOnlyHint": true, "openWorldHint": false}
            })
        })
        .collect()
}

/// A `tools/list` result of realistic size: `count` tools with input schemas.
fn tools_list_result(count: usize) -> String {
    serde_json::json!({ "tools": tools(count) }).to_string()
}

/// A tool result of [`TEXT64K_BYTES`] of text as tools return it: log lines, each ending in a
/// newline (so the JSON has escapes), and no secret.
fn text64k_result() -> String {
    let mut text = String::with_capacity(TEXT64K_BYTES);
    let mut n = 0;
    while text.len() < TEXT64K_BYTES {
        text.push_str(&format!(
            "2026-12-07T08:{:02}:{:02}Z INFO request {n} served: GET /api/items?page={} 200 in {} ms\n",
            (n / 60) % 60,
            n % 60,
            n % 17,
            n % 97
        ));
        n += 1;
    }
    text.truncate(TEXT64K_BYTES);
    serde_json::json!({"content": [{"type": "text", "text": text}], "isError": false}).to_string()
}
