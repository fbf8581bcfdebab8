//! A real OTLP trace receiver for tests: the official protobuf definitions (opentelemetry-proto),
//! the TraceService served over gRPC with tonic's generated server, and OTLP/HTTP bodies decoded
//! with prost. It keeps every span it receives, flattened, and can be told to be slow. Over
//! TLS (tokio-rustls) when given a server config, with or without a required client certificate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use tokio::net::TcpListener;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct GotSpan {
    pub name: String,
    /// 1 internal, 2 server, 3 client (the protobuf enum).
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub attrs: BTreeMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub service: String,
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const INTERNAL: i32 = 1;
pub const STATUS_ERROR: i32 = 2;

impl GotSpan {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns.saturating_sub(self.start_ns))
    }
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<GotSpan>>,
    /// Headers (gRPC metadata) of the last export.
    headers: Mutex<Vec<(String, String)>>,
    /// Each export waits this long before answering (a slow collector).
    delay_ms: AtomicU64,
}

impl State {
    fn take(&self, req: ExportTraceServiceRequest, headers: &http::HeaderMap) {
        *self.headers.lock().unwrap() = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let mut out = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .map(|kv| value(kv.value.as_ref()))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(GotSpan {
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attrs: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
                            .collect(),
                        status: s.status.map_or(0, |st| st.code),
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                        service: service.clone(),
                    });
                }
            }
        }
    }

    async fn wait(&self) {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Grpc(Arc<State>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.wait().await;
        let headers = request.metadata().clone().into_headers();
        self.0.take(request.into_inner(), &headers);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver: a gRPC port and an HTTP port, both feeding one list of spans.
pub struct Collector {
    /// `http://127.0.0.1:PORT` (OTLP/gRPC).
    pub grpc: String,
    /// `http://127.0.0.1:PORT/v1/traces` (OTLP/HTTP protobuf).
    pub http: String,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn start_collector() -> Collector {
    start(None).await
}

/// The receiver over TLS with `tls` (its ALPN set per port: `h2` for gRPC, `http/1.1` for
/// HTTP); the URLs are `https://`. A client certificate is required when `tls` requires one.
pub async fn start_collector_tls(tls: rustls::ServerConfig) -> Collector {
    start(Some(tls)).await
}

async fn start(tls: Option<rustls::ServerConfig>) -> Collector {
    let state = Arc::new(State::default());
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let acceptor = |alpn: &[u8]| {
        tls.clone().map(|mut c| {
            c.alpn_protocols = vec![alpn.to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(c))
        })
    };
    let (grpc_tls, http_tls) = (acceptor(b"h2"), acceptor(b"http/1.1"));
    let svc = TraceServiceServer::new(Grpc(state.clone()));
    let grpc_task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = grpc.accept().await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            let tls = grpc_tls.clone();
            tokio::spawn(async move {
                let serve = |io| {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), svc)
                };
                let _ = match tls {
                    None => serve(Io::Plain(stream)).await,
                    Some(a) => match a.accept(stream).await {
                        Ok(s) => serve(Io::Tls(Box::new(s))).await,
                        Err(_) => return,
                    },
                };
            });
        }
    });
    let st = state.clone();
    let http_task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = http.accept().await else {
                return;
            };
            let st = st.clone();
            let tls = http_tls.clone();
            tokio::spawn(async move {
                let io = match tls {
                    None => Io::Plain(stream),
                    Some(a) => match a.accept(stream).await {
                        Ok(s) => Io::Tls(Box::new(s)),
                        Err(_) => return,
                    },
                };
                serve_http(io, st).await;
            });
        }
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    Collector {
        grpc: format!("{scheme}://{grpc_addr}"),
        http: format!("{scheme}://{http_addr}/v1/traces"),
        state,
        tasks: vec![grpc_task, http_task],
    }
}

/// A receiver's connection, in clear or over TLS.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// OTLP/HTTP: protobuf bodies POSTed to `/v1/traces`.
async fn serve_http(io: Io, st: Arc<State>) {
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let st = st.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let ok = parts.uri.path() == "/v1/traces"
                && parts.headers.get("content-type").map(|v| v.as_bytes())
                    == Some(b"application/x-protobuf");
            let status = match ExportTraceServiceRequest::decode(bytes) {
                Ok(req) if ok => {
                    st.wait().await;
                    st.take(req, &parts.headers);
                    200
                }
                _ => 400,
            };
            let body = ExportTraceServiceResponse {
                partial_success: None,
            }
            .encode_to_vec();
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/x-protobuf")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

impl Collector {
    pub fn spans(&self) -> Vec<GotSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    pub fn headers(&self) -> Vec<(String, String)> {
        self.state.headers.lock().unwrap().clone()
    }

    /// Each export is answered only after `d`.
    pub fn slow_down(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// The spans of `trace_id`, once `n` of them, the server span among them, arrived (panics
    /// after 10 s). The server span ends last, with the response: its children may arrive in an
    /// earlier export.
    pub async fn trace(&self, trace_id: &str, n: usize) -> Vec<GotSpan> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<GotSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if got.len() >= n && got.iter().any(|s| s.kind == SERVER) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: {} of {n} spans arrived: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until spans stop arriving (nothing new for `quiet`), then returns them all.
    pub async fn settle(&self, quiet: Duration) -> Vec<GotSpan> {
        let mut seen = self.spans().len();
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.spans().len();
            if now == seen {
                return self.spans();
            }
            seen = now;
        }
    }
}

/// A TCP address nothing listens on (bound, then closed).
pub async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// The span named `name` among `spans` (panics, listing them, when absent).
pub fn named<'a>(spans: &'a [GotSpan], name: &str) -> &'a GotSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}
