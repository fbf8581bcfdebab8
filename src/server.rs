//! The one accept loop: every listening port (traffic, admin, the injector's webhook) accepts
//! connections here, with the TLS handshake under a deadline when the port has TLS, serves
//! HTTP/1.1 and h2c (or h2 over TLS) on each, and watches every connection so shutdown can
//! drain them. What a request means is the service's business, not this module's.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tls::ReloadingTls;

/// The longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper's buffer bound per connection, both ways: the largest HTTP/1 request head read (as
/// Envoy's 60 KiB default), and how much of a response body is queued for a client that does
/// not read before the body is polled no more, which stops the upstream read behind it (the
/// HTTP/2 send buffer likewise). hyper's default, ~400 KiB each way, read megabytes ahead of
/// slow clients (issue 16).
pub const CONN_BUF: usize = 64 << 10;

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` (port 0 is fine): the listener, and the address it got.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    Ok((listener, bound))
}

/// What a service learns about the connection a request came on.
pub struct Conn {
    pub peer: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// The client certificate the TLS handshake verified (its leaf), when one was sent.
    pub client_cert: Option<CertificateDer<'static>>,
}

/// How a port serves.
#[derive(Default)]
pub struct ServeOptions {
    /// TLS on the port (certificate reloaded when its files change).
    pub tls: Option<ReloadingTls>,
    /// HTTP/1 clients must send the request head within this (hyper's default otherwise).
    pub header_read_timeout: Option<Duration>,
    /// Counts handshakes that failed or timed out.
    pub handshake_failures: Option<IntCounter>,
    /// Hand the verified client certificate to the service (mTLS); otherwise it is not copied.
    pub client_cert: bool,
    /// Disable Nagle on accepted sockets (the traffic port: answers are small and latency
    /// matters).
    pub nodelay: bool,
}

/// Accepts connections until `stop` is cancelled, serving each with the service `make` builds
/// for it; returns the watcher of every connection it started, for draining.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    opts: ServeOptions,
    stop: CancellationToken,
    make: F,
) -> GracefulShutdown
where
    F: Fn(Conn) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(CONN_BUF);
    if let Some(t) = opts.header_read_timeout {
        builder.http1().header_read_timeout(t);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(CONN_BUF);
    let make = std::sync::Arc::new(make);
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
        if opts.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let Some(tls) = &opts.tls else {
            let service = make(Conn {
                peer,
                tls: false,
                client_cert: None,
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
            continue;
        };
        let acceptor = tls.acceptor();
        let failures = opts.handshake_failures.clone();
        let want_cert = opts.client_cert;
        let make = make.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        failures.iter().for_each(IntCounter::inc);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        failures.iter().for_each(IntCounter::inc);
                        return;
                    }
                };
            let client_cert = want_cert
                .then(|| stream.get_ref().1.peer_certificates())
                .flatten()
                .and_then(|certs| certs.first())
                .map(|leaf| leaf.clone().into_owned());
            let service = make(Conn {
                peer,
                tls: true,
                client_cert,
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Dropping the listener here refuses new connections.
    graceful
}
