//! Rate limiting: GCRA budgets per principal, group, tool or method (in memory, or shared
//! through Redis by every replica), and concurrency limits on in-flight `tools/call`. Every
//! rule that matches a call is checked, all at once; the strictest decides.

pub mod concurrency;
pub mod gcra;
pub mod memory;
pub mod redis;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio_util::sync::CancellationToken;

use crate::config::ratelimit::{Backend, FailureMode, RateLimitConfig};
use crate::identity::Principal;
use crate::mcp::Message;
use concurrency::{Concurrency, Permits};
use gcra::{Gcra, Verdict};
use memory::MemoryStore;
use redis::{RedisMetrics, RedisStore, Unavailable};
use rules::{Call, Rule};

/// One budget a request draws from.
#[derive(Debug, Clone)]
pub struct Cell {
    pub key: String,
    pub gcra: Gcra,
    pub cost: u64,
}

/// How a rule's check ended, for `mcp_sentinel_ratelimit_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleResult {
    Allowed,
    Limited,
    ConcurrencyLimited,
    /// Redis down, `failure_mode: closed`: refused.
    Unavailable,
    /// Redis down, `failure_mode: open`: admitted unchecked.
    FailOpen,
    /// Redis down, `failure_mode: local`: decided by this replica's memory limiter.
    LocalAllowed,
    LocalLimited,
}

impl RuleResult {
    const ALL: [RuleResult; 7] = [
        RuleResult::Allowed,
        RuleResult::Limited,
        RuleResult::ConcurrencyLimited,
        RuleResult::Unavailable,
        RuleResult::FailOpen,
        RuleResult::LocalAllowed,
        RuleResult::LocalLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleResult::Allowed => "allowed",
            RuleResult::Limited => "limited",
            RuleResult::ConcurrencyLimited => "concurrency_limited",
            RuleResult::Unavailable => "unavailable",
            RuleResult::FailOpen => "fail_open",
            RuleResult::LocalAllowed => "local_allowed",
            RuleResult::LocalLimited => "local_limited",
        }
    }
}

/// Why a request is refused, with what the answer tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over a rate: the limit that needs the longest wait.
    Limited {
        policy: String,
        quota: u64,
        window: u64,
        retry_after: Duration,
    },
    /// At the rule's concurrency limit.
    Concurrency { policy: String, limit: u32 },
    /// Redis is down and the failure mode is `closed`.
    Unavailable { retry_after: Duration },
}

enum Store {
    Memory(MemoryStore),
    Redis {
        redis: Arc<RedisStore>,
        mode: FailureMode,
        /// The `local` failure mode's limiter.
        local: Option<MemoryStore>,
    },
}

pub struct RateLimiter {
    rules: Vec<Rule>,
    /// Per rule, per `RuleResult::ALL`.
    counters: Vec<[IntCounter; 7]>,
    store: Store,
    concurrency: Arc<Concurrency>,
    keys: IntGauge,
}

/// What the pipeline does with a request.
pub type Decision = Result<Option<Permits>, Refusal>;

/// Why a rate limiter could not start.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("{0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Redis(#[from] redis::RedisSetupError),
}

