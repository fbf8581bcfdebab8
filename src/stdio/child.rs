//! One child process and the routing of its lines. Every request written to it gets an id of
//! the child's own (a counter), so answers never cross between callers; a progress token is
//! swapped the same way. The child's answers and progress go back to the call that asked,
//! with the caller's id and token restored byte for byte. What the child starts itself
//! (server→client requests, notifications) goes to the session's sink, or, while the caller
//! has a call open on a stream, on that stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::StdioMetrics;
use super::json::{self, Kind, Peek};
use super::launch::{self, Launch};
use super::lines::{Line, LineReader};

/// JSON-RPC "internal error": what a call gets when its child fails it.
const INTERNAL_ERROR: i64 = -32603;
/// Messages queued for a child's stdin; then writers wait (at most `write_timeout`).
const STDIN_QUEUE: usize = 16;
/// Messages queued for one call; progress beyond it is dropped, never the answer.
const CALL_QUEUE: usize = 64;
/// Bytes of progress and server messages queued for one call, or for a session's GET stream:
/// beyond it they are dropped (and counted), so a reader that does not read costs this much.
pub const QUEUE_BYTES: usize = 8 << 20;
/// A stderr line is logged up to this size.
const STDERR_LINE_MAX: usize = 8 * 1024;
/// From closing a child's stdin to SIGTERM, and from SIGTERM to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the bridge does with a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves one legacy session.
    Session,
    /// A warm child for modern-era (stateless) requests.
    Pool,
    /// The one child of `shared` sharing.
    Shared,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Session => "session",
            Role::Pool => "pool",
            Role::Shared => "shared",
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ChildError {
    #[error("the stdio server has exited")]
    Ended,
    #[error("the stdio server stopped reading its input")]
    Hung,
    #[error("the message could not be rewritten for the stdio server")]
    Unroutable,
}

/// A message for a call: something the child sent before its answer, or the answer.
pub enum Message {
    Interim(Bytes),
    Final(Bytes),
}

