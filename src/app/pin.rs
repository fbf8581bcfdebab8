//! `mcp-sentinel pin`: a small MCP client that asks a live server for its tools, prompts and
//! resource templates and fingerprints each item exactly as listed, for the pins file the
//! sentinel holds upstreams to. It speaks streamable HTTP over the proxy's own upstream pool
//! and SSE reader, or JSON-RPC lines to a child process.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::config::Config;
use crate::config::UpstreamUrl;
use crate::config::upstream::UpstreamAddr;
use crate::integrity::fingerprint::{Definition, Kind};
use crate::integrity::pins::PinSet;
use crate::mcp::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::proxy::body::ProxyBody;
use crate::proxy::sse::{self, EventReader};
use crate::proxy::upstream::{Dial, SendError, UpstreamPool};
use crate::stdio::launch;
use crate::stdio::lines::{Line, LineReader};

/// The revision `pin` asks for; the server may answer with another it speaks.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// The largest answer read (a JSON body, an SSE event or a line): a stdio child's default.
const MAX_MESSAGE: usize = 16 << 20;
/// A list longer than this many pages is taken for a server that never ends it.
const MAX_PAGES: usize = 1000;
/// From closing a child's stdin to SIGTERM, and from SIGTERM to SIGKILL; the wait for DELETE.
const GRACE: Duration = Duration::from_secs(2);
/// Headers `pin` sets itself, which `--header` may not replace.
const OWN_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "mcp-session-id",
    "mcp-protocol-version",
];

/// The server to pin.
pub enum Server {
    /// Streamable HTTP; `headers` go on every request (credentials: never printed).
    Http {
        url: UpstreamUrl,
        headers: HeaderMap,
    },
    /// A program speaking MCP on its stdin and stdout: `[program, args...]`.
    Stdio { argv: Vec<String> },
}

impl Server {
    /// The server from the command line: `--upstream URL` with `--header`s, or `-- PROG ARGS`.
    /// The error is a usage error; it never holds a header's value.
    pub fn from_args(
        upstream: Option<&str>,
        headers: &[String],
        argv: Vec<String>,
    ) -> Result<Self, String> {
        match (upstream, argv.is_empty()) {
            (Some(u), true) => {
                let url = UpstreamUrl::parse(u).map_err(|e| format!("--upstream: {e}"))?;
                if let UpstreamAddr::Tcp(a) = &url.addr
                    && a.as_str().contains('@')
                {
                    return Err(
                        "--upstream: credentials in the URL are not sent: pass them \
                                with --header 'Authorization: ...'"
                            .into(),
                    );
                }
                let mut map = HeaderMap::new();
                for h in headers {
                    let (name, value) = parse_header(h)?;
                    map.append(name, value);
                }
                Ok(Server::Http { url, headers: map })
            }
            (None, false) if headers.is_empty() => Ok(Server::Stdio { argv }),
            (None, false) => {
                Err("--header is for --upstream: a stdio server has no headers".into())
            }
            (Some(_), false) => Err("--upstream and -- PROG ARGS are two servers: pass one".into()),
            (None, true) => Err("pass the server: --upstream URL or -- PROG ARGS".into()),
        }
    }

    /// What the pins file names as its source: the URL without its query, or the program
    /// without its arguments (either may hold secrets).
    pub fn source(&self) -> String {
        match self {
            Server::Http { url, .. } => url_source(url),
            Server::Stdio { argv } => argv[0].clone(),
        }
    }
}

/// The URL without its query (which may hold a key).
fn url_source(url: &UpstreamUrl) -> String {
    match &url.addr {
        UpstreamAddr::Tcp(a) => format!("http://{a}{}", url.path.path()),
        UpstreamAddr::Unix(p) => format!("unix:{}:{}", p.display(), url.path.path()),
    }
}

