//! The traced targets (issue 18): `sentinel-otel-100` and `sentinel-otel-10` are the sentinel's
//! config (audit off) plus a `tracing` section sampling every new trace, or one in ten, and
//! exporting over OTLP/HTTP (protobuf) to a receiver in the bench process that decodes each
//! export with the official protobuf definitions, counts its spans and discards them. Their CPU
//! per request over `sentinel` is what tracing costs.
//!
//! A collector runs on other machines than the sentinel; here it shares two cores with the
//! load generator, the upstream and the proxy being timed. So the receiver answers each export
//! at once and decodes it afterwards on a thread at the lowest priority (`nice 19`) that waits
//! while any target is being timed ([`quiet`]): decoding the 100% target's spans would otherwise
//! slow the target timed next (with the rotation, most often the 10% one). Every export is
//! still decoded and counted before the counts are read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// A timed window is open: the decoder waits.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Marks a timed window open or closed (the load generator's edges).
pub fn quiet(on: bool) {
    QUIET.store(on, Ordering::Release);
}

/// An OTLP/HTTP receiver that counts and discards.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/v1/traces`
    pub endpoint: String,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    exports: AtomicU64,
    /// Bodies received and not yet decoded.
    queued: AtomicU64,
}

impl Receiver {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the OTLP receiver")?;
        let endpoint = format!("http://{}/v1/traces", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let (bodies, queue) = std::sync::mpsc::channel::<Vec<u8>>();
        let c = counts.clone();
        std::thread::Builder::new()
            .name("otlp-decoder".into())
            .spawn(move || {
                lowest_priority();
                for body in queue {
                    while QUIET.load(Ordering::Acquire) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    decode(&body, &c);
                    c.queued.fetch_sub(1, Ordering::AcqRel);
                }
            })?;
        let c = counts.clone();
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (c, bodies) = (c.clone(), bodies.clone());
                    std::thread::spawn(move || serve(stream, &c, &bodies));
                }
            })?;
        Ok(Self { endpoint, counts })
    }

    /// (spans, exports) received, once every export received so far is decoded (waiting at
    /// most five minutes for the decoder).
    pub fn counts(&self) -> (u64, u64) {
        quiet(false);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while self.counts.queued.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (
            self.counts.spans.load(Ordering::Relaxed),
            self.counts.exports.load(Ordering::Relaxed),
        )
    }
}

/// This thread at nice 19 (`renice` on its thread id; the bench has no other way without
/// unsafe code). Failing that, it runs at normal priority and says so.
fn lowest_priority() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok());
    let reniced = tid.is_some_and(|tid| {
        std::process::Command::new("renice")
            .args(["-n", "19", "-p", &tid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !reniced {
        eprintln!("bench: the OTLP decoder runs at normal priority (renice failed)");
    }
}

fn decode(body: &[u8], counts: &Counts) {
    if let Ok(req) = ExportTraceServiceRequest::decode(body) {
        let n: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        counts.spans.fetch_add(n as u64, Ordering::Relaxed);
        counts.exports.fetch_add(1, Ordering::Relaxed);
    }
}

/// HTTP/1.1 keep-alive: each POST answered 200 with an empty (valid)
/// ExportTraceServiceResponse, its body handed to the decoder.
fn serve(stream: TcpStream, counts: &Counts, bodies: &std::sync::mpsc::Sender<Vec<u8>>) {
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
        counts.queued.fetch_add(1, Ordering::AcqRel);
        if bodies.send(body).is_err() {
            counts.queued.fetch_sub(1, Ordering::AcqRel);
        }
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}
