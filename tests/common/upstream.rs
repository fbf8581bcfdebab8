//! A real MCP server on a real socket: the upstream the sentinel proxies to in
//! tests, in `examples/demo_upstream.rs` and in benchmarks. It is rmcp's own
//! Streamable HTTP server, so both protocol eras are served on one endpoint.
//!
//! Self-contained on purpose (no `crate::` paths): examples include it with
//! `#[path = "../tests/common/upstream.rs"] mod upstream;`, and it brings its two parts along:
//! `upstream_catalog.rs` (what it offers) and `upstream_handler.rs` (the MCP handler). This file
//! is the socket, the era routing and the record of what reached the upstream.
//!
//! Era routing is rmcp's: an `initialize` request or a request without a
//! 2026-07-28 `_meta` goes to a legacy session (`Mcp-Session-Id`, GET stream,
//! DELETE); a request whose `_meta` carries
//! `io.modelcontextprotocol/protocolVersion` + `clientCapabilities` is served
//! statelessly (modern era, `server/discover`).
//!
//! Tasks (SEP-2663, `io.modelcontextprotocol/tasks`): the server declares the
//! extension; a `background` call from a client that declares it too answers
//! with a task handle (`resultType: "task"`) from rmcp's [`TaskManager`], and
//! `tasks/get`, `tasks/update`, `tasks/cancel` answer for those ids. The
//! manager is shared by every handler, so a task outlives the stateless
//! request (or the session) that created it. Clients that do not declare tasks
//! get `background`'s result inline. `tasks/list` lists every task, whoever
//! created it (as an upstream that knows no principals does); any other method
//! or notification rmcp does not know is counted ([`Upstream::custom`]).

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rmcp::{
    task_manager::TaskManager,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinSet};

#[path = "upstream_catalog.rs"]
pub mod catalog;
#[path = "upstream_handler.rs"]
mod handler;

use handler::DemoServer;

/// The one MCP endpoint path.
pub const MCP_PATH: &str = "/mcp";
/// Size the tests use for the `big` tool (10 MiB).
pub const BIG_BYTES: usize = 10 * 1024 * 1024;
/// Largest result the `big` tool agrees to build.
pub const BIG_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Request bodies are kept in [`SeenRequest::body`] up to this size.
pub const SEEN_BODY_LIMIT: usize = 64 * 1024;
/// Only the most recent requests are kept, so a benchmark run stays bounded.
const SEEN_REQUESTS_KEPT: usize = 1024;

pub const README_URI: &str = "file:///docs/readme.md";
pub const SECRET_URI: &str = "file:///secret/keys.txt";
/// A resource whose URI is not ASCII: clients must base64-wrap its `Mcp-Name`.
pub const CAFE_URI: &str = "file:///docs/café.md";
pub const LOG_TEMPLATE: &str = "file:///logs/{day}.log";

/// How the upstream serves; [`Default`] is rmcp's default (legacy sessions, SSE).
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// rmcp `legacy_session_mode`: legacy clients get an `Mcp-Session-Id`,
    /// a GET stream and DELETE. When false, every request is stateless.
    pub legacy_sessions: bool,
    /// rmcp `json_response`: on the stateless path (modern era, or legacy
    /// without sessions) answer with `application/json` when the handler sends
    /// nothing before its result; falls back to SSE otherwise.
    pub json_response: bool,
    /// SSE keep-alive comments; `None` turns them off.
    pub sse_keep_alive: Option<Duration>,
    /// SSE `retry:` priming events; `None` turns them off.
    pub sse_retry: Option<Duration>,
    /// Allowed `Host` values; empty accepts any. rmcp's default is loopback only.
    pub allowed_hosts: Vec<String>,
    /// rmcp's POST body limit (default 4 MiB, answered 413).
    pub max_request_body_bytes: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        let rmcp = StreamableHttpServerConfig::default();
        Self {
            legacy_sessions: rmcp.legacy_session_mode,
            json_response: rmcp.json_response,
            sse_keep_alive: rmcp.sse_keep_alive,
            sse_retry: rmcp.sse_retry,
            allowed_hosts: rmcp.allowed_hosts,
            max_request_body_bytes: rmcp.max_request_body_bytes,
        }
    }
}

