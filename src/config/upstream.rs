//! The upstream address: `http://host:port/path` or, for a Unix socket shared in the pod,
//! `unix:<socket path>:<mcp path>` such as `unix:/run/mcp/server.sock:/mcp`.

use std::fmt;
use std::path::PathBuf;

use http::uri::{Authority, PathAndQuery};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    Tcp(Authority),
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub addr: UpstreamAddr,
    /// The MCP endpoint path on the upstream.
    pub path: PathAndQuery,
    /// The `Host` header the upstream expects (rmcp-based servers refuse non-local hosts).
    pub host: http::HeaderValue,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("{0:?} is not a URL such as http://127.0.0.1:8080/mcp or unix:/run/mcp.sock:/mcp")]
    Malformed(String),
    #[error("scheme {0:?} is not supported: the upstream is on localhost, use http:// or unix:")]
    Scheme(String),
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<Self, UpstreamUrlError> {
        let malformed = || UpstreamUrlError::Malformed(s.to_string());
        if let Some(rest) = s.strip_prefix("unix:") {
            let (sock, path) = match rest.find(":/") {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, "/"),
            };
            if !sock.starts_with('/') || sock.len() < 2 {
                return Err(malformed());
            }
            let path: PathAndQuery = path.parse().map_err(|_| malformed())?;
            return Ok(Self {
                addr: UpstreamAddr::Unix(PathBuf::from(sock)),
                path,
                host: http::HeaderValue::from_static("localhost"),
            });
        }
        let uri: http::Uri = s.parse().map_err(|_| malformed())?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(UpstreamUrlError::Scheme(other.to_string())),
            None => return Err(malformed()),
        }
        let authority = uri.authority().cloned().ok_or_else(malformed)?;
        let authority = if authority.port().is_some() {
            authority
        } else {
            format!("{}:80", authority.host())
                .parse()
                .map_err(|_| malformed())?
        };
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let host = http::HeaderValue::from_str(authority.as_str()).map_err(|_| malformed())?;
        Ok(Self {
            addr: UpstreamAddr::Tcp(authority),
            path,
            host,
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.addr {
            UpstreamAddr::Tcp(a) => write!(f, "http://{a}{}", self.path),
            UpstreamAddr::Unix(p) => write!(f, "unix:{}:{}", p.display(), self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let u = UpstreamUrl::parse("http://127.0.0.1:8080/mcp").unwrap();
        assert_eq!(u.addr, UpstreamAddr::Tcp("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(u.path.as_str(), "/mcp");
        assert_eq!(u.host, "127.0.0.1:8080");
        let u = UpstreamUrl::parse("http://localhost/x").unwrap();
        assert_eq!(u.addr, UpstreamAddr::Tcp("localhost:80".parse().unwrap()));
        let u = UpstreamUrl::parse("unix:/run/mcp/s.sock:/mcp").unwrap();
        assert_eq!(u.addr, UpstreamAddr::Unix("/run/mcp/s.sock".into()));
        assert_eq!(u.path.as_str(), "/mcp");
        assert_eq!(u.to_string(), "unix:/run/mcp/s.sock:/mcp");
        let u = UpstreamUrl::parse("unix:/run/s.sock").unwrap();
        assert_eq!(u.path.as_str(), "/");
    }

    #[test]
    fn rejects() {
        for bad in [
            "https://x/mcp",
            "127.0.0.1:8080",
            "unix:relative.sock:/mcp",
            "nope",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
