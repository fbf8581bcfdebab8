//! rmcp clients for the test bed: one constructor per protocol era, a helper
//! that watches progress notifications, and `exercise_all`, which runs every
//! upstream feature and returns a deterministic transcript so a run through the
//! sentinel can be compared with a direct run.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError, ServiceExt,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
        ClientRequest, GetPromptRequestParams, Implementation, JsonObject,
        ProgressNotificationParam, ProgressToken, ProtocolVersion, ReadResourceRequestParams,
        ServerResult,
    },
    service::{ClientInitializeError, NotificationContext, PeerRequestOptions, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde::Serialize;
use serde_json::{Value, json};

pub type McpClient = RunningService<RoleClient, TestClient>;

/// Which lifecycle a client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Era {
    /// `initialize` handshake at this version, then `Mcp-Session-Id`.
    Legacy(ProtocolVersion),
    /// 2026-07-28: `server/discover`, per-request `_meta`, no session.
    Modern,
}

impl Era {
    /// Every legacy revision plus the modern one.
    pub fn all() -> Vec<Era> {
        let mut eras: Vec<Era> = legacy_versions().into_iter().map(Era::Legacy).collect();
        eras.push(Era::Modern);
        eras
    }

    /// The version its client asks for.
    pub fn protocol_version(&self) -> ProtocolVersion {
        match self {
            Era::Legacy(v) => v.clone(),
            Era::Modern => ProtocolVersion::V_2026_07_28,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Era::Legacy(v) => format!("legacy {v}"),
            Era::Modern => format!("modern {}", ProtocolVersion::V_2026_07_28),
        }
    }
}

pub fn legacy_versions() -> Vec<ProtocolVersion> {
    vec![
        ProtocolVersion::V_2024_11_05,
        ProtocolVersion::V_2025_03_26,
        ProtocolVersion::V_2025_06_18,
        ProtocolVersion::V_2025_11_25,
    ]
}

/// Extra HTTP settings for a client.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// Sent on every request. rmcp refuses `Accept`, `Mcp-Session-Id` and
    /// `Last-Event-Id` here (`ReservedHeaderConflict`).
    pub headers: Vec<(String, String)>,
}

