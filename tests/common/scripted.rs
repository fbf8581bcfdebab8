//! An upstream that is a few lines of hyper, not an MCP SDK: it answers every request with the
//! same headers and body, however misshapen — what no SDK sends is exactly what some tests need.

/// An upstream that answers every request with these headers and body.
pub async fn upstream(headers: &'static [(&'static str, &'static str)], body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = bytes::Bytes::from(body);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: http::Request<_>| {
                    let mut resp = http::Response::builder();
                    for (k, v) in headers {
                        resp = resp.header(*k, *v);
                    }
                    let resp = resp.body(http_body_util::Full::new(body.clone())).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/mcp")
}