impl UpstreamConfig {
    /// Stateless with `application/json` answers wherever rmcp allows.
    pub fn json() -> Self {
        Self {
            legacy_sessions: false,
            json_response: true,
            ..Self::default()
        }
    }

    fn rmcp(&self) -> StreamableHttpServerConfig {
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(self.legacy_sessions)
            .with_json_response(self.json_response)
            .with_sse_keep_alive(self.sse_keep_alive)
            .with_sse_retry(self.sse_retry)
            .with_allowed_hosts(self.allowed_hosts.clone())
            .with_max_request_body_bytes(self.max_request_body_bytes)
    }
}

/// One HTTP request as it reached the upstream (after any proxy).
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: http::Method,
    pub path: String,
    pub headers: http::HeaderMap,
    /// The body, cut at [`SEEN_BODY_LIMIT`].
    pub body: Bytes,
    pub body_len: usize,
    pub status: http::StatusCode,
    pub response_headers: http::HeaderMap,
}

impl SeenRequest {
    /// The body as JSON, when it was kept whole and parses.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The JSON-RPC `method` of the body, if any.
    pub fn rpc_method(&self) -> Option<String> {
        self.json()?.get("method")?.as_str().map(str::to_owned)
    }

    /// A header as text (first value).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Default)]
struct Shared {
    /// Keyed by `"<method> <name-or-uri>"`, e.g. `"tools/call echo"`.
    counters: Mutex<HashMap<String, usize>>,
    seen: Mutex<VecDeque<SeenRequest>>,
    /// Every task any handler created (handlers are per session or per request).
    tasks: TaskManager,
    /// The ids of those tasks, in creation order, for `tasks/list`.
    task_ids: Mutex<Vec<String>>,
}

impl Shared {
    fn bump(&self, key: String) {
        *lock(&self.counters).entry(key).or_default() += 1;
    }

    fn count(&self, key: &str) -> usize {
        lock(&self.counters).get(key).copied().unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running upstream. Dropping it stops the server.
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    rmcp_config: StreamableHttpServerConfig,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    /// `http://127.0.0.1:PORT/mcp`
    pub fn url(&self) -> String {
        format!("http://{}{MCP_PATH}", self.addr)
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `tools/call` requests for `tool` that reached the handler.
    pub fn calls(&self, tool: &str) -> usize {
        self.shared.count(&format!("tools/call {tool}"))
    }

    /// `tools/call` requests that reached the handler, all tools together.
    pub fn total_calls(&self) -> usize {
        lock(&self.shared.counters)
            .iter()
            .filter(|(k, _)| k.starts_with("tools/call "))
            .map(|(_, v)| v)
            .sum()
    }

    /// `resources/read` requests for `uri` that reached the handler.
    pub fn reads(&self, uri: &str) -> usize {
        self.shared.count(&format!("resources/read {uri}"))
    }

    /// `prompts/get` requests for `name` that reached the handler.
    pub fn prompt_gets(&self, name: &str) -> usize {
        self.shared.count(&format!("prompts/get {name}"))
    }

    /// Calls of `tool` (only `slow` checks) that saw their cancellation token fire.
    pub fn cancellations(&self, tool: &str) -> usize {
        self.shared.count(&format!("cancelled {tool}"))
    }

    /// Calls of `tool` (only `slow` checks) that ran to the end.
    pub fn completions(&self, tool: &str) -> usize {
        self.shared.count(&format!("completed {tool}"))
    }

    /// Tasks `background` created (calls that answered with a task handle).
    pub fn tasks_created(&self) -> usize {
        self.shared.count("tasks/create background")
    }

    /// `tasks/get`, `tasks/update` or `tasks/cancel` requests (`method`) that
    /// reached the handler, whatever the task id.
    pub fn task_requests(&self, method: &str) -> usize {
        self.shared.count(method)
    }

    /// Requests and notifications of a method rmcp does not know (`tasks/list`,
    /// `tasks/delete`, `notifications/tasks/…`) that reached the handler.
    pub fn custom(&self, method: &str) -> usize {
        self.shared.count(&format!("custom {method}"))
    }

    /// The most recent HTTP requests, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.seen).iter().cloned().collect()
    }

    /// Like [`Upstream::requests`] without the sentinel's readiness probes (OPTIONS).
    pub fn mcp_requests(&self) -> Vec<SeenRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != http::Method::OPTIONS)
            .collect()
    }

