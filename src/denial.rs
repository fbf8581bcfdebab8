//! Denials are data: a reason from a fixed set, an HTTP status, a JSON-RPC code and a public
//! message. `Denial::into_response` is the one place they become responses (a plain-bytes body
//! the server streams as is); detail stays in the log. Floor 0: imports nothing of the crate.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

/// Whose fault a failure is, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Sentinel,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Sentinel => "sentinel",
        }
    }
}

/// Every reason a request can be refused or fail in the sentinel. Labels stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    NotAcceptable,
    BodyTooLarge,
    BodyTimeout,
    BodyUnreadable,
    InvalidSessionId,
    ParseError,
    InvalidRequest,
    InvalidParams,
    /// A body, URI or header that upstream parsers could read differently than the sentinel.
    Ambiguous,
    BatchNotAllowed,
    HeaderMismatch,
    OriginNotAllowed,
    TokenInQuery,
    Unauthenticated,
    SessionNotFound,
    TaskNotFound,
    PolicyDenied,
    InsufficientScope,
    UpstreamUnavailable,
    UpstreamTimeout,
    ShuttingDown,
    RateLimited,
    ConcurrencyLimited,
    RateLimitUnavailable,
    AuditUnavailable,
    /// Tool integrity: the definition drifted from its pin, is unpinned, or is poisoned.
    IntegrityBlocked,
}

