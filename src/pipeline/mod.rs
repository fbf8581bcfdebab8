//! The life of a request on the traffic port, in one place. Every stage a request goes
//! through is named here, in order; `server` only accepts connections and `app` only wires.
//!
//! 1. Before anything: RFC 9728 resource metadata is answered (public, never checked); the
//!    request gets its number, its guard (metrics, log line) and, with audit on, its record.
//! 2. The checks, in the order `Pipeline::new` writes them (each may refuse):
//!    transport → parse → audit gate → authenticate → session → authorize → rate limit.
//! 3. Forward: the original bytes to the upstream (`proxy`).
//! 4. The answer stages, in the order of [`ANSWER_STAGES`] (each may edit or watch the answer;
//!    the filter may refuse an answer it cannot read): session observation, policy filtering
//!    of lists, tasks and server requests, the task/result tap, concurrency permits.
//! 5. The guard rides the response body: when the body ends (or the client goes away) the
//!    request is counted, logged and its audit record submitted, once.
//!
//! Every refusal — by a check, by the upstream failing, by an answer stage — goes through
//! [`Pipeline::refuse`], which sets the response, the audit record, the guard and the denial
//! counter together.

pub mod answer;
pub mod audit;
pub mod authenticate;
pub mod authorize;
pub mod integrity;
pub mod parse;
pub mod ratelimit;
pub mod session;
pub mod trace;
pub mod transport;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{Method as HttpMethod, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::audit::Auditor;
use crate::audit::record::{AuditOutcome, Draft};
use crate::auth::metadata::ResourceMetadata;
use crate::config::Config;
use crate::config::auth::MtlsConfig;
use crate::denial::{Denial, Fault, Reason};
use crate::identity::{AuthFailure, Principal};
use crate::mcp::{Envelope, Era};
use crate::metrics::{Metrics, Op, Outcome};
use crate::policy::PolicyStore;
use crate::proxy::body::ProxyBody;
use crate::proxy::guard::RequestGuard;
use crate::proxy::{Outgoing, Proxy};
pub use answer::{ANSWER_STAGES, AnswerStage};

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
    /// What tool integrity refused the request for, for the audit record.
    pub integrity: Vec<crate::integrity::Note>,
    /// The body's `params._meta.traceparent`, when tracing is on and the client sent one.
    pub trace_meta: Option<crate::otel::MetaTrace>,
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
            integrity: Vec::new(),
            trace_meta: None,
        }
    }

    /// The JSON-RPC id to answer a denial with, when the body held exactly one request.
    pub fn reply_id(&self) -> Option<String> {
        let msg = self.envelope.as_ref()?.single()?;
        msg.id.as_ref().map(|id| id.get().to_string())
    }

    /// Turns a denial into the response for this request: with the request's id, or with the
    /// status alone when the body held only notifications or responses.
    pub fn deny(&self, mut denial: Denial) -> http::Response<Bytes> {
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
    Integrity(integrity::IntegrityCheck),
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
            Check::Integrity(_) => "integrity",
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
            Check::Integrity(c) => c.run(ctx),
            Check::RateLimit(c) => c.run(ctx).await,
        }
    }
}

/// A connection's verified client certificate, as an identity (mTLS), made once per
/// connection.
pub type PeerCert = Option<Arc<Result<Arc<Principal>, AuthFailure>>>;

/// What every request of one client connection shares.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `peer`'s IP as a header value.
    pub peer_ip: http::HeaderValue,
    pub tls: bool,
    pub cert: PeerCert,
}

/// The stages' shared parts, built by `app`.
pub struct Stages {
    pub metrics: Arc<Metrics>,
    pub authenticate: authenticate::Authenticate,
    pub session: Arc<session::Session>,
    pub authorize: authorize::Authorize,
    pub ratelimit: Option<ratelimit::RateLimit>,
    pub audit: Option<Arc<Auditor>>,
    pub proxy: Proxy,
    pub metadata: Arc<ResourceMetadata>,
    /// The running policy, for answers that outlive a reload (GET streams).
    pub policy: Arc<PolicyStore>,
    /// Set when the mTLS authenticator is on: how a client certificate becomes an identity.
    pub mtls: Option<Arc<MtlsConfig>>,
    /// Tool integrity, when configured.
    pub integrity: Option<Arc<crate::integrity::Integrity>>,
    /// Spans for every request; `None` when tracing is off.
    pub otel: Option<Arc<crate::otel::Otel>>,
}

pub struct Pipeline {
    checks: Vec<Check>,
    durations: Vec<prometheus::Histogram>,
    metrics: Arc<Metrics>,
    proxy: Proxy,
    session: Arc<session::Session>,
    policy: Arc<PolicyStore>,
    audit: Option<Arc<Auditor>>,
    metadata: Arc<ResourceMetadata>,
    mtls: Option<Arc<MtlsConfig>>,
    integrity: Option<Arc<crate::integrity::Integrity>>,
    otel: Option<Arc<crate::otel::Otel>>,
    mcp_path: String,
    next_id: AtomicU64,
}