/// `Name: value` → a header; the error names the header, never its value.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((name, value)) = s.split_once(':') else {
        return Err("--header: expected 'Name: value' (no colon; the value is not shown)".into());
    };
    // A name that is not one may be a value typed without its colon: not shown either.
    let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        "--header: what comes before the first ':' is not a header name (not shown)".to_string()
    })?;
    if OWN_HEADERS.contains(&header.as_str()) {
        return Err(format!("--header: {header} is set by pin itself"));
    }
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("--header {header}: the value is not a valid header value"))?;
    value.set_sensitive(true);
    Ok((header, value))
}

/// Why pinning failed: the step (the MCP method, or `start`), and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {why}")]
pub struct PinError {
    pub step: String,
    pub why: String,
}

fn fail(step: &str, why: impl Into<String>) -> PinError {
    PinError {
        step: step.to_string(),
        why: why.into(),
    }
}

/// Connects, lists every tool, prompt and resource template the server advertises, and pins
/// them; the connection is closed (the session deleted, the child stopped) whatever happens.
pub async fn pin(server: &Server, timeout: Duration) -> Result<PinSet, PinError> {
    let mut peer = match server {
        Server::Http { url, headers } => Peer::Http(HttpPeer::new(url, headers, timeout)),
        Server::Stdio { argv } => Peer::Stdio(StdioPeer::spawn(argv)?),
    };
    let listed = list_all(&mut peer, timeout).await;
    peer.close().await;
    let defs = listed?;
    Ok(PinSet::from_definitions(Some(server.source()), &defs))
}

async fn list_all(peer: &mut Peer, timeout: Duration) -> Result<Vec<Definition>, PinError> {
    let init = json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "mcp-sentinel-pin", "version": env!("CARGO_PKG_VERSION")},
    });
    let result = peer.request("initialize", init, timeout).await?;
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("initialize", "the result has no protocolVersion"))?;
    peer.set_version(version)?;
    let info = result.get("serverInfo");
    let field = |k: &str| info.and_then(|i| i.get(k)).and_then(Value::as_str);
    eprintln!(
        "pin: initialize: {:?} {:?}, protocol {version:?}",
        field("name").unwrap_or("?"),
        field("version").unwrap_or("?")
    );
    peer.notify("notifications/initialized", timeout).await?;
    let capabilities = result.get("capabilities");
    let mut defs: Vec<Definition> = Vec::new();
    let mut named: HashMap<(Kind, String), usize> = HashMap::new();
    for (kind, capability, method, member) in [
        (Kind::Tool, "tools", "tools/list", "tools"),
        (Kind::Prompt, "prompts", "prompts/list", "prompts"),
        (
            Kind::Template,
            "resources",
            "resources/templates/list",
            "resourceTemplates",
        ),
    ] {
        if capabilities.and_then(|c| c.get(capability)).is_none() {
            continue;
        }
        let before = defs.len();
        for item in list(peer, method, member, timeout).await? {
            let Some(def) = Definition::of(kind, &item) else {
                eprintln!(
                    "pin: {method}: an item without a {} is left out",
                    kind.name_field()
                );
                continue;
            };
            match named.get(&(kind, def.name.clone())) {
                Some(&i) if defs[i].fingerprint == def.fingerprint => {}
                Some(_) => {
                    return Err(fail(
                        method,
                        format!("two different definitions named {:?}", def.name),
                    ));
                }
                None => {
                    named.insert((kind, def.name.clone()), defs.len());
                    defs.push(def);
                }
            }
        }
        eprintln!("pin: {method}: {} pinned", defs.len() - before);
    }
    Ok(defs)
}

/// Every item of a paginated list, following `nextCursor` until it is absent.
async fn list(
    peer: &mut Peer,
    method: &str,
    member: &str,
    timeout: Duration,
) -> Result<Vec<Value>, PinError> {
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let mut result = peer.request(method, params, timeout).await?;
        match result.get_mut(member).map(Value::take) {
            Some(Value::Array(page)) => items.extend(page),
            _ => return Err(fail(method, format!("the result has no {member} array"))),
        }
        cursor = match result.get("nextCursor") {
            None | Some(Value::Null) => return Ok(items),
            Some(Value::String(c)) if !seen.insert(c.clone()) => {
                return Err(fail(
                    method,
                    format!("the server repeated the cursor {c:?} (a pagination loop)"),
                ));
            }
            Some(Value::String(c)) => Some(c.clone()),
            Some(_) => return Err(fail(method, "nextCursor is not a string")),
        };
    }
    Err(fail(
        method,
        format!("more than {MAX_PAGES} pages (a pagination loop?)"),
    ))
}