    /// The most recent POST whose JSON-RPC method is `method`.
    pub fn last_request(&self, method: &str) -> Option<SeenRequest> {
        lock(&self.shared.seen)
            .iter()
            .rev()
            .find(|r| r.rpc_method().as_deref() == Some(method))
            .cloned()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.seen).clear();
    }

    /// Stops accepting, closes every connection and ends every session.
    pub async fn shutdown(mut self) {
        self.rmcp_config.cancellation_token.cancel();
        self.shared.tasks.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.rmcp_config.cancellation_token.cancel();
        self.shared.tasks.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An upstream with rmcp's defaults on `127.0.0.1:0`.
pub async fn spawn_upstream() -> Upstream {
    spawn_upstream_with(UpstreamConfig::default()).await
}

pub async fn spawn_upstream_with(config: UpstreamConfig) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    serve_upstream(listener, config)
}

/// Serves the upstream on an already bound listener (the example binds its own).
pub fn serve_upstream(listener: TcpListener, config: UpstreamConfig) -> Upstream {
    let addr = listener.local_addr().expect("listener address");
    let shared = Arc::new(Shared::default());
    let rmcp_config = config.rmcp();
    let service: StreamableHttpService<DemoServer, LocalSessionManager> = {
        let shared = shared.clone();
        StreamableHttpService::new(
            move || {
                Ok(DemoServer {
                    shared: shared.clone(),
                })
            },
            Default::default(),
            rmcp_config.clone(),
        )
    };
    let task = tokio::spawn(accept_loop(listener, service, shared.clone()));
    Upstream {
        addr,
        shared,
        rmcp_config,
        task: Some(task),
    }
}

/// Serves the demo on this process's stdin/stdout with rmcp's stdio transport, until stdin
/// closes: the stdio upstream of tests and benchmarks (`examples/demo_stdio_upstream.rs`).
/// Both eras: rmcp picks the lifecycle from the first message.
pub async fn serve_stdio() -> Result<(), String> {
    use rmcp::ServiceExt;
    let server = DemoServer {
        shared: Arc::new(Shared::default()),
    };
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| e.to_string())?;
    running.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}

type Svc = StreamableHttpService<DemoServer, LocalSessionManager>;

// Connections live in the JoinSet so aborting this task closes all of them.
async fn accept_loop(listener: TcpListener, service: Svc, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let service = service.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let handler = service_fn(move |request| {
                let service = service.clone();
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(service, shared, request).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

fn plain(status: http::StatusCode, text: &'static str) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed())
        .expect("valid response")
}

// The body is read whole before rmcp sees it so the request can be recorded.
async fn route(
    service: Svc,
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Response<BoxBody<Bytes, Infallible>> {
    match request.uri().path() {
        MCP_PATH => {}
        "/healthz" => return plain(http::StatusCode::OK, "ok"),
        _ => return plain(http::StatusCode::NOT_FOUND, "not found"),
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        return plain(http::StatusCode::BAD_REQUEST, "unreadable body");
    };
    let mut seen = SeenRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: body.slice(..body.len().min(SEEN_BODY_LIMIT)),
        body_len: body.len(),
        status: http::StatusCode::OK,
        response_headers: http::HeaderMap::new(),
    };
    let response = service
        .handle(Request::from_parts(parts, Full::new(body)))
        .await;
    seen.status = response.status();
    seen.response_headers = response.headers().clone();
    let mut log = lock(&shared.seen);
    if log.len() == SEEN_REQUESTS_KEPT {
        log.pop_front();
    }
    log.push_back(seen);
    response
}
