//! Audit: exactly one tamper-evident record per request, written when the request ends, through
//! a bounded queue per sink to stdout, files, Redis Streams and PostgreSQL, with a local spool
//! for sinks that are down and an optional fail-closed gate. `verify` reads a chain back.

pub mod record;
pub mod redact;
pub mod sink;
pub mod spool;
pub mod verify;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::audit::AuditConfig;
use crate::mcp::Method;
use crate::mcp::envelope::call_arguments;
use record::{ChainHead, Draft, Line, TargetNote};
use redact::Redactor;
use sink::Sink;
use spool::Spool;
use worker::{SinkMetrics, SinkState, Worker};

pub struct Auditor {
    /// Finished requests' drafts, on their way to the sealer; `None` once closed for shutdown.
    drafts: Mutex<Option<mpsc::Sender<Box<Draft>>>>,
    /// The chain this run writes (`<instance>/<run id>`).
    instance: Arc<str>,
    /// Drafts the sealer's queue had no room for. The sealer skips as many sequence numbers,
    /// so the chain shows the gap.
    lost: Arc<AtomicU64>,
    states: Vec<Arc<SinkState>>,
    dropped: Vec<prometheus::IntCounter>,
    pub fail_closed: bool,
    /// The sealer first, then one delivery task per sink.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    hurry: CancellationToken,
    /// Dropping it ends the audit thread (tests; a normal stop closes first).
    _thread: oneshot::Sender<()>,
}

/// How often a busy sealer takes what has queued up. Between takes the traffic threads hand
/// over drafts without waking it, so a record costs them no cross-thread wake-up.
const SEAL_TICK: Duration = Duration::from_millis(2);

/// The audit thread: a runtime of its own, so that sealing records (serializing, hashing) and
/// delivering them (the sinks' protocols, the spool) never take the traffic threads' time.
fn audit_thread() -> std::io::Result<(tokio::runtime::Handle, oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop))
}

/// What `open` starts on the audit thread.
struct Opened {
    drafts: mpsc::Sender<Box<Draft>>,
    instance: Arc<str>,
    lost: Arc<AtomicU64>,
    states: Vec<Arc<SinkState>>,
    dropped: Vec<prometheus::IntCounter>,
    tasks: Vec<JoinHandle<()>>,
}

