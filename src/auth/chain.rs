//! The authenticator chain: which credential a request carries, which authenticator checks it,
//! and what the 401 challenge says. The documented order:
//!
//! 1. `Authorization: Bearer <token>` or the API-key header. A bearer token that is a JWT from
//!    a configured issuer goes to the JWT verifier; another token goes to the API keys when the
//!    token is not JWT-shaped, else to Kubernetes TokenReview. A credential that fails is a 401
//!    — there is no falling back to a weaker identity.
//! 2. With no credential: the verified client certificate (mTLS), when configured.
//! 3. Otherwise `anonymous`, when `anonymous: allow`; else 401.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::apikeys::ApiKeys;
use super::jwt::JwtVerifier;
use super::kubernetes::TokenReviewer;
use crate::identity::{AuthFailure, AuthMethod, Principal};

/// Why a request is not authenticated, for the 401 and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The authenticator that refused; `None` when none could be chosen.
    pub method: Option<AuthMethod>,
    pub reason: AuthFailure,
}

impl Rejection {
    /// A credential was presented (the challenge then says `error="invalid_token"`).
    pub fn presented(&self) -> bool {
        self.reason != AuthFailure::Missing
    }
}

/// The authenticators a config turns on.
#[derive(Default)]
pub struct Authenticators {
    pub anonymous: bool,
    /// The keys and the header they are presented in.
    pub api_keys: Option<(ApiKeys, HeaderName)>,
    pub jwt: Option<Arc<JwtVerifier>>,
    pub kubernetes: Option<TokenReviewer>,
    pub mtls: bool,
    /// The caller of the stdio front (`auth.stdio`): every request without a credential is
    /// theirs — the front never adds one.
    pub stdio: Option<Arc<Principal>>,
}

pub struct Authenticator {
    anonymous: Option<Arc<Principal>>,
    api_keys: Option<(ApiKeys, HeaderName)>,
    jwt: Option<Arc<JwtVerifier>>,
    kubernetes: Option<TokenReviewer>,
    mtls: bool,
    stdio: Option<Arc<Principal>>,
    metrics: AuthnMetrics,
}

/// `mcp_sentinel_authn_total{method,result,reason}`, every combination resolved at start.
struct AuthnMetrics {
    /// Indexed by `AuthMethod as usize`.
    success: Vec<IntCounter>,
    /// Indexed by method (`AuthMethod::ALL.len()` is "none") then `AuthFailure` position.
    failure: Vec<Vec<IntCounter>>,
}

impl AuthnMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let vec = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_authn_total",
                "Authentication outcomes by method, result and reason",
            ),
            &["method", "result", "reason"],
        )?;
        registry.register(Box::new(vec.clone()))?;
        let success = AuthMethod::ALL
            .iter()
            .map(|m| vec.with_label_values(&[m.as_str(), "success", "ok"]))
            .collect();
        let methods = AuthMethod::ALL
            .iter()
            .map(|m| m.as_str())
            .chain(["none"])
            .collect::<Vec<_>>();
        let failure = methods
            .iter()
            .map(|m| {
                AuthFailure::ALL
                    .iter()
                    .map(|r| vec.with_label_values(&[m, "failure", r.as_str()]))
                    .collect()
            })
            .collect();
        Ok(Self { success, failure })
    }

    fn count(&self, result: &Result<Arc<Principal>, Rejection>) {
        match result {
            Ok(p) => self.success[method_index(p.method)].inc(),
            Err(r) => {
                let m = r.method.map_or(AuthMethod::ALL.len(), method_index);
                let i = AuthFailure::ALL
                    .iter()
                    .position(|f| *f == r.reason)
                    .expect("every failure is listed");
                self.failure[m][i].inc();
            }
        }
    }
}

fn method_index(m: AuthMethod) -> usize {
    AuthMethod::ALL
        .iter()
        .position(|x| *x == m)
        .expect("every method is listed")
}

/// A credential as presented, before anyone checked it.
enum Credential<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

