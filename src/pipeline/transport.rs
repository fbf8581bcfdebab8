//! Transport check: the HTTP shape of a request to the MCP endpoint (method, path, media
//! types, session id syntax) and its body, read once up to the configured limit. A refusal
//! sent before the body is read whole leaves the rest unread: `linger` discards it, within
//! bounds, so the client reads the answer instead of a connection reset.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::Ctx;
use crate::config::Config;
use crate::denial::{Denial, Reason};
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
        let head = check_head(
            &self.mcp_path,
            &ctx.parts.method,
            ctx.parts.uri.path(),
            &ctx.parts.headers,
        )
        .and_then(|()| check_origin(&self.allowed_origins, &ctx.parts.headers));
        if let Err(denial) = head {
            if expects_continue(&ctx.parts.headers) {
                // Nothing for `linger` to do: the client waits for `100 Continue` and, refused,
                // sends no body; reading it would make hyper invite it.
                ctx.incoming = None;
            }
            return Err(denial);
        }
        if ctx.parts.method == Method::POST {
            let incoming = ctx.incoming.take().expect("body is read once");
            let read = read_body(incoming, &ctx.parts.headers, self.max_body);
            match tokio::time::timeout(self.body_timeout, read).await {
                // A stalled client is not waited for a second time.
                Err(_) => return Err(Denial::new(Reason::BodyTimeout)),
                Ok(Ok(body)) => ctx.body = body,
                Ok(Err((denial, rest))) => {
                    // Left for `linger`: the client may still be sending it.
                    ctx.incoming = rest;
                    return Err(denial);
                }
            }
        }
        Ok(())
    }
}

/// Discarding an unread body ends after this long in all (nginx's `lingering_time`)...
const LINGER_TIME: Duration = Duration::from_secs(30);
/// ...after this long without a byte from the client (nginx's `lingering_timeout`)...
const LINGER_IDLE: Duration = Duration::from_secs(5);
/// ...or after this much: a client sending more is not owed its answer.
const LINGER_BYTES: u64 = 256 << 20;

/// After a refusal, the request's body may be partly or wholly unread while the client is
/// still sending it. Closing then makes the kernel reset the connection, and a reset can
/// destroy the answer before the client reads it. So (HTTP/1) the answer says
/// `Connection: close` and the rest of the body is read and thrown away in the background,
/// within bounds, before hyper closes the connection. HTTP/2 ends the stream on its own
/// without touching the connection.
pub fn linger(ctx: &mut Ctx, headers: &mut HeaderMap) {
    let Some(body) = ctx.incoming.take() else {
        return;
    };
    if body.is_end_stream() || ctx.parts.version >= http::Version::HTTP_2 {
        return;
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let request = ctx.id;
    tokio::spawn(async move {
        let discarded = discard(body).await;
        tracing::debug!(request, discarded, "unread request body discarded");
    });
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads `body` to its end within the linger bounds, keeping nothing; the bytes read.
async fn discard(mut body: Incoming) -> u64 {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut seen = 0u64;
    while seen <= LINGER_BYTES {
        let until = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(until, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            // The end, a broken body, or out of time: dropping the body lets hyper close.
            _ => break,
        }
    }
    seen
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

/// The whole body, up to `max` bytes. Refused as too large, the body comes back with the
/// denial, its rest unread, for `linger`.
async fn read_body(
    mut incoming: Incoming,
    headers: &HeaderMap,
    max: usize,
) -> Result<Bytes, (Denial, Option<Incoming>)> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        // Refused before a byte is read: a client waiting for `100 Continue` sends none.
        let rest = (!expects_continue(headers)).then_some(incoming);
        return Err((Denial::new(Reason::BodyTooLarge), rest));
    }
    // One frame is the usual whole body, kept without a copy; more are joined.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| {
            let denial = Denial::new(Reason::BodyUnreadable).with_detail(e.to_string());
            (denial, None)
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > max {
            return Err((Denial::new(Reason::BodyTooLarge), Some(incoming)));
        }
        if first.is_none() && joined.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(f) = first.take() {
            let expected = declared.map_or(0, |n| n as usize).max(len);
            joined.reserve(expected.min(max));
            joined.extend_from_slice(&f);
        }
        joined.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
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