impl Reason {
    pub const ALL: [Reason; 29] = [
        Reason::NotFound,
        Reason::MethodNotAllowed,
        Reason::UnsupportedMediaType,
        Reason::NotAcceptable,
        Reason::BodyTooLarge,
        Reason::BodyTimeout,
        Reason::BodyUnreadable,
        Reason::InvalidSessionId,
        Reason::ParseError,
        Reason::InvalidRequest,
        Reason::InvalidParams,
        Reason::Ambiguous,
        Reason::BatchNotAllowed,
        Reason::HeaderMismatch,
        Reason::OriginNotAllowed,
        Reason::TokenInQuery,
        Reason::Unauthenticated,
        Reason::SessionNotFound,
        Reason::TaskNotFound,
        Reason::PolicyDenied,
        Reason::InsufficientScope,
        Reason::UpstreamUnavailable,
        Reason::UpstreamTimeout,
        Reason::ShuttingDown,
        Reason::RateLimited,
        Reason::ConcurrencyLimited,
        Reason::RateLimitUnavailable,
        Reason::AuditUnavailable,
        Reason::IntegrityBlocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not_found",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::NotAcceptable => "not_acceptable",
            Reason::BodyTooLarge => "body_too_large",
            Reason::BodyTimeout => "body_timeout",
            Reason::BodyUnreadable => "body_unreadable",
            Reason::InvalidSessionId => "invalid_session_id",
            Reason::ParseError => "parse_error",
            Reason::InvalidRequest => "invalid_request",
            Reason::InvalidParams => "invalid_params",
            Reason::Ambiguous => "ambiguous",
            Reason::BatchNotAllowed => "batch_not_allowed",
            Reason::HeaderMismatch => "header_mismatch",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::TokenInQuery => "token_in_query",
            Reason::Unauthenticated => "unauthenticated",
            Reason::SessionNotFound => "session_not_found",
            Reason::TaskNotFound => "task_not_found",
            Reason::PolicyDenied => "policy_denied",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::ShuttingDown => "shutting_down",
            Reason::RateLimited => "rate_limited",
            Reason::ConcurrencyLimited => "concurrency_limited",
            Reason::RateLimitUnavailable => "rate_limit_unavailable",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::IntegrityBlocked => "integrity_blocked",
        }
    }

    /// The HTTP status, JSON-RPC code and public message of this reason.
    pub fn answer(self) -> (StatusCode, i32, &'static str) {
        use StatusCode as S;
        match self {
            Reason::NotFound => (S::NOT_FOUND, -32600, "Not found"),
            Reason::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, -32600, "Method not allowed"),
            Reason::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                -32600,
                "Content-Type must be application/json",
            ),
            Reason::NotAcceptable => (
                S::NOT_ACCEPTABLE,
                -32600,
                "Accept must list application/json and text/event-stream",
            ),
            Reason::BodyTooLarge => (S::PAYLOAD_TOO_LARGE, -32600, "Request body too large"),
            Reason::BodyTimeout => (S::REQUEST_TIMEOUT, -32600, "Request body timed out"),
            Reason::BodyUnreadable => (S::BAD_REQUEST, -32600, "Request body could not be read"),
            Reason::InvalidSessionId => (S::BAD_REQUEST, -32600, "Invalid session id"),
            Reason::ParseError => (S::BAD_REQUEST, -32700, "Parse error"),
            Reason::InvalidRequest => (S::BAD_REQUEST, -32600, "Invalid request"),
            Reason::InvalidParams => (S::BAD_REQUEST, -32602, "Invalid params"),
            Reason::Ambiguous => (
                S::BAD_REQUEST,
                -32600,
                "Invalid request: it can be read more than one way",
            ),
            Reason::BatchNotAllowed => (
                S::BAD_REQUEST,
                -32600,
                "Batches are not allowed in this protocol version",
            ),
            Reason::HeaderMismatch => (
                S::BAD_REQUEST,
                -32020,
                "Header mismatch: MCP headers must agree with the request body",
            ),
            Reason::OriginNotAllowed => (S::FORBIDDEN, -32600, "Origin not allowed"),
            Reason::TokenInQuery => (
                S::BAD_REQUEST,
                -32600,
                "Access tokens must be sent in the Authorization header, not the query string",
            ),
            Reason::Unauthenticated => (S::UNAUTHORIZED, -32600, "Unauthorized"),
            Reason::SessionNotFound => (S::NOT_FOUND, -32600, "Session not found"),
            Reason::TaskNotFound => (S::NOT_FOUND, -32602, "Task not found"),
            // `answer: unknown` replaces this with the error of something that does not exist.
            Reason::PolicyDenied => (S::FORBIDDEN, -32600, "Forbidden"),
            Reason::InsufficientScope => (S::FORBIDDEN, -32600, "Insufficient scope"),
            Reason::UpstreamUnavailable => (S::BAD_GATEWAY, -32603, "Upstream unavailable"),
            Reason::UpstreamTimeout => (S::GATEWAY_TIMEOUT, -32603, "Upstream timed out"),
            Reason::ShuttingDown => (S::SERVICE_UNAVAILABLE, -32603, "Shutting down"),
            // No JSON-RPC code is defined for these; the HTTP status, outside the reserved
            // -32768..-32000 range, is what an agent already knows to back off on.
            Reason::RateLimited => (S::TOO_MANY_REQUESTS, 429, "Rate limit exceeded"),
            Reason::ConcurrencyLimited => {
                (S::TOO_MANY_REQUESTS, 429, "Too many concurrent tool calls")
            }
            Reason::RateLimitUnavailable => {
                (S::SERVICE_UNAVAILABLE, -32603, "Rate limiter unavailable")
            }
            Reason::AuditUnavailable => (S::SERVICE_UNAVAILABLE, -32603, "Audit log unavailable"),
            // A single request is answered with the "not found" error of what it asked for
            // and the reason (`pipeline::integrity`); batches and notifications with this.
            Reason::IntegrityBlocked => (S::FORBIDDEN, -32600, "Blocked by tool integrity"),
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            Reason::UpstreamUnavailable | Reason::UpstreamTimeout => Fault::Upstream,
            Reason::ShuttingDown | Reason::RateLimitUnavailable | Reason::AuditUnavailable => {
                Fault::Sentinel
            }
            _ => Fault::Client,
        }
    }
}

/// A refusal decided by a check (or by the forwarder for upstream failures).
#[derive(Debug)]
pub struct Denial {
    pub reason: Reason,
    /// The JSON-RPC id to answer with, as raw JSON (`"a"`, `7`); `null` when unknown.
    pub id: Option<String>,
    /// Extra response headers (e.g. `Allow`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// When true, answer with the status alone: the request held no JSON-RPC request to
    /// answer (only notifications or responses).
    pub status_only: bool,
    /// For the log only, never sent.
    pub detail: Option<String>,
    /// Overrides of the reason's answer, for checks whose answer is configured (a policy
    /// denial shaped like the upstream's "unknown tool") or carries values. Boxed: rare, and
    /// a denial travels in every check's `Result`.
    pub answer: Option<Box<Answer>>,
}

