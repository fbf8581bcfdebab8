//! A stdio MCP server as an upstream. The bridge is a streamable-HTTP MCP server in memory
//! whose sessions are child processes: the proxy reaches it over an in-memory HTTP/1.1
//! connection exactly as it reaches an HTTP upstream, so every stage of the pipeline runs
//! unchanged (one code path for both transports).
//!
//! - legacy (`initialize`, `Mcp-Session-Id`): one child per session; its own requests and
//!   notifications go on the session's GET stream or on a call's SSE stream; DELETE and
//!   `idle_ttl` end the child; at `max_children`, 503 + `Retry-After`;
//! - modern (2026-07-28, stateless): a warm pool of children, ids remapped per child;
//! - `shared`: one child for everyone (initialized once by the sentinel), ids remapped.

pub mod child;
pub mod json;
pub mod launch;
pub mod lines;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::config::stdio::{Sharing, StdioSettings};
use crate::mcp::Era;
use crate::mcp::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use child::{Call, Child, ChildError, ChildOptions, Message, Role, SinkRx, SinkTx};
use json::{Kind, Peek};
use launch::{Launch, LaunchError};

pub type BridgeBody = UnsyncBoxBody<Bytes, Infallible>;

/// How long a call may take and still be answered as one JSON document; a call still running
/// then (or that reports progress first) is answered as an SSE stream, if the client takes one.
const JSON_WINDOW: Duration = Duration::from_millis(500);
/// Messages a session's child may send with no GET stream open to take them.
const SINK_QUEUE: usize = 256;
/// What the bridge tells a client to wait when every child slot is taken.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that lived this long before it crashed does not add to the backoff.
const HEALTHY_LIFE: Duration = Duration::from_secs(30);
/// The code of a 404 for a session that is gone: the pipeline's own for an unknown one.
const SESSION_NOT_FOUND: i64 = -32600;
/// The protocol version the sentinel initializes a shared child with.
const SHARED_INIT_VERSION: &str = "2025-11-25";

pub struct StdioMetrics {
    pub children: IntGaugeVec,
    pub exits: IntCounterVec,
    pub restarts: IntCounter,
    pub refused: IntCounterVec,
    pub bad_lines: IntCounterVec,
    pub dropped: IntCounter,
    pub hung: IntCounter,
}

impl StdioMetrics {
    pub fn new(registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let m = Self {
            children: IntGaugeVec::new(
                Opts::new(
                    "mcp_sentinel_stdio_children",
                    "Stdio server processes running, by role (session, pool, shared)",
                ),
                &["role"],
            )?,
            exits: IntCounterVec::new(
                Opts::new(
                    "mcp_sentinel_stdio_child_exits_total",
                    "Stdio server processes ended, by cause: stopped (by the sentinel), exited (status 0), crashed",
                ),
                &["cause"],
            )?,
            restarts: IntCounter::new(
                "mcp_sentinel_stdio_restarts_total",
                "Pool and shared stdio servers started again after they ended",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "mcp_sentinel_stdio_refused_total",
                    "Sessions refused a stdio server, by reason: capacity (max_children), backoff (servers crashing), start_failed, start_timeout",
                ),
                &["reason"],
            )?,
            bad_lines: IntCounterVec::new(
                Opts::new(
                    "mcp_sentinel_stdio_bad_lines_total",
                    "Lines of a stdio server's stdout dropped, by kind: not_json, too_long, unroutable",
                ),
                &["kind"],
            )?,
            dropped: IntCounter::new(
                "mcp_sentinel_stdio_messages_dropped_total",
                "Notifications of a stdio server dropped because nobody read them fast enough",
            )?,
            hung: IntCounter::new(
                "mcp_sentinel_stdio_hung_total",
                "Stdio servers stopped because they stopped reading their input",
            )?,
        };
        registry.register(Box::new(m.children.clone()))?;
        registry.register(Box::new(m.exits.clone()))?;
        registry.register(Box::new(m.restarts.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.bad_lines.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.hung.clone()))?;
        for role in [Role::Session, Role::Pool, Role::Shared] {
            m.children.with_label_values(&[role.as_str()]);
        }
        for cause in ["stopped", "exited", "crashed"] {
            m.exits.with_label_values(&[cause]);
        }
        for reason in ["capacity", "backoff", "start_failed", "start_timeout"] {
            m.refused.with_label_values(&[reason]);
        }
        for kind in ["not_json", "too_long", "unroutable"] {
            m.bad_lines.with_label_values(&[kind]);
        }
        Ok(Arc::new(m))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

struct Session {
    child: Arc<Child>,
    /// The child's own messages, waiting for a GET stream (taken while one is open).
    sink: Mutex<Option<SinkRx>>,
    last_used: Mutex<Instant>,
}

impl Session {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    fn crashed(&mut self, lived: Duration) {
        if lived >= HEALTHY_LIFE {
            self.failures = 0;
            self.until = None;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << self.failures.saturating_sub(1).min(5))
            .min(BACKOFF_MAX);
        self.until = Some(Instant::now() + wait);
    }

