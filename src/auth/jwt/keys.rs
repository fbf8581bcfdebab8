//! Key fetching: each issuer's current key set, fetched over HTTPS from its JWKS URL (or the
//! `jwks_uri` of its OIDC discovery document), refreshed periodically and on an unknown `kid`
//! (throttled, single-flight), with failures retried after a backoff from 1 s doubling to 60 s
//! (or `refresh_interval`, if shorter), each wait less up to a quarter at random. A rotation
//! that removes a key invalidates the issuer's cached tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use rustls::ClientConfig;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::READINESS_BLOCKER;
use super::cache::Cache;
use super::https::{self, GetError};
use super::jwks::{self, Jwk, JwksError, KeySet, Lookup};
use crate::config::auth::jwt::{Algorithm, IssuerConfig, KeySource, UrlError, https_uri};
use crate::identity::AuthFailure;
use crate::readiness::Readiness;

/// First retry delay after a failed fetch; doubles up to `MAX_BACKOFF` (or `refresh_interval`).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a key fetch failed; the current keys stay.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Get(#[from] GetError),
    #[error("{url}: {source}")]
    Jwks { url: String, source: JwksError },
    #[error("{url}: no usable signature keys ({skipped} skipped)")]
    NoUsableKeys { url: String, skipped: usize },
    #[error("{url}: not JSON: {source}")]
    DiscoveryNotJson {
        url: String,
        source: serde_json::Error,
    },
    /// `found` is the document's `issuer` as JSON (`null` when absent).
    #[error("{url}: its issuer {found} is not the configured one")]
    WrongIssuer { url: String, found: Value },
    #[error("{url}: no jwks_uri")]
    NoJwksUri { url: String },
    #[error("{url}: jwks_uri {source}")]
    JwksUri { url: String, source: UrlError },
}

/// The key-fetch metrics of every issuer, labelled by issuer.
pub(super) struct KeyMetrics {
    refreshes: IntCounterVec,
    last_refresh: GaugeVec,
    key_count: IntGaugeVec,
}

impl KeyMetrics {
    pub(super) fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            refreshes: IntCounterVec::new(
                Opts::new(
                    "mcp_sentinel_jwks_refresh_total",
                    "JWKS fetches per configured issuer, by result",
                ),
                &["issuer", "result"],
            )?,
            last_refresh: GaugeVec::new(
                Opts::new(
                    "mcp_sentinel_jwks_last_refresh_timestamp_seconds",
                    "Unix time of the last successful JWKS fetch per issuer (0: never)",
                ),
                &["issuer"],
            )?,
            key_count: IntGaugeVec::new(
                Opts::new(
                    "mcp_sentinel_jwks_keys",
                    "Usable signature keys in the current JWKS per issuer",
                ),
                &["issuer"],
            )?,
        })
    }

    pub(super) fn register(self, registry: &Registry) -> Result<(), prometheus::Error> {
        for c in [
            Box::new(self.refreshes) as Box<dyn prometheus::core::Collector>,
            Box::new(self.last_refresh),
            Box::new(self.key_count),
        ] {
            registry.register(c)?;
        }
        Ok(())
    }
}

/// Per-issuer state: config, TLS client config, current keys, refresh throttle, metrics.
pub(super) struct Issuer {
    pub(super) idx: usize,
    pub(super) cfg: IssuerConfig,
    tls: Arc<ClientConfig>,
    pub(super) keys: RwLock<Arc<KeySet>>,
    /// When the last fetch started; the lock also makes refreshes single-flight.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    cache: Arc<Cache>,
    refresh_ok: IntCounter,
    refresh_error: IntCounter,
    last_refresh: Gauge,
    key_count: IntGauge,
}

impl Issuer {
    /// Issuer `idx` of the config, with no keys yet.
    pub(super) fn new(
        idx: usize,
        cfg: IssuerConfig,
        tls: Arc<ClientConfig>,
        cache: Arc<Cache>,
        metrics: &KeyMetrics,
    ) -> Self {
        let label = cfg.issuer.as_str();
        Self {
            idx,
            refresh_ok: metrics.refreshes.with_label_values(&[label, "ok"]),
            refresh_error: metrics.refreshes.with_label_values(&[label, "error"]),
            last_refresh: metrics.last_refresh.with_label_values(&[label]),
            key_count: metrics.key_count.with_label_values(&[label]),
            cfg,
            tls,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(None),
            cache,
        }
    }

    pub(super) fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key for a token, refreshing the set once (throttled) when the `kid` is unknown.
    /// Also returns the key set generation it came from.
    pub(super) async fn key_for(
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
    pub(super) async fn refresh_now(&self) -> Result<(), FetchError> {
        let _single_flight = self.refresh.lock().await;
        self.fetch_and_install().await
    }

    async fn fetch_and_install(&self) -> Result<(), FetchError> {
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
    async fn fetch(&self) -> Result<(Vec<Jwk>, usize), FetchError> {
        let url = match &self.cfg.keys {
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery => self.discover().await?,
        };
        let body = https::get(&self.tls, &url, self.cfg.timeout).await?;
        let (keys, skipped) = match jwks::parse_jwks(&body) {
            Ok(parsed) => parsed,
            Err(source) => return Err(FetchError::Jwks { url, source }),
        };
        if keys.is_empty() {
            return Err(FetchError::NoUsableKeys { url, skipped });
        }
        Ok((keys, skipped))
    }

    /// The `jwks_uri` from the issuer's OpenID configuration.
    async fn discover(&self) -> Result<String, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let body = https::get(&self.tls, &url, self.cfg.timeout).await?;
        let doc: Value = match serde_json::from_slice(&body) {
            Ok(doc) => doc,
            Err(source) => return Err(FetchError::DiscoveryNotJson { url, source }),
        };
        if doc.get("issuer").and_then(Value::as_str) != Some(self.cfg.issuer.as_str()) {
            let found = doc.get("issuer").cloned().unwrap_or(Value::Null);
            return Err(FetchError::WrongIssuer { url, found });
        }
        let Some(jwks_uri) = doc.get("jwks_uri").and_then(Value::as_str) else {
            return Err(FetchError::NoJwksUri { url });
        };
        if let Err(source) = https_uri(jwks_uri) {
            return Err(FetchError::JwksUri { url, source });
        }
        Ok(jwks_uri.to_string())
    }
}

/// `d` less up to a quarter, at random: replicas that lost their identity provider together
/// do not all retry in the same instant when it comes back.
pub(super) fn jittered(d: Duration) -> Duration {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    let u = match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u16::from_le_bytes(b)) / 65536.0,
        Err(_) => 0.0,
    };
    d.mul_f64(1.0 - 0.25 * u)
}

pub(super) async fn refresh_loop(
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
                let w = jittered(backoff);
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
