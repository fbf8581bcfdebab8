//! Authentication: every caller proven by one of the configured authenticators, yielding a
//! `Principal` that later checks (session binding, policy, rate limits, audit) key on.

pub mod apikeys;
pub mod chain;
mod https;
mod jwks;
pub mod jwt;
pub mod kubernetes;
pub mod metadata;
pub mod mtls;
pub mod sessions;

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
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 5] = [
        AuthMethod::Anonymous,
        AuthMethod::ApiKey,
        AuthMethod::Jwt,
        AuthMethod::Kubernetes,
        AuthMethod::Mtls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Kubernetes => "kubernetes",
            AuthMethod::Mtls => "mtls",
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
            groups: Vec::new(),
            scopes: Vec::new(),
            method,
            claims: Map::new(),
        }
    }

    pub fn anonymous() -> Arc<Self> {
        Arc::new(Self::new("anonymous", AuthMethod::Anonymous))
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
