//! The `rate_limits` section: where budgets live (memory or Redis), what happens when Redis is
//! down, and the rules — who and what each applies to, its rates, its key and its concurrency.
//! Absent: no rate limiting.

use std::time::Duration;

use serde_yaml_ng::Value;

use crate::glob;
use crate::identity::AuthMethod;
use crate::yaml::{Reader, Section, parse};

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub backend: Backend,
    pub failure_mode: FailureMode,
    /// Keys the memory limiter (and the `local` fallback) keeps at most.
    pub max_keys: usize,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Memory,
    Redis(RedisConfig),
}

#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` or `unix:///path/to/redis.sock`.
    pub url: String,
    /// Longest wait for one round trip (or a connection); then the call counts as failed.
    pub timeout: Duration,
    pub key_prefix: String,
    /// Consecutive failures that mark Redis down.
    pub failure_threshold: u32,
    /// While down, how often Redis is probed.
    pub probe_interval: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted_url(&self.url))
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .field("failure_threshold", &self.failure_threshold)
            .field("probe_interval", &self.probe_interval)
            .finish()
    }
}

/// What a rate-limited call gets while Redis is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Refused with 503.
    Closed,
    /// Admitted unchecked.
    Open,
    /// Checked by this replica's memory limiter instead.
    Local,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Closed => "closed",
            FailureMode::Open => "open",
            FailureMode::Local => "local",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Unique; a metric label and the policy name in `RateLimit-Policy`.
    pub name: String,
    pub matcher: MatchConfig,
    pub limits: Vec<RateConfig>,
    /// The budget is per distinct value of these parts; empty: one budget for the rule.
    pub key: Vec<KeyPart>,
    /// At most this many `tools/call` in flight per key.
    pub concurrency: Option<u32>,
}

/// Every non-empty list must match (one of its entries); empty lists match anything.
#[derive(Debug, Clone, Default)]
pub struct MatchConfig {
    /// Globs on the principal's subject.
    pub subjects: Vec<String>,
    /// Globs on the issuer of a JWT principal; a principal without an issuer never matches.
    pub issuers: Vec<String>,
    /// The principal is in one of these groups.
    pub groups: Vec<String>,
    pub auth_methods: Vec<AuthMethod>,
    /// Claim name → required value (a string claim, or a string in an array claim).
    pub claims: Vec<(String, String)>,
    /// Globs on the JSON-RPC method.
    pub methods: Vec<String>,
    /// Globs on the tool name; only `tools/call` has one.
    pub tools: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    pub count: u64,
    pub period: Duration,
    /// Requests admitted back to back from a full budget; default `count`.
    pub burst: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Subject,
    /// The principal's groups that the rule matches on (all its groups without `match.groups`).
    Group,
    Tool,
    Method,
    AuthMethod,
    Claim(String),
}

pub const DEFAULT_MAX_KEYS: usize = 100_000;

