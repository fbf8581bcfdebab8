//! One delivery task per sink: takes records from the sink's bounded queue in batches and
//! delivers them. A sink that fails is marked down; its records go to the spool (when one is
//! configured), and everything spooled is delivered, oldest first, before anything newer —
//! also what an earlier run left there. Without a spool a failed batch is held and retried,
//! and the queue fills behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::record::Line;
use super::sink::Sink;
use super::spool::Spool;

/// What the fail-closed gate and the metrics know about one sink.
pub struct SinkState {
    pub name: String,
    pub capacity: usize,
    /// Records in the queue.
    pub depth: AtomicI64,
    /// The last delivery (or connection) succeeded.
    pub up: AtomicBool,
    /// A spool is configured, works and has room.
    pub spool_ok: AtomicBool,
}

impl SinkState {
    /// A new record would be stored durably (delivered, or spooled while the sink is down).
    pub fn can_store(&self) -> bool {
        (self.depth.load(Ordering::Relaxed) as usize) < self.capacity
            && (self.up.load(Ordering::Relaxed) || self.spool_ok.load(Ordering::Relaxed))
    }
}

pub struct SinkMetrics {
    pub delivered: IntCounter,
    pub spooled: IntCounter,
    pub dropped: IntCounter,
    pub queue: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_records: IntGauge,
    pub oldest: IntGauge,
    pub up: IntGauge,
}

pub struct Worker {
    pub sink: Sink,
    pub rx: mpsc::Receiver<Line>,
    pub spool: Option<Spool>,
    pub state: Arc<SinkState>,
    pub metrics: SinkMetrics,
    pub batch: usize,
    /// After a batch's first record, how long to wait for more.
    pub linger: Duration,
    pub retry: Duration,
    /// The shutdown deadline has passed: stop trying the sink, spool what is left, exit.
    pub hurry: CancellationToken,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Worker {
    pub async fn run(mut self) {
        // A failed batch kept in memory (no spool) until the sink takes it.
        let mut held: Vec<Line> = Vec::new();
        let mut closed = false;
        loop {
            self.gauges(held.first()).await;
            if self.hurry.is_cancelled() {
                self.give_up(held).await;
                return;
            }
            if self.spool.as_ref().is_some_and(|s| !s.is_empty()) {
                // Anything queued goes behind the spooled records, keeping order.
                closed |= self.queue_to_spool().await;
                match self.with_spool(move |s, b| s.peek(b)).await {
                    Ok((lines, used, n)) if lines.is_empty() => {
                        if used > 0 {
                            let _ = self.with_spool(move |s, _| s.advance(n, used)).await;
                        }
                    }
                    Ok((lines, used, n)) => {
                        if self.attempt(&lines).await {
                            let advanced = self.with_spool(move |s, _| s.advance(n, used)).await;
                            self.spool_gauges();
                            if let Err(e) = advanced {
                                tracing::error!(sink = %self.state.name, error = %e, "audit spool cursor not saved");
                            }
                        } else if closed {
                            // Shutting down with the sink down: the spool keeps them.
                            return;
                        } else {
                            self.pause().await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(sink = %self.state.name, error = %e, "audit spool unreadable");
                        self.state.spool_ok.store(false, Ordering::Relaxed);
                        self.pause().await;
                    }
                }
                continue;
            }
            if !held.is_empty() {
                if self.attempt(&held).await {
                    held.clear();
                } else {
                    self.pause().await;
                }
                continue;
            }
            let first = tokio::select! {
                biased;
                () = self.hurry.cancelled() => continue,
                item = self.rx.recv() => item,
            };
            let Some(first) = first else {
                return;
            };
            if !self.linger.is_zero() && self.rx.len() + 1 < self.batch {
                // One wake-up per batch instead of one per record: cheaper for every sink.
                tokio::select! {
                    () = tokio::time::sleep(self.linger) => {}
                    () = self.hurry.cancelled() => {}
                }
            }
            let mut batch = Vec::with_capacity((self.rx.len() + 1).min(self.batch));
            batch.push(first);
            while batch.len() < self.batch {
                match self.rx.try_recv() {
                    Ok(l) => batch.push(l),
                    Err(_) => break,
                }
            }
            self.state
                .depth
                .fetch_sub(batch.len() as i64, Ordering::Relaxed);
            if self.attempt(&batch).await {
                continue;
            }
            if self.spool.is_some() {
                self.spool_batch(batch).await;
            } else {
                held = batch;
                self.pause().await;
            }
        }
    }

    /// Delivers a batch; the sink's state follows the result.
    async fn attempt(&mut self, batch: &[Line]) -> bool {
        match self.sink.deliver(batch).await {
            Ok(()) => {
                if !self.state.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(sink = %self.state.name, "audit sink is back");
                }
                self.metrics.delivered.inc_by(batch.len() as u64);
                true
            }
            Err(e) => {
                if self.state.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(sink = %self.state.name, error = %e, "audit sink down");
                } else {
                    tracing::debug!(sink = %self.state.name, error = %e, "audit sink still down");
                }
                false
            }
        }
    }

