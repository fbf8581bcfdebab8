//! Rate-limit check: every request of the body against the configured budgets, for the
//! authenticated principal. Over a limit: 429 with `Retry-After`, the IETF `RateLimit-Policy`
//! and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers, structured-field form) and the
//! wait in the JSON-RPC error's `data`. Concurrency permits ride along in `Ctx::permits`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, header};

use super::Ctx;
use crate::audit::record::RateNote;
use crate::denial::{Denial, Reason};
use crate::ratelimit::{RateLimiter, Refusal};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

pub struct RateLimit {
    limiter: Arc<RateLimiter>,
}

impl RateLimit {
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        Self { limiter }
    }

    pub async fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        let (Some(principal), Some(env)) = (ctx.principal.as_deref(), &ctx.envelope) else {
            return Ok(());
        };
        match self.limiter.check(principal, &env.messages).await {
            Ok(permits) => {
                ctx.permits = permits;
                ctx.ratelimit = Some(RateNote {
                    result: "allowed",
                    policy: None,
                });
                Ok(())
            }
            Err(refusal) => {
                let (result, policy) = match &refusal {
                    Refusal::Limited { policy, .. } => ("limited", Some(policy.to_string())),
                    Refusal::Concurrency { policy, .. } => {
                        ("concurrency", Some(policy.to_string()))
                    }
                    Refusal::Unavailable { .. } => ("unavailable", None),
                };
                ctx.ratelimit = Some(RateNote { result, policy });
                Err(denial(&refusal))
            }
        }
    }
}

/// Whole seconds to wait, at least one.
fn seconds(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000).max(1) as u64
}

pub fn denial(refusal: &Refusal) -> Denial {
    let (denial, wait, policy, state) = match refusal {
        Refusal::Limited {
            policy,
            quota,
            window,
            retry_after,
        } => {
            let wait = seconds(*retry_after);
            (
                Denial::new(Reason::RateLimited).with_detail(format!("limit {policy}")),
                wait,
                Some((
                    format!("\"{policy}\";q={quota};w={window}"),
                    format!("\"{policy}\";r=0;t={wait}"),
                )),
                policy.as_str(),
            )
        }
        Refusal::Concurrency { policy, limit } => (
            Denial::new(Reason::ConcurrencyLimited).with_detail(format!("concurrency {policy}")),
            1,
            Some((
                format!("\"{policy}\";q={limit};qu=\"concurrent-requests\""),
                format!("\"{policy}\";r=0"),
            )),
            policy.as_str(),
        ),
        Refusal::Unavailable { retry_after } => (
            Denial::new(Reason::RateLimitUnavailable).with_detail("rate limit backend down"),
            seconds(*retry_after),
            None,
            "",
        ),
    };
    let mut denial = denial.with_header(header::RETRY_AFTER, HeaderValue::from(wait));
    if let Some((p, r)) = policy {
        for (name, value) in [(RATELIMIT_POLICY, p), (RATELIMIT, r)] {
            // Policy names are restricted to token characters by the config.
            if let Ok(v) = HeaderValue::try_from(value) {
                denial = denial.with_header(name, v);
            }
        }
        let name = serde_json::to_string(state).unwrap_or_else(|_| "\"\"".into());
        denial = denial.with_data(format!(r#"{{"retryAfter":{wait},"policy":{name}}}"#));
    } else {
        denial = denial.with_data(format!(r#"{{"retryAfter":{wait}}}"#));
    }
    denial
}

#[cfg(test)]
mod tests {
    use super::*;
    fn answer(r: Refusal) -> (u16, Vec<(String, String)>, serde_json::Value) {
        let resp = denial(&r).with_id(Some("7".into())).into_response();
        let status = resp.status().as_u16();
        let mut headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        (
            status,
            headers,
            serde_json::from_slice(resp.body()).unwrap(),
        )
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn over_a_rate() {
        let (status, headers, body) = answer(Refusal::Limited {
            policy: "per-caller".into(),
            quota: 100,
            window: 60,
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status, 429);
        assert_eq!(
            headers,
            h(&[
                ("content-type", "application/json"),
                ("ratelimit", "\"per-caller\";r=0;t=2"),
                ("ratelimit-policy", "\"per-caller\";q=100;w=60"),
                ("retry-after", "2"),
            ])
        );
        assert_eq!(
            body,
            serde_json::json!({"jsonrpc":"2.0","id":7,"error":{"code":429,
                "message":"Rate limit exceeded","data":{"retryAfter":2,"policy":"per-caller"}}})
        );
    }

    #[test]
    fn at_the_concurrency_limit_and_backend_down() {
        let (status, headers, body) = answer(Refusal::Concurrency {
            policy: "slow-tools".into(),
            limit: 2,
        });
        assert_eq!(status, 429);
        assert_eq!(
            headers,
            h(&[
                ("content-type", "application/json"),
                ("ratelimit", "\"slow-tools\";r=0"),
                (
                    "ratelimit-policy",
                    "\"slow-tools\";q=2;qu=\"concurrent-requests\""
                ),
                ("retry-after", "1"),
            ])
        );
        assert_eq!(body["error"]["code"], 429);
        assert_eq!(body["error"]["message"], "Too many concurrent tool calls");
        assert_eq!(
            body["error"]["data"],
            serde_json::json!({"retryAfter":1,"policy":"slow-tools"})
        );

        let (status, headers, body) = answer(Refusal::Unavailable {
            retry_after: Duration::from_millis(200),
        });
        assert_eq!(status, 503);
        assert_eq!(
            headers,
            h(&[("content-type", "application/json"), ("retry-after", "1")])
        );
        assert_eq!(
            body,
            serde_json::json!({"jsonrpc":"2.0","id":7,"error":{"code":-32603,
                "message":"Rate limiter unavailable","data":{"retryAfter":1}}})
        );
    }
}