/// The answer to request `id` in `msg`, if `msg` is one: its result, or the step's error.
fn answer_of(msg: &Value, id: u64, step: &str) -> Option<Result<Value, PinError>> {
    if msg.get("method").is_some() || msg.get("id") != Some(&json!(id)) {
        return None;
    }
    Some(if let Some(e) = msg.get("error") {
        Err(fail(step, rpc_error(e)))
    } else {
        match msg.get("result") {
            Some(r @ Value::Object(_)) => Ok(r.clone()),
            _ => Err(fail(step, "the answer has no result object")),
        }
    })
}

/// `JSON-RPC error <code> <message>` of an error object.
fn rpc_error(e: &Value) -> String {
    let code = e.get("code").map_or_else(|| "?".into(), Value::to_string);
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    format!("JSON-RPC error {code} {message}")
}

fn request_body(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// `step` done within `timeout`, or its error.
async fn within<T>(
    timeout: Duration,
    step: &str,
    f: impl Future<Output = Result<T, PinError>>,
) -> Result<T, PinError> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| Err(fail(step, format!("no answer in {timeout:?}"))))
}

enum Peer {
    Http(HttpPeer),
    Stdio(StdioPeer),
}

impl Peer {
    async fn request(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, PinError> {
        let exchange = async {
            match self {
                Peer::Http(p) => p.request(method, params).await,
                Peer::Stdio(p) => p.request(method, params).await,
            }
        };
        within(timeout, method, exchange).await
    }

    async fn notify(&mut self, method: &str, timeout: Duration) -> Result<(), PinError> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        let send = async {
            match self {
                Peer::Http(p) => p.post(method, &body).await.map(drop),
                Peer::Stdio(p) => p.write(method, &body).await,
            }
        };
        within(timeout, method, send).await
    }

    fn set_version(&mut self, version: &str) -> Result<(), PinError> {
        if let Peer::Http(p) = self {
            let v = HeaderValue::from_str(version).map_err(|_| {
                fail(
                    "initialize",
                    format!("protocolVersion {version:?} is not a version"),
                )
            })?;
            p.headers.insert(MCP_PROTOCOL_VERSION, v);
        }
        Ok(())
    }

    async fn close(self) {
        match self {
            Peer::Http(p) => p.close().await,
            Peer::Stdio(p) => p.close().await,
        }
    }
}

/// Streamable HTTP, over the proxy's upstream pool (one keep-alive connection at a time).
struct HttpPeer {
    pool: std::sync::Arc<UpstreamPool>,
    uri: http::Uri,
    /// Sent on every request: the user's, `Host`, and once known the session and version.
    headers: HeaderMap,
    source: String,
    next_id: u64,
}

impl HttpPeer {
    fn new(url: &UpstreamUrl, user: &HeaderMap, timeout: Duration) -> Self {
        let mut cfg = Config::default().upstream;
        cfg.connect_timeout = timeout;
        cfg.pool_max_idle = 1;
        let mut headers = user.clone();
        headers.entry(HOST).or_insert_with(|| url.host.clone());
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        headers.entry(ACCEPT).or_insert(HeaderValue::from_static(
            "application/json, text/event-stream",
        ));
        Self {
            pool: UpstreamPool::new(&cfg, Dial::Addr(url.addr.clone())),
            uri: url
                .path
                .as_str()
                .parse()
                .expect("a path and query is a URI"),
            headers,
            source: url_source(url),
            next_id: 0,
        }
    }

