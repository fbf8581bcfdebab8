//! Transport check: the HTTP shape of a request to the MCP endpoint (method, path, media
//! types, session id syntax) and its body, read once up to the configured limit.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::{BodyExt, Limited};

use super::{Ctx, Denial, Reason};
use crate::config::Config;
use crate::mcp::headers::{MCP_SESSION_ID, valid_session_id};

pub struct Transport {
    mcp_path: String,
    /// Origins allowed to call (DNS-rebinding protection); empty: any.
    allowed_origins: Vec<String>,
    max_body: usize,
    body_timeout: std::time::Duration,
}

impl Transport {
    pub fn new(config: &Config) -> Self {
        Self {
            mcp_path: config.mcp_path.clone(),
            allowed_origins: config.auth.allowed_origins.clone(),
            max_body: config.limits.max_body_bytes,
            body_timeout: config.limits.body_read_timeout,
        }
    }

    pub async fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        check_head(
            &self.mcp_path,
            &ctx.parts.method,
            ctx.parts.uri.path(),
            &ctx.parts.headers,
        )?;
        check_origin(&self.allowed_origins, &ctx.parts.headers)?;
        if ctx.parts.method == Method::POST {
            let incoming = ctx.incoming.take().expect("body is read once");
            let read = read_body(incoming, &ctx.parts.headers, self.max_body);
            ctx.body = tokio::time::timeout(self.body_timeout, read)
                .await
                .map_err(|_| Denial::new(Reason::BodyTimeout))??;
        }
        Ok(())
    }
}

/// Everything that can be decided from the request line and headers alone.
pub fn check_head(
    mcp_path: &str,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Denial> {
    if path != mcp_path {
        return Err(Denial::new(Reason::NotFound));
    }
    if ![Method::POST, Method::GET, Method::DELETE].contains(method) {
        return Err(Denial::new(Reason::MethodNotAllowed)
            .with_header(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE")));
    }
    if *method == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| media_type(v).eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Denial::new(Reason::UnsupportedMediaType));
        }
        if !(accepts(headers, "application", "json") && accepts(headers, "text", "event-stream")) {
            return Err(Denial::new(Reason::NotAcceptable));
        }
    } else if *method == Method::GET && !accepts(headers, "text", "event-stream") {
        return Err(Denial::new(Reason::NotAcceptable));
    }
    for sid in headers.get_all(MCP_SESSION_ID) {
        if !valid_session_id(sid) {
            return Err(Denial::new(Reason::InvalidSessionId));
        }
    }
    Ok(())
}

/// A present `Origin` must be one of `allowed` (when the list is set); compared without a
/// trailing slash and case-insensitively, as origins are.
fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), Denial> {
    if allowed.is_empty() {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(Denial::new(Reason::OriginNotAllowed).with_detail(format!("origin {origin:?}")))
    }
}

fn media_type(v: &str) -> &str {
    v.split(';').next().unwrap_or("").trim()
}

/// True when some `Accept` entry admits `kind/sub` (exactly, `kind/*` or `*/*`) with q > 0.
fn accepts(headers: &HeaderMap, kind: &str, sub: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| {
            let mut parts = entry.split(';');
            let mt = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let Some((t, s)) = mt.split_once('/') else {
                return false;
            };
            let type_ok = t.eq_ignore_ascii_case(kind) || (t == "*" && s == "*");
            let sub_ok = s == "*" || s.eq_ignore_ascii_case(sub);
            !refused && type_ok && sub_ok
        })
}

async fn read_body(
    incoming: hyper::body::Incoming,
    headers: &HeaderMap,
    max: usize,
) -> Result<Bytes, Denial> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Denial::new(Reason::BodyTooLarge));
    }
    match Limited::new(incoming, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Denial::new(Reason::BodyTooLarge))
        }
        Err(e) => Err(Denial::new(Reason::BodyUnreadable).with_detail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(check_origin(&allowed, &headers(&[])).is_ok());
        assert!(
            check_origin(
                &allowed,
                &headers(&[("origin", "https://APP.example.com/")])
            )
            .is_ok()
        );
        let bad = check_origin(&allowed, &headers(&[("origin", "http://evil.example")]));
        assert_eq!(bad.unwrap_err().reason, Reason::OriginNotAllowed);
        assert_eq!(
            check_origin(&allowed, &headers(&[("origin", "null")]))
                .unwrap_err()
                .reason,
            Reason::OriginNotAllowed
        );
        assert!(check_origin(&[], &headers(&[("origin", "http://evil.example")])).is_ok());
    }

    const GOOD: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];

    fn reason(method: Method, path: &str, h: &HeaderMap) -> Option<Reason> {
        check_head("/mcp", &method, path, h).err().map(|d| d.reason)
    }

    type Row<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>, Option<Reason>);

    #[test]
    fn table() {
        let cases: Vec<Row> = vec![
            (Method::POST, "/mcp", GOOD.to_vec(), None),
            (
                Method::POST,
                "/other",
                GOOD.to_vec(),
                Some(Reason::NotFound),
            ),
            (Method::POST, "/mcp/", GOOD.to_vec(), Some(Reason::NotFound)),
            (
                Method::PUT,
                "/mcp",
                GOOD.to_vec(),
                Some(Reason::MethodNotAllowed),
            ),
            (
                Method::POST,
                "/mcp",
                vec![
                    ("content-type", "application/json; charset=utf-8"),
                    ("accept", "application/json, text/event-stream"),
                ],
                None,
            ),
            (
                Method::POST,
                "/mcp",
                vec![("content-type", "Application/JSON"), ("accept", "*/*")],
                None,
            ),
            (
                Method::POST,
                "/mcp",
                vec![
                    ("content-type", "text/plain"),
                    ("accept", "application/json, text/event-stream"),
                ],
                Some(Reason::UnsupportedMediaType),
            ),
            (
                Method::POST,
                "/mcp",
                vec![("accept", "application/json, text/event-stream")],
                Some(Reason::UnsupportedMediaType),
            ),
            (
                Method::POST,
                "/mcp",
                vec![
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                ],
                Some(Reason::NotAcceptable),
            ),
            (
                Method::POST,
                "/mcp",
                vec![
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                    ("accept", "text/event-stream"),
                ],
                None,
            ),
            (
                Method::POST,
                "/mcp",
                vec![
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream;q=0"),
                ],
                Some(Reason::NotAcceptable),
            ),
            (
                Method::POST,
                "/mcp",
                vec![("content-type", "application/json")],
                Some(Reason::NotAcceptable),
            ),
            (
                Method::GET,
                "/mcp",
                vec![("accept", "text/event-stream")],
                None,
            ),
            (
                Method::GET,
                "/mcp",
                vec![("accept", "application/json")],
                Some(Reason::NotAcceptable),
            ),
            (
                Method::DELETE,
                "/mcp",
                vec![("mcp-session-id", "abc")],
                None,
            ),
            (
                Method::DELETE,
                "/mcp",
                vec![("mcp-session-id", "a b")],
                Some(Reason::InvalidSessionId),
            ),
        ];
        for (method, path, h, want) in cases {
            assert_eq!(
                reason(method.clone(), path, &headers(&h)),
                want,
                "{method} {path} {h:?}"
            );
        }
    }
}
