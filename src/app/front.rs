//! `mcp-sentinel stdio`: the sentinel as the stdio MCP server of one local client (a desktop
//! app launches it as its "server"). Each line the client writes becomes a streamable-HTTP
//! request on an in-memory connection to the same pipeline the traffic port serves, so
//! policy, rate limits and audit are exactly those of HTTP callers; the answers go back as
//! lines. The caller is the configured `auth.stdio` identity. Stdout carries MCP only: logs
//! and a `stdout` audit sink go to stderr.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Core, Front, StartError};
use crate::config::Config;
use crate::config::audit::SinkKind;
use crate::mcp::headers::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::mcp::{Era, META_PROTOCOL_VERSION};
use crate::pipeline::{ConnInfo, Pipeline};
use crate::proxy::sse::{self, EventReader};
use crate::stdio::json::{self, Kind, Peek};
use crate::stdio::lines::{Line, LineReader};

/// Lines waiting for stdout.
const OUT_QUEUE: usize = 256;
/// Requests of the client in flight at once.
const IN_FLIGHT: usize = 64;

/// What the client's session has settled: the session id and version after `initialize`.
#[derive(Default)]
struct Settled {
    session: Option<HeaderValue>,
    version: Option<String>,
}

struct FrontEnd {
    pipeline: Arc<Pipeline>,
    conn: Arc<ConnInfo>,
    mcp_path: String,
    out: mpsc::Sender<Bytes>,
    settled: Mutex<Settled>,
}

/// The config as the stdio front runs it: a `stdout` audit sink writes to stderr instead.
pub fn for_stdio(mut config: Config) -> Config {
    for sink in &mut config.audit.sinks {
        if matches!(sink.kind, SinkKind::Stdout) {
            sink.kind = SinkKind::Stderr;
        }
    }
    config
}

/// Serves one client on `input`/`output` until its input ends; then drains like `run`.
/// True when every audit record was delivered.
pub async fn serve<R, W>(config: Config, input: R, output: W) -> Result<bool, StartError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let config = for_stdio(config);
    let core = Core::build(&config, Front::Stdio).await?;
    tracing::info!(upstream = %config.summary_upstream(), "mcp-sentinel stdio front started");
    let (out, rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_lines(output, rx));
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let front = Arc::new(FrontEnd {
        pipeline: core.pipeline.clone(),
        conn: Arc::new(ConnInfo {
            peer: local,
            peer_ip: HeaderValue::from_static("127.0.0.1"),
            tls: false,
            cert: None,
        }),
        mcp_path: config.mcp_path.clone(),
        out,
        settled: Mutex::new(Settled::default()),
    });
    let mut lines = LineReader::new(input, config.limits.max_body_bytes);
    let mut calls = tokio::task::JoinSet::new();
    loop {
        let line = match lines.next().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "stdin failed: stopping");
                break;
            }
        };
        let text = match line {
            Line::Text(t) => t,
            Line::TooLong { bytes, id } => {
                // The id scanned on the way may be cut short: only a whole JSON value is used.
                let id = id
                    .filter(|i| serde_json::from_str::<&serde_json::value::RawValue>(i).is_ok())
                    .unwrap_or_else(|| "null".into());
                let why = format!("request of {bytes} bytes is over limits.max_body_bytes");
                front
                    .emit(json::error_line(&id, -32600, &why).into_bytes())
                    .await;
                continue;
            }
        };
        let Some(text) = String::from_utf8(text)
            .ok()
            .filter(|t| !t.trim().is_empty())
        else {
            continue;
        };
        let kind = Peek::read(&text).map(|p| (p.kind(), p.method() == "initialize"));
        match kind {
            None => {
                front
                    .emit(json::error_line("null", -32700, "Parse error").into_bytes())
                    .await
            }
            // The session id comes with the answer to initialize: nothing else goes first.
            Some((Kind::Request, true)) => front.clone().exchange(text).await,
            Some((Kind::Request, false)) => {
                // A bounded number in flight: the next line waits for one to finish.
                while calls.len() >= IN_FLIGHT {
                    calls.join_next().await;
                }
                calls.spawn(front.clone().exchange(text));
                while calls.try_join_next().is_some() {}
            }
            // In order: a cancellation must not overtake what it cancels.
            Some(_) => front.clone().exchange(text).await,
        }
    }
    while calls.join_next().await.is_some() {}
    front.end_session().await;
    let began = tokio::time::Instant::now();
    core.stop.cancel();
    let flushed = core.finish(began, config.shutdown.deadline).await;
    drop(front);
    let _ = writer.await;
    Ok(flushed)
}

async fn write_lines<W: AsyncWrite + Unpin>(mut output: W, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(line) = rx.recv().await {
        let written = async {
            output.write_all(&line).await?;
            output.write_all(b"\n").await?;
            output.flush().await
        };
        if let Err(e) = written.await {
            tracing::warn!(error = %e, "stdout closed");
            return;
        }
    }
}

impl FrontEnd {
    /// One message on stdout.
    async fn emit(&self, line: Vec<u8>) {
        let line = match json::one_line(&line) {
            std::borrow::Cow::Borrowed(_) => line,
            std::borrow::Cow::Owned(o) => o,
        };
        let _ = self.out.send(Bytes::from(line)).await;
    }

