//! Forwarding: the request that passed the pipeline goes to the upstream with its original
//! bytes; the answer streams back frame by frame.

pub mod body;
pub mod guard;
pub mod headers;
pub mod rewrite;
pub mod sse;
pub mod tap;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method as HttpMethod, Request, Response, Uri};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use crate::config::UpstreamUrl;
use crate::denial::{Denial, Reason};
use crate::identity::Principal;
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::stdio::Bridge;
use body::ProxyBody;
use upstream::{Dial, SendError, UpstreamPool};

/// What the proxy forwards to: an MCP server over HTTP, or a stdio server through the bridge
/// (reached over HTTP in memory, so the hop is the same).
pub enum Upstream {
    Http(UpstreamUrl),
    Stdio(Arc<Bridge>),
}

/// The request that passed the checks, on its way to the upstream.
pub struct Outgoing<'a> {
    pub method: HttpMethod,
    /// The client's query string, passed on.
    pub query: Option<&'a str>,
    pub headers: http::HeaderMap,
    /// The original request bytes.
    pub body: Bytes,
    /// The client's IP, as a header value (`X-Forwarded-For`).
    pub peer_ip: &'a http::HeaderValue,
    /// The client reached the sentinel over TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The verified caller, whose identity headers the upstream gets.
    pub principal: Option<&'a Principal>,
}

pub struct Proxy {
    pool: Arc<UpstreamPool>,
    /// The MCP endpoint path on the upstream.
    path: http::uri::PathAndQuery,
    /// The `Host` header the upstream expects.
    host: http::HeaderValue,
    /// A stdio upstream answers readiness itself.
    bridge: Option<Arc<Bridge>>,
    /// The upstream request target (origin form) of a request without a query string.
    base_uri: Uri,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Cancelled when open SSE streams must close (end of the shutdown grace).
    sse_close: CancellationToken,
    identity: headers::IdentityRules,
}

impl Proxy {
    pub fn new(
        upstream: Upstream,
        cfg: &crate::config::UpstreamConfig,
        metrics: Arc<Metrics>,
        sse_close: CancellationToken,
        identity: headers::IdentityRules,
    ) -> Self {
        let (dial, path, host, bridge) = match upstream {
            Upstream::Http(u) => (Dial::Addr(u.addr), u.path, u.host, None),
            Upstream::Stdio(b) => (
                Dial::Bridge(b.clone()),
                http::uri::PathAndQuery::from_static("/mcp"),
                http::HeaderValue::from_static("localhost"),
                Some(b),
            ),
        };
        let pool = UpstreamPool::new(cfg, dial);
        let base_uri = uri_for(&path, None);
        Self {
            pool,
            path,
            host,
            bridge,
            base_uri,
            timeout: cfg.timeout,
            metrics,
            sse_close,
            identity,
        }
    }

    /// Sends the request to the upstream. On success the response head is ready and the body
    /// streams (SSE frame by frame); a failure is the denial the client gets.
    pub async fn forward(&self, out: Outgoing<'_>) -> Result<Response<ProxyBody>, Denial> {
        let Outgoing {
            method,
            query,
            mut headers,
            body,
            peer_ip,
            tls,
            principal,
        } = out;
        let uri = match query {
            None => self.base_uri.clone(),
            Some(q) => uri_for(&self.path, Some(q)),
        };
        let has_body = method == HttpMethod::POST;
        headers::to_upstream(
            &mut headers,
            &self.host,
            peer_ip,
            tls,
            has_body.then_some(body.len()),
        );
        self.identity.apply(&mut headers, principal);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;

        let sent = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.pool.send(req)).await;
        let (resp, lease) = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                let kind = match e {
                    SendError::Connect(_) => UpstreamErrorKind::Connect,
                    SendError::Reset(_) => UpstreamErrorKind::Reset,
                };
                self.metrics.count_upstream_error(kind);
                return Err(Denial::new(Reason::UpstreamUnavailable).with_detail(format!("{e:?}")));
            }
            Err(_) => {
                self.metrics
                    .count_upstream_error(UpstreamErrorKind::Timeout);
                return Err(Denial::new(Reason::UpstreamTimeout));
            }
        };
        self.metrics
            .upstream_duration
            .observe(sent.elapsed().as_secs_f64());
        let (mut parts, incoming) = resp.into_parts();
        let sse = headers::to_client(&mut parts.headers);
        let close = sse.then(|| self.sse_close.clone().cancelled_owned());
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(incoming, close, lease),
        ))
    }

    /// Sends the upstream the answer to one of its server→client requests (a blocked one), on
    /// a connection of its own, in the background: the caller's session id, protocol version
    /// and verified identity go with it, as with the caller's own requests.
    pub fn answer_upstream(
        &self,
        session_id: Option<&str>,
        version: Option<&str>,
        principal: Option<&Principal>,
    ) -> impl Fn(Bytes) + Send + 'static {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, self.host.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(id) = session_id.and_then(|s| http::HeaderValue::from_str(s).ok()) {
            headers.insert(crate::mcp::headers::MCP_SESSION_ID, id);
        }
        if let Some(v) = version.and_then(|s| http::HeaderValue::from_str(s).ok()) {
            headers.insert(crate::mcp::headers::MCP_PROTOCOL_VERSION, v);
        }
        self.identity.apply(&mut headers, principal);
        let pool = self.pool.clone();
        let uri = self.base_uri.clone();
        move |body: Bytes| {
            let mut req = Request::new(Full::new(body));
            *req.method_mut() = HttpMethod::POST;
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            let pool = pool.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(5), pool.send_once(req)).await {
                    Ok(Ok(resp)) => {
                        tracing::debug!(
                            status = resp.status().as_u16(),
                            "blocked server request answered"
                        )
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = ?e, "could not answer a blocked server request")
                    }
                    Err(_) => tracing::warn!("answering a blocked server request timed out"),
                }
            });
        }
    }

    /// Readiness probe: does the upstream answer HTTP at all? Any status counts. A stdio
    /// upstream is ready when its warm children run and it is not backing off from crashes.
    pub async fn probe(&self) -> bool {
        if let Some(b) = &self.bridge {
            return b.ready();
        }
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.method_mut() = HttpMethod::OPTIONS;
        *req.uri_mut() = self.base_uri.clone();
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.pool.send_once(req)).await,
            Ok(Ok(_))
        )
    }
}

/// The request target for the upstream hop, in origin form (`/mcp?x=1`).
fn uri_for(path: &http::uri::PathAndQuery, query: Option<&str>) -> Uri {
    let path = path.as_str();
    let target = match query {
        None => path.to_string(),
        Some(q) if path.contains('?') => format!("{path}&{q}"),
        Some(q) => format!("{path}?{q}"),
    };
    target
        .parse()
        .expect("upstream path and client query are valid")
}
