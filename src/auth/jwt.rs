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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::https;
use super::jwks::{self, Jwk, KeySet, Lookup};
use crate::identity::{AuthFailure, AuthMethod, Principal};
use crate::readiness::Readiness;

pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
/// Longer bearer tokens are refused unparsed (real access tokens are a few KiB).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;
/// The readiness blocker held until every issuer's keys have been fetched once.
pub const READINESS_BLOCKER: &str = "jwks";

/// First retry delay after a failed fetch; doubles up to `MAX_BACKOFF` (or `refresh_interval`).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const CACHE_SHARDS: usize = 16;

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

/// The JWS algorithms this verifier implements. No `none`, no HMAC: a shared secret has no place
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

impl FromStr for Algorithm {
    type Err = String;

    /// Exact, case-sensitive JWA names (a JOSE header is case-sensitive too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unsupported JWT algorithm {s:?} (supported: RS256, RS384, RS512, PS256, \
                     PS384, PS512, ES256, ES384, EdDSA)"
                )
            })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// Per-issuer state: config, TLS client config, current keys, refresh throttle, metrics.
struct Issuer {
    idx: usize,
    cfg: IssuerConfig,
    tls: Arc<ClientConfig>,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch started; the lock also makes refreshes single-flight.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    cache: Arc<Cache>,
    refresh_ok: IntCounter,
    refresh_error: IntCounter,
    last_refresh: Gauge,
    key_count: IntGauge,
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
    pub fn new(cfg: JwtConfig, registry: &Registry) -> Result<Arc<Self>, String> {
        if cfg.issuers.is_empty() {
            return Err("jwt: no issuers configured".into());
        }
        let mut seen = HashSet::new();
        for i in &cfg.issuers {
            validate_issuer(i)?;
            if !seen.insert(i.issuer.as_str()) {
                return Err(format!("jwt: issuer {:?} configured twice", i.issuer));
            }
        }

        let refreshes = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_jwks_refresh_total",
                "JWKS fetches per configured issuer, by result",
            ),
            &["issuer", "result"],
        )
        .map_err(|e| e.to_string())?;
        let last_refresh = GaugeVec::new(
            Opts::new(
                "mcp_sentinel_jwks_last_refresh_timestamp_seconds",
                "Unix time of the last successful JWKS fetch per issuer (0: never)",
            ),
            &["issuer"],
        )
        .map_err(|e| e.to_string())?;
        let key_count = IntGaugeVec::new(
            Opts::new(
                "mcp_sentinel_jwks_keys",
                "Usable signature keys in the current JWKS per issuer",
            ),
            &["issuer"],
        )
        .map_err(|e| e.to_string())?;

        let cache = Arc::new(Cache::new(cfg.cache_size, cfg.issuers.len()));
        let mut system: Option<Arc<RootCertStore>> = None;
        let mut issuers = Vec::with_capacity(cfg.issuers.len());
        let mut by_name = HashMap::new();
        for (idx, icfg) in cfg.issuers.into_iter().enumerate() {
            let roots = match icfg.ca_file.as_deref() {
                Some(path) => https::ca_roots(path),
                None => match &system {
                    Some(s) => Ok(s.clone()),
                    None => https::system_roots().inspect(|s| system = Some(s.clone())),
                },
            }
            .map_err(|e| format!("jwt issuer {:?}: {e}", icfg.issuer))?;
            let tls = https::client_config(roots)
                .map_err(|e| format!("jwt issuer {:?}: {e}", icfg.issuer))?;
            let label = icfg.issuer.as_str();
            by_name.insert(icfg.issuer.clone(), idx);
            issuers.push(Arc::new(Issuer {
                idx,
                refresh_ok: refreshes.with_label_values(&[label, "ok"]),
                refresh_error: refreshes.with_label_values(&[label, "error"]),
                last_refresh: last_refresh.with_label_values(&[label]),
                key_count: key_count.with_label_values(&[label]),
                cfg: icfg,
                tls,
                keys: RwLock::new(Arc::new(KeySet::default())),
                refresh: tokio::sync::Mutex::new(None),
                cache: cache.clone(),
            }));
        }
        for c in [
            Box::new(refreshes) as Box<dyn prometheus::core::Collector>,
            Box::new(last_refresh),
            Box::new(key_count),
        ] {
            registry
                .register(c)
                .map_err(|e| format!("jwt metrics: {e}"))?;
        }

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

        let jws = parse(token)?;
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
        let (principal, exp) = self.check_claims(issuer, &jws.claims, now)?;
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
        let now = now + self.skew.load(Ordering::Relaxed) as f64;
        now
    }

    /// Time claims, audience and subject of a token whose signature verified; the principal and
    /// its `exp`.
    fn check_claims(
        &self,
        issuer: &Issuer,
        claims: &Map<String, Value>,
        now: f64,
    ) -> Result<(Principal, f64), AuthFailure> {
        let exp = numeric_date(claims.get("exp"))?.ok_or(AuthFailure::Malformed)?;
        if now >= exp + self.leeway {
            return Err(AuthFailure::Expired);
        }
        if let Some(nbf) = numeric_date(claims.get("nbf"))?
            && now + self.leeway < nbf
        {
            return Err(AuthFailure::NotYetValid);
        }
        // A token issued in the future was minted by a clock (or a forger) we should not
        // trust; issuers are not required to send `iat`, so only a present one is checked.
        if let Some(iat) = numeric_date(claims.get("iat"))?
            && now + self.leeway < iat
        {
            return Err(AuthFailure::NotYetValid);
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => issuer.cfg.audiences.iter().any(|c| c == a),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|a| issuer.cfg.audiences.iter().any(|c| c == a)),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthFailure::Audience);
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthFailure::Malformed),
        };

        let mut p = Principal::new(subject, AuthMethod::Jwt);
        p.issuer = Some(issuer.cfg.issuer.clone());
        p.scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(v), _) | (None, Some(v)) => strings(v, true),
            (None, None) => Vec::new(),
        };
        if let Some(v) = claims.get(&issuer.cfg.groups_claim) {
            p.groups = strings(v, false);
        }
        for name in &issuer.cfg.claims {
            if let Some(v) = claims.get(name) {
                p.claims.insert(name.clone(), v.clone());
            }
        }
        Ok((p, exp))
    }
}