/// A queue of messages bounded by count and by bytes: a session's GET stream.
pub struct SinkTx {
    tx: mpsc::Sender<Bytes>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

pub struct SinkRx {
    rx: mpsc::Receiver<Bytes>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

pub fn sink(count: usize) -> (SinkTx, SinkRx) {
    let (tx, rx) = mpsc::channel(count);
    let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        SinkTx {
            tx,
            bytes: bytes.clone(),
        },
        SinkRx { rx, bytes },
    )
}

impl SinkTx {
    /// Queues `b` if the queue has room for it; false when dropped.
    fn offer(&self, b: Bytes) -> bool {
        if !reserve(&self.bytes, b.len()) {
            return false;
        }
        let n = b.len();
        if self.tx.try_send(b).is_err() {
            self.bytes.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl SinkRx {
    pub async fn recv(&mut self) -> Option<Bytes> {
        let b = self.rx.recv().await?;
        self.bytes.fetch_sub(b.len(), Ordering::Relaxed);
        Some(b)
    }
}

/// Takes `n` bytes of a queue's budget, if they fit.
fn reserve(queued: &std::sync::atomic::AtomicUsize, n: usize) -> bool {
    queued
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
            (q + n <= QUEUE_BYTES).then_some(q + n)
        })
        .is_ok()
}

struct Route {
    /// Whose call this is, with the caller's id: the key of `by_caller_id`.
    key: String,
    caller_id: String,
    caller_token: Option<String>,
    to: mpsc::Sender<Message>,
    /// Bytes of interim messages queued for the call.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// The caller reads this call as a stream: the child's own requests may go on it.
    streams: bool,
}

impl Route {
    /// Queues an interim message if the call's queue has room; false when dropped.
    fn interim(&self, b: Bytes) -> bool {
        if !reserve(&self.queued, b.len()) {
            return false;
        }
        let n = b.len();
        if self.to.try_send(Message::Interim(b)).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[derive(Default)]
struct Routes {
    pending: HashMap<u64, Route>,
    /// The caller (session) and its id → the child's, for the caller's cancellations: a
    /// caller can name only its own calls.
    by_caller_id: HashMap<String, u64>,
    /// Where the child's own messages go when no call streams (session children).
    sink: Option<SinkTx>,
    ended: bool,
}

pub struct Child {
    pub pid: u32,
    pub role: Role,
    stdin: mpsc::Sender<Vec<u8>>,
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    /// Cancelled once the process is gone (no call is taken after).
    ended: CancellationToken,
    /// Cancelled to ask the child to stop.
    stop: CancellationToken,
    write_timeout: Duration,
    metrics: Arc<StdioMetrics>,
    /// Why it ended: stopped (by the sentinel), exited (status 0) or crashed.
    cause: std::sync::OnceLock<&'static str>,
    started: std::time::Instant,
    /// It stopped reading its input (and was stopped for it).
    is_hung: std::sync::atomic::AtomicBool,
    /// Where a pool child records the `requestState` of its answers (see [`Affinity`]).
    affinity: Option<Arc<Affinity>>,
    me: std::sync::Weak<Child>,
}

/// Which pool child issued a `requestState` (an `input_required` answer of the modern era): a
/// server may seal it with a key of its own process, so the retry that carries it back must
/// reach the same child. Bounded: the oldest are forgotten first.
#[derive(Default)]
pub struct Affinity {
    map: Mutex<Remembered>,
}

/// The issuing child of each `requestState`, and the order they came in.
type Remembered = (
    HashMap<String, std::sync::Weak<Child>>,
    std::collections::VecDeque<String>,
);

/// `requestState`s remembered at most.
const AFFINITY_MAX: usize = 4096;

impl Affinity {
    fn remember(&self, state: String, child: &Child) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (by_state, order) = &mut *m;
        if by_state.insert(state.clone(), child.me.clone()).is_none() {
            order.push_back(state);
            while order.len() > AFFINITY_MAX {
                if let Some(old) = order.pop_front() {
                    by_state.remove(&old);
                }
            }
        }
    }

    /// The live child that issued `state`.
    pub fn child_for(&self, state: &str) -> Option<Arc<Child>> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.0.get(state).and_then(std::sync::Weak::upgrade)
    }
}

pub struct ChildOptions {
    pub role: Role,
    pub max_line_bytes: usize,
    pub write_timeout: Duration,
    /// The session's sink for the child's own messages; `None`: the bridge answers them.
    pub sink: Option<SinkTx>,
    /// Pool children: where to record the `requestState`s they issue.
    pub affinity: Option<Arc<Affinity>>,
}

impl Child {
    pub fn start(
        launch: &Launch,
        opts: ChildOptions,
        metrics: Arc<StdioMetrics>,
    ) -> std::io::Result<Arc<Child>> {
        let mut proc = launch.spawn()?;
        let pid = proc.id().unwrap_or(0);
        let stdin = proc.stdin.take().expect("stdin is piped");
        let stdout = proc.stdout.take().expect("stdout is piped");
        let stderr = proc.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel(STDIN_QUEUE);
        let child = Arc::new_cyclic(|me| Child {
            me: me.clone(),
            affinity: opts.affinity,
            pid,
            role: opts.role,
            stdin: tx,
            routes: Mutex::new(Routes {
                sink: opts.sink,
                ..Routes::default()
            }),
            next_id: AtomicU64::new(1),
            ended: CancellationToken::new(),
            stop: CancellationToken::new(),
            write_timeout: opts.write_timeout,
            metrics: metrics.clone(),
            cause: std::sync::OnceLock::new(),
            started: std::time::Instant::now(),
            is_hung: std::sync::atomic::AtomicBool::new(false),
        });
        metrics
            .children
            .with_label_values(&[opts.role.as_str()])
            .inc();
        tracing::info!(pid, role = opts.role.as_str(), "stdio server started");
        tokio::spawn(write_stdin(child.clone(), stdin, rx));
        tokio::spawn(read_stdout(
            child.clone(),
            LineReader::new(BufReader::new(stdout), opts.max_line_bytes),
        ));
        tokio::spawn(log_stderr(
            pid,
            LineReader::new(BufReader::new(stderr), STDERR_LINE_MAX),
        ));
        tokio::spawn(watch(child.clone(), proc));
        Ok(child)
    }

    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Ended, or being stopped: no new work for it.
    pub fn is_closing(&self) -> bool {
        self.stop.is_cancelled() || self.ended.is_cancelled()
    }

    /// Why it ended, once it has: stopped (by the sentinel), exited or crashed.
    pub fn cause(&self) -> Option<&'static str> {
        self.cause.get().copied()
    }

