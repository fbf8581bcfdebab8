//! JWT bearer tokens (RFC 7519, JWS compact form) from configured OpenID/OAuth issuers, verified
//! against each issuer's JWKS (fetched over HTTPS, directly or via OIDC discovery) with
//! `ring::signature`.
//!
//! What is accepted, in order of checking:
//! 1. three base64url parts, at most `MAX_TOKEN_LEN` bytes; a header with a string `alg`, an
//!    optional string `kid` and no `crit` (no extension is understood, so none may be critical).
//!    `jku`, `x5u`, `jwk` and `x5c` are ignored: keys only ever come from the configured JWKS.
//! 2. `iss` equal to a configured issuer (exact string), which selects the key set;
//! 3. `alg` in that issuer's `algorithms` (`none` and `HS*` are not even representable);
//! 4. a key with the token's `kid` (or the only fitting key when there is no `kid`) whose `kty`,
//!    `crv` and own `alg` fit the token's `alg`. An unknown `kid` triggers one throttled refresh;
//! 5. the signature;
//! 6. `exp` (required), `nbf` and `iat` (if present; neither in the future), `aud` (one of the
//!    configured audiences) — with `leeway` — and a non-empty string `sub`. The principal's
//!    `issuer` is the token's `iss`: a subject is only unique within its issuer.
//!
//! Verified tokens are cached by SHA-256 of the token until their `exp`, so the hot path is a
//! hash and a read-locked map lookup. A key rotation that removes a key invalidates that issuer's
//! cached tokens.
//!
//! Here: the verifier, which runs those steps. By concern: `verify` (the token's form, header
//! and claims), `jwks` (keys, their fit to an algorithm, signatures), `keys` and `https` (key
//! fetching and refresh), `cache` (verified tokens). The settings are
//! `crate::config::auth::JwtConfig`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prometheus::Registry;
use rustls::RootCertStore;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::auth::jwt::JwtConfigError;
use crate::config::auth::{Algorithm, JwtConfig};
use crate::identity::{AuthFailure, Principal};
use crate::readiness::Readiness;
use cache::{Cache, Entry};
pub use https::{GetError, GetFailure, TlsSetupError};
pub use jwks::JwksError;
pub use keys::FetchError;
use keys::{Issuer, KeyMetrics, refresh_loop};

mod cache;
mod https;
mod jwks;
mod keys;
mod verify;

/// Longer bearer tokens are refused unparsed (real access tokens are a few KiB).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;
/// The readiness blocker held until every issuer's keys have been fetched once.
pub const READINESS_BLOCKER: &str = "jwks";

/// Why a `JwtVerifier` could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error(transparent)]
    Config(#[from] JwtConfigError),
    #[error("jwt issuer {issuer:?}: {source}")]
    Tls {
        issuer: String,
        source: TlsSetupError,
    },
    /// A metric could not be defined.
    #[error("{0}")]
    MetricDefinition(prometheus::Error),
    /// The metrics could not be registered (e.g. a second verifier on one registry).
    #[error("jwt metrics: {0}")]
    MetricRegistration(prometheus::Error),
}

/// Verifies JWT bearer tokens; see the module docs. Share it as `Arc<JwtVerifier>`.
pub struct JwtVerifier {
    leeway: f64,
    issuers: Vec<Arc<Issuer>>,
    by_name: HashMap<String, usize>,
    cache: Arc<Cache>,
    /// Seconds added to the wall clock, to test expiry without sleeping.
    #[cfg(test)]
    skew: std::sync::atomic::AtomicI64,
}