fn validate_issuer(i: &IssuerConfig) -> Result<(), String> {
    let name = &i.issuer;
    let err = |why: String| Err(format!("jwt issuer {name:?}: {why}"));
    if name.is_empty() {
        return Err("jwt: an issuer has an empty name".into());
    }
    match &i.keys {
        KeySource::Jwks(url) => {
            if let Err(e) = https::https_uri(url) {
                return err(format!("jwks URL {e}"));
            }
        }
        KeySource::Discovery => {
            if let Err(e) = https::https_uri(name) {
                return err(format!("discovery needs an https issuer: {e}"));
            }
        }
    }
    if i.algorithms.is_empty() {
        return err("no algorithms".into());
    }
    if i.audiences.is_empty() || i.audiences.iter().any(String::is_empty) {
        return err("audiences must be set (and non-empty)".into());
    }
    if i.groups_claim.is_empty() {
        return err("groups_claim is empty".into());
    }
    if i.refresh_interval.is_zero() || i.timeout.is_zero() {
        return err("refresh_interval and timeout must be positive".into());
    }
    Ok(())
}

/// A NumericDate claim: absent/null → None; a JSON number → seconds; anything else malformed.
fn numeric_date(v: Option<&Value>) -> Result<Option<f64>, AuthFailure> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(AuthFailure::Malformed),
        Some(_) => Err(AuthFailure::Malformed),
    }
}

