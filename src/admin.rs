//! The admin port: `/healthz` (the process answers), `/readyz` (every named blocker cleared),
//! `/metrics` (Prometheus text, or OpenMetrics with exemplars when the scraper asks for it).
//! Nothing here changes state.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Exposition, Format};
use crate::readiness::Readiness;
use crate::server::ServeOptions;

/// Serves the admin port until `stop`: `/healthz`, `/readyz` from `readiness`, `/metrics` from
/// `metrics`. The sidecar and the injector both serve theirs with this. At `stop` open
/// connections are asked to close (a request in flight finishes) and not waited for: a probe or
/// a scrape is worth nothing once the process is leaving.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    metrics: Exposition,
    stop: CancellationToken,
) {
    let graceful = crate::server::serve(listener, ServeOptions::default(), stop, move |_| {
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        service_fn(move |req: Request<Incoming>| {
            let r = route(&req, &readiness, &metrics);
            async move { Ok::<_, Infallible>(r) }
        })
    })
    .await;
    drop(graceful);
}

fn route<B>(
    req: &Request<B>,
    readiness: &Readiness,
    metrics: &Exposition,
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
        "/metrics" => {
            let accept = req.headers().get_all(header::ACCEPT).iter();
            let format = Format::negotiate(accept.filter_map(|v| v.to_str().ok()));
            (
                StatusCode::OK,
                format.content_type(),
                Bytes::from(metrics.encode(format)),
            )
        }
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
