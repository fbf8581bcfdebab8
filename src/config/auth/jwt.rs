//! The `auth.jwt` section: the issuers whose tokens are accepted, where each one's keys come
//! from, and the checks `JwtConfig::validate` makes before a verifier is built from it.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;
use serde_yaml_ng::Value;

use super::absolute_url;
use crate::config::count;
use crate::yaml::{Reader, Section, parse};

pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Most verified tokens kept; 0 disables the cache.
    pub cache_size: usize,
    pub issuers: Vec<IssuerConfig>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            leeway: DEFAULT_LEEWAY,
            cache_size: DEFAULT_CACHE_SIZE,
            issuers: Vec::new(),
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS at this `https://` URL.
    Jwks(String),
    /// `GET {issuer}/.well-known/openid-configuration`, whose `issuer` must equal the configured
    /// one, then its `jwks_uri` (which must be `https://`). Re-discovered on every refresh.
    Discovery,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The exact `iss` value tokens carry.
    pub issuer: String,
    pub keys: KeySource,
    /// Only these are accepted for this issuer.
    pub algorithms: Vec<Algorithm>,
    /// A token's `aud` must contain one of these (the canonical resource URI, RFC 8707).
    pub audiences: Vec<String>,
    /// Claim holding the caller's groups: a string or an array of strings.
    pub groups_claim: String,
    /// Claims copied into `Principal::claims` when present.
    pub claims: Vec<String>,
    /// PEM CA certificates for the key fetch. When set they are the only roots trusted for this
    /// issuer; otherwise the system roots.
    pub ca_file: Option<PathBuf>,
    /// Periodic key refresh.
    pub refresh_interval: Duration,
    /// At most one refresh per this interval is triggered by tokens with an unknown `kid`.
    pub min_refresh_interval: Duration,
    /// Deadline for each HTTPS request.
    pub timeout: Duration,
}

impl IssuerConfig {
    /// An issuer with the defaults: RS256 only (the OIDC default), groups from `groups`, no
    /// copied claims, system roots, 10 min refresh, 30 s unknown-kid throttle, 5 s timeout.
    /// `audiences` must not be empty.
    pub fn new(issuer: impl Into<String>, keys: KeySource, audiences: Vec<String>) -> Self {
        Self {
            issuer: issuer.into(),
            keys,
            algorithms: vec![Algorithm::RS256],
            audiences,
            groups_claim: DEFAULT_GROUPS_CLAIM.to_string(),
            claims: Vec::new(),
            ca_file: None,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The JWS algorithms the verifier implements. No `none`, no HMAC: a shared secret has no place
/// in a verifier that only holds public keys.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JWA name (RFC 7518 / RFC 8037).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

/// A name that is not one of `Algorithm::ALL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported JWT algorithm {0:?} (supported: RS256, RS384, RS512, PS256, PS384, PS512, \
     ES256, ES384, EdDSA)"
)]
pub struct UnsupportedAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;

    /// Exact, case-sensitive JWA names (a JOSE header is case-sensitive too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnsupportedAlgorithm(s.to_string()))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `JwtConfig` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("jwt: no issuers configured")]
    NoIssuers,
    #[error("jwt: an issuer has an empty name")]
    EmptyIssuer,
    #[error("jwt: issuer {0:?} configured twice")]
    Twice(String),
    #[error("jwt issuer {issuer:?}: {problem}")]
    Issuer {
        issuer: String,
        problem: IssuerProblem,
    },
}

/// What is wrong with one issuer's settings.
#[derive(Debug, thiserror::Error)]
pub enum IssuerProblem {
    #[error("jwks URL {0}")]
    JwksUrl(UrlError),
    #[error("discovery needs an https issuer: {0}")]
    DiscoveryUrl(UrlError),
    #[error("no algorithms")]
    NoAlgorithms,
    #[error("audiences must be set (and non-empty)")]
    Audiences,
    #[error("groups_claim is empty")]
    GroupsClaim,
    #[error("refresh_interval and timeout must be positive")]
    Durations,
}

/// Why a URL is not one keys may be fetched from.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{url:?}: not a URL: {source}")]
    NotUrl {
        url: String,
        source: http::uri::InvalidUri,
    },
    #[error("{0:?}: only https:// URLs are fetched (keys must come over an authenticated channel)")]
    NotHttps(String),
    #[error("{0:?}: no host")]
    NoHost(String),
    #[error("{0:?}: credentials in the URL are not supported")]
    Credentials(String),
}

/// Validates an `https://host[:port]/path` URL that keys are fetched from and returns it parsed.
pub fn https_uri(url: &str) -> Result<Uri, UrlError> {
    let uri: Uri = url.parse().map_err(|source| UrlError::NotUrl {
        url: url.to_string(),
        source,
    })?;
    if uri.scheme_str() != Some("https") {
        return Err(UrlError::NotHttps(url.to_string()));
    }
    let Some(authority) = uri.authority() else {
        return Err(UrlError::NoHost(url.to_string()));
    };
    if authority.as_str().contains('@') {
        return Err(UrlError::Credentials(url.to_string()));
    }
    if authority.host().is_empty() {
        return Err(UrlError::NoHost(url.to_string()));
    }
    Ok(uri)
}

impl JwtConfig {
    /// At least one issuer; unique issuers; `https://` key URLs (a JWKS URL, or the issuer
    /// itself for discovery); non-empty algorithms, audiences and groups claim; positive
    /// refresh interval and timeout. (`ca_file`s are read when the verifier is built.)
    pub fn validate(&self) -> Result<(), JwtConfigError> {
        if self.issuers.is_empty() {
            return Err(JwtConfigError::NoIssuers);
        }
        let mut seen = HashSet::new();
        for i in &self.issuers {
            i.validate()?;
            if !seen.insert(i.issuer.as_str()) {
                return Err(JwtConfigError::Twice(i.issuer.clone()));
            }
        }
        Ok(())
    }