impl RateLimitConfig {
    /// Reads the `rate_limits` section; `None` when absent.
    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Option<Self> {
        if !s.is_present() {
            return None;
        }
        let backend_name = r
            .choice(s, "backend", &[("memory", "memory"), ("redis", "redis")])
            .unwrap_or("memory");
        let failure_mode = r
            .choice(
                s,
                "failure_mode",
                &[
                    ("closed", FailureMode::Closed),
                    ("open", FailureMode::Open),
                    ("local", FailureMode::Local),
                ],
            )
            .unwrap_or(FailureMode::Closed);

        let mut mem = r.child(s, "memory");
        let max_keys = r
            .field(&mut mem, "max_keys", |v| {
                v.as_u64()
                    .filter(|n| (1..=100_000_000).contains(n))
                    .map(|n| n as usize)
                    .ok_or_else(|| "must be a whole number from 1 to 100000000".to_string())
            })
            .unwrap_or(DEFAULT_MAX_KEYS);
        r.close(mem);

        let mut rs = r.child(s, "redis");
        let redis_present = rs.is_present();
        let redis = read_redis(r, &mut rs);
        r.close(rs);
        let backend = match (backend_name, redis) {
            ("redis", Some(cfg)) => Backend::Redis(cfg),
            ("redis", None) => {
                if !redis_present {
                    r.error("rate_limits.redis", "is required with backend: redis");
                }
                Backend::Memory
            }
            _ => {
                if redis_present {
                    r.error(
                        "rate_limits.redis",
                        "is only read with backend: redis (set it, or remove this section)",
                    );
                }
                Backend::Memory
            }
        };
        if failure_mode != FailureMode::Closed && backend_name != "redis" {
            r.error(
                "rate_limits.failure_mode",
                "applies to backend: redis only (the memory limiter cannot be down)",
            );
        }

        let has_rules = s.has("rules");
        let list = r.field(s, "rules", |v| match v {
            Value::Sequence(items) if !items.is_empty() => Ok(items.clone()),
            _ => Err("must be a non-empty list of rules".to_string()),
        });
        if !has_rules {
            r.error(
                "rate_limits.rules",
                "is required: a rate_limits section with no rules limits nothing",
            );
        }
        let mut rules: Vec<RuleConfig> = Vec::new();
        for (i, item) in list.unwrap_or_default().iter().enumerate() {
            let path = format!("rate_limits.rules[{i}]");
            if let Some(rule) = read_rule(r, &path, item) {
                if rules.iter().any(|x| x.name == rule.name) {
                    r.error(
                        format!("{path}.name"),
                        format!("{:?} is used twice", rule.name),
                    );
                    continue;
                }
                rules.push(rule);
            }
        }
        Some(Self {
            backend,
            failure_mode,
            max_keys,
            rules,
        })
    }

    /// One line for `check` and the startup log. Holds no secrets.
    pub fn summary(&self) -> String {
        let backend = match &self.backend {
            Backend::Memory => format!("memory (max_keys {})", self.max_keys),
            Backend::Redis(r) => format!(
                "redis {} (timeout {:?}, failure_mode {})",
                redacted_url(&r.url),
                r.timeout,
                self.failure_mode.as_str()
            ),
        };
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        format!(
            "rate_limits: {backend}; {} rule{}: {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )
    }
}

fn read_redis(r: &mut Reader, s: &mut Section<'_>) -> Option<RedisConfig> {
    if !s.is_present() {
        return None;
    }
    let url = r.field(s, "url", |v| {
        let u = parse::string(v)?;
        redis_url(&u).map_err(|e| e.to_string())?;
        Ok(u)
    });
    let positive = |v: &Value| {
        let d = parse::duration(v)?;
        if d.is_zero() {
            return Err("must be greater than zero".to_string());
        }
        Ok(d)
    };
    let timeout = r
        .field(s, "timeout", |v| {
            let d = positive(v)?;
            if d > Duration::from_secs(10) {
                return Err("must be at most 10s: every limited call may wait this long".into());
            }
            Ok(d)
        })
        .unwrap_or(Duration::from_millis(100));
    let key_prefix = r
        .field(s, "key_prefix", parse::string)
        .unwrap_or_else(|| "mcp-sentinel:rl:".into());
    let failure_threshold = r
        .field(s, "failure_threshold", |v| {
            v.as_u64()
                .filter(|n| (1..=1000).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| "must be a whole number from 1 to 1000".to_string())
        })
        .unwrap_or(3);
    let probe_interval = r
        .field(s, "probe_interval", positive)
        .unwrap_or(Duration::from_secs(1));
    let Some(url) = url else {
        if !s.has("url") {
            r.error("rate_limits.redis.url", "is required");
        }
        return None;
    };
    Some(RedisConfig {
        url,
        timeout,
        key_prefix,
        failure_threshold,
        probe_interval,
    })
}

/// Why a Redis URL is refused. The URL is shown with its password replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    #[error("TLS to Redis (rediss://) is not supported")]
    Tls,
    #[error("{0:?} is not a URL such as redis://127.0.0.1:6379/0 or unix:///run/redis.sock")]
    NotAUrl(String),
    #[error("{0:?} is not a valid Redis URL")]
    Invalid(String),
}

