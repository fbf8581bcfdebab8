//! The load generator: N keep-alive HTTP/1.1 connections, each closed-loop (one request in
//! flight), for a fixed time, reading every response body to the end and recording every latency.
//! It runs on one thread so it takes at most one of the machine's cores; the report shows its CPU.
//!
//! Requests are stateless (2025-06-18, no session) unless the target needs sessions
//! (`sentinel-stdio`: a legacy stdio server answers only inside one): then each connection first
//! opens a session of its own (`initialize`, `notifications/initialized`), sends every request in
//! it, and the run ends them all with DELETE after the timed window, outside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request that takes longer than this counts as an error (and its connection is replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that fails this often stops; the run then reports its errors.
const MAX_ERRORS_PER_CONN: u64 = 20;
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-sentinel-bench","version":"0.1.0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The edges of the timed window, where the caller reads the CPU and memory of the processes
/// under test (every session open at both).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Edge {
    Open,
    Close,
}

/// What one workload sends and how its first answer on each connection is checked.
pub struct Workload {
    pub key: &'static str,
    pub title: &'static str,
    pub body: Bytes,
    pub check: Check,
}

pub enum Check {
    /// `application/json` with a `result` object.
    Json,
    /// `text/event-stream` with this many `data:` events, the last one the result.
    Sse { events: usize },
    /// `application/json` whose result lists exactly this many tools.
    ToolsList { tools: usize },
}

/// One measured run against one target.
pub struct Sample {
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Nanoseconds, sorted.
    latencies: Vec<u64>,
}

impl Sample {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        Duration::from_nanos(self.latencies[index])
    }
}

/// The fixed parts of every request, built once per run.
struct Template {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    fn new(
        addr: SocketAddr,
        body: Bytes,
        extra: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(&addr.to_string())?);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(VERSION_HEADER, HeaderValue::from_static("2025-06-18"));
        if let Some((name, value)) = extra {
            headers.insert(name.clone(), value.clone());
        }
        Ok(Self {
            uri: Uri::from_static("/mcp"),
            headers,
            body,
        })
    }

    fn request(&self, session: Option<&HeaderValue>) -> Request<Full<Bytes>> {
        self.build(Method::POST, self.body.clone(), session)
    }

    fn build(
        &self,
        method: Method,
        body: Bytes,
        session: Option<&HeaderValue>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let Some(sid) = session {
            req.headers_mut().insert(SESSION_HEADER, sid.clone());
        }
        req
    }

    /// A new legacy session on this connection: its id, once the server took `initialized`.
    async fn open_session(&self, sender: &mut Sender) -> Result<HeaderValue> {
        let mut init = self.build(
            Method::POST,
            Bytes::from_static(INITIALIZE.as_bytes()),
            None,
        );
        // Clients send no version header with `initialize`: the version is being agreed.
        init.headers_mut().remove(VERSION_HEADER);
        let (parts, body) = exchange(sender, init).await?;
        ensure!(
            parts.status == StatusCode::OK,
            "initialize: status {}: {}",
            parts.status,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        let sid = parts
            .headers
            .get(SESSION_HEADER)
            .cloned()
            .context("initialize answered without an Mcp-Session-Id")?;
        let note = self.build(
            Method::POST,
            Bytes::from_static(INITIALIZED.as_bytes()),
            Some(&sid),
        );
        let (parts, _) = exchange(sender, note).await?;
        ensure!(
            parts.status == StatusCode::ACCEPTED,
            "notifications/initialized: status {}",
            parts.status
        );
        Ok(sid)
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<(http::response::Parts, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(req).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts, body))
}

/// Opens `conns` connections (with `sessions`, a legacy session on each), checks one answer on
/// each, then drives them all for `duration`; `edge` is called when the timed window opens and
/// when it closes. `extra` is a header sent on every request (the `sentinel-jwt` target's
/// `Authorization`). Must run inside a Tokio runtime (the bench uses a current-thread one).
pub async fn run(
    addr: SocketAddr,
    workload: &Workload,
    conns: usize,
    duration: Duration,
    extra: Option<&(HeaderName, HeaderValue)>,
    sessions: bool,
    edge: &mut dyn FnMut(Edge),
) -> Result<Sample> {
    let template = Arc::new(Template::new(addr, workload.body.clone(), extra)?);
    let mut opened = Vec::new();
    let outcome = async {
        let mut senders = Vec::with_capacity(conns);
        for _ in 0..conns {
            let mut sender = connect(addr).await?;
            let session = if sessions {
                let sid = tokio::time::timeout(REQUEST_TIMEOUT, template.open_session(&mut sender))
                    .await
                    .map_err(|_| anyhow!("opening a session timed out"))?
                    .with_context(|| format!("opening a session at {addr}"))?;
                opened.push(sid.clone());
                Some(sid)
            } else {
                None
            };
            let first = template.request(session.as_ref());
            let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, first))
                .await
                .map_err(|_| anyhow!("first request timed out"))??;
            workload
                .check
                .validate(&parts, &body)
                .with_context(|| format!("unexpected answer to {} from {addr}", workload.title))?;
            senders.push((sender, session));
        }
        Ok::<_, anyhow::Error>(drive_all(addr, &template, senders, duration, edge).await)
    }
    .await;
    // Sessions end whatever happened, so their children do not pile up at the proxy.
    if !opened.is_empty()
        && let Err(e) = close_sessions(addr, &template, &opened).await
    {
        eprintln!("bench: ending the load generator's sessions at {addr}: {e:#}");
    }
    outcome?
}

