//! The `auth`, `tls` and `sessions` sections: who may call, how they prove it, and how the
//! traffic port is secured.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde_yaml_ng::Value;

use crate::yaml::{Reader, Section, parse};

pub mod jwt;
pub mod kubernetes;

pub use jwt::{Algorithm, IssuerConfig, JwtConfig, KeySource};
pub use kubernetes::KubernetesConfig;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Callers with no credential are let through as the `anonymous` principal. Off unless set:
    /// with no authenticator and no `anonymous: allow` the sentinel refuses to start.
    pub anonymous: bool,
    /// The canonical URI of this MCP server (RFC 8707), e.g. `https://mcp.example.com/mcp`:
    /// the audience JWTs must carry, and the `resource` of the protected-resource metadata.
    /// When unset, the metadata names the URL the client used.
    pub resource: Option<String>,
    /// `authorization_servers` of the metadata; defaults to the JWT issuers.
    pub authorization_servers: Vec<String>,
    /// `scopes_supported` of the metadata, and the `scope` of 401 challenges.
    pub scopes_supported: Vec<String>,
    /// When non-empty, a request whose `Origin` is not listed gets 403.
    pub allowed_origins: Vec<String>,
    /// Pass the caller's `Authorization` and API-key headers on to the upstream. Off: token
    /// passthrough is forbidden by the MCP specification.
    pub forward_credentials: bool,
    pub identity_headers: IdentityHeaders,
    pub api_keys: Option<ApiKeysConfig>,
    pub jwt: Option<JwtConfig>,
    pub kubernetes: Option<KubernetesConfig>,
    pub mtls: Option<MtlsConfig>,
    /// The caller of `mcp-sentinel stdio` (a local client has no credential to present).
    pub stdio: Option<StdioCaller>,
}

/// The headers that carry the verified identity to the upstream. Client-sent copies are
/// always removed, under every spelling that folds to the same name.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub subject: HeaderName,
    pub groups: HeaderName,
    pub method: HeaderName,
    /// The JWT issuer of the subject (sent for JWT callers only): subjects are unique only
    /// within their issuer, so an upstream that keys on the subject needs it too.
    pub issuer: HeaderName,
}

#[derive(Debug, Clone)]
pub struct ApiKeysConfig {
    /// YAML file of `keys: [{sha256, subject, groups}]`, re-read when it changes.
    pub file: PathBuf,
    /// The header a key is presented in; `Authorization: Bearer <key>` also works.
    pub header: HeaderName,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdentity {
    /// The first `URI` subject alternative name (a SPIFFE ID), else the subject CN.
    Auto,
    SanUri,
    CommonName,
}

#[derive(Debug, Clone)]
pub struct MtlsConfig {
    pub identity: CertIdentity,
    /// Prefix of SAN URIs accepted, e.g. `spiffe://cluster.local/`; empty accepts any.
    pub trust_domain_prefix: String,
}

/// TLS on the traffic port. With `client_ca_file` set, client certificates are verified (and
/// the `mtls` authenticator can use them).
#[derive(Debug, Clone)]
pub struct TrafficTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    /// Refuse connections without a verified client certificate at the handshake.
    pub require_client_cert: bool,
}

#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// A session binding unused for this long is forgotten (the client gets 404 and
    /// re-initializes).
    pub idle_ttl: Duration,
    /// Bound on remembered sessions and tasks; the least recently used go first.
    pub max_bindings: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            anonymous: false,
            resource: None,
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            allowed_origins: Vec::new(),
            forward_credentials: false,
            identity_headers: IdentityHeaders {
                subject: HeaderName::from_static("x-mcp-sentinel-subject"),
                groups: HeaderName::from_static("x-mcp-sentinel-groups"),
                method: HeaderName::from_static("x-mcp-sentinel-auth-method"),
                issuer: HeaderName::from_static("x-mcp-sentinel-issuer"),
            },
            api_keys: None,
            jwt: None,
            kubernetes: None,
            mtls: None,
            stdio: None,
        }
    }
}

/// Who the local client of the stdio front is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioCaller {
    pub subject: String,
    pub groups: Vec<String>,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_ttl: Duration::from_secs(3600),
            max_bindings: 100_000,
        }
    }
}

impl AuthConfig {
    /// At least one way to prove a caller is configured.
    pub fn has_authenticator(&self) -> bool {
        self.has_network_authenticator() || self.stdio.is_some()
    }

    /// A way to prove a caller over the network (the traffic port).
    pub fn has_network_authenticator(&self) -> bool {
        self.api_keys.is_some()
            || self.jwt.is_some()
            || self.kubernetes.is_some()
            || self.mtls.is_some()
    }