    fn healthy(&mut self) {
        self.failures = 0;
        self.until = None;
    }

    fn left(&self) -> Option<Duration> {
        self.until
            .and_then(|u| u.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

pub struct Bridge {
    launch: Launch,
    st: StdioSettings,
    metrics: Arc<StdioMetrics>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Pool children (session sharing) or the one shared child, by slot.
    slots: Mutex<Vec<Option<Arc<Child>>>>,
    /// The shared child's answer to the sentinel's `initialize` (its `result`).
    shared_init: Mutex<Option<String>>,
    backoff: Mutex<Backoff>,
    /// Session children running or starting (see `take_slot`).
    session_slots: Mutex<usize>,
    /// Which pool child issued which `requestState`.
    affinity: Arc<child::Affinity>,
    stop: CancellationToken,
    max_body: usize,
}

impl Bridge {
    /// Checks the command and starts the warm children (pool, or the shared child).
    pub fn start(
        argv: Vec<String>,
        st: &StdioSettings,
        max_body: usize,
        registry: &Registry,
    ) -> Result<Arc<Self>, BridgeError> {
        let launch = Launch::new(argv, st)?;
        let metrics = StdioMetrics::new(registry)?;
        let slots = match st.sharing {
            Sharing::Session => st.pool,
            Sharing::Shared => 1,
        };
        let bridge = Arc::new(Self {
            launch,
            st: st.clone(),
            metrics,
            sessions: Mutex::new(HashMap::new()),
            slots: Mutex::new(vec![None; slots]),
            shared_init: Mutex::new(None),
            backoff: Mutex::new(Backoff::default()),
            session_slots: Mutex::new(0),
            affinity: Arc::default(),
            stop: CancellationToken::new(),
            max_body,
        });
        for slot in 0..slots {
            tokio::spawn(bridge.clone().keep_slot(slot));
        }
        tokio::spawn(bridge.clone().reap_idle());
        Ok(bridge)
    }

    /// An in-memory HTTP/1.1 connection to the bridge.
    pub fn connect(self: &Arc<Self>) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let bridge = self.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let bridge = bridge.clone();
                async move { Ok::<_, Infallible>(bridge.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        client
    }

    /// Ready: not stopping, not backing off from crashes, and the warm children running.
    pub fn ready(&self) -> bool {
        if self.stop.is_cancelled() || self.lock_backoff().left().is_some() {
            return false;
        }
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .all(|c| c.as_ref().is_some_and(|c| !c.is_ended()))
            && (self.st.sharing == Sharing::Session || self.lock_shared_init().is_some())
    }

    /// Stops every child (stdin closed, SIGTERM, SIGKILL to each group) and waits for them,
    /// at most `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        self.stop.cancel();
        let mut children: Vec<Arc<Child>> = self
            .lock_sessions()
            .drain()
            .map(|(_, s)| s.child.clone())
            .collect();
        children.extend(
            self.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .flatten()
                .cloned(),
        );
        for c in &children {
            c.stop();
        }
        let all = async {
            for c in &children {
                c.ended().cancelled().await;
            }
        };
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!("stdio servers still running at the shutdown deadline");
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_shared_init(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.shared_init.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn options(&self, role: Role, sink: Option<SinkTx>) -> ChildOptions {
        ChildOptions {
            affinity: (role == Role::Pool).then(|| self.affinity.clone()),
            role,
            max_line_bytes: self.st.max_line_bytes,
            write_timeout: self.st.write_timeout,
            sink,
        }
    }

    /// Keeps one warm child running in `slot`, restarting it with backoff when it ends.
    async fn keep_slot(self: Arc<Self>, slot: usize) {
        let role = match self.st.sharing {
            Sharing::Session => Role::Pool,
            Sharing::Shared => Role::Shared,
        };
        let mut first = true;
        while !self.stop.is_cancelled() {
            let backing_off = self.lock_backoff().left();
            if let Some(wait) = backing_off {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            if !first {
                self.metrics.restarts.inc();
            }
            first = false;
            let started = Instant::now();
            let child =
                match Child::start(&self.launch, self.options(role, None), self.metrics.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the stdio server");
                        self.lock_backoff().crashed(Duration::ZERO);
                        continue;
                    }
                };
            if role == Role::Shared && !self.initialize_shared(&child).await {
                child.stop();
                child.ended().cancelled().await;
                self.lock_backoff().crashed(Duration::ZERO);
                continue;
            }
            self.slots.lock().unwrap_or_else(|p| p.into_inner())[slot] = Some(child.clone());
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = child.ended().cancelled() => {}
            }
            if role == Role::Shared {
                *self.lock_shared_init() = None;
                // Its sessions lived in the child that ended.
                self.lock_sessions()
                    .retain(|_, s| !Arc::ptr_eq(&s.child, &child));
            }
            self.lock_backoff().crashed(started.elapsed());
        }
    }

    /// The sentinel's own `initialize` of a shared child; its result answers every client's.
    async fn initialize_shared(&self, child: &Arc<Child>) -> bool {
        let init = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{SHARED_INIT_VERSION}","capabilities":{{}},"clientInfo":{{"name":"mcp-sentinel","version":"{}"}}}}}}"#,
            env!("CARGO_PKG_VERSION")
        );
        let peek = Peek::read(&init).expect("a valid request");
        let answer = async {
            let mut call = child.call(&init, &peek, None, false, false).await.ok()?;
            final_of(&mut call).await
        };
        let Ok(Some(line)) = tokio::time::timeout(self.st.start_timeout, answer).await else {
            tracing::error!(timeout = ?self.st.start_timeout, "the shared stdio server did not answer initialize");
            self.metrics
                .refused
                .with_label_values(&["start_timeout"])
                .inc();
            return false;
        };
        let Some(result) = json::result_of(&line) else {
            tracing::error!("the shared stdio server refused initialize");
            return false;
        };
        let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let peek = Peek::read(done).expect("a valid notification");
        if child.send(done, &peek, None).await.is_err() {
            return false;
        }
        *self.lock_shared_init() = Some(result);
        true
    }

    /// Ends sessions idle for `idle_ttl`, with their children.
    async fn reap_idle(self: Arc<Self>) {
        let every =
            (self.st.idle_ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let idle: Vec<Arc<Session>> = {
                let mut sessions = self.lock_sessions();
                let ids: Vec<String> = sessions
                    .iter()
                    .filter(|(_, s)| s.idle_for() >= self.st.idle_ttl)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| sessions.remove(id)).collect()
            };
            for s in idle {
                tracing::info!(pid = s.child.pid, "stdio session idle: ending it");
                if s.child.role == Role::Session {
                    s.child.stop();
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BridgeBody> {
        match *req.method() {
            Method::POST => self.post(req).await,
            Method::GET => self.get(&req),
            Method::DELETE => self.delete(&req),
            _ => plain(StatusCode::METHOD_NOT_ALLOWED),
        }
    }

    fn session(&self, req: &Request<Incoming>) -> Result<Option<(String, Arc<Session>)>, ()> {
        let Some(raw) = req.headers().get(MCP_SESSION_ID) else {
            return Ok(None);
        };
        let id = raw.to_str().map_err(|_| ())?;
        match self.lock_sessions().get(id) {
            Some(s) if !s.child.is_closing() => Ok(Some((id.to_string(), s.clone()))),
            _ => Err(()),
        }
    }

    async fn post(self: Arc<Self>, req: Request<Incoming>) -> Response<BridgeBody> {
        let session = self.session(&req);
        let streams = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let modern = req
            .headers()
            .get(MCP_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| Era::of_version(v) == Era::Modern);
        let body = match Limited::new(req.into_body(), self.max_body + 1024)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "null",
                    -32600,
                    "body too large",
                );
            }
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return error(StatusCode::BAD_REQUEST, "null", -32700, "body is not UTF-8");
        };
        let batch = text.trim_start().starts_with('[');
        let raws: Vec<&str> = if batch {
            match serde_json::from_str::<Vec<&RawValue>>(text) {
                Ok(items) => items.into_iter().map(RawValue::get).collect(),
                Err(_) => return error(StatusCode::BAD_REQUEST, "null", -32700, "parse error"),
            }
        } else {
            vec![text]
        };
        let Some(peeks) = raws
            .iter()
            .map(|r| Peek::read(r))
            .collect::<Option<Vec<_>>>()
        else {
            return error(StatusCode::BAD_REQUEST, "null", -32700, "parse error");
        };
        let first_id = peeks
            .iter()
            .find_map(|p| p.id.map(|i| i.get().to_string()))
            .unwrap_or_else(|| "null".into());
        let (child, owner) = match session {
            Err(()) => {
                return error(
                    StatusCode::NOT_FOUND,
                    &first_id,
                    SESSION_NOT_FOUND,
                    "Session not found",
                );
            }
            Ok(Some((sid, s))) => {
                s.touch();
                (s.child.clone(), Some(sid))
            }
            Ok(None)
                if !batch
                    && peeks[0].method() == "initialize"
                    && peeks[0].kind() == Kind::Request =>
            {
                return self.initialize(text, &peeks[0]).await;
            }
            Ok(None) if modern => match self.warm_child(peeks.first()) {
                Some(c) => (c, None),
                None => return self.busy(&first_id, "no stdio server is running yet"),
            },
            Ok(None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &first_id,
                    -32600,
                    "Bad Request: Mcp-Session-Id header is required",
                );
            }
        };
        let owner = owner.as_deref();
        // A session child serves one caller; pool and shared children serve many, which must
        // not answer (or cancel) each other, nor change the child for everyone.
        let stateless = child.role != Role::Session;
        let shared = child.role == Role::Shared;
        let mut calls: Vec<Result<Call, String>> = Vec::new();
        for (raw, peek) in raws.iter().zip(&peeks) {
            let id = peek.id.map_or("null", |i| i.get());
            let sent = match (peek.kind(), peek.method()) {
                // The shared child was initialized once, by the sentinel.
                (Kind::Request, "initialize") if shared => match self.shared_initialize(id) {
                    Some(line) => {
                        calls.push(Err(line));
                        Ok(())
                    }
                    None => Err(ChildError::Ended),
                },
                (Kind::Notification, "notifications/initialized") if shared => Ok(()),
                (Kind::Request, _) => child
                    .call(raw, peek, owner, streams && !batch, modern)
                    .await
                    .map(|c| calls.push(Ok(c))),
                (Kind::Response, _) if stateless => Ok(()),
                _ => child.send(raw, peek, owner).await,
            };
            match sent {
                Ok(()) => {}
                Err(e) if batch => {
                    // Each request of the batch that was not sent is answered on its own.
                    if peek.kind() == Kind::Request {
                        calls.push(Err(json::error_line(id, -32603, &e.to_string())));
                    }
                }
                Err(e) => return failed(e, &first_id, stateless),
            }
        }
        if calls.is_empty() {
            return plain(StatusCode::ACCEPTED);
        }
        if batch {
            let mut out = Vec::from(&b"["[..]);
            for (i, (call, peek)) in calls
                .iter_mut()
                .zip(peeks.iter().filter(|p| p.kind() == Kind::Request))
                .enumerate()
            {
                if i > 0 {
                    out.push(b',');
                }
                let answer = match call {
                    Err(line) => Bytes::from(std::mem::take(line)),
                    Ok(call) => match final_of(call).await {
                        Some(b) => b,
                        None => Bytes::from(json::error_line(
                            peek.id.map_or("null", |i| i.get()),
                            -32603,
                            "the stdio server exited before answering",
                        )),
                    },
                };
                out.extend_from_slice(&answer);
            }
            out.push(b']');
            return json_response(StatusCode::OK, Bytes::from(out), None);
        }
        match calls.pop().expect("one call") {
            Ok(call) => answer(call, streams, &first_id).await,
            Err(line) => json_response(StatusCode::OK, Bytes::from(line), None),
        }
    }

    /// The shared child's `initialize` result, as the answer to request `id`.
    fn shared_initialize(&self, id: &str) -> Option<String> {
        let result = self.lock_shared_init().clone()?;
        Some(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
        ))
    }

    /// A new legacy session: a child of its own (session sharing), or the shared child's
    /// initialize result under a new session id.
    async fn initialize(self: &Arc<Self>, text: &str, peek: &Peek<'_>) -> Response<BridgeBody> {
        let id = peek.id.map_or("null", |i| i.get());
        if self.st.sharing == Sharing::Shared {
            let (Some(line), Some(child)) = (self.shared_initialize(id), self.warm_child(None))
            else {
                return self.busy(id, "the shared stdio server is starting");
            };
            let sid = self.open_session(child, None);
            return json_response(StatusCode::OK, Bytes::from(line), Some(&sid));
        }
        if let Some(wait) = self.lock_backoff().left() {
            self.metrics.refused.with_label_values(&["backoff"]).inc();
            return retry_later(id, wait, "the stdio server keeps exiting; retry later");
        }
        // The slot is taken before the child starts (and given back when it ends), so
        // concurrent initializes cannot start more than max_children between them.
        let Some(slot) = self.take_slot() else {
            self.metrics.refused.with_label_values(&["capacity"]).inc();
            return retry_later(
                id,
                FULL_RETRY_AFTER,
                "every stdio server slot is taken (upstream.stdio.max_children)",
            );
        };
        let (sink_tx, sink_rx) = child::sink(SINK_QUEUE);
        let started = Instant::now();
        let child = match Child::start(
            &self.launch,
            self.options(Role::Session, Some(sink_tx)),
            self.metrics.clone(),
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the stdio server");
                self.metrics
                    .refused
                    .with_label_values(&["start_failed"])
                    .inc();
                self.lock_backoff().crashed(Duration::ZERO);
                return error(
                    StatusCode::BAD_GATEWAY,
                    id,
                    -32603,
                    "the stdio server could not be started",
                );
            }
        };
        let answer = async {
            let mut call = child.call(text, peek, None, false, false).await.ok()?;
            final_of(&mut call).await
        };
        let line = match tokio::time::timeout(self.st.start_timeout, answer).await {
            Err(_) => {
                child.stop();
                self.metrics
                    .refused
                    .with_label_values(&["start_timeout"])
                    .inc();
                tracing::warn!(pid = child.pid, timeout = ?self.st.start_timeout, "stdio server did not answer initialize: stopped");
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    id,
                    -32603,
                    "the stdio server did not answer initialize in time (upstream.stdio.start_timeout)",
                );
            }
            Ok(Some(line)) if !child.is_ended() => line,
            // Gone, or what came was the error every call gets when its child ends.
            Ok(_) => {
                self.lock_backoff().crashed(started.elapsed());
                return error(
                    StatusCode::BAD_GATEWAY,
                    id,
                    -32603,
                    "the stdio server exited before answering initialize",
                );
            }
        };
        if json::result_of(&line).is_none() {
            // The server refused (a version it does not speak): no session, no child.
            child.stop();
            return json_response(StatusCode::OK, line, None);
        }
        self.lock_backoff().healthy();
        // The slot is the child's until it ends. Its crash, once it served, is its session's
        // business: it does not slow down anyone else's (a caller could crash its own child
        // on purpose); a child that fails to start does.
        tokio::spawn({
            let child = child.clone();
            async move {
                child.ended().cancelled().await;
                drop(slot);
            }
        });
        let sid = self.open_session(child, Some(sink_rx));
        json_response(StatusCode::OK, line, Some(&sid))
    }