/// Per-denial overrides of `Reason::answer`; `None` keeps the reason's value.
#[derive(Debug, Default)]
pub struct Answer {
    pub status: Option<StatusCode>,
    pub code: Option<i32>,
    pub message: Option<String>,
    /// The JSON-RPC error's `data`, as raw JSON.
    pub data: Option<String>,
}

impl Denial {
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            id: None,
            headers: Vec::new(),
            status_only: false,
            detail: None,
            answer: None,
        }
    }

    fn answer_mut(&mut self) -> &mut Answer {
        self.answer.get_or_insert_default()
    }

    /// Answers with this HTTP status instead of the reason's.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.answer_mut().status = Some(status);
        self
    }

    /// Answers with this JSON-RPC code and message instead of the reason's.
    pub fn with_error(mut self, code: i32, message: impl Into<String>) -> Self {
        let a = self.answer_mut();
        a.code = Some(code);
        a.message = Some(message.into());
        self
    }

    /// Adds `data` (raw JSON) to the JSON-RPC error.
    pub fn with_data(mut self, data: String) -> Self {
        self.answer_mut().data = Some(data);
        self
    }

    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.answer
            .as_ref()
            .and_then(|a| a.status)
            .unwrap_or(self.reason.answer().0)
    }

    pub fn code(&self) -> i32 {
        self.answer
            .as_ref()
            .and_then(|a| a.code)
            .unwrap_or(self.reason.answer().1)
    }

    /// The one place a denial becomes an HTTP response.
    pub fn into_response(self) -> Response<Bytes> {
        let status = self.status();
        let code = self.code();
        let answer = self.answer.as_deref();
        let message = answer
            .and_then(|a| a.message.as_deref())
            .unwrap_or(self.reason.answer().2);
        let message = serde_json::to_string(message).expect("a message serializes");
        let data = match answer.and_then(|a| a.data.as_deref()) {
            Some(d) => format!(r#","data":{d}"#),
            None => String::new(),
        };
        let mut builder = Response::builder().status(status);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        let body = if self.status_only {
            Bytes::new()
        } else {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            let id = self.id.as_deref().unwrap_or("null");
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}{data}}}}}"#
            ))
        };
        builder.body(body).expect("denial response is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_the_id_and_code() {
        let resp = Denial::new(Reason::HeaderMismatch)
            .with_id(Some("\"abc\"".into()))
            .into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = resp.into_body();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["error"]["code"], -32020);
        assert_eq!(v["jsonrpc"], "2.0");
    }

    #[test]
    fn overrides_replace_the_reasons_answer() {
        let d = Denial::new(Reason::InvalidParams)
            .with_id(Some("7".into()))
            .with_status(StatusCode::OK)
            .with_error(-32002, "Resource not found")
            .with_data(r#"{"uri":"file:///x"}"#.into());
        assert_eq!((d.status(), d.code()), (StatusCode::OK, -32002));
        let resp = d.into_response();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":7,"error":{"code":-32002,
                "message":"Resource not found","data":{"uri":"file:///x"}}})
        );
    }

    #[test]
    fn notifications_get_a_status_only() {
        let mut d = Denial::new(Reason::InvalidSessionId);
        d.status_only = true;
        let resp = d.into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.into_body().is_empty());
    }

    /// Codes are the spec's own, or custom ones outside the reserved -32768..-32000.
    #[test]
    fn custom_codes_stay_in_spec() {
        for r in Reason::ALL {
            let code = r.answer().1;
            assert!(
                [-32700, -32600, -32602, -32603, -32020].contains(&code)
                    || !(-32768..=-32000).contains(&code),
                "{r:?} uses {code}"
            );
        }
    }
}
