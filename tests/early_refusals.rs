//! Early refusals are readable: a request refused while its client is still sending the body
//! (413 for a body over the limit, declared or chunked; 403 for a bad Origin; 401 for a large
//! unauthenticated body) reaches the client as a whole HTTP answer, never as a connection
//! reset. A raw TCP client sends the head, pauses so the sentinel can answer first, then
//! streams the body while reading; it must read the full status line and JSON-RPC error, and
//! the sentinel must take the whole body (it discards what it refused) before closing.

mod common;

use std::time::Duration;

use common::keys::write_keys;
use common::sentinel::{self, TempDir};
use common::upstream::{UpstreamConfig, spawn_upstream, spawn_upstream_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;
const KEY: &str = "ak_early_0123456789";

/// What the client saw.
struct Exchange {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
    /// Body bytes the client wrote before the sentinel stopped taking them.
    sent: usize,
    /// How writing the body ended (an error is a reset or a closed socket).
    write: std::io::Result<()>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// POSTs `body_len` bytes (`prefix`, then `x`s, then `suffix`) to `/mcp` with `headers`:
/// head first, a pause, then the body in 64 KiB writes — chunked when `chunked`, else with a
/// Content-Length — while the answer is read until the sentinel closes the connection (a
/// request that is not refused early must say `connection: close`).
async fn exchange(
    addr: &str,
    headers: &[(&str, &str)],
    body_len: usize,
    chunked: bool,
    (prefix, suffix): (&str, &str),
) -> Exchange {
    let sock = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let mut head = String::from(
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n",
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("content-length: {body_len}\r\n\r\n"));
    }
    let (prefix, suffix) = (prefix.as_bytes().to_vec(), suffix.as_bytes().to_vec());
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        let result: std::io::Result<()> = async {
            wr.write_all(head.as_bytes()).await?;
            // Time to answer before the body arrives: an early answer.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let filler = body_len - prefix.len() - suffix.len();
            let mut pieces = vec![prefix];
            let block = vec![b'x'; 64 * 1024];
            let mut left = filler;
            while left > 0 {
                let n = left.min(block.len());
                pieces.push(block[..n].to_vec());
                left -= n;
                if pieces.len() >= 16 {
                    for p in pieces.drain(..) {
                        write_piece(&mut wr, &p, chunked).await?;
                        sent += p.len();
                    }
                }
            }
            pieces.push(suffix);
            for p in pieces {
                write_piece(&mut wr, &p, chunked).await?;
                sent += p.len();
            }
            if chunked {
                wr.write_all(b"0\r\n\r\n").await?;
            }
            wr.flush().await
        }
        .await;
        // Kept open: a half-close would tell the sentinel the client is gone.
        (sent, result, wr)
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut answer))
        .await
        .expect("the sentinel closes the connection in time");
    let (sent, write, _wr) = writer.await.unwrap();
    // A reset connection loses what was not read yet: the answer must be there whole.
    read.unwrap_or_else(|e| {
        panic!(
            "reading the answer failed ({e}) after {} bytes: {}",
            answer.len(),
            String::from_utf8_lossy(&answer)
        )
    });
    parse(&answer, sent, write)
}

async fn write_piece(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    piece: &[u8],
    chunked: bool,
) -> std::io::Result<()> {
    if chunked {
        wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        wr.write_all(piece).await?;
        wr.write_all(b"\r\n").await
    } else {
        wr.write_all(piece).await
    }
}

fn parse(answer: &[u8], sent: usize, write: std::io::Result<()>) -> Exchange {
    let text = String::from_utf8_lossy(answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer head: {text:?} (sent {sent}: {write:?})"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let exchange = Exchange {
        status,
        headers,
        body: body.to_owned(),
        sent,
        write,
    };
    if let Some(len) = exchange.header("content-length") {
        let len: usize = len.parse().unwrap();
        assert_eq!(exchange.body.len(), len, "the whole body arrived: {text:?}");
    }
    exchange
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The answer arrived whole, said `Connection: close`, and the sentinel took the whole body
/// before closing.
fn assert_readable(x: &Exchange, status: u16, body: &Value, body_len: usize) {
    assert_eq!(x.status, status, "{}", x.body);
    assert!(x.header("content-length").is_some(), "{:?}", x.headers);
    assert_eq!(&x.json(), body);
    assert!(x.write.is_ok(), "the body was taken: {:?}", x.write);
    assert_eq!(x.sent, body_len, "every byte was taken");
    assert_eq!(x.header("connection"), Some("close"), "{:?}", x.headers);
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned()
}

#[tokio::test]
async fn a_body_over_the_limit_gets_a_readable_413() {
    let upstream = spawn_upstream().await;
    // The default limit, 4 MiB.
    let s = sentinel::start(&upstream.url()).await;
    let addr = addr(&s.url);
    let too_large = error(Value::Null, -32600, "Request body too large");
    let len = 50 * MIB;

    // Declared: refused from the head alone, the body discarded as it comes.
    let x = exchange(&addr, &[], len, false, ("{", "}")).await;
    assert_readable(&x, 413, &too_large, len);

    // Chunked: refused after 4 MiB, the other 46 MiB discarded.
    let x = exchange(&addr, &[], len, true, ("{", "}")).await;
    assert_readable(&x, 413, &too_large, len);

    assert!(upstream.mcp_requests().is_empty(), "nothing was forwarded");
    let series = r#"mcp_sentinel_check_denials_total{check="transport",reason="body_too_large"}"#;
    assert_eq!(s.metric(series).await, 2.0);
}

#[tokio::test]
async fn refusals_of_large_bodies_are_readable() {
    // Stateless, so a lone call is answered without a session.
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let dir = TempDir::new("early-refusals");
    let keys = dir.path("keys.yaml");
    write_keys(&keys, &[(KEY, "alice", &[])]);
    let yaml = format!(
        "policy: {{default: allow}}\nauth:\n  allowed_origins: ['https://app.example.com']\n  api_keys:\n    file: {}\nlimits:\n  max_body_bytes: 64MiB\n",
        keys.display()
    );
    let cfg = sentinel::config_from_yaml(&yaml, &upstream.url());
    let s = sentinel::start_with(cfg, true).await;
    let addr = addr(&s.url);
    let call = (
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":""#,
        r#""}}}"#,
    );
    let len = 20 * MIB;

    // No credential: 401 with the challenge, after the body (under the limit) was read.
    for chunked in [false, true] {
        let x = exchange(&addr, &[("connection", "close")], len, chunked, call).await;
        assert_readable(&x, 401, &error(json!(1), -32600, "Unauthorized"), len);
        assert!(
            x.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer resource_metadata=")),
            "{:?}",
            x.headers
        );
    }

    // A bad Origin: 403 decided from the head, before the body is read.
    let origin = [("origin", "http://evil.example"), ("x-api-key", KEY)];
    let x = exchange(&addr, &origin, len, false, call).await;
    assert_readable(
        &x,
        403,
        &error(Value::Null, -32600, "Origin not allowed"),
        len,
    );

    // A small call with the key and a good origin is forwarded.
    let good = [
        ("origin", "https://app.example.com"),
        ("x-api-key", KEY),
        ("connection", "close"),
    ];
    let x = exchange(&addr, &good, 1024, false, call).await;
    assert_eq!(x.status, 200, "{}", x.body);
    assert_eq!(upstream.calls("echo"), 1);
}