    /// A session child's slot of `max_children` (the pool's are taken for good).
    fn take_slot(self: &Arc<Self>) -> Option<Slot> {
        let mut taken = self.session_slots.lock().unwrap_or_else(|p| p.into_inner());
        if *taken + self.st.pool >= self.st.max_children {
            return None;
        }
        *taken += 1;
        Some(Slot(self.clone()))
    }

    fn open_session(&self, child: Arc<Child>, sink: Option<SinkRx>) -> String {
        let sid = new_session_id();
        let session = Arc::new(Session {
            child: child.clone(),
            sink: Mutex::new(sink),
            last_used: Mutex::new(Instant::now()),
        });
        self.lock_sessions().insert(sid.clone(), session);
        sid
    }

    /// The child a request goes to: the one that issued the `requestState` it carries back,
    /// else the least busy warm child (pool), or the shared child.
    fn warm_child(&self, request: Option<&Peek<'_>>) -> Option<Arc<Child>> {
        if let Some(state) = request.and_then(|p| p.param("requestState"))
            && let Some(c) = self
                .affinity
                .child_for(state.get())
                .filter(|c| !c.is_closing())
        {
            return Some(c);
        }
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
            .filter(|c| !c.is_closing())
            .min_by_key(|c| c.in_flight())
            .cloned()
    }

