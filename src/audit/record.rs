//! The audit record, schema v1: what one request was and how it ended, serialized once as a
//! JSON line whose last field is the hash chaining it to the previous record of the same
//! sentinel run. `hash = sha256(the line without its hash field)`; that text holds `prev`.
//! The chain itself (`ChainHead`: ids, sequence numbers, `prev`, `hash`) is `audit::seal`'s.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::identity::Principal;
use crate::policy::Decision;

pub const SCHEMA_VERSION: u32 = 1;
/// `prev` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How a request ended, for the record (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Forwarded and answered by the upstream (any status, any JSON-RPC result).
    Allowed,
    /// Refused by a check (authentication, session, policy, bad input, audit itself).
    Denied,
    /// Refused by the rate limiter (over a rate, at a concurrency limit, limiter down).
    RateLimited,
    /// The upstream could not be reached, timed out or broke its answer.
    UpstreamError,
    /// The client went away before the answer ended.
    ClientGone,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Denied => "denied",
            AuditOutcome::RateLimited => "rate_limited",
            AuditOutcome::UpstreamError => "upstream_error",
            AuditOutcome::ClientGone => "client_gone",
        }
    }
}

/// The rate limiter's verdict on the request, when rate limits are configured.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RateNote {
    /// `allowed`, `limited`, `concurrency` or `unavailable`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// What the request acted on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetNote {
    /// `tool`, `prompt`, `resource`, `completion_prompt`, `completion_resource`, `task`,
    /// `subscriptions`.
    pub kind: &'static str,
    pub name: String,
}

/// One message of a 2025-03-26 batch: the record's `elements`, in the batch's order, each with
/// what a single request's record says of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ElementNote {
    /// `null` for a client's response to a server→client request.
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<Value>,
    pub target: Option<TargetNote>,
    /// The redacted `params.arguments` of a `tools/call` or `prompts/get`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

/// Everything known about a request, gathered while it runs; made into a record when it ends.
#[derive(Debug, Default)]
pub struct Draft {
    pub at: Option<SystemTime>,
    pub request_id: u64,
    pub trace_id: Option<String>,
    /// The sentinel's own span for this request (tracing on).
    pub span_id: Option<String>,
    pub client: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub principal: Option<Arc<Principal>>,
    /// `sha256:` + 16 hex of the legacy session id; never the id itself.
    pub session: Option<String>,
    pub era: Option<&'static str>,
    pub method: Option<String>,
    pub jsonrpc_id: Option<Value>,
    pub target: Option<TargetNote>,
    pub decision: Option<Decision>,
    pub denial: Option<&'static str>,
    pub rate_limit: Option<RateNote>,
    pub status: u16,
    pub outcome: Option<AuditOutcome>,
    pub jsonrpc_error: Option<i64>,
    pub is_error: Option<bool>,
    pub latency_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub arguments: Option<Value>,
    /// A batch's messages (`method` is then `batch`).
    pub elements: Option<Vec<ElementNote>>,
    /// The body of a `tools/call` or `prompts/get` (or of a batch holding one), whose
    /// `params.arguments` the sealer reads and redacts into `arguments` (or each element's),
    /// off the traffic thread.
    pub call_body: Option<bytes::Bytes>,
    /// Tool integrity findings: in the answer's lists and results, or what refused the call.
    pub integrity: Vec<crate::integrity::Note>,
}

#[derive(Serialize)]
struct PrincipalOut<'a> {
    subject: &'a str,
    /// The JWT issuer that vouched for `subject`: the subject alone is not an identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    groups: &'a [String],
    auth_method: &'static str,
}

#[derive(Serialize)]
struct DecisionOut<'a> {
    effect: &'static str,
    reason: &'static str,
    rule: &'a str,
}

#[derive(Serialize)]
struct ClientOut<'a> {
    /// Written as its text (`Display`), without an allocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
}

