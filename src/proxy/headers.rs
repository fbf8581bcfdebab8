//! Header rules for both hops: hop-by-hop headers never cross the proxy; everything else an
//! MCP peer sends (session, version, `Mcp-*`, Accept, Content-Type) passes unchanged.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::auth::{fold, folded};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The client address as a header value, made once per connection.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value")
}

/// Prepares client headers for the upstream hop. `peer` comes from [`peer_value`].
pub fn to_upstream(
    headers: &mut HeaderMap,
    host: &HeaderValue,
    peer: &HeaderValue,
    tls: bool,
    body_len: Option<usize>,
) {
    strip_hop_by_hop(headers);
    headers.insert(header::HOST, host.clone());
    // The hop is local, and the policy must be able to read answers it filters.
    headers.remove(header::ACCEPT_ENCODING);
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            HeaderValue::from_str(&format!("{prev}, {}", peer.to_str().unwrap_or_default())).ok()
        }
        _ => Some(peer.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    match body_len {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
}

/// What the upstream learns of the caller: the verified identity in headers the sentinel
/// controls, never the caller's credential.
pub struct IdentityRules {
    /// Removed from every request, under any spelling: client-sent copies of the identity
    /// headers and, unless credentials are forwarded, `Authorization` and the API-key header.
    /// Held folded ([`fold`]).
    strip: Vec<Box<[u8]>>,
    subject: HeaderName,
    groups: HeaderName,
    method: HeaderName,
    issuer: HeaderName,
}

impl IdentityRules {
    pub fn new(auth: &crate::config::AuthConfig) -> Self {
        let ih = &auth.identity_headers;
        let mut names = vec![&ih.subject, &ih.groups, &ih.method, &ih.issuer];
        if !auth.forward_credentials {
            names.push(&header::AUTHORIZATION);
            if let Some(k) = &auth.api_keys {
                names.push(&k.header);
            }
        }
        let mut strip: Vec<Box<[u8]>> = names
            .into_iter()
            .map(|n| folded(n.as_str()).into_bytes().into_boxed_slice())
            .collect();
        strip.sort();
        strip.dedup();
        Self {
            strip,
            subject: ih.subject.clone(),
            groups: ih.groups.clone(),
            method: ih.method.clone(),
            issuer: ih.issuer.clone(),
        }
    }

    /// Whether a client-sent header of this name is removed: it names one of the stripped
    /// headers under some spelling a framework folds to the same name.
    pub fn strips(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        self.strip
            .iter()
            .any(|s| s.len() == name.len() && s.iter().zip(name).all(|(s, n)| *s == fold(*n)))
    }

    pub fn apply(&self, headers: &mut HeaderMap, principal: Option<&crate::identity::Principal>) {
        // Names are collected first (a map cannot be edited while its keys are borrowed);
        // the Vec only allocates when a request does carry such a header. `remove` drops
        // every value of a name, so duplicates go too.
        let spoofed: Vec<HeaderName> = headers.keys().filter(|n| self.strips(n)).cloned().collect();
        for name in spoofed {
            headers.remove(name);
        }
        let Some(p) = principal else { return };
        headers.insert(self.subject.clone(), header_safe(&p.subject));
        if let Some(iss) = &p.issuer {
            headers.insert(self.issuer.clone(), header_safe(iss));
        }
        if !p.groups.is_empty() {
            // Each group is escaped on its own (`,` included), so a group named `dev,admin`
            // cannot read as two groups once joined.
            let mut joined = String::new();
            for (i, g) in p.groups.iter().enumerate() {
                if i > 0 {
                    joined.push(',');
                }
                escape_into(&mut joined, g, b",");
            }
            headers.insert(
                self.groups.clone(),
                HeaderValue::from_str(&joined).expect("escaped text is a valid header value"),
            );
        }
        headers.insert(
            self.method.clone(),
            HeaderValue::from_static(p.method.as_str()),
        );
    }
}

/// `s` as a header value: visible ASCII and spaces as they are, every other byte (and `%`)
/// percent-encoded, so any subject an IdP issues survives the hop unambiguously.
fn header_safe(s: &str) -> HeaderValue {
    let plain = s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%');
    if plain && let Ok(v) = HeaderValue::from_str(s) {
        return v;
    }
    let mut out = String::with_capacity(s.len() * 3);
    escape_into(&mut out, s, b"");
    HeaderValue::from_str(&out).expect("visible ASCII is a valid header value")
}

/// Appends `s` with every byte outside visible ASCII and space, `%`, and each of `also`
/// percent-encoded.
fn escape_into(out: &mut String, s: &str, also: &[u8]) {
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' && !also.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Prepares upstream headers for the client hop; returns true for an SSE response.
pub fn to_client(headers: &mut HeaderMap) -> bool {
    strip_hop_by_hop(headers);
    let sse = is_event_stream(headers);
    if sse {
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    sse
}

/// The `Content-Type` is `text/event-stream` (any case, parameters ignored).
/// The answer's `Content-Type` is exactly one of `application/json` and `text/event-stream`
/// (parameters aside), so every client reads its body the same way.
pub fn is_json_or_event_stream(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (types.next(), types.next()) else {
        return false;
    };
    v.to_str().ok().is_some_and(|v| {
        let media = v.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/json")
            || media.eq_ignore_ascii_case("text/event-stream")
    })
}

pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
}

/// The answer's `Content-Type` names a `charset` other than UTF-8 (or its subset US-ASCII), in
/// any of its values: clients decode the body with it (Python's httpx does for SSE), so bytes the
/// policy reads as UTF-8 could read otherwise to them. JSON-RPC in MCP is UTF-8.
pub fn foreign_charset(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_TYPE).iter().any(|v| {
        let Ok(v) = v.to_str() else {
            return true;
        };
        v.split(';').skip(1).any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            if !name.trim().eq_ignore_ascii_case("charset") {
                return false;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            !["utf-8", "utf8", "us-ascii"]
                .iter()
                .any(|ok| value.eq_ignore_ascii_case(ok))
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn charsets_other_than_utf8_are_foreign() {
        let foreign = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_TYPE, HeaderValue::from_bytes(v).unwrap());
            }
            super::foreign_charset(&h)
        };
        // (a `Content-Type`, whether its charset is foreign)
        for (value, expected) in [
            (&b"text/event-stream"[..], false),
            (b"application/json", false),
            (b"text/event-stream; charset=utf-8", false),
            (b"text/event-stream;charset=UTF-8", false),
            (b"application/json; charset=\"utf-8\"", false),
            (b"application/json; Charset = utf8", false),
            (b"text/event-stream; charset=US-ASCII", false),
            (b"text/event-stream; boundary=x", false),
            (b"text/event-stream; charset=utf-16le", true),
            (b"text/event-stream; charset=utf-7", true),
            (b"application/json; charset=\"iso-8859-1\"", true),
            (b"text/event-stream; charset=utf-8; charset=utf-16", true),
            (b"text/event-stream; CHARSET=UTF-16", true),
            (b"text/event-stream; charset=\xff", true),
        ] {
            assert_eq!(
                foreign(&[value]),
                expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        // Two headers: a client may take either.
        assert!(foreign(&[
            b"text/event-stream",
            b"text/event-stream; charset=utf-16"
        ]));
    }

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Auth with an API-key header, whose copies are credentials to strip.
    fn api_key_auth() -> crate::config::AuthConfig {
        let mut auth = crate::config::AuthConfig::default();
        auth.api_keys = Some(crate::config::auth::ApiKeysConfig {
            file: "k".into(),
            header: HeaderName::from_static("x-api-key"),
            reload_interval: std::time::Duration::from_secs(1),
        });
        auth
    }

    #[test]
    fn identity_replaces_credentials_and_spoofed_copies() {
        use crate::identity::{AuthMethod, Principal};
        let mut auth = api_key_auth();
        let rules = IdentityRules::new(&auth);
        let mut h = map(&[
            ("authorization", "Bearer secret"),
            ("x-api-key", "secret"),
            ("x-mcp-sentinel-subject", "admin"),
            ("x-mcp-sentinel-groups", "root"),
            ("x-mcp-sentinel-auth-method", "mtls"),
            ("mcp-session-id", "s"),
        ]);
        let mut p = Principal::new("Zoë 100%", AuthMethod::Jwt);
        p.groups = vec!["dev".into(), "ops".into()];
        rules.apply(&mut h, Some(&p));
        assert!(h.get("authorization").is_none());
        assert!(h.get("x-api-key").is_none());
        assert_eq!(h["x-mcp-sentinel-subject"], "Zo%C3%AB 100%25");
        assert_eq!(h["x-mcp-sentinel-groups"], "dev,ops");
        let mut q = Principal::new("eve", AuthMethod::ApiKey);
        q.groups = vec!["dev,admin".into(), "ops".into()];
        let mut h2 = HeaderMap::new();
        rules.apply(&mut h2, Some(&q));
        assert_eq!(
            h2["x-mcp-sentinel-groups"], "dev%2Cadmin,ops",
            "a comma inside a group name cannot forge a second group"
        );
        assert_eq!(h["x-mcp-sentinel-auth-method"], "jwt");
        assert!(
            h.get("x-mcp-sentinel-issuer").is_none(),
            "no issuer, no header"
        );
        assert_eq!(h["mcp-session-id"], "s");

        let mut h = map(&[("x-mcp-sentinel-subject", "admin"), ("authorization", "x")]);
        rules.apply(&mut h, None);
        assert!(h.is_empty());

        auth.forward_credentials = true;
        let mut h = map(&[("authorization", "Bearer t")]);
        IdentityRules::new(&auth).apply(&mut h, None);
        assert_eq!(h["authorization"], "Bearer t");
    }

    #[test]
    fn identity_headers_are_stripped_under_every_spelling() {
        use crate::identity::{AuthMethod, Principal};
        let mut auth = api_key_auth();
        let rules = IdentityRules::new(&auth);
        // (name as a client may send it, stripped?)
        let table = [
            ("x-mcp-sentinel-subject", true),
            ("X-MCP-Sentinel-Subject", true),
            ("x_mcp_sentinel_subject", true),
            ("X_Mcp_Sentinel_Subject", true),
            ("x-mcp_sentinel-subject", true),
            ("x.mcp.sentinel.subject", true),
            ("x-mcp-sentinel~subject", true),
            ("x-mcp-sentinel-groups", true),
            ("X_MCP_SENTINEL_GROUPS", true),
            ("x-mcp-sentinel-auth-method", true),
            ("x_mcp_sentinel_auth_method", true),
            ("x-mcp-sentinel-issuer", true),
            ("X_MCP_SENTINEL_ISSUER", true),
            ("authorization", true),
            ("Authorization", true),
            ("x-api-key", true),
            ("X_API_KEY", true),
            ("x.api.key", true),
            // Different names stay.
            ("x-mcp-sentinel-subjects", false),
            ("x-mcp-sentinel-subjec", false),
            ("xmcpsentinelsubject", false),
            ("x-mcp-sentinel", false),
            ("authorization2", false),
            ("proxy-authorization-x", false),
            ("x-apikey", false),
            ("mcp-session-id", false),
            ("content-type", false),
        ];
        for (name, stripped) in table {
            let n = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(rules.strips(&n), stripped, "{name}");
        }
        // All of them at once, some twice: only the sentinel's own values remain.
        let mut h = HeaderMap::new();
        for (name, _) in table {
            let n = HeaderName::from_bytes(name.as_bytes()).unwrap();
            h.append(n.clone(), HeaderValue::from_static("spoofed"));
            h.append(n, HeaderValue::from_static("spoofed-again"));
        }
        let mut p = Principal::new("alice", AuthMethod::Jwt);
        p.issuer = Some("https://idp.example".into());
        rules.apply(&mut h, Some(&p));
        for (name, stripped) in table {
            let values: Vec<_> = h.get_all(name.to_ascii_lowercase()).iter().collect();
            if !stripped {
                assert_eq!(values, ["spoofed", "spoofed-again"], "{name}");
            }
        }
        let left: Vec<(String, String)> = h
            .iter()
            .filter(|(n, _)| rules.strips(n))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let own = |n: &str, v: &str| (n.to_string(), v.to_string());
        let mut want = vec![
            own("x-mcp-sentinel-subject", "alice"),
            own("x-mcp-sentinel-issuer", "https://idp.example"),
            own("x-mcp-sentinel-auth-method", "jwt"),
        ];
        let mut left = left;
        left.sort();
        want.sort();
        assert_eq!(left, want);
        // Configured names fold the same way.
        auth.identity_headers.subject = HeaderName::from_static("x_user");
        let rules = IdentityRules::new(&auth);
        assert!(rules.strips(&HeaderName::from_static("x-user")));
        assert!(rules.strips(&HeaderName::from_static("x_user")));
        assert!(!rules.strips(&HeaderName::from_static("x-mcp-sentinel-subject")));
    }

    #[test]
    fn upstream_hop() {
        let mut h = map(&[
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "sentinel.example:15080"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-param-region", "eu"),
            ("last-event-id", "42"),
            ("accept", "application/json, text/event-stream"),
            ("content-type", "application/json"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        to_upstream(
            &mut h,
            &HeaderValue::from_static("127.0.0.1:8080"),
            &peer_value("192.0.2.7".parse().unwrap()),
            false,
            Some(12),
        );
        for gone in [
            "connection",
            "x-custom-hop",
            "keep-alive",
            "transfer-encoding",
            "te",
            "upgrade",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        for (k, v) in [
            ("host", "127.0.0.1:8080"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-param-region", "eu"),
            ("last-event-id", "42"),
            ("accept", "application/json, text/event-stream"),
            ("content-type", "application/json"),
            ("x-forwarded-for", "10.0.0.1, 192.0.2.7"),
            ("x-forwarded-proto", "http"),
            ("content-length", "12"),
        ] {
            assert_eq!(h.get(k).unwrap(), v, "{k}");
        }
    }

    #[test]
    fn client_hop() {
        let mut h = map(&[
            ("content-type", "text/event-stream"),
            ("connection", "close"),
            ("mcp-session-id", "s"),
        ]);
        assert!(to_client(&mut h));
        assert_eq!(h.get("x-accel-buffering").unwrap(), "no");
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("mcp-session-id").unwrap(), "s");
        let mut h = map(&[("content-type", "application/json")]);
        assert!(!to_client(&mut h));
        assert!(h.get("x-accel-buffering").is_none());
    }
}
