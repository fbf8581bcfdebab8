//! The upstream hop: a keep-alive HTTP/1.1 connection pool to the MCP server over TCP or a Unix
//! socket in the pod.

use std::future::Future;
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
use crate::stdio::Bridge;

/// Where upstream connections go: a socket, or the stdio bridge in this process.
#[derive(Clone)]
pub enum Dial {
    Addr(UpstreamAddr),
    Bridge(Arc<Bridge>),
}

/// hyper's read buffer bound on an upstream connection: the largest response head, and the most
/// of a body read ahead of the client (one buffer, plus one chunk handed to the body). nginx
/// reads upstream heads into 4–8 KiB; hyper's default, ~400 KiB, held up to a MiB per slow
/// client (issue 16).
const UPSTREAM_BUF: usize = 16 << 10;

type Sender = SendRequest<Full<Bytes>>;
type Conn = http1::Connection<TokioIo<UpstreamStream>, Full<Bytes>>;

/// Keep-alive HTTP/1.1 connections to the one upstream. Deliberately small: one address, no
/// pool keys, and a connection goes back to the idle list only when its response body ended
/// cleanly, so a connection is never shared with a stream still in flight.
///
/// A connection is driven by the request that holds it — polled while the request waits for
/// the response head, then by the response body — instead of by a task of its own: every
/// response chunk then reaches the client in the same task poll that read it.
pub struct UpstreamPool {
    connector: Connector,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(UpConn, Instant)>>,
}

/// One upstream connection: the handle to send on, and the connection state machine.
pub struct UpConn {
    sender: Sender,
    /// `None` once the connection future finished (closed or failed): dropping it hands any
    /// request still queued back unsent, and it can never be polled after completion.
    conn: Option<Pin<Box<Conn>>>,
}

impl UpConn {
    /// Drives the connection: writes what is queued, reads what has arrived.
    pub fn poll_conn(&mut self, cx: &mut Context<'_>) {
        drive(&mut self.conn, cx);
    }

    fn is_done(&self) -> bool {
        self.conn.is_none()
    }
}

fn drive(conn: &mut Option<Pin<Box<Conn>>>, cx: &mut Context<'_>) {
    if let Some(c) = conn
        && let Poll::Ready(result) = c.as_mut().poll(cx)
    {
        *conn = None;
        if let Err(e) = result {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    }
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
    conn: Option<UpConn>,
    pool: Arc<UpstreamPool>,
}

impl Lease {
    /// Drives the leased connection (the response body is fed by it).
    pub fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            conn.poll_conn(cx);
        }
    }

    pub fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

impl UpstreamPool {
    pub fn new(cfg: &UpstreamConfig, dial: Dial) -> Arc<Self> {
        Arc::new(Self {
            connector: Connector {
                dial,
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
        while let Some(mut up) = self.checkout().await {
            match exchange(&mut up, req).await {
                Ok(resp) => return Ok((resp, self.lease(up))),
                Err(Exchange::Unsent(unsent)) => req = *unsent,
                Err(Exchange::Failed(e)) => return Err(SendError::Reset(e)),
            }
        }
        let mut up = self.open().await?;
        let resp = exchange(&mut up, req).await.map_err(Exchange::into_error)?;
        Ok((resp, self.lease(up)))
    }

    /// Sends `req` on a connection of its own, closed afterwards (readiness probes).
    pub async fn send_once(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut up = self.open().await?;
        exchange(&mut up, req).await.map_err(Exchange::into_error)
    }

    fn lease(self: &Arc<Self>, conn: UpConn) -> Lease {
        Lease {
            conn: Some(conn),
            pool: self.clone(),
        }
    }

    /// An idle connection still open: each is polled once, which lets it notice a close the
    /// upstream sent while it sat idle.
    async fn checkout(&self) -> Option<UpConn> {
        loop {
            let (mut up, since) = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.pop()?
            };
            if since.elapsed() >= self.idle_timeout {
                continue;
            }
            std::future::poll_fn(|cx| {
                up.poll_conn(cx);
                Poll::Ready(())
            })
            .await;
            if !up.is_done() && up.sender.is_ready() {
                return Some(up);
            }
        }
    }

    fn checkin(&self, up: UpConn) {
        if up.is_done() || up.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The list is a stack, so its check-in times rise from the bottom: the expired
        // connections, which would otherwise linger there, are a prefix (one clock read).
        let expired = idle.partition_point(|(_, since)| {
            now.saturating_duration_since(*since) >= self.idle_timeout
        });
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push((up, now));
        }
    }

    async fn open(&self) -> Result<UpConn, SendError> {
        let io = self.connector.connect().await.map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(UPSTREAM_BUF)
            .handshake(io)
            .await
            .map_err(SendError::Reset)?;
        Ok(UpConn {
            sender,
            conn: Some(Box::pin(conn)),
        })
    }
}

enum Exchange {
    /// The connection was not ready; the request comes back unsent.
    Unsent(Box<Request<Full<Bytes>>>),
    Failed(hyper::Error),
}

impl Exchange {
    /// On a fresh connection, refusing to send is a failure like any other.
    fn into_error(self) -> SendError {
        match self {
            Exchange::Failed(e) => SendError::Reset(e),
            Exchange::Unsent(_) => SendError::Connect(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "a new upstream connection refused the request",
            )),
        }
    }
}

/// Sends one request and drives the connection until the response head arrives.
async fn exchange(
    up: &mut UpConn,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, Exchange> {
    let UpConn { sender, conn } = up;
    let mut response = std::pin::pin!(sender.try_send_request(req));
    let result = std::future::poll_fn(|cx| {
        drive(conn, cx);
        response.as_mut().poll(cx)
    })
    .await;
    result.map_err(|mut e| match e.take_message() {
        Some(unsent) => Exchange::Unsent(Box::new(unsent)),
        None => Exchange::Failed(e.into_error()),
    })
}

/// Opens connections to the configured upstream.
#[derive(Clone)]
struct Connector {
    dial: Dial,
    connect_timeout: Duration,
}

impl Connector {
    async fn connect(&self) -> io::Result<TokioIo<UpstreamStream>> {
        let connect = async {
            match &self.dial {
                Dial::Addr(UpstreamAddr::Tcp(a)) => {
                    let s = TcpStream::connect(a.as_str()).await?;
                    s.set_nodelay(true)?;
                    Ok(UpstreamStream::Tcp(s))
                }
                Dial::Addr(UpstreamAddr::Unix(p)) => {
                    UnixStream::connect(p).await.map(UpstreamStream::Unix)
                }
                Dial::Bridge(b) => Ok(UpstreamStream::Local(b.connect())),
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
    Local(tokio::io::DuplexStream),
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
            UpstreamStream::Local(s) => Pin::new(s).poll_read(cx, buf),
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
            UpstreamStream::Local(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Local(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Local(s) => Pin::new(s).poll_shutdown(cx),
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
            UpstreamStream::Local(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Tcp(s) => s.is_write_vectored(),
            UpstreamStream::Unix(s) => s.is_write_vectored(),
            UpstreamStream::Local(s) => s.is_write_vectored(),
        }
    }
}
