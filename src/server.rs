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

use crate::mcp::Envelope;
use crate::metrics::{Metrics, Op, Outcome};
use crate::pipeline::{Ctx, Pipeline};
use crate::proxy::Proxy;
use crate::proxy::body::ProxyBody;
use crate::proxy::guard::RequestGuard;

/// What every request handler shares.
pub struct Traffic {
    pub pipeline: Pipeline,
    pub proxy: Proxy,
    pub metrics: Arc<Metrics>,
    mcp_path: String,
    next_id: AtomicU64,
}

impl Traffic {
    pub fn new(pipeline: Pipeline, proxy: Proxy, metrics: Arc<Metrics>, mcp_path: String) -> Self {
        Self {
            pipeline,
            proxy,
            metrics,
            mcp_path,
            next_id: AtomicU64::new(1),
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        peer_ip: http::HeaderValue,
        req: http::Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut ctx = Ctx::new(id, peer, peer_ip, false, req);
        let mut guard = RequestGuard::new(self.metrics.clone(), id, ctx.started);
        let checked = self.pipeline.run(&mut ctx).await;
        guard.set_op(op_of(&ctx, &self.mcp_path));
        let resp = match checked {
            Err(denial) => {
                let resp = ctx.deny(denial);
                guard.respond(resp.status().as_u16(), Outcome::Rejected, false);
                resp
            }
            Ok(()) => {
                self.metrics.bytes_in.inc_by(ctx.body.len() as u64);
                match self.proxy.forward(&mut ctx, &mut guard).await {
                    Ok(resp) => resp,
                    Err(denial) => {
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
        let service = service_fn(move |req| traffic.clone().handle(peer, peer_ip.clone(), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
    // Dropping the listener here refuses new connections.
    graceful
}