impl JwtVerifier {
    /// Validates `cfg` (at least one issuer; unique issuers; `https://` key URLs — a JWKS URL,
    /// or the issuer itself for discovery; non-empty algorithms and audiences; readable
    /// `ca_file`s) and registers the metrics on `registry`:
    ///
    /// - `mcp_sentinel_jwks_refresh_total{issuer,result="ok|error"}`: key fetches;
    /// - `mcp_sentinel_jwks_last_refresh_timestamp_seconds{issuer}`: Unix time of the last
    ///   successful fetch (0: never). Key age is `time() - ` this, computed at query time, which
    ///   stays right between refreshes unlike an age gauge set at refresh time;
    /// - `mcp_sentinel_jwks_keys{issuer}`: usable signature keys in the current set.
    ///
    /// The `issuer` label is the configured issuer URL, so it is bounded by the config.
    pub fn new(cfg: JwtConfig, registry: &Registry) -> Result<Arc<Self>, JwtError> {
        cfg.validate()?;
        let metrics = KeyMetrics::new().map_err(JwtError::MetricDefinition)?;
        let cache = Arc::new(Cache::new(cfg.cache_size, cfg.issuers.len()));
        let mut system: Option<Arc<RootCertStore>> = None;
        let mut issuers = Vec::with_capacity(cfg.issuers.len());
        let mut by_name = HashMap::new();
        for (idx, icfg) in cfg.issuers.into_iter().enumerate() {
            let tls = match icfg.ca_file.as_deref() {
                Some(path) => https::ca_roots(path),
                None => match &system {
                    Some(s) => Ok(s.clone()),
                    None => https::system_roots().inspect(|s| system = Some(s.clone())),
                },
            }
            .and_then(https::client_config)
            .map_err(|source| JwtError::Tls {
                issuer: icfg.issuer.clone(),
                source,
            })?;
            by_name.insert(icfg.issuer.clone(), idx);
            issuers.push(Arc::new(Issuer::new(
                idx,
                icfg,
                tls,
                cache.clone(),
                &metrics,
            )));
        }
        metrics
            .register(registry)
            .map_err(JwtError::MetricRegistration)?;

        Ok(Arc::new(Self {
            leeway: cfg.leeway.as_secs_f64(),
            issuers,
            by_name,
            cache,
            #[cfg(test)]
            skew: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    /// True when the token is JWT-shaped and its (unverified) `iss` is a configured issuer. For
    /// routing bearer tokens between authenticators only; it proves nothing.
    pub fn handles(&self, token: &str) -> bool {
        if token.len() > MAX_TOKEN_LEN {
            return false;
        }
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(payload) = URL_SAFE_NO_PAD.decode(payload) else {
            return false;
        };
        #[derive(serde::Deserialize)]
        struct Iss {
            iss: Option<Value>,
        }
        match serde_json::from_slice::<Iss>(&payload) {
            Ok(Iss {
                iss: Some(Value::String(iss)),
            }) => self.by_name.contains_key(&iss),
            _ => false,
        }
    }

    /// Verifies `token` (the bearer credential, without `Bearer `) and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::Malformed);
        }
        let now = self.now();
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(p) = self.cache.get(&key, now) {
            return Ok(p);
        }

        let jws = verify::parse(token)?;
        let issuer = match jws.claims.get("iss") {
            Some(Value::String(iss)) => self
                .by_name
                .get(iss)
                .and_then(|i| self.issuers.get(*i))
                .ok_or(AuthFailure::Issuer)?,
            _ => return Err(AuthFailure::Issuer),
        };
        let alg: Algorithm = jws.alg.parse().map_err(|_| AuthFailure::Algorithm)?;
        if !issuer.cfg.algorithms.contains(&alg) {
            return Err(AuthFailure::Algorithm);
        }
        let (jwk, generation) = issuer.key_for(jws.kid.as_deref(), alg).await?;
        if !jwk.verify(alg, jws.signing_input.as_bytes(), &jws.signature) {
            return Err(AuthFailure::Signature);
        }
        let (principal, exp) = verify::check_claims(&issuer.cfg, self.leeway, &jws.claims, now)?;
        if exp > now {
            self.cache.insert(
                key,
                Entry {
                    principal: principal.clone(),
                    exp,
                    issuer: issuer.idx,
                    generation,
                },
                now,
            );
        }
        Ok(principal)
    }

    /// Fetches every issuer's keys at once, then every `refresh_interval`, until `stop`.
    /// Holds the readiness blocker `"jwks"` (`READINESS_BLOCKER`) until every issuer has been
    /// fetched successfully once; it is not raised again later (verification keeps using the
    /// cached keys while an IdP is down). Failures are logged, counted and retried with a
    /// backoff from 1 s doubling to 60 s (or `refresh_interval`, if shorter).
    pub fn spawn(
        self: &Arc<Self>,
        readiness: Arc<Readiness>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        readiness.block(READINESS_BLOCKER);
        let this = self.clone();
        tokio::spawn(async move {
            let pending = Arc::new(AtomicUsize::new(this.issuers.len()));
            let loops = this.issuers.iter().map(|iss| {
                refresh_loop(
                    iss.clone(),
                    pending.clone(),
                    readiness.clone(),
                    stop.clone(),
                )
            });
            futures_util::future::join_all(loops).await;
        })
    }

    fn now(&self) -> f64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        #[cfg(test)]
        let now = now + self.skew.load(std::sync::atomic::Ordering::Relaxed) as f64;
        now
    }
}

#[cfg(test)]
#[path = "../../tests/common/idp.rs"]
#[allow(dead_code)]
mod idp;

#[cfg(test)]
mod tests;
