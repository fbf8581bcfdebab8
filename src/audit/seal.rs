//! The sealer: on the audit thread, it takes finished requests' drafts in the order they were
//! submitted, reads and redacts their call arguments, links each into the run's hash chain
//! (`ChainHead`: sequence number, `prev`, `hash`) and queues the record for every sink.
//! Drafts lost before sealing leave their sequence numbers unused, a gap `verify` names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::mpsc;

use super::has_arguments;
use super::record::{Draft, GENESIS, Line, Link, TargetNote, hex, sha256_hex_array};
use super::redact::Redactor;
use super::worker::SinkState;
use crate::mcp::Method;
use crate::mcp::envelope::call_arguments;

/// How often a busy sealer takes what has queued up. Between takes the traffic threads hand
/// over drafts without waking it, so a record costs them no cross-thread wake-up.
const SEAL_TICK: Duration = Duration::from_millis(2);

/// The link position of the next record of a chain: each record carries its sequence number
/// and the hash of the one before (`GENESIS` for the first), and ends with its own hash, so a
/// record changed, removed or reordered afterwards breaks the chain `verify` walks.
pub struct ChainHead {
    /// `<instance>/<16 hex>`: one chain per sentinel run.
    pub instance: Arc<str>,
    /// The 16 hex of `instance`, prefix of record ids.
    pub boot: String,
    pub seq: u64,
    pub prev: String,
    /// The record being sealed, reused from one record to the next.
    buf: Vec<u8>,
}

impl ChainHead {
    pub fn new(instance: &str) -> Self {
        let mut raw = [0u8; 8];
        // A failing system RNG leaves a time-derived run id: still unique in practice.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            raw = (nanos ^ u64::from(std::process::id())).to_be_bytes();
        }
        let boot = hex(&raw);
        Self {
            instance: format!("{instance}/{boot}").into(),
            boot,
            seq: 0,
            prev: GENESIS.to_string(),
            buf: Vec::with_capacity(1024),
        }
    }

    /// Links `draft` after the previous record and serializes it, with its indexed columns.
    #[cfg(test)]
    pub fn seal(&mut self, d: &Draft) -> Line {
        self.link(d, true)
    }

    /// Links `draft` after the previous record and serializes it; `cols`: also make its
    /// indexed columns (only a PostgreSQL sink reads them).
    pub fn link(&mut self, d: &Draft, cols: bool) -> Line {
        self.seq += 1;
        let seq = self.seq;
        let at = d.at.unwrap_or_else(SystemTime::now);
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64);
        let link = Link {
            boot: &self.boot,
            instance: &self.instance,
            seq,
            prev: &self.prev,
            at_ms,
        };
        // One buffer for every record: serialized, hashed and sealed in place, then copied
        // once into the line the sinks share.
        let buf = &mut self.buf;
        buf.clear();
        d.serialize_into(&link, buf);
        let cols = cols.then(|| Arc::new(d.cols(&link)));
        let hash = sha256_hex_array(buf);
        buf.pop();
        buf.extend_from_slice(b",\"hash\":\"");
        buf.extend_from_slice(&hash);
        buf.extend_from_slice(b"\"}");
        let text = std::str::from_utf8(buf).expect("serde_json writes UTF-8");
        self.prev.clear();
        self.prev
            .push_str(std::str::from_utf8(&hash).expect("hex digits"));
        Line {
            instance: self.instance.clone(),
            seq,
            at_ms,
            text: text.into(),
            cols,
        }
    }
}

/// Chains drafts into records, in the order they were submitted, and queues each record for
/// every sink. Ends when the drafts' queue closes; its sink queues close with it.
pub(super) struct Sealer {
    pub rx: mpsc::Receiver<Box<Draft>>,
    pub head: ChainHead,
    pub senders: Vec<mpsc::Sender<Line>>,
    pub states: Vec<Arc<SinkState>>,
    pub dropped: Vec<prometheus::IntCounter>,
    pub redactor: Redactor,
    pub lost: Arc<AtomicU64>,
    /// A sink reads the records' indexed columns (PostgreSQL): make them when sealing.
    pub cols: bool,
}

