//! The `auth.kubernetes` section: where the API server that reviews service-account tokens is,
//! and how long its verdicts are kept.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::count;
use crate::yaml::{Reader, Section, parse};

pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the API server is and how verdicts are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Sent as TokenReview `spec.audiences`; the returned `status.audiences` must name at least
    /// one of them, else the token is rejected. Empty: the API server's own audience (nothing
    /// is sent and nothing checked).
    pub audiences: Vec<String>,
    /// `None`: in-cluster config (service-account token file, its CA, and
    /// `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`). `Some`: that kubeconfig file, its
    /// current context.
    pub kubeconfig: Option<PathBuf>,
    /// The sentinel's own credential for the TokenReview calls, re-read as the kubelet rotates
    /// it (e.g. the chart's projected token `/var/run/secrets/mcp-sentinel/token`). `None`: the
    /// kubeconfig's or the in-cluster service-account token.
    pub token_file: Option<PathBuf>,
    /// How long an authenticated verdict is reused.
    pub cache_ttl: Duration,
    /// How long an unauthenticated verdict is reused. Unavailable is never cached.
    pub negative_cache_ttl: Duration,
    /// Most verdicts kept (positive and negative together). 0 disables the cache.
    pub cache_size: usize,
    /// Upper bound on one TokenReview round trip, connecting included.
    pub timeout: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            audiences: Vec::new(),
            kubeconfig: None,
            token_file: None,
            cache_ttl: DEFAULT_CACHE_TTL,
            negative_cache_ttl: DEFAULT_NEGATIVE_CACHE_TTL,
            cache_size: DEFAULT_CACHE_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why a `KubernetesConfig` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesConfigError {
    #[error("TokenReview timeout must be positive")]
    ZeroTimeout,
}

impl KubernetesConfig {
    /// What the YAML reader cannot rule out for a config built in code.
    pub fn validate(&self) -> Result<(), KubernetesConfigError> {
        if self.timeout.is_zero() {
            return Err(KubernetesConfigError::ZeroTimeout);
        }
        Ok(())
    }

    /// Reads the `auth.kubernetes` section.
    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Self {
        let mut k = Self::default();
        if let Some(v) = r.field(s, "audiences", parse::strings) {
            k.audiences = v;
        }
        k.kubeconfig = r.field(s, "kubeconfig", |v| parse::string(v).map(PathBuf::from));
        k.token_file = r.field(s, "token_file", |v| parse::string(v).map(PathBuf::from));
        if let Some(v) = r.field(s, "cache_ttl", parse::duration) {
            k.cache_ttl = v;
        }
        if let Some(v) = r.field(s, "negative_cache_ttl", parse::duration) {
            k.negative_cache_ttl = v;
        }
        if let Some(v) = r.field(s, "cache_size", count) {
            k.cache_size = v;
        }
        if let Some(v) = r.field(s, "timeout", parse::duration) {
            if v.is_zero() {
                r.error("auth.kubernetes.timeout", "must be greater than zero");
            } else {
                k.timeout = v;
            }
        }
        k
    }
}