    async fn send(
        &self,
        step: &str,
        method: Method,
        body: Bytes,
    ) -> Result<http::Response<ProxyBody>, PinError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        let (resp, lease) = self.pool.send(req).await.map_err(|e| match e {
            SendError::Connect(e) => fail(step, format!("cannot connect to {}: {e}", self.source)),
            SendError::Reset(e) => fail(step, format!("the connection failed: {e}")),
        })?;
        let (parts, body) = resp.into_parts();
        Ok(http::Response::from_parts(
            parts,
            ProxyBody::upstream(body, None, lease),
        ))
    }

    /// POSTs one message; a status other than 2xx is the step's error.
    async fn post(&self, step: &str, msg: &Value) -> Result<http::Response<ProxyBody>, PinError> {
        let resp = self
            .send(step, Method::POST, Bytes::from(msg.to_string()))
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // The body may say why, as a JSON-RPC error.
        let why = read_limited(resp.into_body(), step)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("error").map(rpc_error))
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        Err(fail(step, format!("HTTP {status}{why}")))
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value, PinError> {
        self.next_id += 1;
        let id = self.next_id;
        let resp = self.post(method, &request_body(id, method, params)).await?;
        if method == "initialize"
            && let Some(sid) = resp.headers().get(MCP_SESSION_ID)
        {
            if sid.is_empty() || !sid.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) {
                return Err(fail(method, "the Mcp-Session-Id is not visible ASCII"));
            }
            self.headers.insert(MCP_SESSION_ID, sid.clone());
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        let body = resp.into_body();
        if is_sse {
            return read_sse(body, id, method).await;
        }
        let bytes = read_limited(body, method).await?;
        let msg: Value = serde_json::from_slice(&bytes)
            .map_err(|e| fail(method, format!("malformed JSON: {e}")))?;
        answer_of(&msg, id, method).unwrap_or_else(|| {
            Err(fail(
                method,
                "the answer is not the response to the request",
            ))
        })
    }

    /// Ends the session, if there is one; a server that cannot is no failure.
    async fn close(self) {
        if !self.headers.contains_key(MCP_SESSION_ID) {
            return;
        }
        let delete = self.send("DELETE", Method::DELETE, Bytes::new());
        if let Ok(Ok(resp)) = tokio::time::timeout(GRACE, delete).await {
            let _ = tokio::time::timeout(GRACE, read_limited(resp.into_body(), "DELETE")).await;
        }
    }
}

/// A whole body, at most [`MAX_MESSAGE`] bytes.
async fn read_limited(mut body: ProxyBody, step: &str) -> Result<Vec<u8>, PinError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| fail(step, format!("the answer broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_MESSAGE {
                return Err(fail(step, format!("an answer over {MAX_MESSAGE} bytes")));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Reads events until the response to `id`; requests and notifications of the server on the
/// stream are passed over.
async fn read_sse(mut body: ProxyBody, id: u64, step: &str) -> Result<Value, PinError> {
    let mut events = EventReader::new();
    let mut data = Vec::new();
    loop {
        let ended = match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(bytes) = frame.into_data() {
                    events.feed(&bytes);
                }
                false
            }
            Some(Err(e)) => return Err(fail(step, format!("the event stream broke off: {e}"))),
            None => {
                events.finish();
                true
            }
        };
        while let Some((event, _)) = events.next_event() {
            data.clear();
            if !sse::data(event, &mut data) || data.is_empty() {
                continue;
            }
            let msg: Value = serde_json::from_slice(&data)
                .map_err(|e| fail(step, format!("malformed JSON in an event: {e}")))?;
            if let Some(answer) = answer_of(&msg, id, step) {
                return answer;
            }
        }
        if ended {
            return Err(fail(step, "the event stream ended before the answer"));
        }
        if events.pending().len() > MAX_MESSAGE {
            return Err(fail(step, format!("an event over {MAX_MESSAGE} bytes")));
        }
    }
}

/// A child process speaking JSON-RPC lines; its stderr is ours.
struct StdioPeer {
    child: Child,
    stdin: ChildStdin,
    lines: LineReader<BufReader<ChildStdout>>,
    next_id: u64,
}

