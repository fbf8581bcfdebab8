//! The admin port: `/healthz` (the process answers), `/readyz` (every named blocker cleared),
//! `/metrics` (Prometheus text). Nothing here changes state.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Readiness as a set of named blockers: ready when the set is empty.
pub struct Readiness {
    blockers: Mutex<BTreeSet<&'static str>>,
    metrics: Arc<Metrics>,
}

impl Readiness {
    pub fn new(metrics: Arc<Metrics>, initial: &[&'static str]) -> Self {
        let r = Self {
            blockers: Mutex::new(initial.iter().copied().collect()),
            metrics,
        };
        r.publish(&r.blockers.lock().expect("not poisoned"));
        r
    }

    pub fn block(&self, name: &'static str) {
        let mut b = self.blockers.lock().expect("not poisoned");
        if b.insert(name) {
            tracing::info!(blocker = name, "not ready");
        }
        self.publish(&b);
    }

    pub fn clear(&self, name: &'static str) {
        let mut b = self.blockers.lock().expect("not poisoned");
        if b.remove(name) {
            tracing::info!(blocker = name, "blocker cleared");
        }
        self.publish(&b);
    }

    pub fn blockers(&self) -> Vec<&'static str> {
        self.blockers
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .collect()
    }

    fn publish(&self, b: &BTreeSet<&'static str>) {
        self.metrics.ready.set(i64::from(b.is_empty()));
    }
}

pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        let service = service_fn(move |req| {
            let r = route(&req, &readiness, &metrics);
            async move { Ok::<_, Infallible>(r) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

fn route(
    req: &Request<Incoming>,
    readiness: &Readiness,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let (status, ctype, body): (StatusCode, &str, Bytes) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" => {
            let blockers = readiness.blockers();
            let status = if blockers.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({ "ready": blockers.is_empty(), "blockers": blockers });
            (status, "application/json", Bytes::from(body.to_string()))
        }
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(metrics.encode()),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(body))
        .expect("static response is valid")
}
