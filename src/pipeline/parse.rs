//! Parse check: reads the JSON-RPC envelope once, decides the protocol era, and in the modern
//! era verifies that `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` agree with the body
//! (authorization later reads the body, never these headers).

use http::{HeaderMap, HeaderName, HeaderValue, Method as HttpMethod};

use super::Ctx;
use crate::denial::{Denial, Reason};
use crate::mcp::envelope::call_arguments;
use crate::mcp::headers::{
    MCP_METHOD, MCP_NAME, MCP_PARAM_PREFIX, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, decode_value,
};
use crate::mcp::{
    DEFAULT_LEGACY_VERSION, Envelope, Era, Kind, Message, Method, ParseError, Target, uri,
    version_allows_batch,
};

pub struct Parse;

impl Parse {
    pub fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        check_header_spellings(&ctx.parts.headers)?;
        // Two session ids: the session check would bind one, the upstream might read the other.
        single(&ctx.parts.headers, &MCP_SESSION_ID)?;
        let version = match single(&ctx.parts.headers, &MCP_PROTOCOL_VERSION)? {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .filter(|v| valid_version(v))
                    .ok_or_else(|| {
                        Denial::new(Reason::InvalidRequest)
                            .with_error(-32600, "Invalid MCP-Protocol-Version header")
                            .with_detail("malformed MCP-Protocol-Version")
                    })?
                    .to_string(),
            ),
            None => None,
        };
        // An `Mcp-Session-Id` (or, below, an `initialize`) selects the legacy era whatever the
        // version header says; otherwise a version of 2026-07-28 or later is modern.
        let session = ctx.parts.headers.contains_key(MCP_SESSION_ID);
        ctx.era = match version.as_deref() {
            Some(v) if !session => Era::of_version(v),
            _ => Era::Legacy,
        };
        if ctx.parts.method != HttpMethod::POST {
            ctx.version = version;
            return Ok(());
        }
        let envelope = Envelope::parse(&ctx.body).map_err(denial_of)?;
        if envelope
            .messages
            .iter()
            .any(|m| m.method == Method::Initialize)
        {
            ctx.era = Era::Legacy;
        }
        let result = check(
            &envelope,
            &ctx.body,
            version.as_deref(),
            ctx.era,
            &ctx.parts.headers,
        );
        ctx.version = version;
        ctx.envelope = Some(envelope);
        result
    }
}

fn denial_of(e: ParseError) -> Denial {
    match e {
        ParseError::Json => Denial::new(Reason::ParseError),
        ParseError::InvalidRequest { id, why } => Denial::new(Reason::InvalidRequest)
            .with_id(id)
            .with_detail(why),
        ParseError::InvalidParams { id, why } => Denial::new(Reason::InvalidParams)
            .with_id(id)
            .with_detail(why),
        ParseError::Ambiguous(a) => Denial::new(Reason::Ambiguous).with_detail(a.as_str()),
    }
}

/// Era rules for a parsed body. `version` is the header value, `era` what it implies.
pub fn check(
    env: &Envelope,
    body: &[u8],
    version: Option<&str>,
    era: Era,
    headers: &HeaderMap,
) -> Result<(), Denial> {
    if env.batch
        && (era == Era::Modern || !version_allows_batch(version.unwrap_or(DEFAULT_LEGACY_VERSION)))
    {
        return Err(Denial::new(Reason::BatchNotAllowed));
    }
    check_mirrors(env, body, headers)?;
    check_uris(env)?;
    match era {
        Era::Modern => {
            let msg = &env.messages[0];
            check_modern(msg, version.unwrap_or_default(), headers)
        }
        Era::Legacy => {
            // A body that claims the modern era must say so in the header too.
            match env.messages.iter().find_map(|m| m.meta_version.as_deref()) {
                Some(v) if Era::of_version(v) == Era::Modern => Err(mismatch(
                    env.single(),
                    "modern _meta protocol version without a matching MCP-Protocol-Version header",
                )),
                _ => Ok(()),
            }
        }
    }
}

