//! The traffic listener: HTTP/1.1 and h2c on one port, each connection watched so shutdown can
//! drain them, and every request handed to the pipeline and the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method as HttpMethod, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::Auditor;
use crate::audit::record::{AuditOutcome, Draft};
use crate::auth::metadata::ResourceMetadata;
use crate::auth::sessions::Owner;
use crate::auth::{AuthFailure, Principal};
use crate::config::auth::MtlsConfig;
use crate::mcp::Method;
use crate::mcp::{Envelope, Era};
use crate::metrics::{Metrics, Op, Outcome};
use crate::pipeline::session::Session;
use crate::pipeline::{Ctx, Pipeline};
use crate::pipeline::{Denial, Reason};
use crate::policy::PolicyStore;
use crate::policy::filter::{AnswerEdit, OnBlocked, OwnTasks, PolicyRef, blocked_answer};
use crate::proxy::Proxy;
use crate::proxy::body::ProxyBody;
use crate::proxy::guard::RequestGuard;
use crate::proxy::rewrite::Rewriter;
use crate::proxy::tap::TaskTap;

/// What every request handler shares.
pub struct Traffic {
    pub pipeline: Pipeline,
    pub proxy: Proxy,
    pub metrics: Arc<Metrics>,
    mcp_path: String,
    next_id: AtomicU64,
    metadata: Arc<ResourceMetadata>,
    session: Arc<Session>,
    /// The running policy, for answers that outlive a reload (GET streams).
    policy: Arc<PolicyStore>,
    audit: Option<Arc<Auditor>>,
}

/// The identity of a connection's verified client certificate.
type PeerCert = Option<Arc<Result<Arc<Principal>, AuthFailure>>>;

/// What the traffic handler needs besides the pipeline and the proxy.
pub struct TrafficParts {
    pub metrics: Arc<Metrics>,
    pub mcp_path: String,
    pub metadata: Arc<ResourceMetadata>,
    pub session: Arc<Session>,
    pub policy: Arc<PolicyStore>,
    pub audit: Option<Arc<Auditor>>,
}

impl Traffic {
    pub fn new(pipeline: Pipeline, proxy: Proxy, parts: TrafficParts) -> Self {
        let TrafficParts {
            metrics,
            mcp_path,
            metadata,
            session,
            policy,
            audit,
        } = parts;
        Self {
            pipeline,
            proxy,
            metrics,
            mcp_path,
            next_id: AtomicU64::new(1),
            metadata,
            session,
            policy,
            audit,
        }
    }

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
            guard.audit(a.clone(), a.begin(&ctx));
        }
        let checked = self.pipeline.run(&mut ctx).await;
        guard.set_op(op_of(&ctx, &self.mcp_path));
        if let (Some(a), Some(d)) = (&self.audit, guard.draft()) {
            a.describe(&ctx, d);
        }
        let answers = ctx.envelope.as_ref().is_none_or(|e| e.has_requests());
        let resp = match checked {
            Err(denial) => {
                if let Some(d) = guard.draft() {
                    note_denial(d, &denial, answers);
                }
                let mut resp = ctx.deny(denial);
                // A refusal before the body was read whole must still reach the client.
                crate::pipeline::transport::linger(&mut ctx, &mut resp);
                guard.respond(resp.status().as_u16(), Outcome::Rejected, false);
                resp
            }
            Ok(()) => {
                self.metrics.bytes_in.inc_by(ctx.body.len() as u64);
                match self.proxy.forward(&mut ctx, &mut guard).await {
                    Ok(resp) => {
                        self.session.observe(&ctx, resp.status(), resp.headers());
                        let resp = self.apply_policy(&ctx, resp);
                        let resp = self.tap_tasks(&ctx, resp);
                        // Concurrency slots are held until the response ends or is dropped.
                        match ctx.permits.take() {
                            Some(p) => resp.map(|b| b.with_permits(p)),
                            None => resp,
                        }
                    }
                    Err(denial) => {
                        if let Some(d) = guard.draft() {
                            note_denial(d, &denial, answers);
                        }
                        tracing::warn!(
                            request = id,
                            reason = denial.reason.as_str(),
                            detail = denial.detail.as_deref().unwrap_or(""),
                            "upstream failed"
                        );
                        ctx.deny(denial)
                    }
                }
            }
        };
        Ok(resp.map(|b| b.with_guard(guard)))
    }
}

impl Traffic {
    /// A `tools/call` answer may carry a task handle: bind its id to the caller as it passes.
    /// With audit on, every answer to a request is read for its error code and `isError`.
    fn tap_tasks(&self, ctx: &Ctx, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let call = ctx
            .envelope
            .as_ref()
            .and_then(|e| e.single())
            .is_some_and(|m| m.method == crate::mcp::Method::ToolsCall);
        let audit = self.audit.is_some() && ctx.envelope.as_ref().is_some_and(|e| e.has_requests());
        let sse = is_sse(&resp);
        let tap = match &ctx.principal {
            Some(p) if call && resp.status().is_success() => {
                let tap = TaskTap::new(sse, self.session.clone(), p.clone());
                if audit { tap.with_results() } else { tap }
            }
            _ if audit => TaskTap::results_only(sse),
            _ => return resp,
        };
        resp.map(|b| b.with_tap(tap))
    }

