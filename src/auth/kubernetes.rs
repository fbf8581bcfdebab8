//! Kubernetes service-account tokens, proven by the API server's TokenReview API
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`).
//!
//! The sentinel presents its own credential (in-cluster service account or a kubeconfig user);
//! that identity needs `create` on `tokenreviews.authentication.k8s.io` (the
//! `system:auth-delegator` ClusterRole grants it).
//!
//! Verdicts are cached by the SHA-256 of the token: an authenticated one for `cache_ttl`, an
//! unauthenticated one for `negative_cache_ttl` (so a flood of the same bad token costs one
//! review), an unavailable API server never. The cache is bounded; when full, the oldest entry
//! goes first.
//!
//! Fail closed: anything but a well-formed 2xx TokenReview saying `authenticated: true` for one
//! of our audiences is a failure — `Rejected` when the API server said no, `Unavailable` when it
//! could not be asked or its answer made no sense.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Resource;
use kube::api::PostParams;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use serde_json::{Map, Value};

use crate::config::auth::kubernetes::{KubernetesConfig, KubernetesConfigError};
use crate::identity::{AuthFailure, AuthMethod, Principal};

/// Largest API server answer read; a TokenReview is a few KiB.
const MAX_ANSWER: usize = 1 << 20;

/// Why a `TokenReviewer` could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReviewerError {
    #[error(transparent)]
    Config(#[from] KubernetesConfigError),
    /// `why` is `config_error`'s masked first line.
    #[error("kubeconfig {path}: {why}")]
    Kubeconfig { path: String, why: String },
    #[error("in-cluster Kubernetes config: {0}")]
    InCluster(String),
    #[error("Kubernetes client: {0}")]
    Client(kube::Error),
    #[error("TokenReview metrics: {0}")]
    Metrics(prometheus::Error),
}

/// Why a TokenReview round trip gave no answer. Safe to log: it holds no body, only a Status
/// reason and message, with the token masked should the message quote it.
#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error("encoding the request: {0}")]
    Encode(serde_json::Error),
    #[error("building the request: {0}")]
    Build(kube::core::request::Error),
    #[error("{0}")]
    Send(kube::Error),
    #[error("reading the answer (HTTP {status}): {source}")]
    Read {
        status: http::StatusCode,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("HTTP {status}: {reason} {message}")]
    Status {
        status: http::StatusCode,
        reason: String,
        message: String,
    },
    #[error("HTTP {status}, {len} bytes that are not a Status")]
    NotStatus {
        status: http::StatusCode,
        len: usize,
    },
    #[error("HTTP {status} answer is not a TokenReview: {source}")]
    NotReview {
        status: http::StatusCode,
        source: serde_json::Error,
    },
}

/// Reviews bearer tokens against the API server. Cheap to clone; clones share client, cache and
/// metrics.
#[derive(Clone)]
pub struct TokenReviewer {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    /// `/apis/authentication.k8s.io/v1/tokenreviews`
    path: String,
    audiences: Vec<String>,
    timeout: Duration,
    cache_ttl: Duration,
    negative_cache_ttl: Duration,
    cache: Mutex<Cache>,
    metrics: Metrics,
}

struct Metrics {
    authenticated: Histogram,
    rejected: Histogram,
    error: Histogram,
    hit: IntCounter,
    miss: IntCounter,
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mcp_sentinel_tokenreview_duration_seconds",
                "TokenReview requests to the Kubernetes API server, by result",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["result"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_tokenreview_cache_total",
                "Token reviews answered from the verdict cache (hit) or sent to the API server (miss)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        Ok(Self {
            authenticated: duration.with_label_values(&["authenticated"]),
            rejected: duration.with_label_values(&["rejected"]),
            error: duration.with_label_values(&["error"]),
            hit: cache.with_label_values(&["hit"]),
            miss: cache.with_label_values(&["miss"]),
        })
    }
}

impl TokenReviewer {
    /// Loads the client config (kubeconfig or in-cluster) and registers the metrics. Does not
    /// contact the API server. Must run inside a tokio runtime. Registering twice in one
    /// registry fails (the metric names are taken).
    pub async fn new(cfg: KubernetesConfig, registry: &Registry) -> Result<Self, ReviewerError> {
        cfg.validate()?;
        let client = client(
            cfg.kubeconfig.as_deref(),
            cfg.token_file.as_deref(),
            cfg.timeout,
        )
        .await?;
        let metrics = Metrics::register(registry).map_err(ReviewerError::Metrics)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                path: TokenReview::url_path(&(), None),
                audiences: cfg.audiences,
                timeout: cfg.timeout,
                cache_ttl: cfg.cache_ttl,
                negative_cache_ttl: cfg.negative_cache_ttl,
                cache: Mutex::new(Cache::new(cfg.cache_size)),
                metrics,
            }),
        })
    }

    /// Proves `token` (the bearer credential, without the `Bearer ` prefix).
    pub async fn review(&self, token: &str) -> Result<Principal, AuthFailure> {
        let inner = &*self.inner;
        let key = cache_key(token);
        let cached = inner
            .cache
            .lock()
            .expect("not poisoned")
            .get(&key, Instant::now());
        if let Some(verdict) = cached {
            inner.metrics.hit.inc();
            return verdict;
        }
        inner.metrics.miss.inc();

        let started = Instant::now();
        let outcome = self.ask(token).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (verdict, ttl) = match outcome {
            Ok(principal) => {
                inner.metrics.authenticated.observe(elapsed);
                (Ok(principal), inner.cache_ttl)
            }
            Err(AuthFailure::Rejected) => {
                inner.metrics.rejected.observe(elapsed);
                (Err(AuthFailure::Rejected), inner.negative_cache_ttl)
            }
            Err(other) => {
                inner.metrics.error.observe(elapsed);
                return Err(other);
            }
        };
        if !ttl.is_zero() {
            inner.cache.lock().expect("not poisoned").insert(
                key,
                verdict.clone(),
                Instant::now() + ttl,
            );
        }
        verdict
    }

    /// One TokenReview round trip, uncached. Only `Rejected` and `Unavailable` come out as errors.
    async fn ask(&self, token: &str) -> Result<Principal, AuthFailure> {
        let inner = &*self.inner;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!inner.audiences.is_empty()).then(|| inner.audiences.clone()),
            },
            ..TokenReview::default()
        };
        match tokio::time::timeout(inner.timeout, self.post(&review, token)).await {
            Ok(Ok(answer)) => verdict(answer.status, &inner.audiences),
            Ok(Err(why)) => {
                tracing::warn!(error = %why, "TokenReview failed; token not verified");
                Err(AuthFailure::Unavailable)
            }
            Err(_) => {
                tracing::warn!(timeout = ?inner.timeout, "TokenReview timed out; token not verified");
                Err(AuthFailure::Unavailable)
            }
        }
    }

    /// POSTs the review and parses the answer. Done here rather than with `Api::create` because
    /// kube logs the whole response body when it does not parse, and the API server's answer
    /// echoes `spec.token`.
    async fn post(&self, review: &TokenReview, token: &str) -> Result<TokenReview, ReviewError> {
        let inner = &*self.inner;
        let body = serde_json::to_vec(review).map_err(ReviewError::Encode)?;
        let request = kube::core::Request::new(&inner.path)
            .create(&PostParams::default(), body)
            .map_err(ReviewError::Build)?;
        let response = inner
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(ReviewError::Send)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|source| ReviewError::Read { status, source })?
            .to_bytes();
        if !status.is_success() {
            // A Kubernetes Status says why (e.g. our own credentials are not allowed to create
            // tokenreviews); anything else is described by its code only.
            return Err(match serde_json::from_slice::<kube::core::Status>(&body) {
                Ok(st) => {
                    let message: String = st.message.chars().take(300).collect();
                    ReviewError::Status {
                        status,
                        reason: st.reason,
                        message: message.replace(token, "<token>"),
                    }
                }
                Err(_) => ReviewError::NotStatus {
                    status,
                    len: body.len(),
                },
            });
        }
        serde_json::from_slice::<TokenReview>(&body)
            .map_err(|source| ReviewError::NotReview { status, source })
    }
}

/// A config loading error fit for the log. The YAML parser's message quotes the offending
/// lines of the kubeconfig (which may hold our own token) below its first line, and type errors
/// quote scalar values: keep the first line, quoted strings masked.
/// A kube client from `kubeconfig` (its current context) or, without one, the in-cluster
/// config; `token_file` replaces its credential (re-read as the kubelet rotates it). Every
/// request gives up after `timeout`, and none is retried. Does not contact the API server.
pub async fn client(
    kubeconfig: Option<&std::path::Path>,
    token_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<kube::Client, ReviewerError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let failed = |e: &dyn std::fmt::Display| ReviewerError::Kubeconfig {
                path: path.display().to_string(),
                why: config_error(e),
            };
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| failed(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| failed(&e))?
        }
        None => Config::incluster().map_err(|e| ReviewerError::InCluster(config_error(&e)))?,
    };
    if let Some(file) = token_file {
        config.auth_info.token = None;
        config.auth_info.token_file = Some(file.display().to_string());
    }
    // The caller bounds each request by `timeout`; these make the client give up at the same
    // point rather than keep a dead connection around.
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // No retries inside the client: the caller answers within its own deadline.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(ReviewerError::Client)
}

fn config_error(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let mut out = String::with_capacity(first.len());
    for (i, part) in first.split('"').enumerate() {
        out.push_str(if i % 2 == 0 { part } else { "\"…\"" });
    }
    out
}

/// What a TokenReview status means for us.
fn verdict(
    status: Option<TokenReviewStatus>,
    audiences: &[String],
) -> Result<Principal, AuthFailure> {
    let Some(status) = status else {
        tracing::warn!("TokenReview answer without status; token rejected");
        return Err(AuthFailure::Rejected);
    };
    if status.authenticated != Some(true) {
        tracing::debug!(
            error = status.error.as_deref().unwrap_or(""),
            "TokenReview: token not authenticated"
        );
        return Err(AuthFailure::Rejected);
    }
    if !audiences.is_empty() {
        let granted = status.audiences.as_deref().unwrap_or_default();
        if !granted.iter().any(|a| audiences.contains(a)) {
            tracing::info!(
                expected = ?audiences,
                granted = ?granted,
                "TokenReview: token authenticated for another audience; rejected"
            );
            return Err(AuthFailure::Rejected);
        }
    }
    let user = status.user.unwrap_or_default();
    let Some(subject) = user.username.filter(|u| !u.is_empty()) else {
        tracing::warn!("TokenReview: authenticated but no username in the answer; not trusted");
        return Err(AuthFailure::Unavailable);
    };
    let mut claims = Map::new();
    if let Some(uid) = user.uid.filter(|u| !u.is_empty()) {
        claims.insert("uid".into(), Value::String(uid));
    }
    for (name, values) in user.extra.unwrap_or_default() {
        claims.insert(
            name,
            Value::Array(values.into_iter().map(Value::String).collect()),
        );
    }
    Ok(Principal {
        subject,
        issuer: None,
        groups: user.groups.unwrap_or_default(),
        scopes: Vec::new(),
        method: AuthMethod::Kubernetes,
        claims,
    })
}

type Key = [u8; 32];

fn cache_key(token: &str) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Verdicts by token hash, at most `capacity`, evicted oldest-inserted first; expired entries
/// are dropped when met.
struct Cache {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    /// Insertion order: (key, generation). A key re-inserted leaves a stale pair behind, skipped
    /// (its generation no longer matches) and compacted away when the queue grows.
    order: VecDeque<(Key, u64)>,
    next_generation: u64,
}

struct Entry {
    verdict: Result<Principal, AuthFailure>,
    expires: Instant,
    generation: u64,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
        }
    }

    fn get(&mut self, key: &Key, now: Instant) -> Option<Result<Principal, AuthFailure>> {
        let entry = self.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.verdict.clone());
        }
        self.entries.remove(key);
        None
    }

    fn insert(&mut self, key: Key, verdict: Result<Principal, AuthFailure>, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.entries.insert(
            key,
            Entry {
                verdict,
                expires,
                generation,
            },
        );
        self.order.push_back((key, generation));
        while self.entries.len() > self.capacity {
            let Some((old, old_generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&old)
                .is_some_and(|e| e.generation == old_generation)
            {
                self.entries.remove(&old);
            }
        }
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn principal(name: &str) -> Principal {
        Principal::new(name, AuthMethod::Kubernetes)
    }

    fn key(n: u8) -> Key {
        [n; 32]
    }

    #[test]
    fn config_errors_keep_no_quoted_material() {
        let e = "failed to parse kubeconfig YAML: invalid type: string \"s3cret\", expected a map\n \
                 --> <input>:4:9\n4 |   user: {token: s3cret";
        assert_eq!(
            config_error(&e),
            "failed to parse kubeconfig YAML: invalid type: string \"…\", expected a map"
        );
    }

    #[test]
    fn cache_key_is_sha256_of_the_token() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = cache_key("abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        assert_ne!(cache_key("a"), cache_key("b"));
    }

    #[test]
    fn cache_entries_expire() {
        let mut cache = Cache::new(10);
        let now = Instant::now();
        cache.insert(key(1), Ok(principal("a")), now + Duration::from_secs(30));
        cache.insert(
            key(2),
            Err(AuthFailure::Rejected),
            now + Duration::from_secs(5),
        );
        assert_eq!(cache.get(&key(1), now), Some(Ok(principal("a"))));
        assert_eq!(cache.get(&key(2), now), Some(Err(AuthFailure::Rejected)));
        let later = now + Duration::from_secs(5);
        assert_eq!(cache.get(&key(2), later), None);
        assert_eq!(cache.get(&key(1), later), Some(Ok(principal("a"))));
        assert_eq!(cache.len(), 1, "the expired entry was dropped");
        assert_eq!(cache.get(&key(1), now + Duration::from_secs(30)), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let mut cache = Cache::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        for n in 1..=5 {
            cache.insert(key(n), Ok(principal(&n.to_string())), later);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.get(&key(1), now), None);
        assert_eq!(cache.get(&key(2), now), None);
        for n in 3..=5 {
            assert!(cache.get(&key(n), now).is_some(), "{n}");
        }
        // Re-inserting a key makes it the newest; its old queue slot does not evict it.
        cache.insert(key(3), Ok(principal("3 again")), later);
        cache.insert(key(6), Ok(principal("6")), later);
        assert_eq!(cache.get(&key(3), now), Some(Ok(principal("3 again"))));
        assert_eq!(cache.get(&key(4), now), None);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn cache_queue_stays_bounded_under_reinsertion() {
        let mut cache = Cache::new(4);
        let later = Instant::now() + Duration::from_secs(60);
        for _ in 0..1000 {
            cache.insert(key(7), Err(AuthFailure::Rejected), later);
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.order.len() <= 8, "{}", cache.order.len());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = Cache::new(0);
        let now = Instant::now();
        cache.insert(key(1), Ok(principal("a")), now + Duration::from_secs(30));
        assert_eq!(cache.get(&key(1), now), None);
    }

    fn status(authenticated: Option<bool>, audiences: Option<&[&str]>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated,
            audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
            error: None,
            user: Some(UserInfo {
                username: Some("system:serviceaccount:ns:agent".into()),
                uid: Some("u-1".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                extra: Some(BTreeMap::from([(
                    "authentication.kubernetes.io/pod-name".to_string(),
                    vec!["agent-0".to_string()],
                )])),
            }),
        }
    }

    #[test]
    fn verdicts() {
        let aud = vec!["mcp".to_string(), "other".to_string()];
        let p = verdict(Some(status(Some(true), Some(&["other"]))), &aud).unwrap();
        assert_eq!(p.subject, "system:serviceaccount:ns:agent");
        assert_eq!(p.groups, ["system:serviceaccounts"]);
        assert_eq!(p.method, AuthMethod::Kubernetes);
        assert_eq!(
            Value::Object(p.claims),
            serde_json::json!({"uid": "u-1", "authentication.kubernetes.io/pod-name": ["agent-0"]})
        );
        // No configured audience: whatever the server says is fine.
        assert!(verdict(Some(status(Some(true), None)), &[]).is_ok());
        for (st, want) in [
            (None, AuthFailure::Rejected),
            (Some(status(None, Some(&["mcp"]))), AuthFailure::Rejected),
            (
                Some(status(Some(false), Some(&["mcp"]))),
                AuthFailure::Rejected,
            ),
            (Some(status(Some(true), None)), AuthFailure::Rejected),
            (Some(status(Some(true), Some(&[]))), AuthFailure::Rejected),
            (
                Some(status(Some(true), Some(&["api"]))),
                AuthFailure::Rejected,
            ),
        ] {
            assert_eq!(verdict(st.clone(), &aud), Err(want), "{st:?}");
        }
        let mut nameless = status(Some(true), Some(&["mcp"]));
        nameless.user.as_mut().unwrap().username = Some(String::new());
        assert_eq!(verdict(Some(nameless), &aud), Err(AuthFailure::Unavailable));
        let mut userless = status(Some(true), Some(&["mcp"]));
        userless.user = None;
        assert_eq!(verdict(Some(userless), &aud), Err(AuthFailure::Unavailable));
    }
}