fn check_modern(msg: &Message, version: &str, headers: &HeaderMap) -> Result<(), Denial> {
    if msg.kind == Kind::Response {
        return Err(Denial::new(Reason::InvalidRequest)
            .with_detail("a modern client sends no JSON-RPC responses"));
    }
    if msg.meta_version.as_deref() != Some(version) {
        return Err(mismatch(
            Some(msg),
            "MCP-Protocol-Version differs from _meta",
        ));
    }
    // Agreement was checked for every era; here only what 2026-07-28 requires to be sent.
    // (Notification header requirements are not defined by 2026-07-28.)
    if msg.kind == Kind::Request && !headers.contains_key(MCP_METHOD) {
        return Err(mismatch(
            Some(msg),
            "Mcp-Method header missing (body has method)",
        ));
    }
    if msg.mcp_name().is_some() && !headers.contains_key(MCP_NAME) {
        return Err(mismatch(
            Some(msg),
            "Mcp-Name header missing (body has the target)",
        ));
    }
    Ok(())
}

/// Every resource URI a message names must have one canonical reading (`mcp::uri`): one that
/// servers could resolve to another resource than the policy decides on is refused here, with
/// the request's id. (Completion refs may be templates; the policy decides those.)
fn check_uris(env: &Envelope) -> Result<(), Denial> {
    for m in &env.messages {
        let uris: &[String] = match &m.target {
            Target::Resource(u) => std::slice::from_ref(u),
            Target::Subscriptions(us) => us,
            _ => continue,
        };
        for u in uris {
            if let Err(e) = uri::canonical(u) {
                let (_, code, _) = Reason::InvalidParams.answer();
                return Err(Denial::new(Reason::Ambiguous)
                    .with_id(m.id.as_ref().map(|id| id.get().to_string()))
                    .with_error(
                        code,
                        format!(
                            "Invalid params: the resource URI cannot be decided safely ({})",
                            e.as_str()
                        ),
                    )
                    .with_detail(e.as_str()));
            }
        }
    }
    Ok(())
}

/// The mirrored headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) agree with the body wherever
/// they are sent, whatever the era or message kind: intermediaries route and filter on them, so
/// a request they would read differently from the body is refused. Each may appear once.
fn check_mirrors(env: &Envelope, body: &[u8], headers: &HeaderMap) -> Result<(), Denial> {
    let one = env.single();
    if let Some(h) = single(headers, &MCP_METHOD)? {
        let value = decode_value(h);
        for m in &env.messages {
            if m.method_name.is_none() || value.as_deref() != m.method_name.as_deref() {
                return Err(mismatch(
                    one,
                    "Mcp-Method header differs from the body's method",
                ));
            }
        }
    }
    if let Some(h) = single(headers, &MCP_NAME)? {
        let value = decode_value(h);
        for m in &env.messages {
            if value.is_none() || m.mirrored_name() != value.as_deref() {
                return Err(mismatch(
                    one,
                    "Mcp-Name header differs from the body's params.name/params.uri",
                ));
            }
        }
    }
    let mut params = headers
        .keys()
        .filter(|k| k.as_str().starts_with(MCP_PARAM_PREFIX))
        .peekable();
    if params.peek().is_none() {
        return Ok(());
    }
    let call = match one {
        Some(m) if m.method == Method::ToolsCall => m,
        _ => {
            return Err(mismatch(
                one,
                "Mcp-Param-* header on a message that is not a tools/call",
            ));
        }
    };
    let args = call_arguments(body, false)
        .and_then(|mut v| v.pop().flatten())
        .unwrap_or(serde_json::Value::Null);
    for name in params {
        let value = single(headers, name)?.and_then(decode_value);
        let suffix = &name.as_str()[MCP_PARAM_PREFIX.len()..];
        if !value.is_some_and(|v| mirrors_argument(&args, suffix, &v)) {
            return Err(mismatch(
                Some(call),
                "Mcp-Param-* header differs from the argument it mirrors",
            ));
        }
    }
    Ok(())
}

/// `value` is what an `Mcp-Param-{suffix}` header may carry for `args`: the argument of that
/// name (any case, any depth) when there is one, else some scalar argument. (The exact binding
/// is the tool's `x-mcp-header` schema annotation, which the request does not carry.)
fn mirrors_argument(args: &serde_json::Value, suffix: &str, value: &str) -> bool {
    let mut named = Vec::new();
    let mut scalars = Vec::new();
    collect_scalars(args, suffix, false, &mut named, &mut scalars);
    let pool = if named.is_empty() { scalars } else { named };
    let number = |s: &str| s.parse::<f64>().ok().filter(|n| n.is_finite());
    pool.iter().any(|s| {
        // A number may be written `42` in the header and `42.0` in the body.
        s == value || number(s).is_some_and(|n| number(value) == Some(n))
    })
}