impl Auditor {
    /// Starts the audit thread, opens every sink's spool and connection there (a sink that is
    /// down at start is only marked down) and starts the sealer and the delivery tasks. `None`
    /// when auditing is off.
    pub async fn start(
        cfg: &AuditConfig,
        registry: &Registry,
    ) -> Result<Option<Arc<Self>>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        let (thread, stop) = audit_thread().map_err(|e| format!("audit thread: {e}"))?;
        let hurry = CancellationToken::new();
        let opened = {
            let (cfg, registry, hurry) = (cfg.clone(), registry.clone(), hurry.clone());
            thread
                .spawn(async move { open(&cfg, &registry, hurry).await })
                .await
                .map_err(|e| format!("audit thread: {e}"))??
        };
        Ok(Some(Arc::new(Self {
            drafts: Mutex::new(Some(opened.drafts)),
            instance: opened.instance,
            lost: opened.lost,
            states: opened.states,
            dropped: opened.dropped,
            fail_closed: cfg.fail_closed,
            tasks: Mutex::new(opened.tasks),
            hurry,
            _thread: stop,
        })))
    }

    /// The chain this run writes (`<instance>/<run id>`).
    pub fn instance(&self) -> Arc<str> {
        self.instance.clone()
    }

    fn drafts(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Box<Draft>>>> {
        self.drafts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every sink would store a record now: delivered, or spooled, with room in its queue.
    pub fn can_record(&self) -> bool {
        self.states.iter().all(|s| s.can_store())
            && self.drafts().as_ref().is_some_and(|tx| tx.capacity() > 0)
    }

    /// Hands a finished request's draft to the sealer, which chains it and queues it for every
    /// sink. Never blocks: a full queue loses the record (counted; the chain shows the gap).
    pub fn submit(&self, draft: Draft) {
        let sent = match &*self.drafts() {
            Some(tx) => tx.try_send(Box::new(draft)).is_ok(),
            None => false,
        };
        if !sent {
            self.lost.fetch_add(1, Ordering::Relaxed);
            for d in &self.dropped {
                d.inc();
            }
            tracing::error!("audit record lost: queue full or closed");
        }
    }

    /// Stops taking records and delivers (or spools) every queued one, within `within`.
    /// True when every sink finished in time.
    pub async fn close(&self, within: Duration) -> bool {
        self.drafts().take();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let all = futures_util::future::join_all(tasks);
        tokio::pin!(all);
        if tokio::time::timeout(within, &mut all).await.is_ok() {
            return true;
        }
        // Out of time: stop trying sinks; what is left goes to the spool (local disk).
        self.hurry.cancel();
        if tokio::time::timeout(Duration::from_secs(2), &mut all)
            .await
            .is_err()
        {
            tracing::error!("audit delivery did not stop in time");
        }
        false
    }
}

/// On the audit thread: the metrics, every sink with its spool and delivery task, the sealer.
async fn open(
    cfg: &AuditConfig,
    registry: &Registry,
    hurry: CancellationToken,
) -> Result<Opened, String> {
    let records = IntCounterVec::new(
        Opts::new(
            "mcp_sentinel_audit_records_total",
            "Audit records by sink and result: delivered, spooled (sink down), dropped (lost)",
        ),
        &["sink", "result"],
    )
    .map_err(|e| e.to_string())?;
    let gauge = |name: &str, help: &str| {
        IntGaugeVec::new(
            Opts::new(format!("mcp_sentinel_audit_{name}"), help),
            &["sink"],
        )
        .map_err(|e| e.to_string())
    };
    let queue = gauge("queue_depth", "Audit records waiting in a sink's queue")?;
    let spool_bytes = gauge("spool_bytes", "Bytes of audit records spooled for a sink")?;
    let spool_records = gauge("spool_records", "Audit records spooled for a sink")?;
    let oldest = gauge(
        "oldest_undelivered_seconds",
        "Age of the oldest audit record a sink has not taken yet",
    )?;
    let up = gauge("sink_up", "1 while the sink takes deliveries")?;
    for c in [
        Box::new(records.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(queue.clone()),
        Box::new(spool_bytes.clone()),
        Box::new(spool_records.clone()),
        Box::new(oldest.clone()),
        Box::new(up.clone()),
    ] {
        registry.register(c).map_err(|e| e.to_string())?;
    }
    let mut senders = Vec::new();
    let mut states = Vec::new();
    let mut dropped = Vec::new();
    let mut workers = Vec::new();
    for sc in &cfg.sinks {
        let name = sc.name.as_str();
        let mut sink = Sink::new(&sc.kind).map_err(|e| format!("sink {name}: {e}"))?;
        let connected = match sink.connect().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(sink = name, error = %e, "audit sink down at start");
                false
            }
        };
        let spool = match &cfg.spool {
            Some(sp) => {
                let dir = sp.dir.join(name);
                let max = sp.max_bytes;
                let s = tokio::task::spawn_blocking(move || Spool::open(&dir, max))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("spool of sink {name}: {e}"))?;
                if !s.is_empty() {
                    tracing::info!(
                        sink = name,
                        records = s.records(),
                        "audit spool from an earlier run: delivering it first"
                    );
                }
                Some(s)
            }
            None => None,
        };
        let state = Arc::new(SinkState {
            name: name.to_string(),
            capacity: cfg.queue_capacity,
            depth: AtomicI64::new(0),
            up: AtomicBool::new(connected),
            spool_ok: AtomicBool::new(spool.as_ref().is_some_and(|s| s.has_room(64 * 1024))),
        });
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let metrics = SinkMetrics {
            delivered: records.with_label_values(&[name, "delivered"]),
            spooled: records.with_label_values(&[name, "spooled"]),
            dropped: records.with_label_values(&[name, "dropped"]),
            queue: queue.with_label_values(&[name]),
            spool_bytes: spool_bytes.with_label_values(&[name]),
            spool_records: spool_records.with_label_values(&[name]),
            oldest: oldest.with_label_values(&[name]),
            up: up.with_label_values(&[name]),
        };
        dropped.push(metrics.dropped.clone());
        let worker = Worker {
            sink,
            rx,
            spool,
            state: state.clone(),
            metrics,
            batch: cfg.batch_size,
            linger: cfg.flush_interval,
            retry: cfg.retry_interval,
            hurry: hurry.clone(),
        };
        workers.push(tokio::spawn(worker.run()));
        senders.push(tx);
        states.push(state);
    }
    let head = ChainHead::new(&cfg.instance);
    let instance = head.instance.clone();
    let lost = Arc::new(AtomicU64::new(0));
    let (drafts, rx) = mpsc::channel(cfg.queue_capacity);
    let sealer = Sealer {
        rx,
        head,
        senders,
        states: states.clone(),
        dropped: dropped.clone(),
        redactor: Redactor::new(&cfg.redact),
        lost: lost.clone(),
    };
    let mut tasks = vec![tokio::spawn(sealer.run())];
    tasks.extend(workers);
    Ok(Opened {
        drafts,
        instance,
        lost,
        states,
        dropped,
        tasks,
    })
}

