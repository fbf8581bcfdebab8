//! MCP-specific HTTP headers and the 2026-07-28 encoding of header values.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::HeaderName;

pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// `Mcp-Param-{Name}`: a tool argument mirrored into a header (2026-07-28, `x-mcp-header`).
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Decodes a header value that may use the `=?base64?…?=` form for values that cannot be
/// sent as plain ASCII. `None` when the value is not valid (bad base64, not UTF-8, not
/// visible text).
pub fn decode_value(raw: &http::HeaderValue) -> Option<String> {
    let s = raw.to_str().ok()?;
    match s
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = STANDARD
                .decode(b64)
                .or_else(|_| STANDARD_NO_PAD.decode(b64))
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(s.to_string()),
    }
}

/// A session id may hold visible ASCII (0x21–0x7E) only.
pub fn valid_session_id(raw: &http::HeaderValue) -> bool {
    let b = raw.as_bytes();
    !b.is_empty() && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn plain_and_base64_values() {
        assert_eq!(
            decode_value(&HeaderValue::from_static("tools/call")).as_deref(),
            Some("tools/call")
        );
        assert_eq!(
            decode_value(&HeaderValue::from_static("=?base64?SGVsbG8sIOS4lueVjA==?=")).as_deref(),
            Some("Hello, 世界")
        );
        // The spec's own example: a literal that looks like the sentinel is itself encoded.
        assert_eq!(
            decode_value(&HeaderValue::from_static(
                "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
            ))
            .as_deref(),
            Some("=?base64?literal?=")
        );
        assert_eq!(
            decode_value(&HeaderValue::from_static("=?base64?SGk?=")).as_deref(),
            Some("Hi")
        );
        assert_eq!(
            decode_value(&HeaderValue::from_static("=?base64?!!!?=")),
            None
        );
        assert_eq!(
            decode_value(&HeaderValue::from_static("=?base64?/w==?=")),
            None
        );
    }

    #[test]
    fn session_ids() {
        assert!(valid_session_id(&HeaderValue::from_static("abc-123_~")));
        assert!(!valid_session_id(&HeaderValue::from_static("has space")));
        assert!(!valid_session_id(&HeaderValue::from_static("")));
        assert!(!valid_session_id(
            &HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()
        ));
        assert!(!valid_session_id(
            &HeaderValue::from_bytes(b"tab\there").unwrap()
        ));
    }
}