/// The record's fields in their written order; `hash` is appended after serializing.
#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    id: RecordId<'a>,
    instance: &'a str,
    seq: u64,
    prev: &'a str,
    ts: Timestamp,
    request_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<&'a str>,
    client: ClientOut<'a>,
    principal: Option<PrincipalOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    era: Option<&'static str>,
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc_id: Option<&'a Value>,
    target: Option<&'a TargetNote>,
    decision: Option<DecisionOut<'a>>,
    denial: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<&'a RateNote>,
    outcome: AuditOutcome,
    status: u16,
    jsonrpc_error: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_error: Option<bool>,
    latency_us: u64,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elements: Option<&'a [ElementNote]>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    integrity: &'a [crate::integrity::Note],
}

/// One chained, serialized record.
#[derive(Debug, Clone)]
pub struct Line {
    /// The chain (`instance` field) the record belongs to.
    pub instance: Arc<str>,
    pub seq: u64,
    /// Unix milliseconds of the request's start (the record's `ts`).
    pub at_ms: u64,
    /// The JSON text, without a newline.
    pub text: Arc<str>,
    /// The fields a table indexes, so a sink need not parse the text; only made when a sink
    /// uses them (PostgreSQL), else `None` (see [`Line::cols`]).
    pub cols: Option<Arc<Cols>>,
}

/// A record's indexed fields (the PostgreSQL sink's columns).
#[derive(Debug, Default)]
pub struct Cols {
    pub id: String,
    pub subject: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    pub outcome: String,
    pub status: i32,
}

/// Where a record sits in its chain: what `seal::ChainHead` fills in.
pub struct Link<'a> {
    /// The run id, prefix of the record's `id` (`<boot>-<seq, 12 digits>`).
    pub boot: &'a str,
    pub instance: &'a str,
    pub seq: u64,
    pub prev: &'a str,
    /// Unix milliseconds of the request's start.
    pub at_ms: u64,
}

impl Draft {
    /// Appends the record's JSON text at `link`, without its `hash` field (the chain appends
    /// it), to `buf`: the sealer serializes every record into one reused buffer.
    pub fn serialize_into(&self, link: &Link<'_>, buf: &mut Vec<u8>) {
        let out = Out {
            v: SCHEMA_VERSION,
            id: RecordId {
                boot: link.boot,
                seq: link.seq,
            },
            instance: link.instance,
            seq: link.seq,
            prev: link.prev,
            ts: Timestamp::of_ms(link.at_ms),
            request_id: self.request_id,
            trace_id: self.trace_id.as_deref(),
            span_id: self.span_id.as_deref(),
            client: ClientOut {
                address: self.client,
                user_agent: self.user_agent.as_deref(),
            },
            principal: self.principal.as_deref().map(|p| PrincipalOut {
                subject: &p.subject,
                issuer: p.issuer.as_deref(),
                groups: &p.groups,
                auth_method: p.method.as_str(),
            }),
            session: self.session.as_deref(),
            era: self.era,
            method: self.method.as_deref(),
            jsonrpc_id: self.jsonrpc_id.as_ref(),
            target: self.target.as_ref(),
            decision: self.decision.as_ref().map(|x| DecisionOut {
                effect: x.effect.as_str(),
                reason: x.reason.as_str(),
                rule: x.rule_name(),
            }),
            denial: self.denial,
            rate_limit: self.rate_limit.as_ref(),
            outcome: self.outcome(),
            status: self.status,
            jsonrpc_error: self.jsonrpc_error,
            is_error: self.is_error,
            latency_us: self.latency_us,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            arguments: self.arguments.as_ref(),
            elements: self.elements.as_deref(),
            integrity: &self.integrity,
        };
        serde_json::to_writer(buf, &out).expect("a record serializes");
    }