impl RateLimiter {
    pub fn new(
        cfg: &RateLimitConfig,
        registry: &Registry,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, RateLimitError> {
        let m = RateLimitError::Metrics;
        let total = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_ratelimit_total",
                "Rate-limit rule checks by rule and result",
            ),
            &["rule", "result"],
        )
        .map_err(m)?;
        registry.register(Box::new(total.clone())).map_err(m)?;
        let rules: Vec<Rule> = cfg.rules.iter().map(Rule::new).collect();
        let counters = rules
            .iter()
            .map(|r| RuleResult::ALL.map(|x| total.with_label_values(&[&r.name, x.as_str()])))
            .collect();
        let keys = IntGauge::new(
            "mcp_sentinel_ratelimit_keys",
            "Budgets the memory limiter holds (idle ones are swept)",
        )
        .map_err(m)?;
        registry.register(Box::new(keys.clone())).map_err(m)?;
        let store = match &cfg.backend {
            Backend::Memory => Store::Memory(MemoryStore::new(cfg.max_keys)),
            Backend::Redis(rc) => {
                let duration = Histogram::with_opts(
                    HistogramOpts::new(
                        "mcp_sentinel_ratelimit_backend_duration_seconds",
                        "Redis round trips of rate-limit checks, failures included",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ]),
                )
                .map_err(m)?;
                let up = IntGauge::new(
                    "mcp_sentinel_ratelimit_backend_up",
                    "1 while the rate-limit Redis answers, 0 while it is known down",
                )
                .map_err(m)?;
                let transitions = IntCounterVec::new(
                    Opts::new(
                        "mcp_sentinel_ratelimit_backend_transitions_total",
                        "Rate-limit Redis marked down or back up",
                    ),
                    &["to"],
                )
                .map_err(m)?;
                let errors = IntCounterVec::new(
                    Opts::new(
                        "mcp_sentinel_ratelimit_backend_errors_total",
                        "Rate-limit Redis round trips that failed",
                    ),
                    &["kind"],
                )
                .map_err(m)?;
                for c in [
                    Box::new(duration.clone()) as Box<dyn prometheus::core::Collector>,
                    Box::new(up.clone()),
                    Box::new(transitions.clone()),
                    Box::new(errors.clone()),
                ] {
                    registry.register(c).map_err(m)?;
                }
                let metrics = RedisMetrics {
                    duration,
                    up,
                    transitions: ["down", "up"].map(|t| transitions.with_label_values(&[t])),
                    errors: ["timeout", "error"].map(|k| errors.with_label_values(&[k])),
                };
                Store::Redis {
                    redis: RedisStore::new(rc, metrics, stop)?,
                    mode: cfg.failure_mode,
                    local: (cfg.failure_mode == FailureMode::Local)
                        .then(|| MemoryStore::new(cfg.max_keys)),
                }
            }
        };
        Ok(Arc::new(Self {
            rules,
            counters,
            store,
            concurrency: Arc::new(Concurrency::default()),
            keys,
        }))
    }

    /// Checks the requests of one body for `principal`: permits to hold while the calls are
    /// in flight (when a concurrency limit applies), or why they are refused.
    pub async fn check(&self, principal: &Principal, messages: &[Message]) -> Decision {
        let mut cells: Vec<Cell> = Vec::new();
        // (rule, key, calls) for concurrency limits.
        let mut slots: Vec<(usize, String, u32)> = Vec::new();
        // Per rule: it matched a call (for counting).
        let mut matched: Vec<bool> = Vec::new();
        // Which rule each cell belongs to, and its limit.
        let mut owners: Vec<(usize, usize)> = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            if !rule.matches_principal(principal) {
                continue;
            }
            for call in messages.iter().filter_map(Call::of) {
                if !rule.matches_call(&call) {
                    continue;
                }
                if matched.len() <= ri {
                    matched.resize(ri + 1, false);
                }
                matched[ri] = true;
                let key = rule.key(principal, &call);
                if rule.concurrency.is_some() && call.is_tool_call() {
                    match slots.iter_mut().find(|(r, k, _)| *r == ri && *k == key) {
                        Some(s) => s.2 += 1,
                        None => slots.push((ri, key.clone(), 1)),
                    }
                }
                for (li, limit) in rule.limits.iter().enumerate() {
                    let cell_key = if rule.limits.len() > 1 {
                        format!("{key}#{li}")
                    } else {
                        key.clone()
                    };
                    match cells.iter_mut().find(|c| c.key == cell_key) {
                        Some(c) => c.cost += 1,
                        None => {
                            cells.push(Cell {
                                key: cell_key,
                                gcra: limit.gcra,
                                cost: 1,
                            });
                            owners.push((ri, li));
                        }
                    }
                }
            }
        }
        if matched.is_empty() {
            return Ok(None);
        }

        // Concurrency first: it is local and cheap, and a refused call then takes no budget.
        let mut permits = Permits::default();
        for (ri, key, n) in slots {
            let rule = &self.rules[ri];
            let limit = rule.concurrency.unwrap_or(u32::MAX);
            match self.concurrency.acquire(key, n, limit) {
                Some(p) => permits.push(p),
                None => {
                    self.count(ri, RuleResult::ConcurrencyLimited);
                    return Err(Refusal::Concurrency {
                        policy: rule.name.clone(),
                        limit,
                    });
                }
            }
        }

        if !cells.is_empty() {
            let (verdicts, local) = match &self.store {
                Store::Memory(m) => (m.check(&cells), false),
                Store::Redis { redis, mode, local } => match redis.check(&cells).await {
                    Ok(v) => (v, false),
                    Err(why) => match (mode, local) {
                        (FailureMode::Local, Some(l)) => (l.check(&cells), true),
                        (FailureMode::Open, _) => {
                            self.count_matched(&matched, RuleResult::FailOpen);
                            return Ok(Some(permits).filter(|p| !p.is_empty()));
                        }
                        _ => {
                            self.count_matched(&matched, RuleResult::Unavailable);
                            let wait = match why {
                                Unavailable::Down => redis.probe_interval(),
                                _ => Duration::from_secs(1),
                            };
                            return Err(Refusal::Unavailable { retry_after: wait });
                        }
                    },
                },
            };
            if let Some(refusal) = self.refusal(&verdicts, &owners, local) {
                return Err(refusal);
            }
            let result = if local {
                RuleResult::LocalAllowed
            } else {
                RuleResult::Allowed
            };
            self.count_matched(&matched, result);
        } else {
            self.count_matched(&matched, RuleResult::Allowed);
        }
        Ok(Some(permits).filter(|p| !p.is_empty()))
    }

    /// When a cell refused: counts the refusing rules and picks the longest wait.
    fn refusal(
        &self,
        verdicts: &[Verdict],
        owners: &[(usize, usize)],
        local: bool,
    ) -> Option<Refusal> {
        let mut worst: Option<(u64, usize, usize)> = None;
        for (v, &(ri, li)) in verdicts.iter().zip(owners) {
            if !v.allowed && worst.is_none_or(|(w, _, _)| v.retry_after > w) {
                worst = Some((v.retry_after, ri, li));
            }
        }
        let (wait, ri, li) = worst?;
        let result = if local {
            RuleResult::LocalLimited
        } else {
            RuleResult::Limited
        };
        let mut counted = Vec::new();
        for (v, &(r, _)) in verdicts.iter().zip(owners) {
            if !v.allowed && !counted.contains(&r) {
                counted.push(r);
                self.count(r, result);
            }
        }
        let limit = &self.rules[ri].limits[li];
        Some(Refusal::Limited {
            policy: limit.policy.clone(),
            quota: limit.quota,
            window: limit.window,
            retry_after: Duration::from_micros(wait),
        })
    }

    fn count(&self, rule: usize, result: RuleResult) {
        let i = RuleResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.counters[rule][i].inc();
    }

    fn count_matched(&self, matched: &[bool], result: RuleResult) {
        for (ri, m) in matched.iter().enumerate() {
            if *m {
                self.count(ri, result);
            }
        }
    }

    /// Forgets idle budgets (run periodically).
    pub fn sweep(&self) {
        let n = match &self.store {
            Store::Memory(m) => m.sweep(),
            Store::Redis { local: Some(l), .. } => l.sweep(),
            Store::Redis { .. } => 0,
        };
        self.keys.set(n as i64);
    }

    /// Concurrency slots in use (for tests and debugging).
    pub fn in_flight_keys(&self) -> usize {
        self.concurrency.keys()
    }
}

/// Keeps `limiter`'s memory bounded without traffic too.
pub async fn sweep(limiter: Arc<RateLimiter>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        limiter.sweep();
    }
}
