//! OAuth 2.0 Protected Resource Metadata (RFC 9728), served unauthenticated on the traffic
//! port at `/.well-known/oauth-protected-resource` and its path-suffixed form, and the
//! `resource_metadata` URL that 401 challenges point at.

use bytes::Bytes;
use http::{HeaderMap, header};
use serde_json::json;

pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

pub struct ResourceMetadata {
    /// The configured canonical URI; when `None`, the URL the client used (scheme + Host +
    /// MCP path) stands in.
    resource: Option<String>,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    mcp_path: String,
    /// `WELL_KNOWN` + the MCP path.
    suffixed: String,
}

impl ResourceMetadata {
    pub fn new(
        resource: Option<String>,
        authorization_servers: Vec<String>,
        scopes_supported: Vec<String>,
        mcp_path: &str,
    ) -> Self {
        Self {
            resource,
            authorization_servers,
            scopes_supported,
            mcp_path: mcp_path.to_string(),
            suffixed: format!("{WELL_KNOWN}{mcp_path}"),
        }
    }

    /// The request path is one of the two metadata documents.
    pub fn serves(&self, path: &str) -> bool {
        path == WELL_KNOWN || path == self.suffixed
    }

    /// The canonical URI of this server as seen by this request.
    pub fn resource(&self, headers: &HeaderMap, tls: bool) -> String {
        if let Some(r) = &self.resource {
            return r.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.parse::<http::uri::Authority>().is_ok())
            .unwrap_or("localhost");
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{host}{}", self.mcp_path)
    }

    /// Where the metadata of `resource` lives: the well-known segment goes between the
    /// authority and the path (RFC 9728 §3.1).
    pub fn metadata_url(resource: &str) -> String {
        let (scheme, rest) = resource.split_once("://").unwrap_or(("https", resource));
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let path = path.trim_end_matches('/');
        format!("{scheme}://{authority}{WELL_KNOWN}{path}")
    }

    /// The JSON document.
    pub fn document(&self, headers: &HeaderMap, tls: bool) -> Bytes {
        let doc = json!({
            "resource": self.resource(headers, tls),
            "authorization_servers": self.authorization_servers,
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
        });
        Bytes::from(serde_json::to_vec(&doc).expect("JSON values serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_segment() {
        assert_eq!(
            ResourceMetadata::metadata_url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            ResourceMetadata::metadata_url("https://mcp.example.com"),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            ResourceMetadata::metadata_url("http://10.0.0.1:8080/a/b/"),
            "http://10.0.0.1:8080/.well-known/oauth-protected-resource/a/b"
        );
    }

    #[test]
    fn resource_from_config_or_host() {
        let m = ResourceMetadata::new(None, vec![], vec!["tools".into()], "/mcp");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "svc.ns:8080".parse().unwrap());
        assert_eq!(m.resource(&h, false), "http://svc.ns:8080/mcp");
        h.insert(header::HOST, "bad host\"".parse().unwrap());
        assert_eq!(m.resource(&h, true), "https://localhost/mcp");
        assert!(m.serves("/.well-known/oauth-protected-resource"));
        assert!(m.serves("/.well-known/oauth-protected-resource/mcp"));
        assert!(!m.serves("/.well-known/oauth-protected-resource/other"));
        let fixed = ResourceMetadata::new(
            Some("https://mcp.example.com/mcp".into()),
            vec!["https://idp.example.com".into()],
            vec![],
            "/mcp",
        );
        let doc: serde_json::Value = serde_json::from_slice(&fixed.document(&h, false)).unwrap();
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
        assert_eq!(doc["authorization_servers"][0], "https://idp.example.com");
        assert_eq!(doc["bearer_methods_supported"][0], "header");
    }
}