    /// How long it has been running.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks the child to stop: stdin closed, then SIGTERM, then SIGKILL to its group.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a request (`line`, read as `peek`) of `owner` (the caller's session; `None`:
    /// nobody can name the call later) under an id of the child's own, and returns the call
    /// its answer will come to. `streams`: the caller reads the call as a stream.
    /// `cancel_on_drop`: dropping the call unanswered cancels it in the child (modern era:
    /// a closed stream is a cancellation).
    pub async fn call(
        self: &Arc<Self>,
        line: &str,
        peek: &Peek<'_>,
        owner: Option<&str>,
        streams: bool,
        cancel_on_drop: bool,
    ) -> Result<Call, ChildError> {
        let caller_id = peek.id.map(|r| r.get().to_string()).unwrap_or_default();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ours = n.to_string();
        let id = peek.id.ok_or(ChildError::Unroutable)?;
        let token = peek.progress_token();
        let caller_token = token.map(|t| t.get().to_string());
        let mut edits = vec![(id, ours.as_str())];
        edits.extend(token.map(|t| (t, ours.as_str())));
        let out = json::splice(line, &edits).ok_or(ChildError::Unroutable)?;
        let (to, rx) = mpsc::channel(CALL_QUEUE);
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A call nobody can name gets a key nobody can write.
        let key = match owner {
            Some(o) => caller_key(o, &caller_id),
            None => format!("\u{0}{n}"),
        };
        {
            let mut r = self.lock();
            if r.ended {
                return Err(ChildError::Ended);
            }
            r.by_caller_id.insert(key.clone(), n);
            r.pending.insert(
                n,
                Route {
                    key,
                    caller_id,
                    caller_token,
                    to,
                    queued: queued.clone(),
                    streams,
                },
            );
        }
        let call = Call {
            child: self.clone(),
            id: n,
            rx,
            queued,
            answered: false,
            cancel_on_drop,
        };
        self.write(out.into_bytes()).await?;
        Ok(call)
    }

    /// Writes a notification or a response of `owner` (the caller's session). A cancellation
    /// names the call by the caller's id; the child knows it by its own, and only the
    /// owner's own calls can be named.
    pub async fn send(
        &self,
        line: &str,
        peek: &Peek<'_>,
        owner: Option<&str>,
    ) -> Result<(), ChildError> {
        if peek.kind() == Kind::Notification && peek.method() == "notifications/cancelled" {
            let named = peek.param("requestId");
            let ours = owner.zip(named).and_then(|(o, id)| {
                self.lock()
                    .by_caller_id
                    .get(&caller_key(o, id.get()))
                    .copied()
            });
            let Some(n) = ours else {
                // Nothing of the caller's is in flight under that id.
                return Ok(());
            };
            let named = named.expect("a cancellation found by its id has one");
            let out =
                json::splice(line, &[(named, &n.to_string())]).ok_or(ChildError::Unroutable)?;
            return self.write(out.into_bytes()).await;
        }
        self.write(line.as_bytes().to_vec()).await
    }