/// DELETE for each session, on one fresh connection (the run's own may be gone).
async fn close_sessions(addr: SocketAddr, template: &Template, sids: &[HeaderValue]) -> Result<()> {
    let mut sender = connect(addr).await?;
    for sid in sids {
        let req = template.build(Method::DELETE, Bytes::new(), Some(sid));
        let (parts, _) = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, req))
            .await
            .map_err(|_| anyhow!("DELETE timed out"))??;
        ensure!(
            parts.status.is_success(),
            "DELETE of a session: status {}",
            parts.status
        );
    }
    Ok(())
}

async fn drive_all(
    addr: SocketAddr,
    template: &Arc<Template>,
    senders: Vec<(Sender, Option<HeaderValue>)>,
    duration: Duration,
    edge: &mut dyn FnMut(Edge),
) -> Result<Sample> {
    edge(Edge::Open);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|(sender, session)| {
            tokio::spawn(drive(sender, session, addr, template.clone(), deadline))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut last = start;
    for task in tasks {
        let worker = task.await.context("load generator task panicked")?;
        latencies.extend_from_slice(&worker.latencies);
        errors += worker.errors;
        first_error = first_error.or(worker.first_error);
        last = last.max(worker.last);
    }
    edge(Edge::Close);
    if latencies.is_empty() {
        bail!(
            "no request to {addr} succeeded: {}",
            first_error.unwrap_or_else(|| "no error recorded".into())
        );
    }
    latencies.sort_unstable();
    Ok(Sample {
        requests: latencies.len() as u64,
        errors,
        first_error,
        elapsed: last - start,
        latencies,
    })
}

struct Worker {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    last: Instant,
}

async fn drive(
    mut sender: Sender,
    session: Option<HeaderValue>,
    addr: SocketAddr,
    template: Arc<Template>,
    deadline: Instant,
) -> Worker {
    let mut worker = Worker {
        latencies: Vec::with_capacity(64 * 1024),
        errors: 0,
        first_error: None,
        last: Instant::now(),
    };
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        let req = template.request(session.as_ref());
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, req)).await;
        let failure = match outcome {
            Ok(Ok((parts, body))) if parts.status == StatusCode::OK && !body.is_empty() => {
                let done = Instant::now();
                worker.latencies.push((done - t0).as_nanos() as u64);
                worker.last = done;
                continue;
            }
            Ok(Ok((parts, _))) => format!("status {}", parts.status),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "request timed out".to_owned(),
        };
        worker.errors += 1;
        worker.first_error.get_or_insert(failure);
        if worker.errors >= MAX_ERRORS_PER_CONN {
            break;
        }
        // The connection may be gone (closed by the proxy, or mid-response): start a fresh one.
        match connect(addr).await {
            Ok(fresh) => sender = fresh,
            Err(_) => break,
        }
    }
    worker
}

impl Check {
    fn validate(&self, parts: &http::response::Parts, body: &[u8]) -> Result<()> {
        let preview = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        if let Some(challenge) = parts.headers.get(header::WWW_AUTHENTICATE) {
            ensure!(
                parts.status == StatusCode::OK,
                "status {} (www-authenticate: {}): {preview}",
                parts.status,
                String::from_utf8_lossy(challenge.as_bytes())
            );
        }
        ensure!(
            parts.status == StatusCode::OK,
            "status {}: {preview}",
            parts.status
        );
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match self {
            Check::Json | Check::ToolsList { .. } => {
                ensure!(
                    content_type.starts_with("application/json"),
                    "content-type {content_type:?}, want application/json: {preview}"
                );
                let value: serde_json::Value =
                    serde_json::from_slice(body).context("body is not JSON")?;
                let result = value
                    .get("result")
                    .ok_or_else(|| anyhow!("no result in {preview}"))?;
                if let Check::ToolsList { tools } = self {
                    let listed = result
                        .get("tools")
                        .and_then(|t| t.as_array())
                        .map_or(0, |t| t.len());
                    ensure!(listed == *tools, "{listed} tools listed, want {tools}");
                }
            }
            Check::Sse { events } => {
                ensure!(
                    content_type.starts_with("text/event-stream"),
                    "content-type {content_type:?}, want text/event-stream: {preview}"
                );
                let text = std::str::from_utf8(body).context("SSE body is not UTF-8")?;
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .collect();
                ensure!(
                    data.len() == *events,
                    "{} SSE data events, want {events}",
                    data.len()
                );
                let last: serde_json::Value = serde_json::from_str(data[data.len() - 1])
                    .context("last SSE event is not JSON")?;
                ensure!(last.get("result").is_some(), "last SSE event has no result");
            }
        }
        Ok(())
    }
}
