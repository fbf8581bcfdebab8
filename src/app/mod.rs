//! The running sidecar: binds the traffic and admin ports, probes the upstream for readiness,
//! and drains in order on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::auth::apikeys::ApiKeys;
use crate::auth::chain::{Authenticator, Authenticators};
use crate::auth::jwt::JwtVerifier;
use crate::auth::kubernetes::TokenReviewer;
use crate::auth::metadata::ResourceMetadata;
use crate::bindings::Bindings;
use crate::config::Config;
use crate::identity::{AuthMethod, Principal};
use crate::metrics::Metrics;
use crate::pipeline::authenticate::Authenticate;
use crate::pipeline::authorize::Authorize;
use crate::pipeline::ratelimit::RateLimit;
use crate::pipeline::session::Session;
use crate::pipeline::{Pipeline, Stages};
use crate::policy::PolicyStore;
use crate::proxy::headers::IdentityRules;
use crate::proxy::{Proxy, Upstream};
use crate::ratelimit::RateLimiter;
use crate::readiness::Readiness;
use crate::server::{self, ServeOptions};
use crate::tls::{ClientAuth, ReloadingTls, TlsFiles, TlsMetrics, TlsOptions};

const BLOCK_UPSTREAM: &str = "upstream";
const BLOCK_SHUTDOWN: &str = "shutting_down";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "no upstream configured: set upstream.url or upstream.command, or pass --upstream or -- PROG ARGS"
    )]
    NoUpstream,
    #[error("stdio upstream: {0}")]
    Stdio(#[from] crate::stdio::BridgeError),
    #[error("authentication: {0}")]
    Auth(&'static str),
    #[error("authentication: kubernetes: {0}")]
    Kubernetes(#[from] crate::auth::kubernetes::ReviewerError),
    #[error("authentication: jwt: {0}")]
    Jwt(#[from] crate::auth::jwt::JwtError),
    /// A metric that could not be registered (a name registered twice: a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("no policy: the config needs a `policy` section")]
    NoPolicy,
    #[error("authentication: {0}")]
    ApiKeys(#[from] crate::auth::apikeys::KeyFileError),
    #[error("rate limits: {0}")]
    RateLimit(#[from] crate::ratelimit::RateLimitError),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("traffic TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("integrity: {0}")]
    Integrity(String),
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error("tracing: {0}")]
    Tracing(String),
}

/// A started sentinel. Dropping it does not stop it; call `shutdown`.
mod explain;
pub mod front;
pub mod pin;

pub use explain::explain_integrity;

pub struct Sentinel {
    traffic_addr: SocketAddr,
    admin_addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
    done: JoinHandle<bool>,
}

/// Which front the pipeline serves: the HTTP traffic port, or one local client on stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Http,
    Stdio,
}

/// The pipeline and what it runs on, built from the config: the same for both fronts.
pub(crate) struct Core {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    auditor: Option<Arc<crate::audit::Auditor>>,
    bridge: Option<Arc<crate::stdio::Bridge>>,
    otel: Option<Arc<crate::otel::Otel>>,
    /// Cancelled when the front stops taking requests.
    pub(crate) stop: CancellationToken,
    /// Cancelled when open SSE streams must close.
    sse_close: CancellationToken,
    /// TLS of the HTTP front.
    tls: Option<ReloadingTls>,
}

impl Core {
    pub(crate) async fn build(config: &Config, front: Front) -> Result<Core, StartError> {
        if config.upstream.url.is_none() && config.upstream.command.is_none() {
            return Err(StartError::NoUpstream);
        }
        let stdio_caller = match front {
            Front::Http => {
                if let Some(why) = config.auth_problem() {
                    return Err(StartError::Auth(why));
                }
                if !config.auth.anonymous && !config.auth.has_network_authenticator() {
                    return Err(StartError::Auth(
                        "auth.stdio names the caller of `mcp-sentinel stdio`; the traffic port needs api_keys, jwt, kubernetes or mtls",
                    ));
                }
                None
            }
            Front::Stdio => match &config.auth.stdio {
                Some(c) => {
                    let mut p = Principal::new(&c.subject, AuthMethod::Stdio);
                    p.groups = c.groups.clone();
                    Some(Arc::new(p))
                }
                None if config.auth.anonymous => None,
                None => {
                    return Err(StartError::Auth(
                        "the stdio front needs its caller: set auth.stdio.subject (or anonymous: allow)",
                    ));
                }
            },
        };
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::new(metrics.ready.clone(), &[BLOCK_UPSTREAM]));
        let stop = CancellationToken::new();
        let sse_close = CancellationToken::new();
        let auth = AuthParts::build(config, &metrics, &readiness, &stop, stdio_caller).await?;
        let tls = match front {
            Front::Http => traffic_tls(config, &metrics, &stop)?,
            Front::Stdio => None,
        };
        let policy = config.policy.as_ref().ok_or(StartError::NoPolicy)?;
        let store = PolicyStore::new(policy, metrics.registry())?;
        store.spawn_reloader(stop.clone());
        let authorize = Authorize::new(store.clone(), auth.metadata.clone(), metrics.registry())?;
        let ratelimit = match &config.rate_limits {
            Some(rl) => {
                let limiter = RateLimiter::new(rl, metrics.registry(), stop.clone())?;
                tokio::spawn(crate::ratelimit::sweep(limiter.clone(), stop.clone()));
                Some(RateLimit::new(limiter))
            }
            None => None,
        };
        let integrity = crate::integrity::Integrity::new(&config.integrity, metrics.registry())
            .map_err(StartError::Integrity)?;
        if let Some(i) = &integrity {
            i.start(stop.clone()).await;
        }
        let auditor = crate::audit::Auditor::start(&config.audit, metrics.registry()).await?;
        let otel = start_tracing(config, &metrics)?;
        // Last of what can fail: the stdio upstream starts its warm children.
        let (upstream, bridge) = match (&config.upstream.url, &config.upstream.command) {
            (Some(url), _) => (Upstream::Http(url.clone()), None),
            (None, Some(argv)) => {
                let bridge = crate::stdio::Bridge::start(
                    argv.clone(),
                    &config.upstream.stdio,
                    config.limits.max_body_bytes,
                    metrics.registry(),
                )?;
                (Upstream::Stdio(bridge.clone()), Some(bridge))
            }
            (None, None) => return Err(StartError::NoUpstream),
        };
        let proxy = Proxy::new(
            upstream,
            &config.upstream,
            metrics.clone(),
            sse_close.clone(),
            IdentityRules::new(&config.auth),
        );
        let pipeline = Arc::new(Pipeline::new(
            config,
            Stages {
                metrics: metrics.clone(),
                authenticate: auth.authenticate,
                session: auth.session,
                authorize,
                ratelimit,
                audit: auditor.clone(),
                proxy,
                metadata: auth.metadata,
                policy: store,
                mtls: config.auth.mtls.clone().map(Arc::new),
                integrity,
                otel: otel.clone(),
            },
        ));
        tokio::spawn(probe_upstream(
            pipeline.clone(),
            readiness.clone(),
            stop.clone(),
        ));
        Ok(Core {
            pipeline,
            metrics,
            readiness,
            auditor,
            bridge,
            otel,
            stop,
            sse_close,
            tls,
        })
    }

    /// After the front drained (or gave up at the deadline): SSE streams were closed, every
    /// record is queued — deliver them (or spool them), then stop the stdio servers (stdin
    /// closed, SIGTERM, SIGKILL), in what is left of `deadline` since `began`. True when
    /// every record was delivered.
    pub(crate) async fn finish(&self, began: tokio::time::Instant, deadline: Duration) -> bool {
        let flushed = match &self.auditor {
            Some(a) => a.close(deadline.saturating_sub(began.elapsed())).await,
            None => true,
        };
        if !flushed {
            tracing::warn!("shutdown deadline reached before every audit record was delivered");
        }
        if let Some(bridge) = &self.bridge {
            let left = deadline.saturating_sub(began.elapsed());
            bridge.shutdown(left.max(Duration::from_secs(1))).await;
        }
        if let Some(otel) = &self.otel {
            // The spans of the last requests, within what is left (at most a second more).
            let left = deadline.saturating_sub(began.elapsed());
            otel.shutdown(left.max(Duration::from_secs(1))).await;
        }
        flushed
    }
}

/// The tracer, when the `tracing` section (or `OTEL_*`) turns it on.
fn start_tracing(
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<Arc<crate::otel::Otel>>, StartError> {
    let settings = config
        .tracing_settings()
        .map_err(|e| StartError::Tracing(e.to_string()))?;
    let Some(settings) = settings else {
        return Ok(None);
    };
    tracing::info!("{}", settings.summary());
    crate::otel::Otel::start(&settings, metrics.trace_spans.clone())
        .map(|o| Some(Arc::new(o)))
        .map_err(StartError::Tracing)
}

impl Sentinel {
    /// Binds both ports and starts serving. Ports may be 0; the bound addresses are reported.
    pub async fn start(config: Config) -> Result<Sentinel, StartError> {
        let (traffic_listener, traffic_addr) = server::bind(config.listen).await?;
        let (admin_listener, admin_addr) = server::bind(config.admin_listen).await?;
        let mut core = Core::build(&config, Front::Http).await?;
        let upstream_shown = config.summary_upstream();
        let metrics = core.metrics.clone();
        let readiness = core.readiness.clone();
        let stop = core.stop.clone();

        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(admin::serve(
            admin_listener,
            readiness.clone(),
            metrics.exposition(),
            admin_stop.clone(),
        ));

        let traffic = ServeOptions {
            tls: core.tls.take(),
            header_read_timeout: None,
            handshake_failures: Some(metrics.tls_handshake_failures.clone()),
            client_cert: config.auth.mtls.is_some(),
            nodelay: true,
        };
        let pipeline = core.pipeline.clone();
        let serve = tokio::spawn(server::serve(
            traffic_listener,
            traffic,
            stop.clone(),
            move |conn| {
                let pipeline = pipeline.clone();
                let conn = pipeline.connection(conn);
                // Boxed per request: hyper keeps a connection's in-flight future in an
                // allocation of the future's size (about 9 KiB) for as long as the connection
                // lives; boxed, it is a pointer there, and the request's state is freed when the
                // answer's head goes out rather than held by every open stream (issue 16).
                hyper::service::service_fn(move |req| {
                    Box::pin(pipeline.clone().handle(conn.clone(), req))
                })
            },
        ));
        let shutdown = config.shutdown.clone();
        let done = tokio::spawn({
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                let graceful = match serve.await {
                    Ok(g) => g,
                    Err(_) => GracefulShutdown::new(),
                };
                // In-flight requests finish; SSE streams get their grace, then are closed.
                let sse_close = core.sse_close.clone();
                let sse_timer = tokio::spawn(async move {
                    tokio::time::sleep(shutdown.sse_grace).await;
                    sse_close.cancel();
                });
                let began = tokio::time::Instant::now();
                let drained = tokio::time::timeout(shutdown.deadline, graceful.shutdown())
                    .await
                    .is_ok();
                sse_timer.abort();
                if !drained {
                    tracing::warn!("shutdown deadline reached with connections still open");
                }
                let flushed = core.finish(began, shutdown.deadline).await;
                admin_stop.cancel();
                let _ = admin_task.await;
                drained && flushed
            }
        });
        tracing::info!(
            traffic = %traffic_addr,
            admin = %admin_addr,
            upstream = %upstream_shown,
            "mcp-sentinel started"
        );
        Ok(Sentinel {
            traffic_addr,
            admin_addr,
            metrics,
            readiness,
            stop,
            done,
        })
    }

    pub fn traffic_addr(&self) -> SocketAddr {
        self.traffic_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts draining: readiness fails at once and no new connection is accepted.
    pub fn begin_shutdown(&self) {
        self.readiness.block(BLOCK_SHUTDOWN);
        self.stop.cancel();
    }

    /// Drains and stops. True when every connection finished before the deadline.
    pub async fn shutdown(self) -> bool {
        self.begin_shutdown();
        self.done.await.unwrap_or(false)
    }
}

/// The authentication pieces of the pipeline, built from the config.
struct AuthParts {
    authenticate: Authenticate,
    session: Arc<Session>,
    metadata: Arc<ResourceMetadata>,
}

impl AuthParts {
    async fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        readiness: &Arc<Readiness>,
        stop: &CancellationToken,
        stdio: Option<Arc<Principal>>,
    ) -> Result<Self, StartError> {
        let auth = &config.auth;
        let registry = metrics.registry();
        let api_keys = match &auth.api_keys {
            Some(k) => {
                let keys = ApiKeys::load(&k.file, registry)?;
                keys.spawn_reloader(k.reload_interval, stop.clone());
                Some((keys, k.header.clone()))
            }
            None => None,
        };
        let kubernetes = match &auth.kubernetes {
            Some(k) => Some(TokenReviewer::new(k.clone(), registry).await?),
            None => None,
        };
        let jwt = match &auth.jwt {
            Some(j) => {
                let verifier = JwtVerifier::new(j.clone(), registry)?;
                verifier.spawn(readiness.clone(), stop.clone());
                Some(verifier)
            }
            None => None,
        };
        let on = Authenticators {
            anonymous: auth.anonymous,
            api_keys,
            jwt,
            kubernetes,
            mtls: auth.mtls.is_some(),
            stdio,
        };
        let authenticator = Authenticator::new(on, registry)?;
        let metadata = Arc::new(ResourceMetadata::new(
            auth.resource.clone(),
            auth.authorization_servers.clone(),
            auth.scopes_supported.clone(),
            &config.mcp_path,
        ));
        let bindings = Arc::new(Bindings::new(
            config.sessions.idle_ttl,
            config.sessions.max_bindings,
        ));
        let session = Arc::new(Session::new(bindings, registry)?);
        tokio::spawn(sweep_bindings(
            session.clone(),
            config.sessions.idle_ttl,
            stop.clone(),
        ));
        Ok(Self {
            authenticate: Authenticate::new(
                Arc::new(authenticator),
                metadata.clone(),
                &auth.scopes_supported,
            ),
            session,
            metadata,
        })
    }
}

/// TLS on the traffic port, with its certificate reloader, when configured.
fn traffic_tls(
    config: &Config,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Option<ReloadingTls>, StartError> {
    let Some(t) = &config.tls else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: t.cert_file.clone(),
        key: t.key_file.clone(),
        client_ca: t.client_ca_file.clone(),
    };
    let options = TlsOptions {
        client_auth: if t.require_client_cert {
            ClientAuth::Required
        } else {
            ClientAuth::Optional
        },
        ..TlsOptions::default()
    };
    let tls_metrics = TlsMetrics::register(metrics.registry()).ok();
    let tls = ReloadingTls::load(files, options, tls_metrics)?;
    tls.spawn_reloader(stop.clone());
    Ok(Some(tls))
}

/// Forgets idle session and task bindings, so memory stays bounded without traffic too.
async fn sweep_bindings(session: Arc<Session>, idle_ttl: Duration, stop: CancellationToken) {
    let every = (idle_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        session.sweep();
    }
}

/// Keeps the `upstream` readiness blocker in step with whether the upstream answers.
async fn probe_upstream(
    pipeline: Arc<Pipeline>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    loop {
        let ok = pipeline.proxy().probe().await;
        if ok {
            readiness.clear(BLOCK_UPSTREAM);
        } else {
            readiness.block(BLOCK_UPSTREAM);
        }
        let pause = if ok {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(200)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