fn collect_scalars(
    v: &serde_json::Value,
    suffix: &str,
    under_name: bool,
    named: &mut Vec<String>,
    scalars: &mut Vec<String>,
) {
    use serde_json::Value;
    let text = match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(map) => {
            for (k, v) in map {
                let is_name = k.eq_ignore_ascii_case(suffix);
                collect_scalars(v, suffix, is_name, named, scalars);
            }
            None
        }
        _ => None,
    };
    if let Some(t) = text {
        if under_name {
            named.push(t.clone());
        }
        scalars.push(t);
    }
}

/// The one value of a header that may be sent once; two copies are refused, since servers
/// differ on which one they read.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, Denial> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(header_mismatch(
            None,
            &format!("{name} sent more than once"),
        ));
    }
    Ok(first)
}

/// Refuses header names that a server could fold onto an MCP header (`Mcp_Method` is
/// `HTTP_MCP_METHOD` to WSGI, CGI and PHP alike) without being it.
fn check_header_spellings(headers: &HeaderMap) -> Result<(), Denial> {
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("mcp_") || (n.starts_with("mcp-") && n.contains('_')) {
            return Err(header_mismatch(
                None,
                &format!("{n} is not an MCP header name (spelled with '_')"),
            ));
        }
    }
    Ok(())
}

/// A protocol version is one token: a `YYYY-MM-DD` revision, or a name such as `DRAFT-…`.
/// Lists, spaces and other punctuation are refused rather than read one way or another.
fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn mismatch(msg: Option<&Message>, why: &'static str) -> Denial {
    let id = msg
        .and_then(|m| m.id.as_ref())
        .map(|id| id.get().to_string());
    header_mismatch(id, why)
}