impl ClientOptions {
    pub fn bearer(token: impl Into<String>) -> Self {
        Self {
            bearer: Some(token.into()),
            ..Self::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// One progress notification as the client saw it.
#[derive(Clone, Debug)]
pub struct ProgressEvent {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
    pub at: Instant,
}

/// The client handler: identifies itself and records progress notifications. It declares no
/// capabilities unless built with [`TestClient::answering`].
#[derive(Clone)]
pub struct TestClient {
    info: ClientConfig,
    progress: Arc<Mutex<HashMap<ProgressToken, Vec<ProgressEvent>>>>,
    /// `roots/list` requests the server sent this client.
    roots_asked: Arc<std::sync::atomic::AtomicUsize>,
    /// What it answers `sampling/createMessage` and `elicitation/create` with, if it does.
    answers: Option<Answers>,
    /// The params of every `sampling/createMessage` and `elicitation/create` it was sent, as
    /// `(method, params)` in arrival order.
    asked: Arc<Mutex<Vec<(String, Value)>>>,
}

/// A client that answers the server's questions: sampling with [`Answers::sampling`] (the text
/// of an assistant message from model [`Answers::model`]), form elicitation by accepting
/// [`Answers::elicitation`].
#[derive(Clone, Debug)]
pub struct Answers {
    pub sampling: String,
    pub model: String,
    pub elicitation: Value,
    /// How long the client thinks before it answers.
    pub delay: Duration,
}

impl TestClient {
    fn new(protocol_version: ProtocolVersion) -> Self {
        Self {
            info: ClientConfig::new(
                ClientCapabilities::default(),
                Implementation::new("sentinel-testbed", "1.0.0"),
            )
            .with_protocol_version(protocol_version),
            progress: Arc::default(),
            roots_asked: Arc::default(),
            answers: None,
            asked: Arc::default(),
        }
    }

    /// The client of `era`, declaring `roots`, `sampling` and form `elicitation`, answering
    /// them with `answers`. Connect it with [`connect_client`].
    pub fn answering(era: &Era, answers: Answers) -> Self {
        let mut client = Self::new(era.protocol_version());
        client.info.capabilities = serde_json::from_value(json!({
            "roots": {},
            "sampling": {},
            "elicitation": { "form": {} }
        }))
        .expect("client capabilities");
        client.answers = Some(answers);
        client
    }

    /// The `(method, params)` of each sampling or elicitation request this client was sent.
    pub fn asked(&self) -> Vec<(String, Value)> {
        self.asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn record(
        &self,
        method: &str,
        params: &impl Serialize,
    ) -> Result<&Answers, rmcp::ErrorData> {
        let params = serde_json::to_value(params).expect("params serialize");
        self.asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((method.to_owned(), params));
        if let Some(answers) = &self.answers {
            tokio::time::sleep(answers.delay).await;
        }
        self.answers.as_ref().ok_or_else(|| {
            rmcp::ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("{method}: not a capability of this client"),
                None,
            )
        })
    }

    /// How many `roots/list` requests reached this client.
    pub fn roots_asked(&self) -> usize {
        self.roots_asked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Progress notifications received so far for `token`, in arrival order.
    pub fn progress_for(&self, token: &ProgressToken) -> Vec<ProgressEvent> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
            .unwrap_or_default()
    }
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    #[allow(deprecated)] // roots: deprecated by SEP-2577, still in every legacy revision
    async fn list_roots(
        &self,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        self.roots_asked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(rmcp::model::ListRootsResult::new(vec![
            rmcp::model::Root::new("file:///work"),
        ]))
    }

    #[allow(deprecated)] // sampling: deprecated by SEP-2577, still in every revision
    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        let answers = self.record("sampling/createMessage", &params).await?;
        Ok(serde_json::from_value(json!({
            "role": "assistant",
            "content": { "type": "text", "text": answers.sampling },
            "model": answers.model,
            "stopReason": "endTurn"
        }))
        .expect("sampling result"))
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        let answers = self.record("elicitation/create", &request).await?;
        Ok(
            serde_json::from_value(json!({ "action": "accept", "content": answers.elicitation }))
                .expect("elicitation result"),
        )
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let event = ProgressEvent {
            progress: params.progress,
            total: params.total,
            message: params.message,
            at: Instant::now(),
        };
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(params.progress_token)
            .or_default()
            .push(event);
    }
}

fn transport(url: &str, options: &ClientOptions) -> StreamableHttpClientTransport<reqwest::Client> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(token) = &options.bearer {
        // rmcp adds the `Bearer ` prefix itself.
        config = config.auth_header(token.clone());
    }
    let headers = options
        .headers
        .iter()
        .map(|(name, value)| {
            (
                http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                http::HeaderValue::from_str(value).expect("header value"),
            )
        })
        .collect();
    StreamableHttpClientTransport::from_config(config.custom_headers(headers))
}

/// A client in `era` against `url`.
pub async fn connect(
    url: &str,
    era: &Era,
    options: &ClientOptions,
) -> Result<McpClient, ClientInitializeError> {
    connect_client(url, era, options, TestClient::new(era.protocol_version())).await
}

/// `client` (e.g. [`TestClient::answering`]) connected in `era` against `url`.
pub async fn connect_client(
    url: &str,
    era: &Era,
    options: &ClientOptions,
    client: TestClient,
) -> Result<McpClient, ClientInitializeError> {
    match era {
        Era::Legacy(_) => client.serve(transport(url, options)).await,
        Era::Modern => {
            client
                .serve_with_lifecycle(
                    transport(url, options),
                    ClientLifecycleMode::Discover {
                        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                    },
                )
                .await
        }
    }
}

/// `initialize` at `version` (2025-11-25 when `None`), then a session.
pub async fn legacy_client(
    url: &str,
    version: Option<ProtocolVersion>,
) -> Result<McpClient, ClientInitializeError> {
    legacy_client_with(url, version, &ClientOptions::default()).await
}

pub async fn legacy_client_with(
    url: &str,
    version: Option<ProtocolVersion>,
    options: &ClientOptions,
) -> Result<McpClient, ClientInitializeError> {
    let version = version.unwrap_or(ProtocolVersion::V_2025_11_25);
    connect(url, &Era::Legacy(version), options).await
}

/// 2026-07-28 `server/discover` lifecycle, no session.
pub async fn modern_client(url: &str) -> Result<McpClient, ClientInitializeError> {
    modern_client_with(url, &ClientOptions::default()).await
}

pub async fn modern_client_with(
    url: &str,
    options: &ClientOptions,
) -> Result<McpClient, ClientInitializeError> {
    connect(url, &Era::Modern, options).await
}

pub fn args(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("tool arguments must be an object, got {other}"),
    }
}

