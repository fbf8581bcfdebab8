//! Audit: exactly one tamper-evident record per request, written when the request ends, through
//! a bounded queue per sink to stdout, files, Redis Streams and PostgreSQL, with a local spool
//! for sinks that are down and an optional fail-closed gate. `verify` reads a chain back.

pub mod record;
pub mod redact;
mod seal;
pub mod sink;
pub mod spool;
pub mod verify;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::audit::AuditConfig;
use crate::mcp::Method;
use record::Draft;
use redact::Redactor;
use seal::{ChainHead, Sealer};
use sink::Sink;
use spool::Spool;
use worker::{SinkMetrics, SinkState, Worker};

/// Why auditing could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit thread: {0}")]
    Thread(std::io::Error),
    #[error("audit thread: {0}")]
    Opening(tokio::task::JoinError),
    #[error("{0}")]
    Metrics(#[from] prometheus::Error),
    #[error("sink {name}: {source}")]
    Sink {
        name: String,
        source: sink::SinkError,
    },
    #[error("{0}")]
    SpoolTask(tokio::task::JoinError),
    #[error("spool of sink {name}: {source}")]
    Spool {
        name: String,
        source: std::io::Error,
    },
}

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
    ) -> Result<Option<Arc<Self>>, AuditError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let (thread, stop) = audit_thread().map_err(AuditError::Thread)?;
        let hurry = CancellationToken::new();
        let opened = {
            let (cfg, registry, hurry) = (cfg.clone(), registry.clone(), hurry.clone());
            thread
                .spawn(async move { open(&cfg, &registry, hurry).await })
                .await
                .map_err(AuditError::Opening)??
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
) -> Result<Opened, AuditError> {
    let records = IntCounterVec::new(
        Opts::new(
            "mcp_sentinel_audit_records_total",
            "Audit records by sink and result: delivered, spooled (sink down), dropped (lost)",
        ),
        &["sink", "result"],
    )?;
    let gauge = |name: &str, help: &str| {
        IntGaugeVec::new(
            Opts::new(format!("mcp_sentinel_audit_{name}"), help),
            &["sink"],
        )
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
        registry.register(c)?;
    }
    let mut senders = Vec::new();
    let mut states = Vec::new();
    let mut dropped = Vec::new();
    let mut workers = Vec::new();
    for sc in &cfg.sinks {
        let name = sc.name.as_str();
        let mut sink = Sink::new(&sc.kind).map_err(|source| AuditError::Sink {
            name: name.to_string(),
            source,
        })?;
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
                    .map_err(AuditError::SpoolTask)?
                    .map_err(|source| AuditError::Spool {
                        name: name.to_string(),
                        source,
                    })?;
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
        cols: cfg
            .sinks
            .iter()
            .any(|s| matches!(s.kind, crate::config::audit::SinkKind::Postgres { .. })),
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

/// The messages whose `params.arguments` are recorded (redacted).
pub fn has_arguments(method: Method) -> bool {
    matches!(method, Method::ToolsCall | Method::PromptsGet)
}