    /// Reads the `auth.jwt` section: common settings and a list of issuers. `resource` (the
    /// canonical URI of this server) is the audience of issuers that name none.
    pub fn read(r: &mut Reader, s: &mut Section<'_>, resource: Option<&str>) -> Self {
        let mut cfg = Self::default();
        if let Some(v) = r.field(s, "leeway", parse::duration) {
            cfg.leeway = v;
        }
        if let Some(v) = r.field(s, "cache_size", count) {
            cfg.cache_size = v;
        }
        let list = r.field(s, "issuers", |v| match v {
            Value::Sequence(items) if !items.is_empty() => Ok(items.clone()),
            _ => Err("must be a non-empty list of issuers".to_string()),
        });
        for (i, item) in list.unwrap_or_default().iter().enumerate() {
            let path = format!("auth.jwt.issuers[{i}]");
            if let Some(ic) = IssuerConfig::read(r, &path, item, resource) {
                cfg.issuers.push(ic);
            }
        }
        cfg
    }
}

impl IssuerConfig {
    fn validate(&self) -> Result<(), JwtConfigError> {
        let name = &self.issuer;
        if name.is_empty() {
            return Err(JwtConfigError::EmptyIssuer);
        }
        let problem = match &self.keys {
            KeySource::Jwks(url) => https_uri(url).err().map(IssuerProblem::JwksUrl),
            KeySource::Discovery => https_uri(name).err().map(IssuerProblem::DiscoveryUrl),
        }
        .or_else(|| {
            if self.algorithms.is_empty() {
                Some(IssuerProblem::NoAlgorithms)
            } else if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
                Some(IssuerProblem::Audiences)
            } else if self.groups_claim.is_empty() {
                Some(IssuerProblem::GroupsClaim)
            } else if self.refresh_interval.is_zero() || self.timeout.is_zero() {
                Some(IssuerProblem::Durations)
            } else {
                None
            }
        });
        match problem {
            Some(problem) => Err(JwtConfigError::Issuer {
                issuer: name.clone(),
                problem,
            }),
            None => Ok(()),
        }
    }

    /// One item of `auth.jwt.issuers` at `path`; `None` (with the error recorded) when it
    /// lacks its issuer or its audiences.
    fn read(r: &mut Reader, path: &str, item: &Value, resource: Option<&str>) -> Option<Self> {
        let mut is = r.section(path, Some(item));
        let https_url = |v: &Value| {
            let u = parse::string(v)?;
            absolute_url(&u, true)?;
            Ok(u)
        };
        let issuer = r.field(&mut is, "issuer", https_url);
        let jwks_url = r.field(&mut is, "jwks_url", https_url);
        let audiences = r
            .field(&mut is, "audiences", parse::strings)
            .or_else(|| resource.map(|r| vec![r.to_string()]));
        let algorithms = r.field(&mut is, "algorithms", |v| {
            parse::strings(v)?
                .iter()
                .map(|a| a.parse::<Algorithm>().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
        });
        let groups_claim = r.field(&mut is, "groups_claim", parse::string);
        let claims = r.field(&mut is, "claims", parse::strings);
        let ca_file = r.field(&mut is, "ca_file", |v| parse::string(v).map(PathBuf::from));
        let durations = [
            r.field(&mut is, "refresh_interval", parse::duration),
            r.field(&mut is, "min_refresh_interval", parse::duration),
            r.field(&mut is, "timeout", parse::duration),
        ];
        r.close(is);
        let Some(issuer) = issuer else {
            r.error(format!("{path}.issuer"), "is required");
            return None;
        };
        let Some(audiences) = audiences else {
            r.error(
                format!("{path}.audiences"),
                "is required when auth.resource (the canonical URI tokens must name) is not set",
            );
            return None;
        };
        let keys = jwks_url.map_or(KeySource::Discovery, KeySource::Jwks);
        let mut ic = Self::new(issuer, keys, audiences);
        if let Some(v) = algorithms {
            ic.algorithms = v;
        }
        if let Some(v) = groups_claim {
            ic.groups_claim = v;
        }
        if let Some(v) = claims {
            ic.claims = v;
        }
        ic.ca_file = ca_file;
        let [refresh, min_refresh, timeout] = durations;
        if let Some(v) = refresh {
            ic.refresh_interval = v;
        }
        if let Some(v) = min_refresh {
            ic.min_refresh_interval = v;
        }
        if let Some(v) = timeout {
            ic.timeout = v;
        }
        Some(ic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls() {
        assert!(https_uri("https://idp.example.com/jwks").is_ok());
        assert!(https_uri("https://[::1]:8443/x").is_ok());
        for bad in [
            "http://idp.example.com/jwks",
            "file:///etc/passwd",
            "idp.example.com/jwks",
            "https://user:pw@idp.example.com/",
            "https:///nohost",
            "",
        ] {
            assert!(https_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn algorithm_names() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
        }
        for bad in [
            "none", "HS256", "HS384", "HS512", "rs256", "ES512", "Ed25519", "",
        ] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad}");
        }
        assert_eq!(
            "HS256".parse::<Algorithm>().unwrap_err().to_string(),
            "unsupported JWT algorithm \"HS256\" (supported: RS256, RS384, RS512, PS256, \
             PS384, PS512, ES256, ES384, EdDSA)"
        );
    }
}
