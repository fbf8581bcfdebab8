//! Lifecycle on real sockets: SIGTERM under load drains without failing in-flight requests,
//! SSE streams get their grace, a client that leaves takes its upstream request with it, and
//! a Unix-socket upstream works.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::client::{legacy_headers, raw_legacy_session, raw_send};
use common::process::sigterm;
use common::sentinel;
use common::upstream::{UpstreamConfig, spawn_upstream, spawn_upstream_with};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

async fn readyz(admin: &str) -> Option<u16> {
    reqwest::get(format!("{admin}/readyz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_in_flight_request() {
    let upstream = spawn_upstream_with(UpstreamConfig::json()).await;
    let mut child = sentinel::spawn_binary(&upstream.url(), Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&child.admin).await != Some(200) {
        assert!(Instant::now() < deadline, "the binary became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let signalled: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let in_flight_ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..16u64 {
        let url = child.traffic.clone();
        let signalled = signalled.clone();
        let in_flight_ok = in_flight_ok.clone();
        workers.push(tokio::spawn(async move {
            // A fresh connection per request: after SIGTERM new connections are refused.
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            // Staggered, so requests are at every stage when the signal comes.
            tokio::time::sleep(Duration::from_millis(w * 13)).await;
            for i in 0..10_000 {
                let started = Instant::now();
                let body = json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"slow","arguments":{"steps":2,"delay_ms":100}}});
                let result = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .json(&body)
                    .send()
                    .await;
                let outcome = match result {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.text().await {
                            Ok(text) if status == 200 && text.contains("done after 2 steps") => Ok(()),
                            Ok(text) => Err(format!("worker {w}: {status} {text}")),
                            Err(e) => Err(format!("worker {w}: body cut: {e}")),
                        }
                    }
                    Err(e) => Err(format!("worker {w}: {e:?}")),
                };
                let signal_at = *signalled.lock().unwrap();
                match (outcome, signal_at) {
                    (Ok(()), Some(t)) if started + Duration::from_millis(10) < t => {
                        in_flight_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    (Ok(()), _) => {}
                    // Started well before the signal: it was in flight, and must not fail.
                    (Err(e), Some(t)) if started + Duration::from_millis(10) < t => {
                        return Err(format!("in-flight request failed: {e}"));
                    }
                    // Started after (or at) the signal: refused is the expected answer.
                    (Err(_), Some(_)) => return Ok(()),
                    (Err(e), None) => return Err(format!("failed before the signal: {e}")),
                }
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    *signalled.lock().unwrap() = Some(Instant::now());
    let sent = Instant::now();
    assert!(sigterm(child.child.id()));

    // Readiness fails at once, while requests are still draining.
    let mut saw_503 = false;
    while sent.elapsed() < Duration::from_millis(150) {
        if readyz(&child.admin).await == Some(503) {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_503, "/readyz answered 503 right after SIGTERM");

    for w in workers {
        w.await.unwrap().unwrap();
    }
    assert!(
        in_flight_ok.load(Ordering::SeqCst) >= 8,
        "requests were in flight at SIGTERM: {}",
        in_flight_ok.load(Ordering::SeqCst)
    );
    let exit = tokio::task::spawn_blocking(move || child.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "exited within the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_get_their_grace_then_close() {
    let upstream = spawn_upstream_with(UpstreamConfig {
        sse_keep_alive: None,
        ..UpstreamConfig::default()
    })
    .await;
    let mut cfg = sentinel::passthrough_config(&upstream.url());
    cfg.shutdown.sse_grace = Duration::from_millis(400);
    cfg.shutdown.deadline = Duration::from_secs(5);
    let s = sentinel::start_with(cfg, true).await;
    let (session, _) = raw_legacy_session(&s.url, "2025-06-18").await;
    let mut hs = legacy_headers("2025-06-18", session.as_deref());
    hs.push(("Accept".into(), "text/event-stream".into()));
    let stream = raw_send(reqwest::Method::GET, &s.url, &hs, None).await;
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();

    let begun = Instant::now();
    s.sentinel().begin_shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match body.next().await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the stream closed within the deadline");
    let lived = begun.elapsed();
    assert_eq!(ended, Ok(()), "the stream ended cleanly");
    assert!(
        lived >= Duration::from_millis(350),
        "the stream had its grace: {lived:?}"
    );
    assert!(
        s.shutdown().await,
        "every connection drained before the deadline"
    );
}

/// An upstream on a fresh port that serves each connection with `serve` and reports on the
/// channel when `serve` is done with it.
async fn closing_upstream<F, Fut>(
    serve: F,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            let served = serve(sock);
            tokio::spawn(async move {
                served.await;
                let _ = closed_tx.send(Instant::now());
            });
        }
    });
    (addr, closed_rx)
}

#[tokio::test]
async fn a_client_that_leaves_takes_its_upstream_request_with_it() {
    // An upstream that starts an SSE answer, never ends it, and reports when its connection
    // closes.
    let (addr, mut closed_rx) = closing_upstream(|mut sock| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut request = Vec::new();
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
            if request.windows(4).any(|w| w == b"\r\n\r\n")
                && String::from_utf8_lossy(&request).contains("tools/call")
            {
                // The request is in: start an SSE answer, then hold it open.
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let event = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n";
                let _ = sock
                    .write_all(format!("{:x}\r\n", event.len()).as_bytes())
                    .await;
                let _ = sock.write_all(event).await;
                let _ = sock.write_all(b"\r\n").await;
                request.clear();
            }
        }
    })
    .await;
    let s = sentinel::start_with(
        sentinel::passthrough_config(&format!("http://{addr}/mcp")),
        false,
    )
    .await;

    // Waiting for a JSON answer, then gone.
    let gone = {
        let resp = reqwest::Client::new()
            .post(&s.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
        drop(body);
        Instant::now()
    };
    let closed = tokio::time::timeout(Duration::from_secs(2), closed_rx.recv())
        .await
        .expect("the upstream connection closed after the client left")
        .unwrap();
    assert!(closed.duration_since(gone) < Duration::from_millis(1000));
    let cut = "mcp_sentinel_client_disconnects_total{phase=\"during_response\"}";
    assert_eq!(s.metric_eventually(cut, 1.0).await, 1.0);
    assert_eq!(
        s.metric_eventually("mcp_sentinel_sse_streams_open", 0.0)
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_cancels_the_upstream_request() {
    // An upstream that reads and never answers, and reports when its connection closes.
    let (addr, mut closed_rx) = closing_upstream(|mut sock| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let s = sentinel::start_with(
        sentinel::passthrough_config(&format!("http://{addr}/mcp")),
        false,
    )
    .await;
    let result = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}"#)
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");
    tokio::time::timeout(Duration::from_secs(2), closed_rx.recv())
        .await
        .expect("the upstream request was dropped when the client left");
    let gone = "mcp_sentinel_requests_total{method=\"tools/call\",outcome=\"client_gone\"}";
    assert_eq!(s.metric_eventually(gone, 1.0).await, 1.0);
}

#[tokio::test]
async fn a_unix_socket_upstream_is_reached() {
    let dir = std::env::temp_dir().join(format!("mcp-sentinel-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("upstream.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let _ = seen_tx.send(format!(
                            "{} {} host={}",
                            req.method(),
                            req.uri().path(),
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                        ));
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
                                    )))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let upstream = format!("unix:{}:/mcp", sock.display());
    let s = sentinel::start_with(sentinel::passthrough_config(&upstream), true).await;
    let resp = reqwest::Client::new()
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["tools"], json!([]));
    let mut seen = Vec::new();
    while let Ok(line) = seen_rx.try_recv() {
        seen.push(line);
    }
    assert!(
        seen.contains(&"POST /mcp host=localhost".to_string()),
        "{seen:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = spawn_upstream;
}

/// A counting upstream: how many connections carried a POST, and the request targets seen.
async fn counting_upstream(
    close_each: bool,
) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let post_conns = Arc::new(AtomicUsize::new(0));
    let targets: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (pc, tg) = (post_conns.clone(), targets.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (pc, tg) = (pc.clone(), tg.clone());
            tokio::spawn(async move {
                let counted = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        if req.method() == http::Method::POST
                            && !counted.swap(true, Ordering::SeqCst)
                        {
                            pc.fetch_add(1, Ordering::SeqCst);
                        }
                        tg.lock()
                            .unwrap()
                            .push(format!("{} {}", req.method(), req.uri()));
                        let notification = req.headers().get("x-test-notification").is_some();
                        async move {
                            if notification {
                                // What an MCP server answers a notification with: 202, no body.
                                return Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(202)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            let mut resp = http::Response::builder()
                                .header("content-type", "application/json");
                            if close_each {
                                resp = resp.header("connection", "close");
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(http_body_util::Full::new(bytes::Bytes::from_static(
                                    br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                                )))
                                .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/mcp"), post_conns, targets)
}

async fn post_ping(url: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (upstream, post_conns, targets) = counting_upstream(false).await;
    let s = sentinel::start_with(sentinel::passthrough_config(&upstream), true).await;
    for _ in 0..10 {
        assert_eq!(post_ping(&format!("{}?trace=1", s.url)).await, 200);
    }
    assert_eq!(
        post_conns.load(Ordering::SeqCst),
        1,
        "ten sequential requests, one connection"
    );
    let seen = targets.lock().unwrap().clone();
    // Origin form, with the client's query string kept.
    assert!(
        seen.iter()
            .filter(|t| t.starts_with("POST"))
            .all(|t| t == "POST /mcp?trace=1"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_closes_each_connection_is_still_served() {
    let (upstream, post_conns, _) = counting_upstream(true).await;
    let s = sentinel::start_with(sentinel::passthrough_config(&upstream), true).await;
    for _ in 0..5 {
        assert_eq!(post_ping(&s.url).await, 200);
    }
    assert_eq!(post_conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn empty_answers_keep_the_connection_and_count_as_complete() {
    let (upstream, post_conns, _) = counting_upstream(false).await;
    let s = sentinel::start_with(sentinel::passthrough_config(&upstream), true).await;
    for _ in 0..5 {
        let status = reqwest::Client::new()
            .post(&s.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-test-notification", "1")
            .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 202);
    }
    assert_eq!(post_ping(&s.url).await, 200);
    assert_eq!(
        post_conns.load(Ordering::SeqCst),
        1,
        "202s without a body leave the connection reusable"
    );
    let forwarded = "mcp_sentinel_requests_total{method=\"notification\",outcome=\"forwarded\"}";
    assert_eq!(s.metric_eventually(forwarded, 5.0).await, 5.0);
    assert_eq!(
        s.metric("mcp_sentinel_client_disconnects_total{phase=\"during_response\"}")
            .await,
        0.0
    );
}
