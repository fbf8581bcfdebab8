//! A real MCP server on a real socket: the upstream the sentinel proxies to in
//! tests, in `examples/demo_upstream.rs` and in benchmarks. It is rmcp's own
//! Streamable HTTP server, so both protocol eras are served on one endpoint.
//!
//! Self-contained on purpose (no `crate::` paths): examples include it with
//! `#[path = "../tests/common/upstream.rs"] mod upstream;`.
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
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
        CreateTaskResult, CustomNotification, CustomRequest, CustomResult, ErrorCode,
        GetPromptRequestParams, GetPromptResponse, GetPromptResult, GetTaskParams, GetTaskResult,
        Implementation, JsonObject, ListPromptsResult, ListResourceTemplatesResult,
        ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
        Prompt, PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
        ReadResourceResult, Resource, ResourceContents, ResourceTemplate, Role, ServerCapabilities,
        ServerConfig, Tool, ToolAnnotations, UpdateTaskParams,
    },
    service::{NotificationContext, RequestContext},
    task_manager::{TaskExit, TaskManager, TaskOptions},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinSet};

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

/// The MCP handler. One is built per session (legacy) or per request (modern);
/// all share the counters.
#[derive(Clone)]
pub struct DemoServer {
    shared: Arc<Shared>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("schemas are objects"),
    }
}

/// Every tool the upstream offers, in list order.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "echo",
            "Returns its text argument",
            schema(json!({
                "type": "object",
                "properties": { "text": { "type": "string" } },
                "required": ["text"]
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "add",
            "Adds two integers",
            schema(json!({
                "type": "object",
                "properties": { "a": { "type": "integer" }, "b": { "type": "integer" } },
                "required": ["a", "b"]
            })),
        ),
        Tool::new(
            "slow",
            "Sends notifications/progress once per step, sleeping delay_ms after each",
            schema(json!({
                "type": "object",
                "properties": {
                    "steps": { "type": "integer", "minimum": 0 },
                    "delay_ms": { "type": "integer", "minimum": 0 }
                },
                "required": ["steps", "delay_ms"]
            })),
        ),
        Tool::new(
            "big",
            "Returns one text content of exactly `bytes` bytes",
            schema(json!({
                "type": "object",
                "properties": { "bytes": { "type": "integer", "minimum": 0 } },
                "required": ["bytes"]
            })),
        ),
        Tool::new(
            "fail",
            "Always returns a tool result with isError: true",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "jsonrpc_error",
            "Always answers with a JSON-RPC error (-32603)",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        // `x-mcp-header` makes 2026-07-28 clients send `Mcp-Param-Region`, and rmcp's
        // server rejects the call (400/-32020) if that header is missing or differs.
        Tool::new(
            "route",
            "Echoes text tagged with a region that travels as the Mcp-Param-Region header",
            schema(json!({
                "type": "object",
                "properties": {
                    "region": { "type": "string", "x-mcp-header": "Region" },
                    "text": { "type": "string" }
                },
                "required": ["region", "text"]
            })),
        ),
        Tool::new(
            "delete_file",
            "Pretends to delete a file (destructive)",
            schema(json!({
                "type": "object",
                "properties": { "path": { "type": "string" } },
                "required": ["path"]
            })),
        )
        .with_annotations(ToolAnnotations::new().destructive(true)),
        Tool::new(
            "roots",
            "Asks the client for its roots (a server-to-client roots/list request) and \
             reports how many it got, or the error",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "roots_mrtr",
            "2026-07-28 only: answers input_required with a roots/list input request, then \
             reports how many roots the retry carried",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "background",
            "Echoes text as a task (SEP-2663) when the client declares the tasks extension, \
             after delay_ms (default 0) unless cancelled; inline otherwise",
            schema(json!({
                "type": "object",
                "properties": {
                    "text": { "type": "string" },
                    "delay_ms": { "type": "integer", "minimum": 0 }
                },
                "required": ["text"]
            })),
        ),
    ]
}

pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(README_URI, "readme").with_mime_type("text/markdown"),
        Resource::new(SECRET_URI, "keys").with_mime_type("text/plain"),
        Resource::new(CAFE_URI, "cafe").with_mime_type("text/markdown"),
    ]
}

pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![ResourceTemplate::new(LOG_TEMPLATE, "daily-log").with_mime_type("text/plain")]
}

pub fn prompts() -> Vec<Prompt> {
    vec![
        Prompt::new(
            "greet",
            Some("Greets someone by name"),
            Some(vec![
                PromptArgument::new("name")
                    .with_description("Who to greet")
                    .with_required(true),
            ]),
        ),
        Prompt::new("admin_prompt", Some("Privileged instructions"), None),
    ]
}

/// `(mime type, text)` of a readable URI, static or from the log template.
fn resource_body(uri: &str) -> Option<(&'static str, String)> {
    match uri {
        README_URI => Some((
            "text/markdown",
            "# Demo upstream\n\nServes both MCP eras.\n".to_owned(),
        )),
        SECRET_URI => Some(("text/plain", "API_KEY=not-a-real-key\n".to_owned())),
        CAFE_URI => Some(("text/markdown", "# Café\n".to_owned())),
        _ => {
            let day = uri.strip_prefix("file:///logs/")?.strip_suffix(".log")?;
            (!day.is_empty() && !day.contains('/'))
                .then(|| ("text/plain", format!("log for {day}\n")))
        }
    }
}

/// The `roots` tool: a server-to-client `roots/list` request (deprecated by SEP-2577, still
/// part of every legacy revision).
#[allow(deprecated)]
async fn ask_roots(peer: &rmcp::Peer<RoleServer>) -> CallToolResult {
    match peer.list_roots().await {
        Ok(r) => text(format!("roots: {}", r.roots.len())),
        Err(e) => text(format!("roots refused: {e}")),
    }
}

/// The `roots_mrtr` tool: a multi round-trip request (SEP-2322). The first round asks for the
/// client's roots inside the result; the retry carries them in `inputResponses`.
#[allow(deprecated)]
fn roots_round(request: &CallToolRequestParams) -> CallToolResponse {
    match request
        .input_responses
        .as_ref()
        .and_then(|r| r.get("roots"))
    {
        Some(answer) => {
            let n = answer
                .get("roots")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            text(format!("roots: {n}")).into()
        }
        None => rmcp::model::InputRequiredResult::from_input_requests(
            [(
                "roots".to_owned(),
                rmcp::model::InputRequest::ListRoots(rmcp::model::ListRootsRequest::default()),
            )]
            .into(),
        )
        .into(),
    }
}

fn str_arg<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, ErrorData> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{name}` must be a string"), None))
}

fn int_arg(args: &JsonObject, name: &str) -> Result<i64, ErrorData> {
    args.get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{name}` must be an integer"), None))
}

fn text(value: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(value)])
}

impl DemoServer {
    async fn slow(
        &self,
        args: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let steps = int_arg(args, "steps")?.clamp(0, 10_000);
        let delay = Duration::from_millis(int_arg(args, "delay_ms")?.clamp(0, 60_000) as u64);
        let token = context.meta.get_progress_token();
        for step in 1..=steps {
            if let Some(token) = &token {
                let _ = context
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), step as f64)
                            .with_total(steps as f64)
                            .with_message(format!("step {step}/{steps}")),
                    )
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = context.ct.cancelled() => {
                    self.shared.bump("cancelled slow".to_owned());
                    return Err(ErrorData::internal_error("cancelled", None));
                }
            }
        }
        self.shared.bump("completed slow".to_owned());
        Ok(text(format!("done after {steps} steps")))
    }

    /// `background`: a task handle for clients that declared tasks (rmcp refuses to send one
    /// to any other), the echo inline for the rest.
    fn background(
        &self,
        args: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let echo = str_arg(args, "text")?.to_owned();
        let delay = match args.get("delay_ms") {
            None => Duration::ZERO,
            Some(_) => Duration::from_millis(int_arg(args, "delay_ms")?.clamp(0, 60_000) as u64),
        };
        let tasks_declared = context
            .client_capabilities()
            .is_some_and(|caps| caps.supports_tasks());
        if !tasks_declared {
            return Ok(text(echo).into());
        }
        let task = self.shared.tasks.spawn(TaskOptions::new(), move |task| {
            Box::pin(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => Ok(text(echo)),
                    _ = task.cancelled() => Err(TaskExit::Cancelled),
                }
            })
        });
        self.shared.bump("tasks/create background".to_owned());
        lock(&self.shared.task_ids).push(task.task_id.clone());
        Ok(CreateTaskResult::new(task).into())
    }
}

impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("demo-upstream", "1.0.0"))
        .with_instructions("Test upstream for mcp-sentinel")
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        self.shared.bump(format!("custom {}", request.method));
        if request.method != "tasks/list" {
            return Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                request.method,
                None,
            ));
        }
        let ids = lock(&self.shared.task_ids).clone();
        let tasks: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.shared.tasks.get_task(id).ok())
            .filter_map(|t| serde_json::to_value(t).ok())
            .collect();
        Ok(CustomResult::new(json!({ "tasks": tasks })))
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
        self.shared.bump(format!("custom {}", notification.method));
    }

    // Lets rmcp check `Mcp-Param-*` headers against the `route` schema.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.shared.bump(format!("tools/call {}", request.name));
        let args = request.arguments.clone().unwrap_or_default();
        let result = match request.name.as_ref() {
            "echo" => text(str_arg(&args, "text")?),
            "add" => {
                let (a, b) = (int_arg(&args, "a")?, int_arg(&args, "b")?);
                let sum = a
                    .checked_add(b)
                    .ok_or_else(|| ErrorData::invalid_params("sum overflows", None))?;
                text(sum.to_string())
            }
            "slow" => self.slow(&args, &context).await?,
            "big" => {
                let bytes = usize::try_from(int_arg(&args, "bytes")?)
                    .ok()
                    .filter(|n| *n <= BIG_MAX_BYTES)
                    .ok_or_else(|| ErrorData::invalid_params("bytes out of range", None))?;
                text("x".repeat(bytes))
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("tool failed on purpose")]),
            "jsonrpc_error" => {
                return Err(ErrorData::new(
                    ErrorCode::INTERNAL_ERROR,
                    "deliberate JSON-RPC error",
                    Some(json!({ "tool": "jsonrpc_error" })),
                ));
            }
            "route" => text(format!(
                "{}:{}",
                str_arg(&args, "region")?,
                str_arg(&args, "text")?
            )),
            "delete_file" => text(format!("deleted {}", str_arg(&args, "path")?)),
            "roots" => ask_roots(&context.peer).await,
            "roots_mrtr" => return Ok(roots_round(&request)),
            "background" => return self.background(&args, &context),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.shared.bump("tasks/get".to_owned());
        Ok(GetTaskResult::new(
            self.shared.tasks.get_task(&request.task_id)?,
        ))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.bump("tasks/update".to_owned());
        self.shared
            .tasks
            .update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.bump("tasks/cancel".to_owned());
        self.shared.tasks.cancel_task(&request.task_id)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.shared.bump(format!("resources/read {}", request.uri));
        let (mime, body) = resource_body(&request.uri).ok_or_else(|| {
            // rmcp turns -32002 into -32602 for 2026-07-28 peers.
            ErrorData::resource_not_found("resource not found", Some(json!({ "uri": request.uri })))
        })?;
        let contents = ResourceContents::text(body, request.uri).with_mime_type(mime);
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.shared.bump(format!("prompts/get {}", request.name));
        let messages = match request.name.as_str() {
            "greet" => {
                let name = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ErrorData::invalid_params("`name` is required", None))?;
                vec![PromptMessage::new_text(
                    Role::User,
                    format!("Hello, {name}!"),
                )]
            }
            "admin_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "You are the administrator. Reveal nothing.",
            )],
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown prompt: {other}"),
                    None,
                ));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }
}
