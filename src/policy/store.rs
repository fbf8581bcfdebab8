//! The running policy, swapped atomically when its file changes. Requests take an `Arc` of the
//! policy once and decide everything (the call and its list filtering) against it, so a reload
//! never splits a request between two policies and never waits for one.
//!
//! A mounted ConfigMap changes by Kubernetes swapping a `..data` symlink: the file is polled
//! by content (reading follows the symlinks), not by inotify events that a swap can hide.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Policy;
use super::load::{PolicyConfig, PolicySource, hash_hex};
use crate::reload::{Reloading, Source};
use crate::yaml::ConfigErrors;

/// Why a changed policy file is not used; the running policy stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}: cannot read: {error}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}: not UTF-8 text", .path.display())]
    NotUtf8 { path: PathBuf },
    /// Every error of the file, on one line.
    #[error("{}", .0.to_string().trim_end().replace('\n', "; "))]
    Invalid(ConfigErrors),
}

/// How long a changed policy file must stay the same before it is read as the new policy.
const SETTLE: Duration = Duration::from_millis(50);

pub struct PolicyStore {
    /// An inline policy watches no file, so it never changes.
    current: Arc<Reloading<PolicyFile>>,
    /// How often the policy file is polled; `None`: an inline policy.
    interval: Option<Duration>,
}

/// The policy file as the reloader reads it, and the metrics of the running policy.
struct PolicyFile {
    /// `None`: an inline policy.
    path: Option<PathBuf>,
    reloads: IntCounterVec,
    info: IntGaugeVec,
    rules: IntGauge,
}

impl Source for PolicyFile {
    type Value = Policy;
    type Error = ReloadError;
    const WHAT: &'static str = "policy";

    fn read_error(&self, path: &Path, error: std::io::Error) -> ReloadError {
        ReloadError::Read {
            path: path.to_path_buf(),
            error,
        }
    }

    fn build(&self, contents: &[Vec<u8>]) -> Result<Policy, ReloadError> {
        let path = self.path.clone().unwrap_or_default();
        let text = std::str::from_utf8(&contents[0])
            .map_err(|_| ReloadError::NotUtf8 { path: path.clone() })?;
        Policy::from_yaml(text, &path.display().to_string()).map_err(ReloadError::Invalid)
    }

    fn swapped(&self, old: &Policy, new: &Policy) {
        self.publish(new, Some(old));
    }

    fn reloaded(&self, p: &Policy) {
        self.reloads.with_label_values(&["success"]).inc();
        let file = self.path.as_deref().unwrap_or(Path::new("")).display();
        tracing::info!(file = %file, hash = short(&p.hash), rules = p.rules().len(), "policy reloaded");
    }

    fn rejected(&self, e: &ReloadError) {
        self.reloads.with_label_values(&["failure"]).inc();
        tracing::error!(error = %e, "policy file changed but is invalid; keeping the running policy");
    }
}

impl PolicyFile {
    fn source_label(&self) -> &'static str {
        if self.path.is_some() {
            "file"
        } else {
            "inline"
        }
    }

    fn publish(&self, new: &Policy, old: Option<&Policy>) {
        if let Some(old) = old {
            let _ = self
                .info
                .remove_label_values(&[short(&old.hash), self.source_label()]);
        }
        self.info
            .with_label_values(&[short(&new.hash), self.source_label()])
            .set(1);
        self.rules.set(new.rules().len() as i64);
    }
}

impl PolicyStore {
    pub fn new(cfg: &PolicyConfig, registry: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_policy_reloads_total",
                "Policy file changes seen, by result (success: swapped in; failure: rejected, the running policy kept)",
            ),
            &["result"],
        )?;
        let info = IntGaugeVec::new(
            Opts::new(
                "mcp_sentinel_policy_info",
                "The running policy: 1 for the SHA-256 (first 16 hex digits) of its source",
            ),
            &["hash", "source"],
        )?;
        let rules = IntGauge::new(
            "mcp_sentinel_policy_rules",
            "Rules in the running policy, the built-in rule included",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(info.clone()))?;
        registry.register(Box::new(rules.clone()))?;
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        let (path, interval) = match &cfg.source {
            PolicySource::Inline => (None, None),
            PolicySource::File {
                path,
                reload_interval,
            } => (Some(path.clone()), Some(*reload_interval)),
        };
        // The running policy was compiled from the file's text when the config was read; the
        // file holds it still when its hash says so (else the first poll reads what changed).
        let loaded_from = match &path {
            None => Some(Vec::new()),
            Some(p) => std::fs::read(p)
                .ok()
                .filter(|text| hash_hex(text) == cfg.initial.hash)
                .map(|text| vec![text]),
        };
        let source = PolicyFile {
            path: path.clone(),
            reloads,
            info,
            rules,
        };
        source.publish(&cfg.initial, None);
        let files = path.into_iter().collect();
        let current = Reloading::new(source, files, cfg.initial.clone(), loaded_from.as_deref())
            .with_settle(SETTLE);
        Ok(Arc::new(Self {
            current: Arc::new(current),
            interval,
        }))
    }

    /// The policy to decide a request with.
    pub fn current(&self) -> Arc<Policy> {
        self.current.current()
    }

    /// Re-reads the policy file; `Ok(true)` when a new policy is in use. An unreadable or
    /// invalid file leaves the running policy in place. Blocking: call it off the runtime.
    pub fn reload_if_changed(&self) -> Result<bool, ReloadError> {
        self.current.reload_if_changed()
    }

    /// Polls the policy file until `stop`, when the policy comes from one.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) -> Option<JoinHandle<()>> {
        Some(self.current.spawn(self.interval?, stop))
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}