    /// The record's indexed columns (the PostgreSQL sink's), for the record at `link`.
    pub fn cols(&self, link: &Link<'_>) -> Cols {
        Cols {
            subject: self.principal.as_ref().map(|p| p.subject.clone()),
            method: self.method.clone(),
            target: self.target.as_ref().map(|t| t.name.clone()),
            outcome: self.outcome().as_str().to_string(),
            status: i32::from(self.status),
            id: RecordId {
                boot: link.boot,
                seq: link.seq,
            }
            .to_string(),
        }
    }

    fn outcome(&self) -> AuditOutcome {
        self.outcome.unwrap_or(AuditOutcome::ClientGone)
    }
}

/// A record's `id`: the run id and the sequence number, `<boot>-<seq, 12 digits>`.
struct RecordId<'a> {
    boot: &'a str,
    seq: u64,
}

impl std::fmt::Display for RecordId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{:012}", self.boot, self.seq)
    }
}

impl Serialize for RecordId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `2026-01-02T03:04:05.678Z`, formatted on the stack.
struct Timestamp([u8; 24]);

impl Timestamp {
    fn of_ms(ms: u64) -> Self {
        let secs = ms / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        // Years past 9999 do not fit the format; they never come from a real clock.
        put(0, 4, y.clamp(0, 9999) as u64);
        put(5, 2, u64::from(m));
        put(8, 2, u64::from(d));
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 3, ms % 1000);
        Self(b)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The chain position and indexed fields of a record read back as text.
#[derive(serde::Deserialize)]
struct Position {
    id: String,
    instance: String,
    seq: u64,
    ts: String,
    principal: Option<Named>,
    method: Option<String>,
    target: Option<Named>,
    outcome: String,
    status: i32,
}

#[derive(serde::Deserialize)]
struct Named {
    #[serde(alias = "subject")]
    name: String,
}

impl Line {
    /// A record read back (spool): its text must be a record of this schema.
    pub fn parse(text: &str) -> Option<Line> {
        let p: Position = serde_json::from_str(text).ok()?;
        Some(Line {
            instance: p.instance.into(),
            seq: p.seq,
            at_ms: parse_rfc3339_ms(&p.ts)?,
            text: text.into(),
            cols: Some(Arc::new(Cols {
                id: p.id,
                subject: p.principal.map(|n| n.name),
                method: p.method,
                target: p.target.map(|n| n.name),
                outcome: p.outcome,
                status: p.status,
            })),
        })
    }