    fn busy(&self, id: &str, why: &str) -> Response<BridgeBody> {
        let wait = self.lock_backoff().left().unwrap_or(BACKOFF_FIRST);
        retry_later(id, wait, why)
    }

    /// The session's GET stream: what its child sends on its own.
    fn get(&self, req: &Request<Incoming>) -> Response<BridgeBody> {
        let session = match self.session(req) {
            Err(()) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "null",
                    SESSION_NOT_FOUND,
                    "Session not found",
                );
            }
            Ok(None) => return plain(StatusCode::METHOD_NOT_ALLOWED),
            Ok(Some((_, s))) => s,
        };
        let Some(rx) = session
            .sink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            // Shared children have no stream of their own; a session has one at a time.
            return match session.child.role {
                Role::Session => error(
                    StatusCode::CONFLICT,
                    "null",
                    -32600,
                    "Conflict: a stream is already open for this session",
                ),
                _ => plain(StatusCode::METHOD_NOT_ALLOWED),
            };
        };
        let stream = SinkStream {
            rx: Some(rx),
            session,
        };
        let body = futures_util::stream::unfold(stream, |mut s| async move {
            let line = s.rx.as_mut()?.recv().await?;
            Some((Ok(Frame::data(sse_event(&line))), s))
        });
        sse_response(StreamBody::new(body))
    }

    fn delete(&self, req: &Request<Incoming>) -> Response<BridgeBody> {
        let Some(id) = req
            .headers()
            .get(MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
        else {
            return plain(StatusCode::METHOD_NOT_ALLOWED);
        };
        let Some(session) = self.lock_sessions().remove(id) else {
            return error(
                StatusCode::NOT_FOUND,
                "null",
                SESSION_NOT_FOUND,
                "Session not found",
            );
        };
        if session.child.role == Role::Session {
            session.child.stop();
        }
        plain(StatusCode::OK)
    }
}