    /// Reads the `auth` section.
    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Self {
        let mut cfg = Self::default();
        if let Some(v) = r.choice(s, "anonymous", &[("allow", true), ("deny", false)]) {
            cfg.anonymous = v;
        }
        cfg.resource = r.field(s, "resource", |v| {
            let u = parse::string(v)?;
            absolute_url(&u, false)?;
            if u.contains('#') {
                return Err("must not have a fragment (RFC 8707)".into());
            }
            Ok(u)
        });
        if let Some(v) = r.field(s, "authorization_servers", |v| {
            let list = parse::strings(v)?;
            for u in &list {
                absolute_url(u, true)?;
            }
            Ok(list)
        }) {
            cfg.authorization_servers = v;
        }
        if let Some(v) = r.field(s, "scopes_supported", scopes) {
            cfg.scopes_supported = v;
        }
        if let Some(v) = r.field(s, "allowed_origins", |v| {
            let list = parse::strings(v)?;
            for o in &list {
                absolute_url(o, false)?;
            }
            Ok(list
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect())
        }) {
            cfg.allowed_origins = v;
        }
        if let Some(v) = r.field(s, "forward_credentials", parse::boolean) {
            cfg.forward_credentials = v;
        }
        let mut ih = r.child(s, "identity_headers");
        for (key, slot) in [
            ("subject", &mut cfg.identity_headers.subject),
            ("groups", &mut cfg.identity_headers.groups),
            ("method", &mut cfg.identity_headers.method),
            ("issuer", &mut cfg.identity_headers.issuer),
        ] {
            if let Some(v) = r.field(&mut ih, key, header_name) {
                *slot = v;
            }
        }
        r.close(ih);

        let mut st = r.child(s, "stdio");
        if st.is_present() {
            let subject = r.field(&mut st, "subject", |v| {
                parse::string(v).and_then(|s| {
                    if s.trim().is_empty() {
                        Err("must not be empty".to_string())
                    } else {
                        Ok(s)
                    }
                })
            });
            let groups = r
                .field(&mut st, "groups", parse::strings)
                .unwrap_or_default();
            match subject {
                Some(subject) => cfg.stdio = Some(StdioCaller { subject, groups }),
                None if !r.has_error_at("auth.stdio.subject") => {
                    r.error("auth.stdio.subject", "is required")
                }
                None => {}
            }
        }
        r.close(st);

        let mut ak = r.child(s, "api_keys");
        if ak.is_present() {
            let file = r.field(&mut ak, "file", |v| parse::string(v).map(PathBuf::from));
            let header = r
                .field(&mut ak, "header", header_name)
                .unwrap_or(HeaderName::from_static("x-api-key"));
            let reload_interval = r
                .field(&mut ak, "reload_interval", parse::duration)
                .unwrap_or(Duration::from_secs(5));
            match file {
                Some(file) => {
                    cfg.api_keys = Some(ApiKeysConfig {
                        file,
                        header,
                        reload_interval,
                    })
                }
                None => r.error("auth.api_keys.file", "is required"),
            }
        }
        r.close(ak);
        check_identity_headers(r, &cfg);

        let mut jwt = r.child(s, "jwt");
        if jwt.is_present() {
            cfg.jwt = Some(JwtConfig::read(r, &mut jwt, cfg.resource.as_deref()));
        }
        r.close(jwt);
        if cfg.authorization_servers.is_empty()
            && let Some(j) = &cfg.jwt
        {
            cfg.authorization_servers = j.issuers.iter().map(|i| i.issuer.clone()).collect();
        }

        let mut k8s = r.child(s, "kubernetes");
        if k8s.is_present() {
            cfg.kubernetes = Some(KubernetesConfig::read(r, &mut k8s));
        }
        r.close(k8s);

        let mut mt = r.child(s, "mtls");
        if mt.is_present() {
            let identity = r
                .choice(
                    &mut mt,
                    "identity",
                    &[
                        ("auto", CertIdentity::Auto),
                        ("san_uri", CertIdentity::SanUri),
                        ("common_name", CertIdentity::CommonName),
                    ],
                )
                .unwrap_or(CertIdentity::Auto);
            let trust_domain_prefix = r
                .field(&mut mt, "trust_domain_prefix", parse::string)
                .unwrap_or_default();
            cfg.mtls = Some(MtlsConfig {
                identity,
                trust_domain_prefix,
            });
        }
        r.close(mt);
        cfg
    }
}

impl TrafficTls {
    /// Reads the `tls` section; `None` when absent.
    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Option<Self> {
        if !s.is_present() {
            return None;
        }
        let path = |v: &Value| parse::string(v).map(PathBuf::from);
        let cert_file = r.field(s, "cert_file", path);
        let key_file = r.field(s, "key_file", path);
        let client_ca_file = r.field(s, "client_ca_file", path);
        let require_client_cert = r
            .field(s, "require_client_cert", parse::boolean)
            .unwrap_or(false);
        if require_client_cert && client_ca_file.is_none() {
            r.error("tls.require_client_cert", "needs tls.client_ca_file");
        }
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(Self {
                cert_file,
                key_file,
                client_ca_file,
                require_client_cert,
            }),
            (cert, key) => {
                if cert.is_none() {
                    r.error("tls.cert_file", "is required");
                }
                if key.is_none() {
                    r.error("tls.key_file", "is required");
                }
                None
            }
        }
    }
}