pub fn tool_call(name: &str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned()).with_arguments(args(arguments))
}

/// A tool call watched from the client: when each progress notification and
/// the result arrived.
#[derive(Debug)]
pub struct ProgressRun {
    pub result: Result<CallToolResult, ServiceError>,
    pub progress: Vec<ProgressEvent>,
    pub started: Instant,
    pub finished: Instant,
}

impl ProgressRun {
    /// How long before the result the first progress notification arrived;
    /// `None` if none arrived before it. A proxy that buffers the stream makes
    /// this close to zero.
    pub fn first_progress_lead(&self) -> Option<Duration> {
        let first = self.progress.first()?;
        (first.at <= self.finished).then(|| self.finished - first.at)
    }

    /// `(progress, message)` of each notification: deterministic, comparable.
    pub fn steps(&self) -> Vec<(f64, Option<String>)> {
        self.progress
            .iter()
            .map(|p| (p.progress, p.message.clone()))
            .collect()
    }
}

/// Calls `tool`, letting rmcp attach its progress token, and records progress
/// notifications for that token in arrival order.
pub async fn call_with_progress(client: &McpClient, tool: &str, arguments: Value) -> ProgressRun {
    let started = Instant::now();
    let handle = client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(tool_call(tool, arguments))),
            PeerRequestOptions::no_options(),
        )
        .await;
    let (result, token) = match handle {
        Ok(handle) => {
            let token = handle.progress_token.clone();
            let result = match handle.await_response().await {
                Ok(ServerResult::CallToolResult(result)) => Ok(result),
                Ok(_) => Err(ServiceError::UnexpectedResponse),
                Err(error) => Err(error),
            };
            (result, Some(token))
        }
        Err(error) => (Err(error), None),
    };
    let finished = Instant::now();
    // Notifications are handled on spawned tasks; let any stragglers land.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let progress = token
        .map(|t| client.service().progress_for(&t))
        .unwrap_or_default();
    ProgressRun {
        result,
        progress,
        started,
        finished,
    }
}

/// A `slow` call with 5 progress steps, in a legacy and the modern era, through `url`: every
/// progress event reaches the client, streamed — the first one well before the result.
pub async fn assert_progress_streams(url: &str) {
    for era in [Era::Legacy(ProtocolVersion::V_2025_11_25), Era::Modern] {
        let client = connect(url, &era, &ClientOptions::default()).await.unwrap();
        let run = call_with_progress(&client, "slow", json!({"steps": 5, "delay_ms": 150})).await;
        assert!(run.result.is_ok(), "{}: {:?}", era.label(), run.result);
        assert_eq!(run.progress.len(), 5, "{}", era.label());
        let lead = run
            .first_progress_lead()
            .expect("progress before the result");
        assert!(
            lead >= Duration::from_millis(400),
            "{}: streamed, lead {lead:?}",
            era.label()
        );
        let _ = client.cancel().await;
    }
}

/// Every result `exercise_all` saw, keyed by operation, as JSON.
pub type Transcript = BTreeMap<String, Value>;

/// A result as JSON, or its error as `{"jsonrpc_error": ...}` / `{"client_error": ...}`.
pub fn outcome<T: Serialize>(result: Result<T, ServiceError>) -> Value {
    match result {
        Ok(value) => serde_json::to_value(value).expect("results serialize"),
        Err(ServiceError::McpError(error)) => json!({
            "jsonrpc_error": { "code": error.code.0, "message": error.message, "data": error.data }
        }),
        Err(other) => json!({ "client_error": other.to_string() }),
    }
}