    /// The headers a streamable-HTTP client would send with `text`.
    fn headers(&self, text: &str, method: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("localhost"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let params = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("params").cloned());
        let modern = params
            .as_ref()
            .and_then(|p| p.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str())
            .filter(|v| Era::of_version(v) == Era::Modern)
            .map(str::to_string);
        let settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(version) = modern {
            // What a modern client mirrors into headers, from the body (which stays the
            // authority: the pipeline checks they agree).
            if let Ok(v) = HeaderValue::from_str(&version) {
                h.insert(MCP_PROTOCOL_VERSION, v);
            }
            if let Ok(v) = HeaderValue::from_str(method) {
                h.insert(MCP_METHOD, v);
            }
            let name = params.as_ref().and_then(|p| match method {
                "tools/call" | "prompts/get" => p.get("name")?.as_str(),
                "resources/read" => p.get("uri")?.as_str(),
                _ => None,
            });
            if let Some(v) = name.and_then(header_text) {
                h.insert(MCP_NAME, v);
            }
            return h;
        }
        if let Some(s) = &settled.session {
            h.insert(MCP_SESSION_ID, s.clone());
        }
        if let Some(v) = settled
            .version
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            h.insert(MCP_PROTOCOL_VERSION, v);
        }
        h
    }

    /// Sends one message through the pipeline and writes what comes back.
    async fn exchange(self: Arc<Self>, text: String) {
        let peek = Peek::read(&text);
        let (method, id, kind) = match &peek {
            Some(p) => (
                p.method().to_string(),
                p.id.map(|i| i.get().to_string()),
                p.kind(),
            ),
            None => return,
        };
        drop(peek);
        let headers = self.headers(&text, &method);
        let resp = match self.send(Method::POST, headers, Bytes::from(text)).await {
            Some(r) => r,
            None => {
                if let Some(id) = id {
                    self.emit(
                        json::error_line(&id, -32603, "the sentinel could not serve the request")
                            .into_bytes(),
                    )
                    .await;
                }
                return;
            }
        };
        let status = resp.status();
        if method == "initialize" && status == StatusCode::OK {
            self.settle(resp.headers());
        }
        let initialized = method == "initialize" && status == StatusCode::OK;
        self.relay(resp, kind, id.as_deref()).await;
        if initialized {
            tokio::spawn(self.clone().listen());
        }
    }

    fn settle(&self, headers: &HeaderMap) {
        let mut s = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        s.session = headers.get(MCP_SESSION_ID).cloned();
    }

    /// Writes the answer: each SSE event's message, or the JSON body, as lines. A refused
    /// notification has nobody to tell on stdout: it is logged.
    async fn relay(&self, resp: Response<Incoming>, kind: Kind, id: Option<&str>) {
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut body = resp.into_body();
        if is_sse {
            let mut reader = EventReader::new();
            let mut data = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                reader.feed(&chunk);
                while let Some((event, _)) = reader.next_event() {
                    data.clear();
                    // Only JSON is written, made one line: data in several `data:` lines holds
                    // line feeds, which in JSON can only be whitespace between tokens. In data
                    // that is not JSON they may sit inside a key or a string, where the list
                    // filter, reading what an HTTP client reads, found nothing to edit; taken
                    // out, they would make a message it never saw.
                    if sse::data(event, &mut data)
                        && serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok()
                    {
                        let line = data.clone();
                        self.note_version(&line);
                        self.emit(line).await;
                    }
                }
            }
            return;
        }
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        if kind != Kind::Request {
            if !status.is_success() {
                tracing::warn!(status = status.as_u16(), body = %String::from_utf8_lossy(&bytes[..bytes.len().min(200)]), "a notification or response was refused");
            }
            return;
        }
        let id = id.unwrap_or("null");
        if serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.get("jsonrpc").is_some()) {
            self.note_version(&bytes);
            self.emit(bytes.to_vec()).await;
        } else {
            let why = format!("the sentinel answered HTTP {}", status.as_u16());
            self.emit(json::error_line(id, -32603, &why).into_bytes())
                .await;
        }
    }

    /// The protocol version an `initialize` answer settled, for the requests after it.
    fn note_version(&self, line: &[u8]) {
        let mut s = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        if s.version.is_some() || s.session.is_none() {
            return;
        }
        if let Some(v) = serde_json::from_slice::<Value>(line).ok().and_then(|v| {
            v.get("result")?
                .get("protocolVersion")?
                .as_str()
                .map(str::to_string)
        }) {
            s.version = Some(v);
        }
    }

    /// The session's GET stream: what the server sends on its own, as lines.
    async fn listen(self: Arc<Self>) {
        let mut h = self.headers("{}", "");
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        h.remove(header::CONTENT_TYPE);
        if !h.contains_key(MCP_SESSION_ID) {
            return;
        }
        if let Some(resp) = self.send(Method::GET, h, Bytes::new()).await
            && resp.status() == StatusCode::OK
        {
            self.relay(resp, Kind::Notification, None).await;
        }
    }

    /// Ends the session (the upstream's child goes with it).
    async fn end_session(&self) {
        let mut h = self.headers("{}", "");
        if !h.contains_key(MCP_SESSION_ID) {
            return;
        }
        h.remove(header::CONTENT_TYPE);
        let _ = self.send(Method::DELETE, h, Bytes::new()).await;
    }

    /// One request on an in-memory HTTP/1.1 connection to the pipeline.
    async fn send(
        &self,
        method: Method,
        headers: HeaderMap,
        body: Bytes,
    ) -> Option<Response<Incoming>> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let pipeline = self.pipeline.clone();
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                pipeline.clone().handle(conn.clone(), req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .ok()?;
        tokio::spawn(connection);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.mcp_path.parse().ok()?;
        *req.headers_mut() = headers;
        sender.send_request(req).await.ok()
    }
}

/// A header value for `text`: as is when visible ASCII, else the `=?base64?…?=` form MCP
/// clients use.
fn header_text(text: &str) -> Option<HeaderValue> {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        HeaderValue::from_str(text).ok()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(text);
        HeaderValue::from_str(&format!("=?base64?{b64}?=")).ok()
    }
}