/// A taken session-child slot, given back when dropped.
struct Slot(Arc<Bridge>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self
            .0
            .session_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *taken = taken.saturating_sub(1);
    }
}

/// The receiver of a session's GET stream, handed back when the stream closes.
struct SinkStream {
    rx: Option<SinkRx>,
    session: Arc<Session>,
}

impl Drop for SinkStream {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            *self.session.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        }
    }
}

/// The call's answer, skipping what came before it; `None` if the child ended first.
async fn final_of(call: &mut Call) -> Option<Bytes> {
    while let Some(m) = call.next().await {
        if let Message::Final(b) = m {
            return Some(b);
        }
    }
    None
}

/// One call's answer: JSON when it comes within the window with nothing before it (or when
/// the client takes no stream), else an SSE stream of everything for the call.
async fn answer(mut call: Call, streams: bool, id: &str) -> Response<BridgeBody> {
    if !streams {
        return match final_of(&mut call).await {
            Some(b) => json_response(StatusCode::OK, b, None),
            None => error(
                StatusCode::BAD_GATEWAY,
                id,
                -32603,
                "the stdio server exited before answering",
            ),
        };
    }
    let first = match tokio::time::timeout(JSON_WINDOW, call.next()).await {
        Ok(Some(Message::Final(b))) => return json_response(StatusCode::OK, b, None),
        Ok(None) => {
            return error(
                StatusCode::BAD_GATEWAY,
                id,
                -32603,
                "the stdio server exited before answering",
            );
        }
        Ok(Some(Message::Interim(b))) => Some(b),
        Err(_) => None,
    };
    let body = futures_util::stream::unfold((first, Some(call)), |(first, call)| async move {
        if let Some(b) = first {
            return Some((Ok(Frame::data(sse_event(&b))), (None, call)));
        }
        let mut call = call?;
        match call.next().await? {
            Message::Interim(b) => Some((Ok(Frame::data(sse_event(&b))), (None, Some(call)))),
            // The stream ends after the answer; the call (and its route) with it.
            Message::Final(b) => Some((Ok(Frame::data(sse_event(&b))), (None, None))),
        }
    });
    sse_response(StreamBody::new(body))
}

