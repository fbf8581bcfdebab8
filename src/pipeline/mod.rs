//! The ordered security pipeline. Every request on the traffic port runs these checks in the
//! order written in `Pipeline::new`, sharing one `Ctx`; the runner times each check and counts
//! its denials, so checks only decide.

pub mod audit;
pub mod authenticate;
pub mod authorize;
pub mod denial;
pub mod parse;
pub mod ratelimit;
pub mod session;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::auth::{AuthFailure, Principal};
use crate::config::Config;
use crate::mcp::{Envelope, Era};
use crate::metrics::Metrics;
pub use denial::{Answer, Denial, Fault, Reason};

/// Everything the checks learn about one request.
pub struct Ctx {
    /// A process-unique request number, for logs.
    pub id: u64,
    pub started: Instant,
    pub peer: SocketAddr,
    /// `peer`'s IP as a header value, made once per connection.
    pub peer_ip: http::HeaderValue,
    /// The client reached us over TLS.
    pub tls: bool,
    pub parts: http::request::Parts,
    /// The request body until the transport check reads it into `body`; after a refusal, the
    /// part the client may still be sending (`transport::linger` discards it).
    pub incoming: Option<Incoming>,
    /// The original request bytes, forwarded unchanged.
    pub body: Bytes,
    pub envelope: Option<Envelope>,
    pub era: Era,
    /// The `MCP-Protocol-Version` header, when sent.
    pub version: Option<String>,
    /// The connection's verified client certificate, as an identity (mTLS).
    pub peer_cert: Option<Arc<Result<Arc<Principal>, AuthFailure>>>,
    /// Who the caller is, once authenticated.
    pub principal: Option<Arc<Principal>>,
    /// The legacy session this request belongs to, once checked to be the caller's.
    pub session_id: Option<Box<str>>,
    /// The policy the request was decided with; its answer is filtered with the same one.
    pub policy: Option<Arc<crate::policy::Policy>>,
    /// The authorization decision (the last one for a batch or several targets).
    pub decision: Option<crate::policy::Decision>,
    /// Concurrency-limit slots this request's calls hold until the response ends.
    pub permits: Option<crate::ratelimit::concurrency::Permits>,
    /// The rate limiter's verdict, for the audit record (rate limits configured only).
    pub ratelimit: Option<crate::audit::record::RateNote>,
}

impl Ctx {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        peer_ip: http::HeaderValue,
        tls: bool,
        peer_cert: Option<Arc<Result<Arc<Principal>, AuthFailure>>>,
        req: http::Request<Incoming>,
    ) -> Self {
        let (parts, incoming) = req.into_parts();
        Self {
            id,
            started: Instant::now(),
            peer,
            peer_ip,
            tls,
            parts,
            incoming: Some(incoming),
            body: Bytes::new(),
            envelope: None,
            era: Era::Legacy,
            version: None,
            peer_cert,
            principal: None,
            session_id: None,
            policy: None,
            decision: None,
            permits: None,
            ratelimit: None,
        }
    }

    /// The JSON-RPC id to answer a denial with, when the body held exactly one request.
    pub fn reply_id(&self) -> Option<String> {
        let msg = self.envelope.as_ref()?.single()?;
        msg.id.as_ref().map(|id| id.get().to_string())
    }

    /// Turns a denial into the response for this request: with the request's id, or with the
    /// status alone when the body held only notifications or responses.
    pub fn deny(&self, mut denial: Denial) -> http::Response<crate::proxy::body::ProxyBody> {
        if denial.id.is_none() {
            denial.id = self.reply_id();
        }
        if let Some(env) = &self.envelope {
            denial.status_only |= !env.has_requests();
        }
        denial.into_response()
    }
}

/// One check of the pipeline. An enum, not a trait object: the order is data, dispatch is a
/// match, and nothing on the hot path is boxed.
pub enum Check {
    Transport(transport::Transport),
    Audit(audit::AuditGate),
    Parse(parse::Parse),
    Authenticate(authenticate::Authenticate),
    Session(Arc<session::Session>),
    Authorize(authorize::Authorize),
    RateLimit(ratelimit::RateLimit),
}

impl Check {
    pub fn name(&self) -> &'static str {
        match self {
            Check::Transport(_) => "transport",
            Check::Audit(_) => "audit",
            Check::Parse(_) => "parse",
            Check::Authenticate(_) => "authenticate",
            Check::Session(_) => "session",
            Check::Authorize(_) => "authorize",
            Check::RateLimit(_) => "ratelimit",
        }
    }

    async fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        match self {
            Check::Transport(c) => c.run(ctx).await,
            Check::Audit(c) => c.run(),
            Check::Parse(c) => c.run(ctx),
            Check::Authenticate(c) => c.run(ctx).await,
            Check::Session(c) => c.run(ctx),
            Check::Authorize(c) => c.run(ctx),
            Check::RateLimit(c) => c.run(ctx).await,
        }
    }
}

pub struct Pipeline {
    checks: Vec<Check>,
    durations: Vec<prometheus::Histogram>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// The order of the checks.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        authenticate: authenticate::Authenticate,
        session: Arc<session::Session>,
        authorize: authorize::Authorize,
        ratelimit: Option<ratelimit::RateLimit>,
        audit: Option<audit::AuditGate>,
    ) -> Self {
        let mut checks = vec![
            // 1. method, path, media types, Origin, session id syntax, body size; reads the body.
            Check::Transport(transport::Transport::new(config)),
            // 2. the JSON-RPC envelope, era, targets, modern header/body agreement.
            Check::Parse(parse::Parse),
        ];
        // 2b. fail-closed audit: refuse (503) while a record could not be stored; after
        //     parsing, so the refusal carries the request's id. Only with `audit.fail_closed`.
        checks.extend(audit.map(Check::Audit));
        checks.extend([
            // 3. who the caller is (401 with a challenge otherwise).
            Check::Authenticate(authenticate),
            // 4. session and task ids belong to the caller (404 otherwise).
            Check::Session(session),
            // 5. the policy allows every message (and every target) of the body.
            Check::Authorize(authorize),
        ]);
        // 6. budgets per principal/tool/method and concurrent tool calls (429 over a limit);
        //    only when `rate_limits` is configured. After the identity (and authorization):
        //    a refused call takes no budget.
        checks.extend(ratelimit.map(Check::RateLimit));
        let durations = checks
            .iter()
            .map(|c| metrics.check_histogram(c.name()))
            .collect();
        Self {
            checks,
            durations,
            metrics,
        }
    }

    pub async fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        // One clock read per check: each check ends where the next begins.
        let mut start = ctx.started;
        for (i, check) in self.checks.iter().enumerate() {
            let span = tracing::debug_span!("check", name = check.name(), request = ctx.id);
            let result = check.run(ctx).instrument(span).await;
            let end = Instant::now();
            self.durations[i].observe((end - start).as_secs_f64());
            start = end;
            if let Err(denial) = result {
                self.metrics.count_denial(check.name(), denial.reason);
                tracing::debug!(
                    request = ctx.id,
                    check = check.name(),
                    reason = denial.reason.as_str(),
                    detail = denial.detail.as_deref().unwrap_or(""),
                    "request refused"
                );
                return Err(denial);
            }
        }
        Ok(())
    }
}
