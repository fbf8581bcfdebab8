//! The shared GCRA store: every replica's sidecar checks the same TATs in Redis, one atomic
//! round trip per request (a Lua script run by EVALSHA, loaded again after a Redis restart),
//! timed by Redis's own clock so that replicas agree on "now". Concurrent requests share one
//! multiplexed connection, which pipelines them. A circuit breaker stops waiting on a Redis
//! known to be down: calls fail at once while a probe checks it in the background.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use super::Cell;
use super::gcra::Verdict;
use crate::config::ratelimit::{RedisConfig, redacted_url};

/// KEYS: one per cell. ARGV: interval, tolerance and cost of each cell (µs, µs, units).
/// Returns `{admitted, then retry_after, remaining, reset per cell}`; writes only when every
/// cell admits, with an expiry when the key goes idle (so Redis memory stays bounded too).
pub const SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new = tat + cost * interval
  local limit = now + tolerance + interval
  if new <= limit then
    tats[i] = new
    out[#out + 1] = 0
    out[#out + 1] = math.floor((limit - new) / interval)
    out[#out + 1] = new - now
  else
    out[1] = 0
    out[#out + 1] = new - limit
    out[#out + 1] = math.floor(math.max(limit - tat, 0) / interval)
    out[#out + 1] = tat - now
  end
end
if out[1] == 1 then
  for i = 1, #KEYS do
    local ttl = math.ceil((tats[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
  end
end
return out
";

/// Why Redis did not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Known down: not asked.
    Down,
    Timeout,
    Error,
}

pub struct RedisMetrics {
    pub duration: Histogram,
    pub up: IntGauge,
    /// `[to down, to up]`
    pub transitions: [IntCounter; 2],
    /// `[timeout, error]`
    pub errors: [IntCounter; 2],
}

pub struct RedisStore {
    client: redis::Client,
    /// Replaced by the probe with the connection that proved Redis back.
    conn: Mutex<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    threshold: u32,
    probe_interval: Duration,
    up: AtomicBool,
    failures: AtomicU32,
    metrics: RedisMetrics,
    stop: CancellationToken,
    url: String,
}

/// Why the Redis backend could not be set up (it is not contacted yet).
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// `url` without its password.
    #[error("redis url {url}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("{0}")]
    Manager(redis::RedisError),
}

impl RedisStore {
    /// Connects lazily: a Redis that is down at start is found out by the first calls.
    pub fn new(
        cfg: &RedisConfig,
        metrics: RedisMetrics,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, RedisSetupError> {
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|source| RedisSetupError::Url {
                url: redacted_url(&cfg.url),
                source,
            })?;
        let conn = manager(&client, cfg.timeout).map_err(RedisSetupError::Manager)?;
        metrics.up.set(1);
        Ok(Arc::new(Self {
            client,
            conn: Mutex::new(conn),
            script: redis::Script::new(SCRIPT),
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            threshold: cfg.failure_threshold,
            probe_interval: cfg.probe_interval,
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            metrics,
            stop,
            url: redacted_url(&cfg.url),
        }))
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn probe_interval(&self) -> Duration {
        self.probe_interval
    }

    /// Checks every cell in one round trip: all admitted (and recorded), or none.
    pub async fn check(self: &Arc<Self>, cells: &[Cell]) -> Result<Vec<Verdict>, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable::Down);
        }
        let mut inv = self.script.prepare_invoke();
        for c in cells {
            inv.key(format!("{}{}", self.prefix, c.key))
                .arg(c.gcra.interval)
                .arg(c.gcra.tolerance)
                .arg(c.cost);
        }
        let mut conn = self.connection();
        let start = Instant::now();
        let result =
            tokio::time::timeout(self.timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await;
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        let failure = match result {
            Ok(Ok(out)) => match verdicts(&out, cells.len()) {
                Some(v) => {
                    self.failures.store(0, Ordering::Relaxed);
                    return Ok(v);
                }
                None => {
                    tracing::warn!(
                        len = out.len(),
                        "rate limit script answered in an unknown shape"
                    );
                    Unavailable::Error
                }
            },
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "rate limit check in Redis failed");
                Unavailable::Error
            }
            Err(_) => Unavailable::Timeout,
        };
        self.failed(failure);
        Err(failure)
    }

    fn connection(&self) -> ConnectionManager {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failed(self: &Arc<Self>, why: Unavailable) {
        let i = usize::from(why == Unavailable::Error);
        self.metrics.errors[i].inc();
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold
            && self
                .up
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                redis = %self.url,
                failures = n,
                last = ?why,
                "rate limit backend is down: the failure mode applies until it answers again"
            );
            self.metrics.up.set(0);
            self.metrics.transitions[0].inc();
            tokio::spawn(self.clone().probe());
        }
    }

    /// While Redis is down: every `probe_interval`, a fresh connection and a PING. The one that
    /// answers becomes the connection, and calls go to Redis again.
    async fn probe(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(self.probe_interval) => {}
            }
            let Ok(mut conn) = manager(&self.client, self.timeout) else {
                continue;
            };
            let ping = redis::cmd("PING");
            let answered =
                tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut conn)).await;
            if matches!(answered, Ok(Ok(_))) {
                *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = conn;
                self.failures.store(0, Ordering::Release);
                self.up.store(true, Ordering::Release);
                self.metrics.up.set(1);
                self.metrics.transitions[1].inc();
                tracing::info!(redis = %self.url, "rate limit backend is back");
                return;
            }
        }
    }
}

/// A connection manager that tries each connection once (the breaker decides when to try
/// again). Callers bound each round trip by `timeout`; the connection's own response timeout,
/// twice that, only clears requests nobody waits for any more.
fn manager(client: &redis::Client, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout * 2));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

fn verdicts(out: &[i64], cells: usize) -> Option<Vec<Verdict>> {
    let (&admitted, rest) = out.split_first()?;
    if rest.len() != cells * 3 || rest.iter().any(|n| *n < 0) {
        return None;
    }
    Some(
        rest.chunks_exact(3)
            .map(|c| Verdict {
                allowed: admitted == 1 || c[0] == 0,
                tat: 0,
                retry_after: c[0] as u64,
                remaining: c[1] as u64,
                reset: c[2] as u64,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_answers_are_read_strictly() {
        let v = verdicts(&[1, 0, 4, 100, 0, 9, 50], 2).unwrap();
        assert!(v.iter().all(|v| v.allowed));
        assert_eq!((v[1].remaining, v[1].reset), (9, 50));
        let v = verdicts(&[0, 0, 4, 100, 30, 0, 50], 2).unwrap();
        assert!(v[0].allowed && !v[1].allowed);
        assert_eq!(v[1].retry_after, 30);
        assert!(verdicts(&[1, 0, 4], 2).is_none());
        assert!(verdicts(&[], 0).is_none());
        assert!(verdicts(&[0, -1, 0, 0], 1).is_none());
    }
}