impl Pipeline {
    /// The order of the checks.
    pub fn new(config: &Config, stages: Stages) -> Self {
        let Stages {
            metrics,
            authenticate,
            session,
            authorize,
            ratelimit,
            audit,
            proxy,
            metadata,
            policy,
            mtls,
            integrity,
            otel,
        } = stages;
        let gate = audit
            .as_ref()
            .filter(|a| a.fail_closed)
            .map(|a| audit::AuditGate::new(a.clone()));
        let mut checks = vec![
            // 1. method, path, media types, Origin, session id syntax, body size; reads the body.
            Check::Transport(transport::Transport::new(config)),
            // 2. the JSON-RPC envelope, era, targets, modern header/body agreement.
            Check::Parse(parse::Parse),
        ];
        // 2b. fail-closed audit: refuse (503) while a record could not be stored; after
        //     parsing, so the refusal carries the request's id. Only with `audit.fail_closed`.
        checks.extend(gate.map(Check::Audit));
        checks.extend([
            // 3. who the caller is (401 with a challenge otherwise).
            Check::Authenticate(authenticate),
            // 4. session and task ids belong to the caller (404 otherwise).
            Check::Session(session.clone()),
            // 5. the policy allows every message (and every target) of the body.
            Check::Authorize(authorize),
        ]);
        // 5b. calls to a tool, prompt or resource that tool integrity blocks (drifted from its
        //     pin, unpinned, poisoned); only with `integrity`.
        checks.extend(
            integrity
                .clone()
                .map(|i| Check::Integrity(integrity::IntegrityCheck::new(i))),
        );
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
            proxy,
            session,
            policy,
            audit,
            metadata,
            mtls,
            integrity,
            otel,
            mcp_path: config.mcp_path.clone(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The forwarder (the readiness probe asks it whether the upstream answers).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// What requests on a new connection share: the peer, and the identity of its verified
    /// client certificate when mTLS is on.
    pub fn connection(&self, conn: crate::server::Conn) -> Arc<ConnInfo> {
        let cert = match (&self.mtls, &conn.client_cert) {
            (Some(cfg), Some(leaf)) => {
                Some(Arc::new(crate::auth::mtls::principal(cfg, leaf.as_ref())))
            }
            _ => None,
        };
        Arc::new(ConnInfo {
            peer: conn.peer,
            peer_ip: crate::proxy::headers::peer_value(conn.peer.ip()),
            tls: conn.tls,
            cert,
        })
    }

    /// One request, start to end (the stages in the module docs).
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ConnInfo>,
        req: http::Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if req.method() == HttpMethod::GET && self.metadata.serves(req.uri().path()) {
            return Ok(self.resource_metadata(&req, conn.tls));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut ctx = Ctx::new(
            id,
            conn.peer,
            conn.peer_ip.clone(),
            conn.tls,
            conn.cert.clone(),
            req,
        );
        let mut guard = RequestGuard::new(self.metrics.clone(), id, ctx.started);
        if let Some(a) = &self.audit {
            guard.audit(a.clone(), audit::begin(&ctx));
        }
        // Tracing on: each check's time.
        let mut times = trace::CheckTimes::default();
        let checked = self.check(&mut ctx, &mut times).await;
        guard.set_op(op_of(&ctx, &self.mcp_path));
        if let Some(otel) = &self.otel {
            let refused = checked.as_ref().err().map(|(stage, d)| (*stage, d));
            let spans = trace::start(otel, &mut ctx, &times, refused);
            if let Some(d) = guard.draft() {
                let (trace_id, span_id) = spans.server.ids();
                d.trace_id = Some(trace_id.to_string());
                d.span_id = Some(span_id.to_string());
            }
            guard.trace(spans);
        }
        if let Some(d) = guard.draft() {
            audit::describe(&ctx, d);
        }
        let resp = match checked {
            Err((stage, denial)) => self.refuse(stage, &mut ctx, &mut guard, denial),
            Ok(()) => match self.forward_and_answer(&mut ctx, &mut guard).await {
                Ok(resp) => {
                    let sse = answer::is_sse(&resp);
                    guard.respond(resp.status().as_u16(), Outcome::Forwarded, sse);
                    resp
                }
                Err((stage, denial)) => self.refuse(stage, &mut ctx, &mut guard, denial),
            },
        };
        Ok(resp.map(|b| b.with_guard(guard)))
    }

    /// The checks, in order; the first refusal ends them.
    async fn check(
        &self,
        ctx: &mut Ctx,
        times: &mut trace::CheckTimes,
    ) -> Result<(), (&'static str, Denial)> {
        // One clock read per check: each check ends where the next begins.
        let mut start = ctx.started;
        for (i, check) in self.checks.iter().enumerate() {
            let span = tracing::debug_span!("check", name = check.name(), request = ctx.id);
            let result = check.run(ctx).instrument(span).await;
            let end = Instant::now();
            self.durations[i].observe((end - start).as_secs_f64());
            if self.otel.is_some() {
                times.note(check.name(), start, end);
            }
            start = end;
            result.map_err(|denial| (check.name(), denial))?;
        }
        Ok(())
    }

    /// Forwards the checked request and runs the answer stages over the upstream's answer.
    async fn forward_and_answer(
        &self,
        ctx: &mut Ctx,
        guard: &mut RequestGuard,
    ) -> Result<Response<ProxyBody>, (&'static str, Denial)> {
        self.metrics.bytes_in.inc_by(ctx.body.len() as u64);
        if let (Some(otel), Some(spans)) = (&self.otel, guard.spans_mut()) {
            trace::upstream(otel, spans, ctx);
        }
        // Headers and body move out; the parsed envelope stays for answering a failure.
        let out = Outgoing {
            method: ctx.parts.method.clone(),
            query: ctx.parts.uri.query(),
            headers: std::mem::take(&mut ctx.parts.headers),
            body: std::mem::take(&mut ctx.body),
            peer_ip: &ctx.peer_ip,
            tls: ctx.tls,
            principal: ctx.principal.as_deref(),
        };
        let mut resp = self
            .proxy
            .forward(out)
            .await
            .map_err(|denial| ("forward", denial))?;
        for stage in ANSWER_STAGES {
            resp = self
                .answer(stage, ctx, resp)
                .map_err(|denial| (stage.name(), denial))?;
        }
        Ok(resp)
    }

    /// The one refusal path: the denial counter, the log, the audit record, the guard and
    /// the response, together. `stage` names what refused (a check, `forward`, an answer stage).
    fn refuse(
        &self,
        stage: &'static str,
        ctx: &mut Ctx,
        guard: &mut RequestGuard,
        denial: Denial,
    ) -> Response<ProxyBody> {
        self.metrics.count_denial(stage, denial.reason);
        let fault = denial.reason.fault();
        let detail = denial.detail.as_deref().unwrap_or("");
        let reason = denial.reason.as_str();
        let ids = guard.spans_mut().map(|t| {
            trace::fail(t, &denial, stage == "forward");
            t.server.ids()
        });
        let trace_id = ids.map(|i| tracing::field::display(i.0));
        let span_id = ids.map(|i| tracing::field::display(i.1));
        if fault == Fault::Upstream {
            tracing::warn!(
                request = ctx.id,
                trace_id,
                span_id,
                stage,
                reason,
                detail,
                "upstream failed"
            );
        } else {
            tracing::debug!(
                request = ctx.id,
                trace_id,
                span_id,
                stage,
                reason,
                detail,
                "request refused"
            );
        }
        let answers = ctx.envelope.as_ref().is_none_or(|e| e.has_requests());
        if let Some(d) = guard.draft() {
            note_denial(d, &denial, answers);
        }
        let mut resp = ctx.deny(denial);
        // A refusal before the body was read whole must still reach the client.
        transport::linger(ctx, resp.headers_mut());
        let outcome = match fault {
            Fault::Upstream => Outcome::UpstreamError,
            Fault::Client | Fault::Sentinel => Outcome::Rejected,
        };
        guard.respond(resp.status().as_u16(), outcome, false);
        resp.map(ProxyBody::full)
    }

    /// RFC 9728 metadata: public, cacheable, never behind authentication.
    fn resource_metadata(&self, req: &http::Request<Incoming>, tls: bool) -> Response<ProxyBody> {
        Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CACHE_CONTROL, "public, max-age=3600")
            .body(ProxyBody::full(self.metadata.document(req.headers(), tls)))
            .expect("metadata response is valid")
    }
}

/// A refusal, in the audit record: its reason, and the JSON-RPC code the client got.
fn note_denial(d: &mut Draft, denial: &Denial, answers: bool) {
    d.denial = Some(denial.reason.as_str());
    d.outcome = Some(match denial.reason {
        Reason::RateLimited | Reason::ConcurrencyLimited | Reason::RateLimitUnavailable => {
            AuditOutcome::RateLimited
        }
        Reason::UpstreamUnavailable | Reason::UpstreamTimeout => AuditOutcome::UpstreamError,
        _ => AuditOutcome::Denied,
    });
    if answers {
        d.jsonrpc_error = Some(i64::from(denial.code()));
    }
}

fn op_of(ctx: &Ctx, mcp_path: &str) -> Op {
    if ctx.parts.uri.path() != mcp_path {
        return Op::Invalid;
    }
    match ctx.parts.method {
        HttpMethod::GET => Op::StreamGet,
        HttpMethod::DELETE => Op::SessionDelete,
        _ => match &ctx.envelope {
            Some(Envelope { batch: true, .. }) => Op::Batch,
            Some(env) => env
                .messages
                .first()
                .map_or(Op::Invalid, |m| Op::Mcp(m.method)),
            None => Op::Invalid,
        },
    }
}
