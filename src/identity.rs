//! Who a caller is, once proven: the `Principal` every later stage keys on, how it was proven
//! (`AuthMethod`) and why a credential was refused (`AuthFailure`). Floor 0: imports nothing of
//! the crate, so every module may name a caller.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// How a caller was proven. A closed set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Anonymous,
    ApiKey,
    Jwt,
    Kubernetes,
    Mtls,
    /// The local client of `mcp-sentinel stdio`: configured (`auth.stdio`), not proven by a
    /// credential — whoever can start the process is that caller.
    Stdio,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 6] = [
        AuthMethod::Anonymous,
        AuthMethod::ApiKey,
        AuthMethod::Jwt,
        AuthMethod::Kubernetes,
        AuthMethod::Mtls,
        AuthMethod::Stdio,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Kubernetes => "kubernetes",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Stdio => "stdio",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proven caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Stable identity: the JWT `sub`, the API key's subject, `system:serviceaccount:ns:name`,
    /// the certificate's SPIFFE ID or CN.
    pub subject: String,
    /// The JWT `iss` that vouched for `subject`; `None` for every other method. Subjects are
    /// only unique within their issuer, so this is part of who the caller is.
    pub issuer: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub method: AuthMethod,
    /// Claims selected by the config for policy (JWT claims, TokenReview extra fields).
    pub claims: Map<String, Value>,
}

impl Principal {
    pub fn new(subject: impl Into<String>, method: AuthMethod) -> Self {
        Self {
            subject: subject.into(),
            issuer: None,
            groups: Vec::new(),
            scopes: Vec::new(),
            method,
            claims: Map::new(),
        }
    }

    pub fn anonymous() -> Arc<Self> {
        Arc::new(Self::new("anonymous", AuthMethod::Anonymous))
    }

    /// Who the caller is, as one string: `method:issuer:subject`, the issuer empty for methods
    /// that have none. Everything that binds to or keys on a caller (session and task owners,
    /// rate-limit budgets) uses this, so the same subject string proven by two issuers, or by
    /// an API key and a service-account token, is two callers.
    pub fn identity(&self) -> String {
        let mut key = String::with_capacity(self.subject.len() + 16);
        self.write_identity(&mut key);
        key
    }

    /// [`Principal::identity`], appended to `out`. Each part is escaped with
    /// [`push_escaped`], so no two identities are written the same way.
    pub fn write_identity(&self, out: &mut String) {
        out.push_str(self.method.as_str());
        out.push(':');
        push_escaped(out, self.issuer.as_deref().unwrap_or(""));
        out.push(':');
        push_escaped(out, &self.subject);
    }
}

/// Appends `s` to a key whose parts are separated by `:` (and lists by `,`): `%`, `:` and `,`
/// inside a part are written `%25`, `%3A`, `%2C`, so a part can never forge a separator.
pub fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            ',' => out.push_str("%2C"),
            c => out.push(c),
        }
    }
}

/// Why a credential was not accepted. A closed set: it is the `reason` metric label and goes to
/// the log; the client only ever sees a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No credential at all, and anonymous callers are not allowed.
    Missing,
    /// Not a well-formed token (encoding, JSON, required fields).
    Malformed,
    /// The token's algorithm is not one configured for its issuer (incl. `none`, HMAC).
    Algorithm,
    /// No key with the token's `kid`, even after a refresh.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    Expired,
    NotYetValid,
    /// `iss` is not a configured issuer.
    Issuer,
    /// `aud` does not name this resource.
    Audience,
    /// An API key that is not in the key file.
    UnknownCredential,
    /// The TokenReview API said the token is not authenticated (or the audience is wrong).
    Rejected,
    /// The verifier could not reach what it needs (TokenReview API down, no JWKS yet).
    Unavailable,
    /// A client certificate without a usable identity.
    Certificate,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 13] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::Algorithm,
        AuthFailure::UnknownKey,
        AuthFailure::Signature,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::Issuer,
        AuthFailure::Audience,
        AuthFailure::UnknownCredential,
        AuthFailure::Rejected,
        AuthFailure::Unavailable,
        AuthFailure::Certificate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Algorithm => "algorithm",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::Signature => "signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::Issuer => "issuer",
            AuthFailure::Audience => "audience",
            AuthFailure::UnknownCredential => "unknown_credential",
            AuthFailure::Rejected => "rejected",
            AuthFailure::Unavailable => "unavailable",
            AuthFailure::Certificate => "certificate",
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_issuer(sub: &str, method: AuthMethod, iss: Option<&str>) -> Principal {
        let mut p = Principal::new(sub, method);
        p.issuer = iss.map(str::to_string);
        p
    }

    #[test]
    fn identities_are_namespaced() {
        let sa = "system:serviceaccount:ns:sa";
        let table = [
            (
                with_issuer("alice", AuthMethod::Jwt, Some("https://a.example")),
                "jwt:https%3A//a.example:alice",
            ),
            (
                with_issuer("alice", AuthMethod::Jwt, Some("https://b.example")),
                "jwt:https%3A//b.example:alice",
            ),
            (
                with_issuer("alice", AuthMethod::ApiKey, None),
                "api_key::alice",
            ),
            (
                with_issuer(sa, AuthMethod::Kubernetes, None),
                "kubernetes::system%3Aserviceaccount%3Ans%3Asa",
            ),
            (
                with_issuer(sa, AuthMethod::ApiKey, None),
                "api_key::system%3Aserviceaccount%3Ans%3Asa",
            ),
            (
                with_issuer(sa, AuthMethod::Jwt, Some("https://a.example")),
                "jwt:https%3A//a.example:system%3Aserviceaccount%3Ans%3Asa",
            ),
            (
                with_issuer("spiffe://td/ns/x", AuthMethod::Mtls, None),
                "mtls::spiffe%3A//td/ns/x",
            ),
            // An issuer and a subject that would run together unescaped.
            (
                with_issuer("b:c", AuthMethod::Jwt, Some("a")),
                "jwt:a:b%3Ac",
            ),
            (
                with_issuer("c", AuthMethod::Jwt, Some("a:b")),
                "jwt:a%3Ab:c",
            ),
            (
                with_issuer("100%,x", AuthMethod::ApiKey, None),
                "api_key::100%25%2Cx",
            ),
            (
                with_issuer("anonymous", AuthMethod::Anonymous, None),
                "anonymous::anonymous",
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (p, want) in &table {
            assert_eq!(p.identity(), *want, "{p:?}");
            assert!(seen.insert(p.identity()), "{want} collides");
        }
    }
}