    /// What the policy changes in an answer: a list result is cut down to what the caller may
    /// use, a `tasks/list` result to the caller's own tasks; a legacy SSE stream loses the
    /// server→client requests the caller may not receive.
    fn apply_policy(&self, ctx: &Ctx, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let (Some(policy), Some(principal)) = (&ctx.policy, &ctx.principal) else {
            return resp;
        };
        if !resp.status().is_success() {
            return resp;
        }
        let stream = ctx.parts.method == HttpMethod::GET;
        let messages = ctx.envelope.as_ref().map_or(&[][..], |e| &e.messages[..]);
        // Task lists are cut to the caller's own whatever the policy: ownership is not a rule.
        let tasks = stream || messages.iter().any(|m| m.method == Method::TasksList);
        // Nothing to hide from anyone under the policy this answer is decided with. A GET
        // stream is edited with the live policy, which a reload may change while it runs.
        if !stream && !tasks && policy.denies_nothing() {
            return resp;
        }
        let sse = is_sse(&resp);
        let modern = ctx.era == Era::Modern;
        // A GET stream may replay any earlier answer (resumption), so it is always edited.
        let lists = stream || messages.iter().any(|m| m.method.is_list());
        let asks_input = modern
            && messages.iter().any(|m| {
                matches!(
                    m.method,
                    Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead
                )
            });
        let legacy_stream = sse && !modern;
        let blocks =
            stream || ((legacy_stream || asks_input) && policy.blocks_server_requests(principal));
        if !lists && !blocks && !tasks {
            return resp;
        }
        if let Some(enc) = resp.headers().get(http::header::CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            // The upstream is asked for identity; an answer it compressed anyway cannot be
            // inspected, so it is not passed on.
            return ctx.deny(
                Denial::new(Reason::UpstreamUnavailable)
                    .with_detail("compressed answer that the policy must inspect"),
            );
        }
        let on_blocked: Option<OnBlocked> = legacy_stream.then(|| {
            let send = self.proxy.answer_upstream(ctx);
            let subject = principal.identity();
            Box::new(move |method: &str, id: serde_json::Value| {
                tracing::info!(subject = %subject, method, "server-to-client request blocked by policy");
                send(bytes::Bytes::from(blocked_answer(&id)));
            }) as OnBlocked
        });
        let edit = AnswerEdit {
            policy: if stream {
                PolicyRef::Live(self.policy.clone())
            } else {
                PolicyRef::Fixed(policy.clone())
            },
            principal: principal.clone(),
            modern,
            lists,
            tasks: tasks.then(|| OwnTasks {
                bindings: self.session.bindings().clone(),
                owner: Owner::of(principal),
            }),
            request_id: ctx.reply_id().and_then(|id| serde_json::from_str(&id).ok()),
            on_blocked,
            hidden: self.metrics.list_items_hidden.clone(),
            blocked: self.metrics.server_requests_blocked.clone(),
        };
        let (mut parts, body) = resp.into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Response::from_parts(
            parts,
            body.with_rewriter(Rewriter::new(sse, Box::new(edit))),
        )
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
fn note_denial(d: &mut Draft, denial: &crate::pipeline::Denial, answers: bool) {
    use crate::pipeline::Reason;
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

fn is_sse(resp: &Response<ProxyBody>) -> bool {
    crate::proxy::headers::is_event_stream(resp.headers())
}

/// What every request of one client connection shares.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `peer`'s IP as a header value.
    pub peer_ip: http::HeaderValue,
    pub tls: bool,
    pub cert: PeerCert,
}

/// TLS on the traffic port, and how client certificates become identities.
#[derive(Clone)]
pub struct TrafficTls {
    pub tls: crate::tls::ReloadingTls,
    /// Set when the mTLS authenticator is on.
    pub mtls: Option<Arc<MtlsConfig>>,
}

/// The longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Accepts connections until `stop` is cancelled; returns the watcher of every connection it
/// started, for draining.
pub async fn serve(
    listener: TcpListener,
    traffic: Arc<Traffic>,
    tls: Option<TrafficTls>,
    stop: CancellationToken,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let traffic = traffic.clone();
        let peer_ip = crate::proxy::headers::peer_value(peer.ip());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let Some(tls) = &tls else {
            let conn = Arc::new(ConnInfo {
                peer,
                peer_ip,
                tls: false,
                cert: None,
            });
            let service = service_fn(move |req| traffic.clone().handle(conn.clone(), req));
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            });
            continue;
        };
        let acceptor = tls.tls.acceptor();
        let mtls = tls.mtls.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        traffic.metrics.tls_handshake_failures.inc();
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                        traffic.metrics.tls_handshake_failures.inc();
                        return;
                    }
                };
            let cert = match (&mtls, stream.get_ref().1.peer_certificates()) {
                (Some(cfg), Some([leaf, ..])) => {
                    Some(Arc::new(crate::auth::mtls::principal(cfg, leaf.as_ref())))
                }
                _ => None,
            };
            let conn = Arc::new(ConnInfo {
                peer,
                peer_ip,
                tls: true,
                cert,
            });
            let service = service_fn(move |req| traffic.clone().handle(conn.clone(), req));
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
    // Dropping the listener here refuses new connections.
    graceful
}