impl Sealer {
    pub async fn run(mut self) {
        // Idle, it waits to be woken by the next draft. Then it takes what has queued up every
        // tick, unwoken, until a tick finds nothing: a traffic thread's hand-over is then a push
        // onto a queue. (Going back to waiting after every draft that found no other queued
        // behind it made one connection's calls, one at a time, a wake-up each.)
        while let Some(first) = self.rx.recv().await {
            self.seal(*first);
            loop {
                tokio::time::sleep(SEAL_TICK).await;
                let mut taken = 0;
                loop {
                    match self.rx.try_recv() {
                        Ok(d) => {
                            self.seal(*d);
                            taken += 1;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                if taken == 0 {
                    break;
                }
            }
        }
    }

    fn seal(&mut self, mut d: Draft) {
        if let Some(body) = d.call_body.take() {
            let batch = d.elements.is_some();
            let args = call_arguments(&body, batch).unwrap_or_default();
            let redact = |target: Option<&TargetNote>, a: Value| {
                let tool = target.filter(|t| t.kind == "tool").map(|t| t.name.as_str());
                self.redactor.apply(tool, a)
            };
            match &mut d.elements {
                Some(elements) => {
                    for (e, a) in elements.iter_mut().zip(args) {
                        let method = e
                            .method
                            .as_deref()
                            .map_or(Method::Response, Method::from_name);
                        if has_arguments(method) {
                            e.arguments = a.map(|a| redact(e.target.as_ref(), a));
                        }
                    }
                }
                None => {
                    let a = args.into_iter().next().flatten();
                    d.arguments = a.map(|a| redact(d.target.as_ref(), a));
                }
            }
        }
        // Records lost before sealing leave their sequence numbers unused: a visible gap.
        self.head.seq += self.lost.swap(0, Ordering::Relaxed);
        let line = self.head.link(&d, self.cols);
        for (i, tx) in self.senders.iter().enumerate() {
            match tx.try_send(line.clone()) {
                Ok(()) => {
                    self.states[i].depth.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.dropped[i].inc();
                    tracing::error!(sink = %self.states[i].name, seq = line.seq, "audit record lost: queue full");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64};

    use super::*;
    use crate::audit::record::{self, ElementNote, sha256_hex, split_hash};
    use crate::audit::verify;

    #[test]
    fn records_chain() {
        let mut head = ChainHead::new("pod-a");
        let a = head.seal(&Draft::default());
        let b = head.seal(&Draft {
            status: 200,
            ..Draft::default()
        });
        let va: Value = serde_json::from_str(&a.text).unwrap();
        let vb: Value = serde_json::from_str(&b.text).unwrap();
        assert_eq!(va["v"], 1);
        assert_eq!(va["seq"], 1);
        assert_eq!(va["prev"], GENESIS);
        assert_eq!(vb["prev"], va["hash"]);
        let (hash, body) = split_hash(&b.text).unwrap();
        assert_eq!(hash, vb["hash"].as_str().unwrap());
        assert_eq!(sha256_hex(body.as_bytes()), hash);
        assert!(split_hash("{\"a\":1}").is_none());
    }

    fn sealer(lost: Arc<AtomicU64>) -> (Sealer, mpsc::Receiver<Line>) {
        let (tx, rx) = mpsc::channel(8);
        use crate::config::audit::{FieldRule, RedactAction, RedactConfig};
        let redact = RedactConfig {
            secrets: true,
            fields: Vec::new(),
            tools: vec![(
                "echo".into(),
                vec![FieldRule {
                    pointer: "/text".into(),
                    action: RedactAction::Hash,
                }],
            )],
        };
        let sealer = Sealer {
            rx: mpsc::channel(1).1,
            head: ChainHead::new("t"),
            senders: vec![tx],
            states: vec![Arc::new(SinkState {
                name: "s".into(),
                capacity: 8,
                depth: AtomicI64::new(0),
                up: AtomicBool::new(true),
                spool_ok: AtomicBool::new(false),
            })],
            dropped: vec![prometheus::IntCounter::new("d", "d").unwrap()],
            redactor: Redactor::new(&redact),
            lost,
            cols: false,
        };
        (sealer, rx)
    }

    #[test]
    fn drafts_lost_before_sealing_leave_a_gap_that_verify_names() {
        let lost = Arc::new(AtomicU64::new(0));
        let (mut sealer, mut out) = sealer(lost.clone());
        sealer.seal(Draft::default());
        lost.fetch_add(2, Ordering::Relaxed);
        sealer.seal(Draft::default());
        sealer.seal(Draft::default());
        let lines: Vec<Line> = std::iter::from_fn(|| out.try_recv().ok()).collect();
        let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [1, 4, 5]);
        assert_eq!(lost.load(Ordering::Relaxed), 0);
        let report = verify::verify_lines(lines.iter().map(|l| l.text.to_string()), false);
        let broken = report.broken.expect("the gap is a broken link");
        assert!(broken.contains("2 records missing"), "{broken}");
    }

    #[test]
    fn the_sealer_reads_and_redacts_call_arguments() {
        let (mut sealer, mut out) = sealer(Arc::new(AtomicU64::new(0)));
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","token":"Bearer abcdefghijklmnopqrstuvwxyz0123456789"}}}"#;
        sealer.seal(Draft {
            call_body: Some(bytes::Bytes::from_static(body)),
            target: Some(TargetNote {
                kind: "tool",
                name: "echo".into(),
            }),
            ..Draft::default()
        });
        let line = out.try_recv().unwrap();
        let v: Value = serde_json::from_str(&line.text).unwrap();
        // The tool's own rule (found by the target's name) hashed `text`; the secret is masked.
        let text = v["arguments"]["text"].as_str().unwrap();
        assert!(text.starts_with("sha256:"), "{text}");
        assert_ne!(
            v["arguments"]["token"],
            "Bearer abcdefghijklmnopqrstuvwxyz0123456789"
        );
        assert!(!line.text.contains("abcdefghijklmnopqrstuvwxyz"));
    }

    #[test]
    fn the_sealer_redacts_each_batch_element() {
        let (mut sealer, mut out) = sealer(Arc::new(AtomicU64::new(0)));
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"add","arguments":{"a":1,"password":"hunter2"}}}]"#;
        let note = |method: &str, id: Option<Value>, tool: Option<&str>| ElementNote {
            method: Some(method.into()),
            jsonrpc_id: id,
            target: tool.map(|t| TargetNote {
                kind: "tool",
                name: t.into(),
            }),
            arguments: None,
        };
        sealer.seal(Draft {
            method: Some("batch".into()),
            call_body: Some(bytes::Bytes::from_static(body)),
            elements: Some(vec![
                note("tools/call", Some(1.into()), Some("echo")),
                note("notifications/initialized", None, None),
                note("tools/call", Some("b".into()), Some("add")),
            ]),
            ..Draft::default()
        });
        let line = out.try_recv().unwrap();
        let v: Value = serde_json::from_str(&line.text).unwrap();
        assert_eq!(v["method"], "batch");
        let hashed = format!("sha256:{}", record::sha256_hex(b"\"hi\""));
        assert_eq!(
            v["elements"],
            serde_json::json!([
                {"method": "tools/call", "jsonrpc_id": 1,
                 "target": {"kind": "tool", "name": "echo"}, "arguments": {"text": hashed}},
                {"method": "notifications/initialized", "target": null},
                {"method": "tools/call", "jsonrpc_id": "b",
                 "target": {"kind": "tool", "name": "add"},
                 "arguments": {"a": 1, "password": "[redacted:field]"}}
            ])
        );
        assert!(!line.text.contains("hunter2"));
        let report = verify::verify_lines([line.text.to_string()], false);
        assert!(report.broken.is_none(), "{:?}", report.broken);
    }
}
