//! The MCP view of a request: protocol era, JSON-RPC envelope and the target each message names.
//! Parsed once; the original bytes are what the proxy forwards.

pub mod envelope;
pub mod headers;
pub mod method;
pub mod strict;
pub mod uri;

pub use envelope::{Envelope, Kind, Message, ParseError, Target};
pub use method::Method;

/// The first revision of the modern (sessionless) era.
pub const MODERN_VERSION: &str = "2026-07-28";
/// What a request without a version header is taken to speak.
pub const DEFAULT_LEGACY_VERSION: &str = "2025-03-26";
/// The `_meta` key that carries the protocol version of a modern request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// The members of a listed definition that say what it is, by kind: what tool integrity
/// fingerprints (`integrity::fingerprint`) and what the strict reading of answers refuses to see
/// spelled in another case (`strict::check_answer`). One list, so the two cannot drift apart.
pub const TOOL_MEMBERS: &[&str] = &[
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];
pub const PROMPT_MEMBERS: &[&str] = &["name", "title", "description", "arguments"];
pub const RESOURCE_MEMBERS: &[&str] = &[
    "uri",
    "name",
    "title",
    "description",
    "mimeType",
    "annotations",
];
pub const TEMPLATE_MEMBERS: &[&str] = &[
    "uriTemplate",
    "name",
    "title",
    "description",
    "mimeType",
    "annotations",
];

/// The two eras of the protocol served on one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2024-11-05 … 2025-11-25: `initialize`, sessions, GET streams.
    Legacy,
    /// 2026-07-28 and later: no sessions, per-request `_meta`, `Mcp-Method`/`Mcp-Name` headers.
    Modern,
}

impl Era {
    /// Revisions are `YYYY-MM-DD` dates, so they order as strings. Anything else is left to
    /// the upstream to refuse, in the era a request without a version header has.
    pub fn of_version(version: &str) -> Era {
        let is_date = version.len() == 10
            && version.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        if is_date && version >= MODERN_VERSION {
            Era::Modern
        } else {
            Era::Legacy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

/// Legacy revisions that allow a JSON-RPC batch in a POST body.
pub fn version_allows_batch(version: &str) -> bool {
    version <= "2025-03-26"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_by_version() {
        assert_eq!(Era::of_version("2024-11-05"), Era::Legacy);
        assert_eq!(Era::of_version("2025-11-25"), Era::Legacy);
        assert_eq!(Era::of_version("2026-07-28"), Era::Modern);
        assert_eq!(Era::of_version("2027-01-01"), Era::Modern);
        assert_eq!(Era::of_version("draft"), Era::Legacy);
        assert_eq!(Era::of_version("2026-07-28x"), Era::Legacy);
        assert!(version_allows_batch("2025-03-26"));
        assert!(version_allows_batch("2024-11-05"));
        assert!(!version_allows_batch("2025-06-18"));
    }
}