/// The one shape of a header refusal. The client learns which header and which body field
/// disagree (names only: no value is echoed).
fn header_mismatch(id: Option<String>, why: &str) -> Denial {
    let (_, code, _) = Reason::HeaderMismatch.answer();
    Denial::new(Reason::HeaderMismatch)
        .with_id(id)
        .with_error(code, format!("Header mismatch: {why}"))
        .with_detail(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn run(body: &str, hs: &[(&str, &str)]) -> Option<Reason> {
        let mut headers = HeaderMap::new();
        for (k, v) in hs {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let version = headers
            .get(MCP_PROTOCOL_VERSION)
            .map(|v| v.to_str().unwrap().to_string());
        let era = version.as_deref().map_or(Era::Legacy, Era::of_version);
        let env = Envelope::parse(body.as_bytes()).unwrap();
        check(&env, body.as_bytes(), version.as_deref(), era, &headers)
            .err()
            .map(|d| d.reason)
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const CALL_UTF8: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Hello, 世界","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const V: (&str, &str) = ("mcp-protocol-version", "2026-07-28");
    const PARAM_CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{"region":"eu-west1","opts":{"priority":42}},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<Reason>);

    #[test]
    fn modern_agreement_table() {
        let m = Some(Reason::HeaderMismatch);
        let cases: Vec<Row> = vec![
            (
                CALL,
                vec![V, ("mcp-method", "tools/call"), ("mcp-name", "echo")],
                None,
            ),
            (
                CALL,
                vec![V, ("mcp-method", "tools/call"), ("mcp-name", "add")],
                m,
            ),
            (CALL, vec![V, ("mcp-method", "tools/call")], m),
            (
                CALL,
                vec![V, ("mcp-method", "tools/list"), ("mcp-name", "echo")],
                m,
            ),
            (CALL, vec![V, ("mcp-name", "echo")], m),
            (
                CALL,
                vec![
                    ("mcp-protocol-version", "2026-08-01"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                ],
                m,
            ),
            (
                CALL,
                vec![
                    V,
                    ("mcp-method", "=?base64?dG9vbHMvY2FsbA==?="),
                    ("mcp-name", "=?base64?ZWNobw==?="),
                ],
                None,
            ),
            (
                CALL_UTF8,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?SGVsbG8sIOS4lueVjA==?="),
                ],
                None,
            ),
            (
                CALL_UTF8,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?SGVsbG8=?="),
                ],
                m,
            ),
            (LIST, vec![V, ("mcp-method", "tools/list")], None),
            // The header claims modern, the body does not carry the version.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
                vec![V, ("mcp-method", "tools/list")],
                m,
            ),
            // The body claims modern, the header is missing.
            (LIST, vec![("mcp-method", "tools/list")], m),
            // Modern notifications: Mcp-Method optional, must agree when sent.
            (
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
                vec![V],
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
                vec![V, ("mcp-method", "x")],
                m,
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
                vec![V],
                Some(Reason::InvalidRequest),
            ),
            // Mcp-Name is required on tools/call, resources/read and prompts/get only.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
                vec![V, ("mcp-method", "resources/subscribe")],
                None,
            ),
            // Legacy: nothing is required, but what is sent must agree.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
                vec![("mcp-protocol-version", "2025-06-18"), ("mcp-name", "x")],
                m,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
                vec![("mcp-protocol-version", "2025-06-18")],
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
                vec![("mcp-method", "tools/call"), ("mcp-name", "echo")],
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
                vec![("mcp-method", "tools/list")],
                m,
            ),
            // Legacy notifications too.
            (
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                vec![("mcp-method", "notifications/cancelled")],
                m,
            ),
            // Mcp-Name on a message without a target mirrors nothing.
            (
                LIST,
                vec![V, ("mcp-method", "tools/list"), ("mcp-name", "x")],
                m,
            ),
            // Duplicated mirrored headers.
            (
                CALL,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                ],
                m,
            ),
            (
                CALL,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                    ("mcp-name", "echo"),
                ],
                m,
            ),
            // A client's response mirrors no method.
            (
                r#"{"jsonrpc":"2.0","id":"s1","result":{}}"#,
                vec![("mcp-method", "tools/call")],
                m,
            ),
            // A batch: the header must agree with every element.
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
                vec![("mcp-method", "ping")],
                m,
            ),
            // Mcp-Param-*: mirrors an argument of a tools/call.
            (
                PARAM_CALL,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "deploy"),
                    ("mcp-param-region", "eu-west1"),
                ],
                None,
            ),
            (
                PARAM_CALL,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "deploy"),
                    ("mcp-param-region", "us-east1"),
                ],
                m,
            ),
            (
                PARAM_CALL,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "deploy"),
                    ("mcp-param-Priority", "42"),
                ],
                None,
            ),
            (
                PARAM_CALL,
                vec![
                    V,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "deploy"),
                    ("mcp-param-region", "eu-west1"),
                    ("mcp-param-region", "eu-west1"),
                ],
                m,
            ),
            (
                LIST,
                vec![V, ("mcp-method", "tools/list"), ("mcp-param-region", "x")],
                m,
            ),
            // Numbers agree by value (`42` mirrors `42.0`), strings by text.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"scale","arguments":{"replicas":42.0,"weight":1.5}}}"#,
                vec![("mcp-param-replicas", "42"), ("mcp-param-weight", "1.5")],
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"scale","arguments":{"replicas":42.0}}}"#,
                vec![("mcp-param-replicas", "43")],
                m,
            ),
        ];
        for (body, hs, want) in cases {
            assert_eq!(run(body, &hs), want, "{body} {hs:?}");
        }
    }

    #[test]
    fn header_spellings_and_versions() {
        let h = |pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                headers.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            headers
        };
        assert!(check_header_spellings(&h(&[("mcp-method", "x")])).is_ok());
        for bad in [
            "mcp_method",
            "mcp-param_region",
            "mcp_protocol_version",
            "mcp_session_id",
        ] {
            assert_eq!(
                check_header_spellings(&h(&[(bad, "x")]))
                    .unwrap_err()
                    .reason,
                Reason::HeaderMismatch,
                "{bad}"
            );
        }
        for good in ["2025-06-18", "2026-07-28", "DRAFT-2026-v1"] {
            assert!(valid_version(good), "{good}");
        }
        for bad in [
            "",
            "2026-07-28, 2025-06-18",
            "2026-07-28 ",
            "2026/07/28",
            "é",
        ] {
            assert!(!valid_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn batches_only_where_allowed() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
        assert_eq!(run(batch, &[]), None);
        assert_eq!(run(batch, &[("mcp-protocol-version", "2025-03-26")]), None);
        assert_eq!(
            run(batch, &[("mcp-protocol-version", "2025-06-18")]),
            Some(Reason::BatchNotAllowed)
        );
        assert_eq!(run(batch, &[V]), Some(Reason::BatchNotAllowed));
    }
}
