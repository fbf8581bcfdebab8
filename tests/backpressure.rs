//! Backpressure end to end: a client that reads nothing stops the sentinel from reading the
//! upstream after a small fixed window, whatever the size of the answer (issue 16), and the
//! answer then arrives whole once the client reads. Bytes are counted at the upstream socket,
//! never timed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::sentinel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The answer: far more than any buffer on the way.
const BODY: usize = 64 << 20;

/// Socket buffers of the test's own two sockets (the kernel doubles what is asked).
const SOCKET_BUF: u32 = 16 << 10;

/// What the sentinel may hold of an answer its client does not read: hyper's buffer toward
/// the client (`server::CONN_BUF`, 64 KiB) plus one chunk, the upstream read buffer (16 KiB) plus
/// one chunk, with room to spare. Before issue 16 hyper's defaults held over a MiB.
const HELD_BOUND: usize = 256 << 10;

/// Bytes in the kernel's queues (sent and not acknowledged, or received and not read) of every
/// TCP socket on 127.0.0.1 with one end on one of `ports`: the upstream's, the sentinel's two
/// and the client's.
fn queued(ports: &[u16]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (ports.contains(&port(f[1])) || ports.contains(&port(f[2]))).then(|| {
                let (tx, rx) = f[4].split_once(':').unwrap();
                usize::from_str_radix(tx, 16).unwrap() + usize::from_str_radix(rx, 16).unwrap()
            })
        })
        .sum()
}

/// The answer's JSON around its filler.
const OPEN: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""#;
const CLOSE: &[u8] = br#""}],"isError":false}}"#;

/// An upstream that answers every POST with `BODY` bytes of JSON and counts the bytes its socket
/// accepted; OPTIONS (the readiness probe) gets an empty answer.
async fn counting_upstream(written: Arc<AtomicUsize>) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    // Inherited by accepted sockets; a fixed send buffer also turns off its autotuning.
    socket.set_send_buffer_size(SOCKET_BUF).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(sock, written.clone()));
        }
    });
    format!("http://{addr}/mcp")
}

async fn serve(mut sock: TcpStream, written: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if head.starts_with("options") {
        let _ = sock
            .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if sock.read_exact(&mut body).await.is_err() {
        return;
    }
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {BODY}\r\n\r\n"
    );
    if sock.write_all(resp.as_bytes()).await.is_err() || sock.write_all(OPEN).await.is_err() {
        return;
    }
    let filler = vec![b'a'; 8 << 10];
    let mut left = BODY - OPEN.len() - CLOSE.len();
    while left > 0 {
        let n = left.min(filler.len());
        let Ok(sent) = sock.write(&filler[..n]).await else {
            return;
        };
        written.fetch_add(sent, Ordering::SeqCst);
        left -= sent;
    }
    let _ = sock.write_all(CLOSE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_holds_the_upstream_at_a_small_window() {
    let written = Arc::new(AtomicUsize::new(0));
    let upstream = counting_upstream(written.clone()).await;
    let upstream_port: u16 = upstream
        .trim_end_matches("/mcp")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let s = sentinel::start_with(sentinel::passthrough_config(&upstream), false).await;
    let addr = s.sentinel().traffic_addr();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SOCKET_BUF).unwrap();
    let mut client = socket.connect(addr).await.unwrap();
    let call =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"big","arguments":{}}}"#;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\n\
         content-length: {}\r\n\r\n",
        call.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(call).await.unwrap();

    // Wait until the upstream is stalled: its count stops moving (a poll, not a deadline).
    let mut last = usize::MAX;
    let mut still = 0;
    while still < 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(Ordering::SeqCst);
        still = if now == last && now > 0 { still + 1 } else { 0 };
        last = now;
    }
    // What left the upstream and is in no kernel queue on the way is in the sentinel (the
    // response heads, not counted in `written`, make this a slight overestimate).
    let in_kernel = queued(&[upstream_port, addr.port()]);
    let held = last.saturating_sub(in_kernel);
    assert!(
        held <= HELD_BOUND,
        "the sentinel holds {held} bytes of an answer its client does not read \
         ({last} written, {in_kernel} in kernel queues; bound {HELD_BOUND})"
    );

    // The client reads now: the whole answer arrives.
    let mut got = Vec::with_capacity(BODY + 1024);
    let mut buf = vec![0u8; 64 << 10];
    while !got.ends_with(CLOSE) {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "the answer was cut short at {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let start = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", &got[..64]);
    assert_eq!(got.len() - start, BODY);
    assert_eq!(
        written.load(Ordering::SeqCst) + OPEN.len() + CLOSE.len(),
        BODY
    );
}
