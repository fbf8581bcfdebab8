//! The upstream hop: a keep-alive HTTP/1.1 connection pool to the MCP server over TCP or a Unix
//! socket in the pod.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::config::UpstreamConfig;
use crate::config::upstream::UpstreamAddr;

type Sender = SendRequest<Full<Bytes>>;

/// Keep-alive HTTP/1.1 connections to the one upstream. Deliberately small: one address, no
/// pool keys, and a connection goes back to the idle list only when its response body ended
/// cleanly, so a connection is never shared with a stream still in flight.
pub struct UpstreamPool {
    connector: Connector,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(Sender, Instant)>>,
}

#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The connection failed before a response head arrived.
    Reset(hyper::Error),
}

/// A connection lent to one request. `release` returns it to the pool; dropping it instead
/// closes the connection (with the response body), which is how an abandoned request is
/// dropped upstream at once.
pub struct Lease {
    sender: Option<Sender>,
    pool: Arc<UpstreamPool>,
}

impl Lease {
    pub fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.checkin(sender);
        }
    }
}

impl UpstreamPool {
    pub fn new(cfg: &UpstreamConfig, addr: UpstreamAddr) -> Arc<Self> {
        Arc::new(Self {
            connector: Connector {
                addr,
                connect_timeout: cfg.connect_timeout,
            },
            idle_timeout: cfg.pool_idle_timeout,
            max_idle: cfg.pool_max_idle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` on an idle connection, or a new one. A request that a stale idle connection
    /// refused before sending is retried on the next.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        while let Some(mut sender) = self.checkout() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Reset(e.into_error())),
                },
            }
        }
        let mut sender = self.open().await?;
        let resp = sender.send_request(req).await.map_err(SendError::Reset)?;
        Ok((resp, self.lease(sender)))
    }

    /// Sends `req` on a connection of its own, closed afterwards (readiness probes).
    pub async fn send_once(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.open().await?;
        sender.send_request(req).await.map_err(SendError::Reset)
    }

    fn lease(self: &Arc<Self>, sender: Sender) -> Lease {
        Lease {
            sender: Some(sender),
            pool: self.clone(),
        }
    }

    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
        }
    }

    async fn open(&self) -> Result<Sender, SendError> {
        let io = self.connector.connect().await.map_err(SendError::Connect)?;
        let (sender, conn) = http1::handshake(io).await.map_err(SendError::Reset)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Opens connections to the configured upstream.
#[derive(Clone)]
struct Connector {
    addr: UpstreamAddr,
    connect_timeout: Duration,
}

impl Connector {
    async fn connect(&self) -> io::Result<TokioIo<UpstreamStream>> {
        let connect = async {
            match &self.addr {
                UpstreamAddr::Tcp(a) => {
                    let s = TcpStream::connect(a.as_str()).await?;
                    s.set_nodelay(true)?;
                    Ok(UpstreamStream::Tcp(s))
                }
                UpstreamAddr::Unix(p) => UnixStream::connect(p).await.map(UpstreamStream::Unix),
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(r) => r.map(TokioIo::new),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }
}

pub enum UpstreamStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Tcp(s) => s.is_write_vectored(),
            UpstreamStream::Unix(s) => s.is_write_vectored(),
        }
    }
}