    /// Waits before trying a down sink again; queued records move to the spool meanwhile.
    async fn pause(&mut self) {
        let until = tokio::time::Instant::now() + self.retry;
        loop {
            if self.spool.is_some() {
                self.queue_to_spool().await;
            }
            self.spool_gauges();
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                () = self.hurry.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(50)), if self.spool.is_some() => {}
            }
        }
    }

    /// Moves everything queued to the spool; true when the queue is closed and empty.
    async fn queue_to_spool(&mut self) -> bool {
        loop {
            let mut batch = Vec::new();
            let mut closed = false;
            while batch.len() < self.batch {
                match self.rx.try_recv() {
                    Ok(l) => batch.push(l),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                return closed;
            }
            self.state
                .depth
                .fetch_sub(batch.len() as i64, Ordering::Relaxed);
            self.spool_batch(batch).await;
        }
    }

    async fn spool_batch(&mut self, batch: Vec<Line>) {
        let n = batch.len() as u64;
        match self.with_spool(move |s, _| s.append(&batch)).await {
            Ok(()) => {
                self.metrics.spooled.inc_by(n);
                self.spool_gauges();
                let room = self.spool.as_ref().is_some_and(|s| s.has_room(64 * 1024));
                self.state.spool_ok.store(room, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(sink = %self.state.name, error = %e, records = n, "audit records lost: spool refused them");
                self.metrics.dropped.inc_by(n);
                self.state.spool_ok.store(false, Ordering::Relaxed);
            }
        }
    }

    /// The deadline passed: what is still in memory goes to the spool, or is lost (counted).
    async fn give_up(&mut self, held: Vec<Line>) {
        let mut rest = held;
        while let Ok(l) = self.rx.try_recv() {
            rest.push(l);
        }
        if rest.is_empty() {
            return;
        }
        if self.spool.is_some() {
            for chunk in rest.chunks(self.batch.max(1)) {
                self.spool_batch(chunk.to_vec()).await;
            }
        } else {
            tracing::error!(sink = %self.state.name, records = rest.len(), "audit records lost at shutdown: sink down, no spool");
            self.metrics.dropped.inc_by(rest.len() as u64);
        }
    }

    /// Runs a spool operation on a blocking thread (fsync must not stall the traffic).
    async fn with_spool<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Spool, usize) -> T + Send + 'static,
    ) -> T {
        let mut spool = self.spool.take().expect("called with a spool");
        let batch = self.batch;
        let (spool, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut spool, batch);
            (spool, out)
        })
        .await
        .expect("spool operations do not panic");
        self.spool = Some(spool);
        out
    }

    fn spool_gauges(&self) {
        if let Some(s) = &self.spool {
            self.metrics.spool_bytes.set(s.bytes() as i64);
            self.metrics.spool_records.set(s.records() as i64);
        }
        self.metrics
            .queue
            .set(self.state.depth.load(Ordering::Relaxed));
    }

    async fn gauges(&mut self, held: Option<&Line>) {
        let m = &self.metrics;
        m.queue.set(self.state.depth.load(Ordering::Relaxed));
        m.up.set(i64::from(self.state.up.load(Ordering::Relaxed)));
        let mut oldest = held.map(|l| l.at_ms);
        if let Some(s) = &self.spool {
            m.spool_bytes.set(s.bytes() as i64);
            m.spool_records.set(s.records() as i64);
            if !s.is_empty() {
                oldest = self.with_spool(|s, _| s.oldest_ms()).await.or(oldest);
            }
        }
        let age = oldest.map_or(0, |t| now_ms().saturating_sub(t) / 1000);
        self.metrics.oldest.set(age as i64);
    }
}