/// A URL the Redis client can connect with, without TLS (not built in).
pub(crate) fn redis_url(u: &str) -> Result<(), RedisUrlError> {
    let scheme = u.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis" | "unix" | "redis+unix") => {}
        Some("rediss") => return Err(RedisUrlError::Tls),
        _ => return Err(RedisUrlError::NotAUrl(redacted_url(u))),
    }
    redis::Client::open(u)
        .map(drop)
        .map_err(|_| RedisUrlError::Invalid(redacted_url(u)))
}

/// The URL with any password replaced, for logs and errors.
pub fn redacted_url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => u.to_string(),
    }
}

fn read_rule(r: &mut Reader, path: &str, item: &Value) -> Option<RuleConfig> {
    let mut s = r.section(path, Some(item));
    let has_name = s.has("name");
    let name = r.field(&mut s, "name", |v| {
        let n = parse::string(v)?;
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(format!(
                "{n:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(n)
    });
    let mut m = r.child(&mut s, "match");
    let matcher = read_match(r, &mut m);
    r.close(m);
    let has_limits = s.has("limits");
    let limits = r.field(&mut s, "limits", |v| match v {
        Value::Sequence(items) if !items.is_empty() => Ok(items.clone()),
        _ => Err("must be a non-empty list of {rate, burst}".to_string()),
    });
    let mut rates = Vec::new();
    for (i, l) in limits.iter().flatten().enumerate() {
        let lpath = format!("{path}.limits[{i}]");
        let mut ls = r.section(&lpath, Some(l));
        let has_rate = ls.has("rate");
        let rate = r.field(&mut ls, "rate", rate);
        let burst = r.field(&mut ls, "burst", |v| {
            v.as_u64()
                .filter(|n| (1..=1_000_000_000).contains(n))
                .ok_or_else(|| "must be a whole number from 1 to 1000000000".to_string())
        });
        r.close(ls);
        match rate {
            Some((count, period)) => {
                let rc = RateConfig {
                    count,
                    period,
                    burst: burst.unwrap_or(count),
                };
                if rc.gcra_terms().is_none() {
                    r.error(
                        format!("{lpath}.rate"),
                        "is finer than one request per microsecond, or too large",
                    );
                } else {
                    rates.push(rc);
                }
            }
            None if !has_rate => r.error(format!("{lpath}.rate"), "is required"),
            None => {}
        }
    }
    let key = r
        .field(&mut s, "key", |v| {
            let parts = parse::strings(v)?
                .iter()
                .map(|p| key_part(p))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, p) in parts.iter().enumerate() {
                if parts[..i].contains(p) {
                    return Err(format!("{p:?} is listed twice"));
                }
            }
            Ok(parts)
        })
        .unwrap_or_else(|| vec![KeyPart::Subject]);
    let s_has_concurrency = s.has("concurrency");
    let concurrency = r.field(&mut s, "concurrency", |v| {
        v.as_u64()
            .filter(|n| (1..=1_000_000).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| "must be a whole number from 1 to 1000000".to_string())
    });
    r.close(s);
    let Some(name) = name else {
        if !has_name {
            r.error(format!("{path}.name"), "is required");
        }
        return None;
    };
    if !has_limits && !s_has_concurrency {
        r.error(path, "needs limits, concurrency or both");
        return None;
    }
    let calls_tools = matcher.methods.is_empty()
        || matcher
            .methods
            .iter()
            .any(|g| glob::is_match(g, "tools/call"));
    if !matcher.tools.is_empty() && !calls_tools {
        r.error(
            format!("{path}.match.tools"),
            "can never match: only tools/call names a tool, and match.methods leaves it out",
        );
    }
    if concurrency.is_some() && !calls_tools {
        r.error(
            format!("{path}.concurrency"),
            "counts tools/call only, and match.methods leaves it out",
        );
    }
    Some(RuleConfig {
        name,
        matcher,
        limits: rates,
        key,
        concurrency,
    })
}

fn read_match(r: &mut Reader, s: &mut Section<'_>) -> MatchConfig {
    let mut m = MatchConfig::default();
    let globs = |v: &Value| {
        let list = parse::strings(v)?;
        if list.is_empty() {
            return Err("must list at least one name (leave the key out to match any)".into());
        }
        if list.iter().any(String::is_empty) {
            return Err("must not contain an empty name".to_string());
        }
        Ok(list)
    };
    m.subjects = r.field(s, "subjects", globs).unwrap_or_default();
    m.issuers = r.field(s, "issuers", globs).unwrap_or_default();
    m.groups = r.field(s, "groups", globs).unwrap_or_default();
    m.auth_methods = r
        .field(s, "auth_methods", |v| {
            globs(v)?
                .iter()
                .map(|n| {
                    AuthMethod::ALL
                        .into_iter()
                        .find(|a| a.as_str() == n)
                        .ok_or_else(|| {
                            format!("{n:?} is not one of anonymous, api_key, jwt, kubernetes, mtls, stdio")
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    m.claims = r
        .field(s, "claims", |v| {
            let map = v
                .as_mapping()
                .filter(|m| !m.is_empty())
                .ok_or("must be a mapping of claim name to value")?;
            map.iter()
                .map(|(k, v)| match (k.as_str(), v.as_str()) {
                    (Some(k), Some(v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                    _ => Err("must map claim names to string values".to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    m.methods = r.field(s, "methods", globs).unwrap_or_default();
    m.tools = r.field(s, "tools", globs).unwrap_or_default();
    m
}

/// `N/second`, `N/minute`, `N/hour`, `N/day`, or `N/<duration>` such as `10/30s`.
fn rate(v: &Value) -> Result<(u64, Duration), String> {
    let s = v
        .as_str()
        .ok_or("must be a rate such as 100/minute or 10/30s")?;
    let bad = || format!("{s:?} is not a rate such as 100/minute or 10/30s");
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let count: u64 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("must allow at least one request".into());
    }
    let period = match per.trim() {
        "second" | "s" => Duration::from_secs(1),
        "minute" | "m" => Duration::from_secs(60),
        "hour" | "h" => Duration::from_secs(3600),
        "day" | "d" => Duration::from_secs(86_400),
        other => parse::parse_duration(other).map_err(|_| bad())?,
    };
    if period.is_zero() || period > Duration::from_secs(366 * 86_400) {
        return Err(format!("{s:?}: the period must be from 1ms to a year"));
    }
    Ok((count, period))
}

fn key_part(p: &str) -> Result<KeyPart, String> {
    Ok(match p {
        "subject" => KeyPart::Subject,
        "group" => KeyPart::Group,
        "tool" => KeyPart::Tool,
        "method" => KeyPart::Method,
        "auth_method" => KeyPart::AuthMethod,
        other => match other.strip_prefix("claim:") {
            Some(c) if !c.is_empty() => KeyPart::Claim(c.to_string()),
            _ => {
                return Err(format!(
                    "{other:?} is not a key part (subject, group, tool, method, auth_method, \
                     claim:NAME)"
                ));
            }
        },
    })
}

impl RateConfig {
    /// This rate in the terms of the generic cell rate algorithm (`ratelimit::gcra`); `None`
    /// when it cannot be enforced (see [`gcra_terms`]).
    pub fn gcra_terms(&self) -> Option<(u64, u64)> {
        let period = u64::try_from(self.period.as_micros()).ok()?;
        gcra_terms(self.count, period, self.burst)
    }
}

/// `count` requests per `period_us`, up to `burst` back to back, as the GCRA's emission interval
/// T (one request per T µs at the sustained rate) and delay tolerance τ = (burst − 1) · T.
/// `None` when the interval is below a microsecond or a number overflows.
pub fn gcra_terms(count: u64, period_us: u64, burst: u64) -> Option<(u64, u64)> {
    if count == 0 || burst == 0 {
        return None;
    }
    let interval = period_us / count;
    if interval == 0 {
        return None;
    }
    let tolerance = (burst - 1).checked_mul(interval)?;
    // Keeps every sum the GCRA makes in range (and within a Lua double's exact integers).
    (tolerance < 1 << 52).then_some((interval, tolerance))
}

#[cfg(test)]
mod tests;