impl SessionsConfig {
    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Self {
        let mut cfg = Self::default();
        if let Some(v) = r.field(s, "idle_ttl", parse::duration) {
            cfg.idle_ttl = v;
        }
        if let Some(v) = r.field(s, "max_bindings", |v| {
            v.as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| "must be a positive whole number".to_string())
        }) {
            cfg.max_bindings = v;
        }
        cfg
    }
}

/// Headers the sentinel forwards or reads, which an identity header must not shadow: client
/// copies of identity headers are stripped under every folding, so one folding to these would
/// strip them too.
const PROTECTED_HEADERS: &[&str] = &[
    "host",
    "accept",
    "content-type",
    "content-length",
    "last-event-id",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

/// The identity headers are distinct from each other, from the credential headers and from the
/// MCP headers under the folding frameworks apply ([`folded`]).
fn check_identity_headers(r: &mut Reader, cfg: &AuthConfig) {
    let ih = &cfg.identity_headers;
    let mut taken: Vec<(String, String)> = PROTECTED_HEADERS
        .iter()
        .map(|h| (folded(h), format!("the {h} header")))
        .collect();
    taken.push((folded("authorization"), "the Authorization header".into()));
    if let Some(k) = &cfg.api_keys {
        taken.push((folded(k.header.as_str()), "auth.api_keys.header".into()));
    }
    for (key, name) in [
        ("subject", &ih.subject),
        ("groups", &ih.groups),
        ("method", &ih.method),
        ("issuer", &ih.issuer),
    ] {
        let f = folded(name.as_str());
        let clash = taken
            .iter()
            .find(|(t, _)| *t == f)
            .map(|(_, what)| what.clone())
            .or_else(|| {
                f.starts_with("mcp-param-")
                    .then(|| "an Mcp-Param-* header".into())
            });
        match clash {
            Some(what) => r.error(
                format!("auth.identity_headers.{key}"),
                format!("{name} is the same header as {what} to frameworks that fold `_` and `-`"),
            ),
            None => taken.push((f, format!("auth.identity_headers.{key}"))),
        }
    }
}

/// One byte of a header name as the frameworks behind the upstream may read it: CGI, WSGI,
/// PHP and Rack turn `-` into `_` (so `X_Foo` and `X-Foo` both become `HTTP_X_FOO`), Apache's
/// CGI turns any other non-alphanumeric byte into `_` too, and names are case-insensitive.
/// So every byte that is not an ASCII letter or digit folds to `-`, letters to lower case.
/// Config checks identity headers with it; the proxy strips client copies with it.
pub fn fold(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// `name` folded byte by byte ([`fold`]): two names with the same folding are one header to
/// some framework.
pub fn folded(name: &str) -> String {
    name.bytes().map(|b| char::from(fold(b))).collect()
}

pub fn header_name(v: &Value) -> Result<HeaderName, String> {
    let s = parse::string(v)?;
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("{s:?} is not a header name"))
}

pub fn scopes(v: &Value) -> Result<Vec<String>, String> {
    let list = parse::strings(v)?;
    if let Some(bad) = list.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        return Err(format!("{bad:?} is not a scope token (RFC 6749 §3.3)"));
    }
    Ok(list)
}

/// An absolute `http(s)://` URL; `https_only` for URLs the sentinel itself fetches or tells
/// clients to trust.
pub fn absolute_url(u: &str, https_only: bool) -> Result<(), String> {
    let uri: http::Uri = u.parse().map_err(|_| format!("{u:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if !https_only => {}
        _ if https_only => return Err(format!("{u:?} must be an https:// URL")),
        _ => return Err(format!("{u:?} must be an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{u:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// The errors of an `auth` section (indented YAML under `auth:`), as (key, why).
    fn errors(auth: &str) -> Vec<(String, String)> {
        let text = format!("policy: {{default: deny}}\nauth:\n  anonymous: allow\n{auth}");
        match Config::from_yaml(&text, "t.yaml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.key, e.why)).collect(),
        }
    }

    #[test]
    fn identity_headers_must_not_fold_onto_other_headers() {
        let keys = "  api_keys: {file: /k.yaml, header: X-Client-Key}\n";
        let table: &[(&str, Option<&str>)] = &[
            ("{}", None),
            (
                "{subject: X-User, groups: X-Groups, method: X-Via, issuer: X-Iss}",
                None,
            ),
            ("{issuer: X_MCP_Sentinel_Subject}", Some("issuer")),
            ("{groups: x.mcp.sentinel.auth.method}", Some("method")),
            ("{subject: Mcp_Session_Id}", Some("subject")),
            ("{subject: authorization}", Some("subject")),
            ("{method: x_client_key}", Some("method")),
            ("{issuer: Mcp-Param-Region}", Some("issuer")),
            ("{subject: content_type}", Some("subject")),
        ];
        for (headers, bad) in table {
            let errs = errors(&format!("{keys}  identity_headers: {headers}\n"));
            let want: Vec<String> = bad
                .iter()
                .map(|k| format!("auth.identity_headers.{k}"))
                .collect();
            let got: Vec<String> = errs.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(got, want, "{headers}: {errs:?}");
        }
    }
}