// FNV-1a: a dependency-free fingerprint for large results.
fn fingerprint(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The start of a transcript: `peer_info` and the first page of every list.
pub async fn lists(client: &McpClient) -> Transcript {
    let mut t = Transcript::new();
    t.insert("peer_info".into(), json!(client.peer_info()));
    // Whole list results (not `list_all_*`) so `ttlMs` / `cacheScope` are compared too.
    t.insert("tools/list".into(), outcome(client.list_tools(None).await));
    t.insert(
        "resources/list".into(),
        outcome(client.list_resources(None).await),
    );
    t.insert(
        "resources/templates/list".into(),
        outcome(client.list_resource_templates(None).await),
    );
    t.insert(
        "prompts/list".into(),
        outcome(client.list_prompts(None).await),
    );
    t
}

/// Bytes the `big` call in [`exercise_all`] asks for.
pub const EXERCISE_BIG_BYTES: usize = 1024 * 1024;

/// Runs every list, tool, resource and prompt the upstream offers, including
/// the error paths. The result depends only on the server's answers, so
/// `exercise_all(via_proxy) == exercise_all(direct)` when the proxy is faithful.
pub async fn exercise_all(client: &McpClient) -> Transcript {
    let mut t = lists(client).await;

    let calls = [
        ("echo", json!({ "text": "hello" })),
        ("add", json!({ "a": 2, "b": 40 })),
        ("fail", json!({})),
        ("jsonrpc_error", json!({})),
        ("route", json!({ "region": "eu-west", "text": "hi" })),
        ("delete_file", json!({ "path": "/tmp/x" })),
        ("no_such_tool", json!({})),
    ];
    for (tool, arguments) in calls {
        let result = client.call_tool(tool_call(tool, arguments)).await;
        t.insert(format!("tools/call {tool}"), outcome(result));
    }

    let big = client
        .call_tool(tool_call("big", json!({ "bytes": EXERCISE_BIG_BYTES })))
        .await
        .map(|result| {
            let text = result
                .content
                .first()
                .and_then(|c| c.as_text())
                .map(|c| c.text.clone())
                .unwrap_or_default();
            json!({ "len": text.len(), "fnv": fingerprint(text.as_bytes()), "isError": result.is_error })
        });
    t.insert("tools/call big".into(), outcome(big));

    let slow = call_with_progress(client, "slow", json!({ "steps": 3, "delay_ms": 10 })).await;
    // rmcp hands each notification to its own task, so the order the handler sees them in is
    // not the wire order; ordering is asserted with timing in its own test.
    let mut steps = slow.steps();
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    t.insert(
        "tools/call slow".into(),
        json!({ "result": outcome(slow.result), "progress": steps }),
    );

    for uri in [
        crate::common::upstream::README_URI,
        crate::common::upstream::SECRET_URI,
        crate::common::upstream::CAFE_URI,
        "file:///logs/2025-01-01.log",
        "file:///nope.txt",
    ] {
        let result = client
            .read_resource(ReadResourceRequestParams::new(uri))
            .await;
        t.insert(format!("resources/read {uri}"), outcome(result));
    }

    let prompts = [
        ("greet", Some(json!({ "name": "Ada" }))),
        ("admin_prompt", None),
        ("no_such_prompt", None),
    ];
    for (name, arguments) in prompts {
        let mut params = GetPromptRequestParams::new(name);
        if let Some(arguments) = arguments {
            params = params.with_arguments(args(arguments));
        }
        t.insert(
            format!("prompts/get {name}"),
            outcome(client.get_prompt(params).await),
        );
    }
    t
}

// ---------------------------------------------------------------------------
// Raw HTTP: for wire-level assertions (status codes, headers, SSE framing)
// that the rmcp client hides.

/// The `Accept` rmcp's client sends on POST (and, oddly, on GET).
pub const RMCP_ACCEPT: &str = "text/event-stream, application/json";
pub const MODERN_VERSION: &str = "2026-07-28";

/// One SSE event, fields as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub retry: Option<String>,
    pub data: String,
}

/// Splits an SSE body into events; `:` comment lines are dropped.
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    let normalized = body.replace("\r\n", "\n");
    normalized
        .split("\n\n")
        .filter_map(|block| {
            let mut event = SseEvent::default();
            let mut data: Vec<&str> = Vec::new();
            let mut any = false;
            for line in block.lines() {
                if line.is_empty() || line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                any = true;
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "retry" => event.retry = Some(value.to_owned()),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            event.data = data.join("\n");
            any.then_some(event)
        })
        .collect()
}