fn sse_event(line: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(line.len() + 22);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(line);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn sse_response<S>(body: StreamBody<S>) -> Response<BridgeBody>
where
    S: futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
{
    let mut resp = Response::new(UnsyncBoxBody::new(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn json_response(status: StatusCode, body: Bytes, session: Option<&str>) -> Response<BridgeBody> {
    let mut resp = Response::new(UnsyncBoxBody::new(Full::new(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(sid) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        resp.headers_mut().insert(MCP_SESSION_ID, sid);
    }
    resp
}

fn plain(status: StatusCode) -> Response<BridgeBody> {
    let mut resp = Response::new(UnsyncBoxBody::new(Full::new(Bytes::new())));
    *resp.status_mut() = status;
    resp
}

fn error(status: StatusCode, id: &str, code: i64, message: &str) -> Response<BridgeBody> {
    json_response(
        status,
        Bytes::from(json::error_line(id, code, message)),
        None,
    )
}

fn retry_later(id: &str, wait: Duration, why: &str) -> Response<BridgeBody> {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, id, -32603, why);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

/// A request the child could not take.
fn failed(e: ChildError, id: &str, stateless: bool) -> Response<BridgeBody> {
    match e {
        ChildError::Ended if stateless => {
            retry_later(id, BACKOFF_FIRST, "the stdio server exited; retry")
        }
        // The session's child is gone: the session with it.
        ChildError::Ended => error(
            StatusCode::NOT_FOUND,
            id,
            SESSION_NOT_FOUND,
            "Session not found",
        ),
        ChildError::Hung => error(
            StatusCode::GATEWAY_TIMEOUT,
            id,
            -32603,
            "the stdio server is not reading its input",
        ),
        ChildError::Unroutable => error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            "the request could not be routed to the stdio server",
        ),
    }
}

/// 128 random bits, hex: unguessable, visible ASCII as the spec asks.
fn new_session_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