/// Chains drafts into records, in the order they were submitted, and queues each record for
/// every sink. Ends when the drafts' queue closes; its sink queues close with it.
struct Sealer {
    rx: mpsc::Receiver<Box<Draft>>,
    head: ChainHead,
    senders: Vec<mpsc::Sender<Line>>,
    states: Vec<Arc<SinkState>>,
    dropped: Vec<prometheus::IntCounter>,
    redactor: Redactor,
    lost: Arc<AtomicU64>,
}

impl Sealer {
    async fn run(mut self) {
        // Idle, it waits to be woken by the next draft. Busy, it takes what has queued up
        // every tick, unwoken: a traffic thread's hand-over is then a push onto a queue.
        while let Some(first) = self.rx.recv().await {
            self.seal(*first);
            loop {
                let mut taken = 0;
                loop {
                    match self.rx.try_recv() {
                        Ok(d) => {
                            self.seal(*d);
                            taken += 1;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                if taken == 0 {
                    break;
                }
                tokio::time::sleep(SEAL_TICK).await;
            }
        }
    }

    fn seal(&mut self, mut d: Draft) {
        if let Some(body) = d.call_body.take() {
            let batch = d.elements.is_some();
            let args = call_arguments(&body, batch).unwrap_or_default();
            let redact = |target: Option<&TargetNote>, a: Value| {
                let tool = target.filter(|t| t.kind == "tool").map(|t| t.name.as_str());
                self.redactor.apply(tool, a)
            };
            match &mut d.elements {
                Some(elements) => {
                    for (e, a) in elements.iter_mut().zip(args) {
                        let method = e
                            .method
                            .as_deref()
                            .map_or(Method::Response, Method::from_name);
                        if has_arguments(method) {
                            e.arguments = a.map(|a| redact(e.target.as_ref(), a));
                        }
                    }
                }
                None => {
                    let a = args.into_iter().next().flatten();
                    d.arguments = a.map(|a| redact(d.target.as_ref(), a));
                }
            }
        }
        // Records lost before sealing leave their sequence numbers unused: a visible gap.
        self.head.seq += self.lost.swap(0, Ordering::Relaxed);
        let line = self.head.seal(&d);
        for (i, tx) in self.senders.iter().enumerate() {
            match tx.try_send(line.clone()) {
                Ok(()) => {
                    self.states[i].depth.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.dropped[i].inc();
                    tracing::error!(sink = %self.states[i].name, seq = line.seq, "audit record lost: queue full");
                }
            }
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
/// The messages whose `params.arguments` are recorded (redacted).
pub fn has_arguments(method: Method) -> bool {
    matches!(method, Method::ToolsCall | Method::PromptsGet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::ElementNote;

    fn sealer(lost: Arc<AtomicU64>) -> (Sealer, mpsc::Receiver<Line>) {
        let (tx, rx) = mpsc::channel(8);
        use crate::config::audit::{FieldRule, RedactAction, RedactConfig};
        let redact = RedactConfig {
            secrets: true,
            fields: Vec::new(),
            tools: vec![(
                "echo".into(),
                vec![FieldRule {
                    pointer: "/text".into(),
                    action: RedactAction::Hash,
                }],
            )],
        };
        let sealer = Sealer {
            rx: mpsc::channel(1).1,
            head: ChainHead::new("t"),
            senders: vec![tx],
            states: vec![Arc::new(SinkState {
                name: "s".into(),
                capacity: 8,
                depth: AtomicI64::new(0),
                up: AtomicBool::new(true),
                spool_ok: AtomicBool::new(false),
            })],
            dropped: vec![prometheus::IntCounter::new("d", "d").unwrap()],
            redactor: Redactor::new(&redact),
            lost,
        };
        (sealer, rx)
    }

    #[test]
    fn drafts_lost_before_sealing_leave_a_gap_that_verify_names() {
        let lost = Arc::new(AtomicU64::new(0));
        let (mut sealer, mut out) = sealer(lost.clone());
        sealer.seal(Draft::default());
        lost.fetch_add(2, Ordering::Relaxed);
        sealer.seal(Draft::default());
        sealer.seal(Draft::default());
        let lines: Vec<Line> = std::iter::from_fn(|| out.try_recv().ok()).collect();
        let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [1, 4, 5]);
        assert_eq!(lost.load(Ordering::Relaxed), 0);
        let report = verify::verify_lines(lines.iter().map(|l| l.text.to_string()), false);
        let broken = report.broken.expect("the gap is a broken link");
        assert!(broken.contains("2 records missing"), "{broken}");
    }

    #[test]
    fn the_sealer_reads_and_redacts_call_arguments() {
        let (mut sealer, mut out) = sealer(Arc::new(AtomicU64::new(0)));
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","token":"Bearer abcdefghijklmnopqrstuvwxyz0123456789"}}}"#;
        sealer.seal(Draft {
            call_body: Some(bytes::Bytes::from_static(body)),
            target: Some(TargetNote {
                kind: "tool",
                name: "echo".into(),
            }),
            ..Draft::default()
        });
        let line = out.try_recv().unwrap();
        let v: Value = serde_json::from_str(&line.text).unwrap();
        // The tool's own rule (found by the target's name) hashed `text`; the secret is masked.
        let text = v["arguments"]["text"].as_str().unwrap();
        assert!(text.starts_with("sha256:"), "{text}");
        assert_ne!(
            v["arguments"]["token"],
            "Bearer abcdefghijklmnopqrstuvwxyz0123456789"
        );
        assert!(!line.text.contains("abcdefghijklmnopqrstuvwxyz"));
    }

    #[test]
    fn the_sealer_redacts_each_batch_element() {
        let (mut sealer, mut out) = sealer(Arc::new(AtomicU64::new(0)));
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"add","arguments":{"a":1,"password":"hunter2"}}}]"#;
        let note = |method: &str, id: Option<Value>, tool: Option<&str>| ElementNote {
            method: Some(method.into()),
            jsonrpc_id: id,
            target: tool.map(|t| TargetNote {
                kind: "tool",
                name: t.into(),
            }),
            arguments: None,
        };
        sealer.seal(Draft {
            method: Some("batch".into()),
            call_body: Some(bytes::Bytes::from_static(body)),
            elements: Some(vec![
                note("tools/call", Some(1.into()), Some("echo")),
                note("notifications/initialized", None, None),
                note("tools/call", Some("b".into()), Some("add")),
            ]),
            ..Draft::default()
        });
        let line = out.try_recv().unwrap();
        let v: Value = serde_json::from_str(&line.text).unwrap();
        assert_eq!(v["method"], "batch");
        let hashed = format!("sha256:{}", record::sha256_hex(b"\"hi\""));
        assert_eq!(
            v["elements"],
            serde_json::json!([
                {"method": "tools/call", "jsonrpc_id": 1,
                 "target": {"kind": "tool", "name": "echo"}, "arguments": {"text": hashed}},
                {"method": "notifications/initialized", "target": null},
                {"method": "tools/call", "jsonrpc_id": "b",
                 "target": {"kind": "tool", "name": "add"},
                 "arguments": {"a": 1, "password": "[redacted:field]"}}
            ])
        );
        assert!(!line.text.contains("hunter2"));
        let report = verify::verify_lines([line.text.to_string()], false);
        assert!(report.broken.is_none(), "{:?}", report.broken);
    }
}