/// A whole HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn content_type(&self) -> String {
        self.header("content-type").unwrap_or_default()
    }

    pub fn is_sse(&self) -> bool {
        self.content_type().starts_with("text/event-stream")
    }

    pub fn sse_events(&self) -> Vec<SseEvent> {
        parse_sse(&self.body)
    }

    /// Every JSON-RPC message in the body: the body itself for JSON, each
    /// non-empty `data:` for SSE.
    pub fn messages(&self) -> Vec<Value> {
        if self.is_sse() {
            self.sse_events()
                .iter()
                .filter(|e| !e.data.is_empty())
                .map(|e| serde_json::from_str(&e.data).expect("SSE data is JSON"))
                .collect()
        } else if self.body.is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_str(&self.body).expect("body is JSON")]
        }
    }

    /// The message carrying `result` or `error` (the last one).
    pub fn final_message(&self) -> Option<Value> {
        self.messages()
            .into_iter()
            .rev()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
    }
}

/// `_meta` a 2026-07-28 request must carry.
pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "raw", "version": "1.0.0" }
    })
}

/// A 2026-07-28 request body: `params` plus the required `_meta` keys (merged
/// into any `_meta` already in `params`, e.g. a `progressToken`).
pub fn modern_request(id: i64, method: &str, params: Value) -> Value {
    let mut params = match params {
        Value::Object(map) => map,
        Value::Null => JsonObject::new(),
        other => panic!("params must be an object, got {other}"),
    };
    let mut meta = match params.remove("_meta") {
        Some(Value::Object(meta)) => meta,
        _ => JsonObject::new(),
    };
    if let Value::Object(required) = modern_meta() {
        meta.extend(required);
    }
    params.insert("_meta".into(), Value::Object(meta));
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// Headers a 2026-07-28 client sends with `method` (and `Mcp-Name` when given,
/// sent as-is: base64-wrap non-ASCII values yourself).
pub fn modern_headers(method: &str, name: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![
        ("MCP-Protocol-Version".to_owned(), MODERN_VERSION.to_owned()),
        ("Mcp-Method".to_owned(), method.to_owned()),
    ];
    if let Some(name) = name {
        headers.push(("Mcp-Name".to_owned(), name.to_owned()));
    }
    headers
}

/// `=?base64?…?=`, the SEP-2243 wrapping for header values that are not plain ASCII.
pub fn base64_header(value: &str) -> String {
    use base64::Engine;
    format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode(value)
    )
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// Sends a request with `Content-Type: application/json` (when there is a
/// body) and rmcp's `Accept` unless `headers` sets one; reads the whole body.
pub async fn raw_request(
    method: reqwest::Method,
    url: &str,
    headers: &[(String, String)],
    body: Option<&Value>,
) -> RawResponse {
    let response = raw_send(method, url, headers, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("read body");
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Like [`raw_request`] but returns the response unread (for streams).
pub async fn raw_send(
    method: reqwest::Method,
    url: &str,
    headers: &[(String, String)],
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = http_client().request(method, url);
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
    {
        request = request.header("Accept", RMCP_ACCEPT);
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(body).expect("body serializes"));
    }
    request.send().await.expect("send request")
}

pub async fn raw_post(url: &str, headers: &[(String, String)], body: &Value) -> RawResponse {
    raw_request(reqwest::Method::POST, url, headers, Some(body)).await
}

/// A legacy `initialize` + `notifications/initialized` by hand. Returns the
/// session id (if the server made one) and the initialize response.
pub async fn raw_legacy_session(url: &str, version: &str) -> (Option<String>, RawResponse) {
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": { "name": "raw", "version": "1.0.0" }
        }
    });
    let response = raw_post(url, &[], &init).await;
    let session = response.header("mcp-session-id");
    let mut headers = vec![("MCP-Protocol-Version".to_owned(), version.to_owned())];
    if let Some(session) = &session {
        headers.push(("Mcp-Session-Id".to_owned(), session.clone()));
    }
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let ack = raw_post(url, &headers, &initialized).await;
    assert_eq!(ack.status, 202, "notifications/initialized: {}", ack.body);
    (session, response)
}

/// Headers for a later legacy request in `session`.
pub fn legacy_headers(version: &str, session: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![("MCP-Protocol-Version".to_owned(), version.to_owned())];
    if let Some(session) = session {
        headers.push(("Mcp-Session-Id".to_owned(), session.to_owned()));
    }
    headers
}