impl Authenticator {
    pub fn new(on: Authenticators, registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            anonymous: on.anonymous.then(Principal::anonymous),
            api_keys: on.api_keys,
            jwt: on.jwt,
            kubernetes: on.kubernetes,
            mtls: on.mtls,
            stdio: on.stdio,
            metrics: AuthnMetrics::register(registry)?,
        })
    }

    /// The header API keys are presented in, when API keys are on.
    pub fn api_key_header(&self) -> Option<&HeaderName> {
        self.api_keys.as_ref().map(|(_, h)| h)
    }

    /// Proves the caller of a request. `cert` is the connection's client-certificate identity,
    /// when the client presented a verified certificate.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        cert: Option<&Result<Arc<Principal>, AuthFailure>>,
    ) -> Result<Arc<Principal>, Rejection> {
        let result = self.decide(headers, cert).await;
        self.metrics.count(&result);
        result
    }

    async fn decide(
        &self,
        headers: &HeaderMap,
        cert: Option<&Result<Arc<Principal>, AuthFailure>>,
    ) -> Result<Arc<Principal>, Rejection> {
        match self.credential(headers)? {
            Some(Credential::ApiKey(key)) => self.api_key(key),
            Some(Credential::Bearer(token)) => self.bearer(token).await,
            None => match cert {
                Some(identity) if self.mtls => identity.clone().map_err(|reason| Rejection {
                    method: Some(AuthMethod::Mtls),
                    reason,
                }),
                _ => self
                    .stdio
                    .clone()
                    .or_else(|| self.anonymous.clone())
                    .ok_or(Rejection {
                        method: None,
                        reason: AuthFailure::Missing,
                    }),
            },
        }
    }

    fn credential<'h>(&self, headers: &'h HeaderMap) -> Result<Option<Credential<'h>>, Rejection> {
        let malformed = |method| Rejection {
            method,
            reason: AuthFailure::Malformed,
        };
        if let Some((_, name)) = &self.api_keys {
            let mut values = headers.get_all(name).iter();
            if let Some(v) = values.next() {
                let key = v
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|k| !k.is_empty() && values.next().is_none())
                    .ok_or(malformed(Some(AuthMethod::ApiKey)))?;
                if headers.contains_key(header::AUTHORIZATION) {
                    // Two credentials: which one is the caller? Neither.
                    return Err(malformed(Some(AuthMethod::ApiKey)));
                }
                return Ok(Some(Credential::ApiKey(key)));
            }
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(malformed(None));
        }
        let token = v
            .to_str()
            .ok()
            .and_then(|s| {
                let (scheme, rest) = s.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty() && !t.contains(' '))
            .ok_or(malformed(None))?;
        Ok(Some(Credential::Bearer(token)))
    }

    fn api_key(&self, key: &str) -> Result<Arc<Principal>, Rejection> {
        let reject = |reason| Rejection {
            method: Some(AuthMethod::ApiKey),
            reason,
        };
        match &self.api_keys {
            Some((keys, _)) => keys.verify(key).map_err(reject),
            None => Err(reject(AuthFailure::UnknownCredential)),
        }
    }

    async fn bearer(&self, token: &str) -> Result<Arc<Principal>, Rejection> {
        let jwt_error = |reason| Rejection {
            method: Some(AuthMethod::Jwt),
            reason,
        };
        if let Some(jwt) = &self.jwt
            && jwt.handles(token)
        {
            return jwt.verify(token).await.map(Arc::new).map_err(jwt_error);
        }
        if self.api_keys.is_some() && !jwt_shaped(token) {
            return self.api_key(token);
        }
        if let Some(k8s) = &self.kubernetes {
            return k8s
                .review(token)
                .await
                .map(Arc::new)
                .map_err(|reason| Rejection {
                    method: Some(AuthMethod::Kubernetes),
                    reason,
                });
        }
        if let Some(jwt) = &self.jwt {
            // Not from a configured issuer: let the verifier say why (issuer, malformed).
            return jwt.verify(token).await.map(Arc::new).map_err(jwt_error);
        }
        if self.api_keys.is_some() {
            return self.api_key(token);
        }
        Err(Rejection {
            method: None,
            reason: AuthFailure::UnknownCredential,
        })
    }
}

/// Three base64url segments: what a JWS compact token looks like.
pub fn jwt_shaped(token: &str) -> bool {
    let mut parts = token.split('.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    ok(parts.next()) && ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3, RFC 9728 §5.1).
pub fn challenge(metadata_url: &str, scopes: &str, invalid_token: bool) -> HeaderValue {
    let mut v = format!("Bearer resource_metadata=\"{metadata_url}\"");
    if !scopes.is_empty() {
        v.push_str(&format!(", scope=\"{scopes}\""));
    }
    if invalid_token {
        v.push_str(", error=\"invalid_token\"");
    }
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Bearer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(jwt_shaped("eyJh.eyJz.c2ln"));
        assert!(!jwt_shaped("eyJh.eyJz"));
        assert!(!jwt_shaped("a.b.c.d"));
        assert!(!jwt_shaped("a..c"));
        assert!(!jwt_shaped("sk_live_abc"));
        assert!(!jwt_shaped("a.b.c="));
    }

    #[test]
    fn challenge_text() {
        let c = challenge(
            "https://h/.well-known/oauth-protected-resource/mcp",
            "a b",
            true,
        );
        assert_eq!(
            c,
            "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp\", scope=\"a b\", error=\"invalid_token\""
        );
        let c = challenge("https://h/x", "", false);
        assert_eq!(c, "Bearer resource_metadata=\"https://h/x\"");
    }

    #[tokio::test]
    async fn anonymous_only_when_allowed() {
        let deny = Authenticator::new(Authenticators::default(), &Registry::new()).unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            deny.authenticate(&h, None).await.unwrap_err(),
            Rejection {
                method: None,
                reason: AuthFailure::Missing
            }
        );
        let on = Authenticators {
            anonymous: true,
            ..Authenticators::default()
        };
        let allow = Authenticator::new(on, &Registry::new()).unwrap();
        assert_eq!(
            allow.authenticate(&h, None).await.unwrap().method,
            AuthMethod::Anonymous
        );
        // A credential nobody can check is refused, not downgraded to anonymous.
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(allow.authenticate(&h, None).await.is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert_eq!(
            allow.authenticate(&h, None).await.unwrap_err().reason,
            AuthFailure::Malformed
        );
    }
}
