//! `mcp-sentinel inject`: the admission webhook over HTTPS (rustls, certificate reloaded when its
//! files rotate) and its own admin port (`/healthz`, `/readyz`, `/metrics`), both served by the
//! sidecar's own accept loop (`crate::server`) and admin router (`crate::admin`). The handler is
//! thin: it reads the body and hands it to `inject::review_body`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::exposure::{CheckResult, ServiceLister};
use super::inject::{self, InjectResult, Mode};
use super::settings::Settings;
use crate::readiness::Readiness;
use crate::server::ServeOptions;
use crate::tls::{ReloadingTls, TlsError, TlsFiles, TlsMetrics, TlsOptions};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9443";
/// Off Istio's 15000-15100 (the injector may run in a mesh too): the sidecar's admin port.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9481";
/// The API server sends one pod per review; pods are limited to ~1.5 MiB by etcd.
const MAX_BODY: usize = 8 << 20;
/// HTTP/1 clients must send the request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Status codes the webhook answers with: the `code` label's closed set.
const CODES: [u16; 6] = [200, 400, 404, 405, 413, 415];

pub struct InjectorOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: TlsFiles,
    pub tls_reload_interval: Duration,
    pub settings: Settings,
    /// After a shutdown begins, how long the webhook keeps serving while `/readyz` fails, so
    /// the Service stops routing to it first.
    pub drain_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Bind(#[from] crate::server::BindError),
    #[error("service_check: {0}")]
    ServiceCheck(#[from] crate::auth::kubernetes::ReviewerError),
}

/// The injector's metrics, in its own registry (it is a different process from the sidecar).
pub struct InjectorMetrics {
    registry: Registry,
    injections: IntCounterVec,
    requests: IntCounterVec,
    duration: Histogram,
    ready: IntGauge,
    service_checks: IntCounterVec,
}

impl InjectorMetrics {
    fn new() -> (Self, TlsMetrics) {
        let registry = Registry::new();
        let injections = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_injections_total",
                "Pod admission reviews by what the injector did",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in InjectResult::ALL {
            injections.with_label_values(&[r.as_str()]);
        }
        let requests = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_webhook_requests_total",
                "Requests to the webhook by HTTP status",
            ),
            &["code"],
        )
        .expect("valid metric");
        for c in CODES {
            requests.with_label_values(&[&c.to_string()]);
        }
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "mcp_sentinel_webhook_duration_seconds",
                "Time to answer an admission review",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
            ]),
        )
        .expect("valid metric");
        let ready = IntGauge::new("mcp_sentinel_ready", "1 while /readyz answers 200")
            .expect("valid metric");
        let service_checks = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_injector_service_checks_total",
                "Injected pods checked for Services that reach the MCP server around the sentinel, by result (clear, exposed, failed)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in CheckResult::ALL {
            service_checks.with_label_values(&[r.as_str()]);
        }
        let build = IntGaugeVec::new(
            Opts::new("mcp_sentinel_build_info", "Build information; always 1"),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for c in [
            Box::new(injections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(ready.clone()),
            Box::new(service_checks.clone()),
            Box::new(build),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let tls = TlsMetrics::register(&registry).expect("metric names are unique");
        (
            Self {
                registry,
                injections,
                requests,
                duration,
                ready,
                service_checks,
            },
            tls,
        )
    }

    pub fn injections(&self, result: InjectResult) -> IntCounter {
        self.injections.with_label_values(&[result.as_str()])
    }
}

struct State {
    settings: Settings,
    metrics: InjectorMetrics,
    /// With `service_check` on.
    services: Option<ServiceLister>,
}

/// A running injector. Call `shutdown` to stop it.
pub struct Injector {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    readiness: Arc<Readiness>,
    tls: ReloadingTls,
    drain_delay: Duration,
    stop: CancellationToken,
    done: JoinHandle<bool>,
}

impl Injector {
    /// Loads the certificate, binds both ports (0 is fine) and serves.
    pub async fn start(opts: InjectorOptions) -> Result<Injector, StartError> {
        let (metrics, tls_metrics) = InjectorMetrics::new();
        let tls = ReloadingTls::load(
            opts.tls,
            TlsOptions {
                reload_interval: opts.tls_reload_interval,
                ..TlsOptions::default()
            },
            Some(tls_metrics),
        )?;
        let services = match &opts.settings.service_check {
            Some(cfg) => Some(ServiceLister::new(cfg).await?),
            None => None,
        };
        let (listener, addr) = crate::server::bind(opts.listen).await?;
        let (admin, admin_addr) = crate::server::bind(opts.admin_listen).await?;
        let readiness = Arc::new(Readiness::new(metrics.ready.clone(), &[]));
        let registry = metrics.registry.clone();
        let state = Arc::new(State {
            settings: opts.settings,
            metrics,
            services,
        });
        let stop = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        tls.spawn_reloader(admin_stop.clone());
        let admin_task = tokio::spawn(crate::admin::serve(
            admin,
            readiness.clone(),
            crate::metrics::Exposition::new(registry),
            admin_stop.clone(),
        ));
        let webhook = ServeOptions {
            tls: Some(tls.clone()),
            header_read_timeout: Some(HEADER_READ_TIMEOUT),
            ..ServeOptions::default()
        };
        let serve = tokio::spawn(crate::server::serve(listener, webhook, stop.clone(), {
            let state = state.clone();
            move |_| {
                let state = state.clone();
                service_fn(move |req| handle(state.clone(), req))
            }
        }));
        let done = tokio::spawn(async move {
            let graceful = serve.await.unwrap_or_default();
            let drained = tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
                .await
                .is_ok();
            admin_stop.cancel();
            let _ = admin_task.await;
            drained
        });
        tracing::info!(webhook = %addr, admin = %admin_addr, "mcp-sentinel injector started");
        Ok(Injector {
            addr,
            admin_addr,
            readiness,
            tls,
            drain_delay: opts.drain_delay,
            stop,
            done,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn tls(&self) -> &ReloadingTls {
        &self.tls
    }

    /// `/readyz` fails at once; after the drain delay new connections are refused and open
    /// ones finish. True when they all did before the deadline.
    pub async fn shutdown(self) -> bool {
        self.readiness.block("shutting_down");
        tokio::time::sleep(self.drain_delay).await;
        self.stop.cancel();
        self.done.await.unwrap_or(false)
    }
}

/// Adds a warning for every Service that reaches the injected pod's server around the sentinel.
async fn check_services(
    state: &State,
    lister: &ServiceLister,
    body: &[u8],
    a: &mut inject::Answer,
) {
    let Some(resp) = a.review.response.as_mut() else {
        return;
    };
    let review: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let patch: Vec<serde_json::Value> = resp
        .patch
        .as_deref()
        .and_then(|p| serde_json::from_slice(p).ok())
        .unwrap_or_default();
    let namespace = review["request"]["namespace"].as_str().unwrap_or_default();
    let (warnings, result) = lister
        .check(
            namespace,
            &review["request"]["object"],
            &patch,
            &state.settings.default_port_name,
        )
        .await;
    state
        .metrics
        .service_checks
        .with_label_values(&[result.as_str()])
        .inc();
    for w in &warnings {
        tracing::warn!(pod = %a.pod, warning = %w, "a Service reaches the MCP server around the sentinel");
    }
    if !warnings.is_empty() {
        resp.warnings.get_or_insert_with(Vec::new).extend(warnings);
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response is valid")
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let resp = answer(&state, req).await;
    state
        .metrics
        .requests
        .with_label_values(&[resp.status().as_str()])
        .inc();
    state
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    Ok(resp)
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let refuse = |status: StatusCode, why: &str| {
        let review = kube_core::admission::AdmissionResponse::invalid(why).into_review();
        json_response(status, inject::review_json(&review))
    };
    let Some(mode) = Mode::from_path(req.uri().path()) else {
        return refuse(StatusCode::NOT_FOUND, "unknown path");
    };
    if req.method() != Method::POST {
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "cannot read the body"),
    };
    match inject::review_body(&body, mode, &state.settings) {
        Ok(mut a) => {
            if a.result == InjectResult::Injected
                && let Some(lister) = &state.services
            {
                check_services(state, lister, &body, &mut a).await;
            }
            state.metrics.injections(a.result).inc();
            match a.result {
                InjectResult::Injected => tracing::info!(pod = %a.pod, "sidecar injected"),
                InjectResult::Error => {
                    tracing::warn!(pod = %a.pod, why = %a.detail, "admitted without the sidecar (on-failure: admit)");
                }
                InjectResult::Refused => {
                    tracing::warn!(pod = %a.pod, why = %a.detail, "refused: cannot protect the pod");
                }
                InjectResult::Skipped | InjectResult::AlreadyInjected => {
                    tracing::debug!(pod = %a.pod, result = a.result.as_str(), why = %a.detail, "not injected");
                }
            }
            json_response(StatusCode::OK, a.to_json())
        }
        Err(m) => {
            tracing::warn!(error = %m, "malformed admission review");
            json_response(StatusCode::BAD_REQUEST, inject::review_json(&m.answer()))
        }
    }
}