/// A string (split on whitespace when `split`, else taken whole) or an array of strings
/// (non-strings skipped).
fn strings(v: &Value, split: bool) -> Vec<String> {
    match v {
        Value::String(s) if split => s.split_whitespace().map(str::to_string).collect(),
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A JWS in compact form, decoded but not verified.
struct Jws<'a> {
    alg: String,
    kid: Option<String>,
    claims: Map<String, Value>,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn parse(token: &str) -> Result<Jws<'_>, AuthFailure> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed);
    };
    let b64 = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthFailure::Malformed)
    };
    let header: Map<String, Value> =
        serde_json::from_slice(&b64(h)?).map_err(|_| AuthFailure::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(p)?).map_err(|_| AuthFailure::Malformed)?;
    let signature = b64(s)?;
    if header.contains_key("crit") {
        return Err(AuthFailure::Malformed);
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(AuthFailure::Malformed),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthFailure::Malformed),
    };
    Ok(Jws {
        alg,
        kid,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

impl Issuer {
    fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key for a token, refreshing the set once (throttled) when the `kid` is unknown.
    /// Also returns the key set generation it came from.
    async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(Jwk, u64), AuthFailure> {
        let set = self.keys();
        match set.lookup(kid, alg) {
            Lookup::Found(k) => return Ok((k.clone(), set.generation)),
            Lookup::Misfit => return Err(AuthFailure::Algorithm),
            Lookup::Ambiguous => return Err(AuthFailure::UnknownKey),
            Lookup::Unknown => {}
        }
        let seen = set.generation;
        drop(set);
        // In a task of its own so that a caller that goes away does not abort a fetch that the
        // throttle has already accounted for.
        let this = self.clone();
        let _ = tokio::spawn(async move { this.refresh_throttled(seen).await }).await;
        let set = self.keys();
        match set.lookup(kid, alg) {
            Lookup::Found(k) => Ok((k.clone(), set.generation)),
            Lookup::Misfit => Err(AuthFailure::Algorithm),
            _ if !set.loaded => Err(AuthFailure::Unavailable),
            _ => Err(AuthFailure::UnknownKey),
        }
    }

    /// A refresh on behalf of an unknown `kid`: skipped when another refresh completed since the
    /// caller looked (`seen` generation) or one started less than `min_refresh_interval` ago.
    /// Concurrent callers queue on the lock and so share the one fetch in flight.
    async fn refresh_throttled(&self, seen: u64) {
        let mut last = self.refresh.lock().await;
        if self.keys().generation != seen {
            return;
        }
        if let Some(t) = *last
            && t.elapsed() < self.cfg.min_refresh_interval
        {
            return;
        }
        *last = Some(Instant::now());
        let _ = self.fetch_and_install().await;
    }

    /// An unconditional refresh (the periodic one). It does not count against the unknown-kid
    /// throttle, so a key rotated in just after a periodic refresh is still picked up at once.
    async fn refresh_now(&self) -> Result<(), String> {
        let _single_flight = self.refresh.lock().await;
        self.fetch_and_install().await
    }

    async fn fetch_and_install(&self) -> Result<(), String> {
        let result = self.fetch().await;
        let (keys, skipped) = match result {
            Ok(k) => k,
            Err(e) => {
                self.refresh_error.inc();
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, "JWKS refresh failed; keeping the current keys");
                return Err(e);
            }
        };
        self.refresh_ok.inc();
        let count = keys.len();
        let (removed, generation) = {
            let mut current = self.keys.write().unwrap_or_else(PoisonError::into_inner);
            let removed = current.loses_keys_in(&keys);
            let generation = current.generation + 1;
            *current = Arc::new(KeySet {
                keys,
                generation,
                loaded: true,
            });
            (removed, generation)
        };
        if removed {
            self.cache.invalidate(self.idx, generation);
        }
        self.key_count.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.last_refresh.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        tracing::debug!(issuer = %self.cfg.issuer, keys = count, skipped, removed, "JWKS refreshed");
        Ok(())
    }

    /// Fetches and parses the key set; an empty one is an error (it would lock everyone out).
    async fn fetch(&self) -> Result<(Vec<Jwk>, usize), String> {
        let url = match &self.cfg.keys {
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery => self.discover().await?,
        };
        let body = https::get(&self.tls, &url, self.cfg.timeout).await?;
        let (keys, skipped) = jwks::parse_jwks(&body).map_err(|e| format!("{url}: {e}"))?;
        if keys.is_empty() {
            return Err(format!(
                "{url}: no usable signature keys ({skipped} skipped)"
            ));
        }
        Ok((keys, skipped))
    }

    /// The `jwks_uri` from the issuer's OpenID configuration.
    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let body = https::get(&self.tls, &url, self.cfg.timeout).await?;
        let doc: Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(self.cfg.issuer.as_str()) {
            return Err(format!(
                "{url}: its issuer {} is not the configured one",
                doc.get("issuer").unwrap_or(&Value::Null)
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{url}: no jwks_uri"))?;
        https::https_uri(jwks_uri).map_err(|e| format!("{url}: jwks_uri {e}"))?;
        Ok(jwks_uri.to_string())
    }
}

async fn refresh_loop(
    iss: Arc<Issuer>,
    pending: Arc<AtomicUsize>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    let max_backoff = MAX_BACKOFF.min(iss.cfg.refresh_interval);
    let initial = INITIAL_BACKOFF.min(max_backoff);
    let mut backoff = initial;
    let mut fetched = false;
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = iss.refresh_now() => r,
        };
        let wait = match result {
            Ok(()) => {
                if !fetched {
                    fetched = true;
                    if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        readiness.clear(READINESS_BLOCKER);
                    }
                }
                backoff = initial;
                iss.cfg.refresh_interval
            }
            Err(_) => {
                let w = backoff;
                backoff = (backoff * 2).min(max_backoff);
                w
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A verified token, cached.
struct Entry {
    principal: Principal,
    /// The token's `exp`: never served at or after it.
    exp: f64,
    issuer: usize,
    /// Generation of the issuer's key set the token was verified with.
    generation: u64,
}

/// Verified tokens by SHA-256 of the token: sharded read-write-locked maps, bounded in total
/// (`size / shards` per shard). When a shard is full, its expired and invalidated entries go
/// first, else an arbitrary one.
struct Cache {
    shards: Vec<RwLock<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
    /// Per issuer: entries verified with an older key set generation are stale (a key they
    /// may have used was removed). Checked on every hit, which closes the race between a
    /// rotation and a verification that was already under way.
    floors: Vec<AtomicU64>,
}

impl Cache {
    fn new(size: usize, issuers: usize) -> Self {
        // Shards of at least 64 entries: small caches stay one exact LRU-less map.
        let n = (size / 64).clamp(1, CACHE_SHARDS);
        Self {
            shards: (0..n).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: size / n,
            floors: (0..issuers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> &RwLock<HashMap<[u8; 32], Entry>> {
        &self.shards[usize::from(key[0]) % self.shards.len()]
    }

    fn get(&self, key: &[u8; 32], now: f64) -> Option<Principal> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let e = shard.get(key)?;
        let floor = self.floors.get(e.issuer)?.load(Ordering::Acquire);
        (now < e.exp && e.generation >= floor).then(|| e.principal.clone())
    }

    fn insert(&self, key: [u8; 32], entry: Entry, now: f64) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self
            .shard(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            let floors = &self.floors;
            shard.retain(|_, e| {
                now < e.exp
                    && floors
                        .get(e.issuer)
                        .is_some_and(|f| e.generation >= f.load(Ordering::Relaxed))
            });
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, entry);
    }

    /// Drops `issuer`'s entries verified before key set `generation`.
    fn invalidate(&self, issuer: usize, generation: u64) {
        if let Some(f) = self.floors.get(issuer) {
            f.fetch_max(generation, Ordering::AcqRel);
        }
        for shard in &self.shards {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, e| e.issuer != issuer || e.generation >= generation);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
#[path = "../../tests/common/idp.rs"]
#[allow(dead_code)]
mod idp;

#[cfg(test)]
mod tests;
