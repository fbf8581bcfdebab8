//! Parse check: reads the JSON-RPC envelope once, decides the protocol era, and in the modern
//! era verifies that `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` agree with the body
//! (authorization later reads the body, never these headers).

use http::{HeaderMap, Method as HttpMethod};

use super::{Ctx, Denial, Reason};
use crate::mcp::headers::{
    MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, decode_value,
};
use crate::mcp::{
    DEFAULT_LEGACY_VERSION, Envelope, Era, Kind, Message, Method, ParseError, version_allows_batch,
};

pub struct Parse;

impl Parse {
    pub fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        let version = match ctx.parts.headers.get(MCP_PROTOCOL_VERSION) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Denial::new(Reason::InvalidRequest).with_detail("version header"))?
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
        let result = check(&envelope, version.as_deref(), ctx.era, &ctx.parts.headers);
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
    }
}

/// Era rules for a parsed body. `version` is the header value, `era` what it implies.
pub fn check(
    env: &Envelope,
    version: Option<&str>,
    era: Era,
    headers: &HeaderMap,
) -> Result<(), Denial> {
    if env.batch
        && (era == Era::Modern || !version_allows_batch(version.unwrap_or(DEFAULT_LEGACY_VERSION)))
    {
        return Err(Denial::new(Reason::BatchNotAllowed));
    }
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
    let method_name = msg.method_name.as_deref().unwrap_or_default();
    match headers.get(MCP_METHOD) {
        Some(h) if decode_value(h).as_deref() != Some(method_name) => {
            return Err(mismatch(Some(msg), "Mcp-Method differs from the body"));
        }
        Some(_) => {}
        // Notification header requirements are not defined by 2026-07-28.
        None if msg.kind == Kind::Request => {
            return Err(mismatch(Some(msg), "Mcp-Method missing"));
        }
        None => {}
    }
    if let Some(name) = msg.mcp_name() {
        match headers.get(MCP_NAME) {
            Some(h) if decode_value(h).as_deref() == Some(name) => {}
            Some(_) => return Err(mismatch(Some(msg), "Mcp-Name differs from the body")),
            None => return Err(mismatch(Some(msg), "Mcp-Name missing")),
        }
    }
    Ok(())
}

fn mismatch(msg: Option<&Message>, why: &'static str) -> Denial {
    let id = msg
        .and_then(|m| m.id.as_ref())
        .map(|id| id.get().to_string());
    Denial::new(Reason::HeaderMismatch)
        .with_id(id)
        .with_detail(why)
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
        check(&env, version.as_deref(), era, &headers)
            .err()
            .map(|d| d.reason)
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const CALL_UTF8: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Hello, 世界","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const V: (&str, &str) = ("mcp-protocol-version", "2026-07-28");

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
            // Legacy: headers are not checked.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
                vec![("mcp-protocol-version", "2025-06-18"), ("mcp-name", "x")],
                None,
            ),
        ];
        for (body, hs, want) in cases {
            assert_eq!(run(body, &hs), want, "{body} {hs:?}");
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