impl StdioPeer {
    fn spawn(argv: &[String]) -> Result<Self, PinError> {
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A group of its own, so stopping it stops what it started (launch::stop).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail("start", format!("cannot run {}: {e}", argv[0])))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(fail("start", "the child has no stdin or stdout"));
        };
        Ok(Self {
            child,
            stdin,
            lines: LineReader::new(BufReader::new(stdout), MAX_MESSAGE),
            next_id: 0,
        })
    }

    async fn write(&mut self, step: &str, msg: &Value) -> Result<(), PinError> {
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        let written = async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await
        };
        written
            .await
            .map_err(|e| fail(step, format!("cannot write to the server: {e}")))
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value, PinError> {
        self.next_id += 1;
        let id = self.next_id;
        self.write(method, &request_body(id, method, params))
            .await?;
        loop {
            let line = match self.lines.next().await {
                Ok(Some(Line::Text(line))) => line,
                Ok(Some(Line::TooLong { .. })) => {
                    return Err(fail(method, format!("a line over {MAX_MESSAGE} bytes")));
                }
                Ok(None) => return Err(fail(method, self.gone().await)),
                Err(e) => return Err(fail(method, format!("cannot read from the server: {e}"))),
            };
            let msg: Value = serde_json::from_slice(&line)
                .map_err(|e| fail(method, format!("malformed JSON: {e}")))?;
            if let Some(answer) = answer_of(&msg, id, method) {
                return answer;
            }
            // A request of the server's: ping is answered, anything else is not offered
            // (the client declared no capabilities). Notifications are passed over.
            if let (Some(m), Some(rid)) = (msg.get("method").and_then(Value::as_str), msg.get("id"))
            {
                let answer = if m == "ping" {
                    json!({"jsonrpc": "2.0", "id": rid, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": rid,
                           "error": {"code": -32601, "message": "Method not found"}})
                };
                self.write(method, &answer).await?;
            }
        }
    }

    /// Why the server's stdout ended.
    async fn gone(&mut self) -> String {
        match tokio::time::timeout(GRACE, self.child.wait()).await {
            Ok(Ok(status)) => format!("the server exited ({status}) before answering"),
            _ => "the server closed its stdout before answering".into(),
        }
    }

    /// Closes stdin, then stops the child as the MCP spec says (wait, SIGTERM, SIGKILL).
    async fn close(self) {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        launch::stop(&mut child, GRACE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_without_showing_their_values() {
        let (n, v) = parse_header("Authorization: Bearer s3cret").unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("authorization", "Bearer s3cret")
        );
        assert!(v.is_sensitive());
        for bad in [
            "Authorization Bearer s3cret",
            "Bad Name: s3cret",
            "X: s3cret\u{7f}",
        ] {
            let e = parse_header(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
        assert!(parse_header("Mcp-Session-Id: x").is_err());
    }

    #[test]
    fn the_source_holds_no_query_and_no_arguments() {
        let s = Server::from_args(Some("http://127.0.0.1:9/mcp?key=s3cret"), &[], vec![]).unwrap();
        assert_eq!(s.source(), "http://127.0.0.1:9/mcp");
        let s = Server::from_args(Some("unix:/run/m.sock:/mcp?k=1"), &[], vec![]).unwrap();
        assert_eq!(s.source(), "unix:/run/m.sock:/mcp");
        let s = Server::from_args(None, &[], vec!["srv".into(), "--token=s3cret".into()]).unwrap();
        assert_eq!(s.source(), "srv");
        assert!(Server::from_args(Some("http://u:p@127.0.0.1:9/mcp"), &[], vec![]).is_err());
        assert!(Server::from_args(None, &["A: b".into()], vec!["srv".into()]).is_err());
    }

    #[test]
    fn answers_are_matched_by_id() {
        let ok = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": []}});
        assert!(answer_of(&ok, 2, "tools/list").is_none());
        assert!(answer_of(&ok, 3, "tools/list").unwrap().is_ok());
        let err = json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32601, "message": "Method not found"}});
        assert_eq!(
            answer_of(&err, 3, "tools/list")
                .unwrap()
                .unwrap_err()
                .to_string(),
            "tools/list: JSON-RPC error -32601 Method not found"
        );
        let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
        assert!(answer_of(&ping, 3, "tools/list").is_none());
    }
}
