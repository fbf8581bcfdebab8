//! The traced targets (issue 18): `sentinel-otel-100` and `sentinel-otel-10` are the sentinel's
//! config (audit off) plus a `tracing` section sampling every new trace, or one in ten, and
//! exporting over OTLP/HTTP (protobuf) to a receiver in the bench process that decodes each
//! export with the official protobuf definitions, counts its spans and discards them. Their CPU
//! per request over `sentinel` is what tracing costs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

/// `base` with a `tracing` section: every new trace kept at `ratio`, exported to `endpoint`.
pub fn sentinel_config(
    base: &Path,
    workdir: &Path,
    name: &str,
    endpoint: &str,
    ratio: f64,
) -> Result<PathBuf> {
    crate::procs::config_with(
        base,
        workdir,
        name,
        "tracing",
        json!({
            "enabled": true,
            "protocol": "http/protobuf",
            "endpoint": endpoint,
            "service_name": name,
            "sample_ratio": ratio,
        }),
    )
}

/// An OTLP/HTTP receiver that counts and discards.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/v1/traces`
    pub endpoint: String,
    spans: Arc<AtomicU64>,
    exports: Arc<AtomicU64>,
}

impl Receiver {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the OTLP receiver")?;
        let endpoint = format!("http://{}/v1/traces", listener.local_addr()?);
        let spans = Arc::new(AtomicU64::new(0));
        let exports = Arc::new(AtomicU64::new(0));
        let (s, e) = (spans.clone(), exports.clone());
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (s, e) = (s.clone(), e.clone());
                    std::thread::spawn(move || serve(stream, &s, &e));
                }
            })?;
        Ok(Self {
            endpoint,
            spans,
            exports,
        })
    }

    /// (spans, exports) received so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.spans.load(Ordering::Relaxed),
            self.exports.load(Ordering::Relaxed),
        )
    }
}

/// HTTP/1.1 keep-alive: each POST's body decoded and counted, answered 200 with an empty
/// (valid) ExportTraceServiceResponse.
fn serve(stream: TcpStream, spans: &AtomicU64, exports: &AtomicU64) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
            let n: usize = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            spans.fetch_add(n as u64, Ordering::Relaxed);
            exports.fetch_add(1, Ordering::Relaxed);
        }
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}