    async fn write(&self, line: Vec<u8>) -> Result<(), ChildError> {
        // One message, one line: a line break between tokens (which JSON allows) would make
        // the child read two messages, the second one never checked.
        let line = match json::one_line(&line) {
            std::borrow::Cow::Borrowed(_) => line,
            std::borrow::Cow::Owned(o) => o,
        };
        match self.stdin.send_timeout(line, self.write_timeout).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_))
                if self.is_hung.load(Ordering::Relaxed) =>
            {
                Err(ChildError::Hung)
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(ChildError::Ended),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.hung();
                Err(ChildError::Hung)
            }
        }
    }

    fn hung(&self) {
        self.is_hung.store(true, Ordering::Relaxed);
        if !self.stop.is_cancelled() {
            tracing::warn!(
                pid = self.pid,
                timeout = ?self.write_timeout,
                "stdio server stopped reading its input: stopping it"
            );
            self.metrics.hung.inc();
        }
        self.stop();
    }

    /// Routes one line of the child's stdout.
    fn dispatch(&self, line: &[u8]) {
        let Some(text) = std::str::from_utf8(line).ok() else {
            self.bad_line("not_json", line);
            return;
        };
        if text.trim().is_empty() {
            return;
        }
        let Some(peek) = Peek::read(text) else {
            self.bad_line("not_json", line);
            return;
        };
        match peek.kind() {
            Kind::Response => self.answer(text, &peek),
            Kind::Notification if peek.method() == "notifications/progress" => {
                self.progress(text, &peek)
            }
            _ => self.unsolicited(text, &peek),
        }
    }

    fn bad_line(&self, kind: &'static str, line: &[u8]) {
        self.metrics.bad_lines.with_label_values(&[kind]).inc();
        let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
        tracing::warn!(pid = self.pid, line = %shown, bytes = line.len(), "stdio server wrote a line that is not an MCP message: dropped");
    }

    fn answer(&self, text: &str, peek: &Peek<'_>) {
        let n = peek.id.and_then(|id| id.get().parse::<u64>().ok());
        let route = n.and_then(|n| {
            let mut r = self.lock();
            let route = r.pending.remove(&n)?;
            r.by_caller_id.remove(&route.key);
            Some(route)
        });
        let Some(route) = route else {
            self.metrics
                .bad_lines
                .with_label_values(&["unroutable"])
                .inc();
            tracing::debug!(
                pid = self.pid,
                "stdio server answered no call in flight: dropped"
            );
            return;
        };
        if let Some(affinity) = &self.affinity
            && let Some(state) = json::request_state(text)
        {
            affinity.remember(state, self);
        }
        match peek
            .id
            .and_then(|id| json::splice(text, &[(id, &route.caller_id)]))
        {
            Some(out) => deliver_final(&route.to, Bytes::from(out)),
            None => self.fail(route, "the stdio server's answer could not be read"),
        }
    }

    fn progress(&self, text: &str, peek: &Peek<'_>) {
        let n = peek
            .param("progressToken")
            .and_then(|t| t.get().parse::<u64>().ok());
        let r = self.lock();
        let Some((route, token)) = n.and_then(|n| {
            let route = r.pending.get(&n)?;
            Some((route, route.caller_token.clone()?))
        }) else {
            self.metrics
                .bad_lines
                .with_label_values(&["unroutable"])
                .inc();
            return;
        };
        if let Some(out) = peek
            .param("progressToken")
            .and_then(|t| json::splice(text, &[(t, &token)]))
            && !route.interim(Bytes::from(out))
        {
            self.metrics.dropped.inc();
        }
    }

    /// A request or notification the child started. Only a session child has one caller it
    /// can belong to: on the caller's call stream in flight, else on the session's GET stream.
    /// A child shared by callers has nobody to send it to: its requests are refused, its
    /// notifications dropped (never guessed onto some caller's stream).
    fn unsolicited(&self, text: &str, peek: &Peek<'_>) {
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        if self.role == Role::Session {
            let r = self.lock();
            let streaming = r
                .pending
                .iter()
                .filter(|(_, route)| route.streams && !route.to.is_closed())
                .max_by_key(|(n, _)| **n)
                .map(|(_, route)| route);
            let queued = match (streaming, &r.sink) {
                (Some(route), _) => route.interim(bytes),
                (None, Some(sink)) => sink.offer(bytes),
                (None, None) => false,
            };
            if !queued {
                self.metrics.dropped.inc();
            }
            return;
        }
        if peek.kind() == Kind::Request {
            let id = peek.id.map_or("null", |i| i.get());
            let refusal = json::error_line(
                id,
                -32601,
                "server-to-client requests are not available from a shared stdio server",
            );
            let _ = self.stdin.try_send(refusal.into_bytes());
        } else {
            self.metrics.dropped.inc();
        }
    }

    fn fail(&self, route: Route, why: &str) {
        let line = json::error_line(&route.caller_id, INTERNAL_ERROR, why);
        deliver_final(&route.to, Bytes::from(line));
    }

    /// The call answered by an over-long line (its id as the child wrote it) fails.
    fn too_long(&self, bytes: usize, id: Option<String>) {
        self.metrics
            .bad_lines
            .with_label_values(&["too_long"])
            .inc();
        tracing::warn!(
            pid = self.pid,
            bytes,
            "stdio server wrote a line over upstream.stdio.max_line_bytes: dropped"
        );
        let route = id.and_then(|id| id.parse::<u64>().ok()).and_then(|n| {
            let mut r = self.lock();
            let route = r.pending.remove(&n)?;
            r.by_caller_id.remove(&route.key);
            Some(route)
        });
        if let Some(route) = route {
            self.fail(
                route,
                &format!("the stdio server's answer ({bytes} bytes) is over the line limit"),
            );
        }
    }

    /// The process is gone: every call in flight gets an error at once; the sink closes.
    fn end(&self, cause: &'static str) {
        let pending = {
            let mut r = self.lock();
            r.ended = true;
            r.sink = None;
            r.by_caller_id.clear();
            std::mem::take(&mut r.pending)
        };
        let _ = self.cause.set(cause);
        self.ended.cancel();
        for (_, route) in pending {
            self.fail(route, "the stdio server exited before answering");
        }
        self.metrics
            .children
            .with_label_values(&[self.role.as_str()])
            .dec();
        self.metrics.exits.with_label_values(&[cause]).inc();
    }
}