    /// The indexed columns: those made when sealing, else read from the text.
    pub fn cols(&self) -> Option<Arc<Cols>> {
        match &self.cols {
            Some(c) => Some(c.clone()),
            None => Line::parse(&self.text).and_then(|l| l.cols),
        }
    }
}

/// The hash a line claims, and the text it was computed over; `None` when the line does not
/// end with a hash field.
pub fn split_hash(line: &str) -> Option<(&str, String)> {
    let line = line.trim_end();
    let body = line.strip_suffix("\"}")?;
    let (head, hash) = body.rsplit_once(",\"hash\":\"")?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((hash, format!("{head}}}")))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// The SHA-256 of `data` as 64 lowercase hex digits, on the stack (the sealer's per-record
/// hash, without an allocation).
pub fn sha256_hex_array(data: &[u8]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 64];
    for (i, b) in digest.as_ref().iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// `2026-01-02T03:04:05.678Z`
pub fn rfc3339_ms(ms: u64) -> String {
    Timestamp::of_ms(ms).as_str().to_string()
}

/// The inverse of `rfc3339_ms`, for records read back (spool, verify); `None` for any other
/// shape.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || &s[4..5] != "-" || &s[10..11] != "T" || &s[23..] != "Z" {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms;
    u64::try_from(total).ok()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
        assert_eq!(rfc3339_ms(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        for ms in [0, 1_709_251_199_123, 4_102_444_800_000, 1_767_225_600_001] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00.000Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    /// The text, byte for byte, that the hash covers: fields, order, formats (the id's 12-digit
    /// sequence, the timestamp, the address as text, v4 and v6).
    #[test]
    fn a_record_serializes_exactly() {
        let link = Link {
            boot: "9f1c2e3d4b5a6978",
            instance: "pod-a/9f1c2e3d4b5a6978",
            seq: 42,
            prev: GENESIS,
            at_ms: 1_709_251_199_123,
        };
        let text = |d: &Draft| {
            let mut buf = b"left over".to_vec();
            buf.clear();
            d.serialize_into(&link, &mut buf);
            String::from_utf8(buf).unwrap()
        };
        let v4 = Draft {
            request_id: 7,
            client: Some("10.1.2.3".parse().unwrap()),
            user_agent: Some("ua \"x\"".into()),
            status: 200,
            latency_us: 5,
            ..Draft::default()
        };
        assert_eq!(
            text(&v4),
            format!(
                "{{\"v\":1,\"id\":\"9f1c2e3d4b5a6978-000000000042\",\"instance\":\"pod-a/9f1c2e3d4b5a6978\",\
                 \"seq\":42,\"prev\":\"{GENESIS}\",\"ts\":\"2024-02-29T23:59:59.123Z\",\"request_id\":7,\
                 \"client\":{{\"address\":\"10.1.2.3\",\"user_agent\":\"ua \\\"x\\\"\"}},\"principal\":null,\
                 \"era\":null,\"method\":null,\"target\":null,\"decision\":null,\"denial\":null,\
                 \"outcome\":\"client_gone\",\"status\":200,\"jsonrpc_error\":null,\"latency_us\":5,\
                 \"bytes_in\":0,\"bytes_out\":0}}"
            )
        );
        for ip in ["2001:db8::1", "::ffff:10.1.2.3", "::1"] {
            let addr: IpAddr = ip.parse().unwrap();
            let v: Value = serde_json::from_str(&text(&Draft {
                client: Some(addr),
                ..Draft::default()
            }))
            .unwrap();
            assert_eq!(v["client"]["address"], addr.to_string());
        }
        let cols = v4.cols(&link);
        assert_eq!(cols.id, "9f1c2e3d4b5a6978-000000000042");
        assert_eq!(cols.outcome, "client_gone");
    }

    #[test]
    fn columns_read_back_match_those_made_when_sealing() {
        use crate::audit::seal::ChainHead;
        use crate::identity::AuthMethod;
        let mut head = ChainHead::new("pod-a");
        let made = head.seal(&Draft {
            principal: Some(Arc::new(Principal::new("alice", AuthMethod::Jwt))),
            method: Some("tools/call".into()),
            target: Some(TargetNote {
                kind: "tool",
                name: "echo".into(),
            }),
            status: 200,
            outcome: Some(AuditOutcome::Allowed),
            ..Draft::default()
        });
        let bare = Line {
            cols: None,
            ..made.clone()
        };
        let (a, b) = (made.cols().unwrap(), bare.cols().unwrap());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(a.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn the_principal_carries_its_issuer() {
        use crate::audit::seal::ChainHead;
        use crate::identity::AuthMethod;
        let mut head = ChainHead::new("pod-a");
        let mut jwt = Principal::new("alice", AuthMethod::Jwt);
        jwt.issuer = Some("https://idp.example".into());
        let key = Principal::new("alice", AuthMethod::ApiKey);
        let mut principal = |p: Principal| {
            let line = head.seal(&Draft {
                principal: Some(Arc::new(p)),
                ..Draft::default()
            });
            let v: Value = serde_json::from_str(&line.text).unwrap();
            v["principal"].clone()
        };
        assert_eq!(
            principal(jwt),
            serde_json::json!({"subject": "alice", "issuer": "https://idp.example",
                               "groups": [], "auth_method": "jwt"})
        );
        assert_eq!(
            principal(key),
            serde_json::json!({"subject": "alice", "groups": [], "auth_method": "api_key"})
        );
    }
}