/// The `by_caller_id` key of a caller's id in a session.
fn caller_key(owner: &str, caller_id: &str) -> String {
    format!("{owner}\u{0}{caller_id}")
}

fn deliver_final(to: &mpsc::Sender<Message>, line: Bytes) {
    if let Err(mpsc::error::TrySendError::Full(m)) = to.try_send(Message::Final(line)) {
        let to = to.clone();
        tokio::spawn(async move {
            let _ = to.send(m).await;
        });
    }
}

/// A request in flight in a child.
pub struct Call {
    child: Arc<Child>,
    id: u64,
    rx: mpsc::Receiver<Message>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    answered: bool,
    cancel_on_drop: bool,
}

impl Call {
    /// The next message for this call; after `Final`, `None`.
    pub async fn next(&mut self) -> Option<Message> {
        if self.answered {
            return None;
        }
        let m = self.rx.recv().await;
        match &m {
            Some(Message::Interim(b)) => {
                self.queued.fetch_sub(b.len(), Ordering::Relaxed);
            }
            Some(Message::Final(_)) | None => self.answered = true,
        }
        m
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.cancel_on_drop && !self.answered {
            // Legacy: a closed stream is no cancellation. The call goes on in the child and
            // stays nameable by the caller's `notifications/cancelled`; its answer, when it
            // comes, has nobody to go to and ends the route.
            return;
        }
        let was_pending = {
            let mut r = self.child.lock();
            match r.pending.remove(&self.id) {
                Some(route) => {
                    r.by_caller_id.remove(&route.key);
                    true
                }
                None => false,
            }
        };
        if was_pending && self.cancel_on_drop {
            let line = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{},"reason":"the client closed the stream"}}}}"#,
                self.id
            );
            let _ = self.child.stdin.try_send(line.into_bytes());
        }
    }
}

async fn write_stdin(
    child: Arc<Child>,
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let line = tokio::select! {
            () = child.stop.cancelled() => break,
            line = rx.recv() => match line {
                Some(l) => l,
                None => break,
            },
        };
        let write = async {
            stdin.write_all(&line).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        // No timer here: a child that stops reading fills the pipe, then this queue, and the
        // request that finds the queue full for `write_timeout` is the one told (504).
        tokio::select! {
            () = child.stop.cancelled() => break,
            written = write => if let Err(e) = written {
                tracing::debug!(pid = child.pid, error = %e, "stdio server's input closed");
                break;
            },
        }
    }
    // Dropping stdin closes it: the first step of stopping a child.
}

async fn read_stdout(
    child: Arc<Child>,
    mut lines: LineReader<BufReader<tokio::process::ChildStdout>>,
) {
    loop {
        match lines.next().await {
            Ok(Some(Line::Text(t))) => child.dispatch(&t),
            Ok(Some(Line::TooLong { bytes, id })) => child.too_long(bytes, id),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(pid = child.pid, error = %e, "stdio server's output failed");
                break;
            }
        }
    }
}

async fn log_stderr(pid: u32, mut lines: LineReader<BufReader<tokio::process::ChildStderr>>) {
    while let Ok(Some(line)) = lines.next().await {
        match line {
            Line::Text(t) => {
                let text = String::from_utf8_lossy(&t);
                tracing::info!(target: "mcp_sentinel::stdio::stderr", pid, line = %text, "stdio server stderr");
            }
            Line::TooLong { bytes, .. } => {
                tracing::info!(target: "mcp_sentinel::stdio::stderr", pid, bytes, "stdio server stderr: a line too long to log");
            }
        }
    }
}

/// Waits for the process to exit, or stops it when asked; then fails what was in flight.
async fn watch(child: Arc<Child>, mut proc: tokio::process::Child) {
    let cause = tokio::select! {
        status = proc.wait() => match status {
            Ok(s) if s.success() => "exited",
            Ok(s) => {
                tracing::warn!(pid = child.pid, status = %s, "stdio server exited");
                "crashed"
            }
            Err(_) => "crashed",
        },
        () = child.stop.cancelled() => {
            // Its stdin closes as the writer sees the same token.
            launch::stop(&mut proc, STOP_GRACE).await;
            "stopped"
        }
    };
    child.stop.cancel();
    launch::signal_group(child.pid, nix::sys::signal::Signal::SIGKILL);
    tracing::info!(pid = child.pid, cause, "stdio server ended");
    child.end(cause);
}
