//! The running policy, swapped atomically when its file changes. Requests take an `Arc` of the
//! policy once and decide everything (the call and its list filtering) against it, so a reload
//! never splits a request between two policies and never waits for one.
//!
//! A mounted ConfigMap changes by Kubernetes swapping a `..data` symlink: the file is polled
//! by content (reading follows the symlinks), not by inotify events that a swap can hide.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Policy;
use super::load::{PolicyConfig, PolicySource, hash_hex};

/// How long a changed policy file must stay the same before it is read as the new policy.
const SETTLE: Duration = Duration::from_millis(50);

pub struct PolicyStore {
    current: RwLock<Arc<Policy>>,
    file: Option<(PathBuf, Duration)>,
    /// The hash of file content that failed to compile, so it is reported once.
    rejected: Mutex<Option<String>>,
    reloads: IntCounterVec,
    info: IntGaugeVec,
    rules: IntGauge,
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
        let file = match &cfg.source {
            PolicySource::Inline => None,
            PolicySource::File {
                path,
                reload_interval,
            } => Some((path.clone(), *reload_interval)),
        };
        let store = Arc::new(Self {
            current: RwLock::new(cfg.initial.clone()),
            file,
            rejected: Mutex::new(None),
            reloads,
            info,
            rules,
        });
        store.publish(&cfg.initial, None);
        Ok(store)
    }

    /// The policy to decide a request with.
    pub fn current(&self) -> Arc<Policy> {
        self.current.read().expect("not poisoned").clone()
    }

    fn source_label(&self) -> &'static str {
        if self.file.is_some() {
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

    /// Re-reads the policy file; `Ok(true)` when a new policy is in use. An unreadable or
    /// invalid file leaves the running policy in place. Blocking: call it off the runtime.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let Some((path, _)) = &self.file else {
            return Ok(false);
        };
        let text =
            std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let hash = hash_hex(&text);
        if hash == self.current().hash {
            return Ok(false);
        }
        // A file written in place (not swapped) may be caught half-written: take it only once
        // it reads the same twice.
        std::thread::sleep(SETTLE);
        let again =
            std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if again != text {
            return Ok(false);
        }
        let text =
            String::from_utf8(text).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        let policy = Arc::new(
            Policy::from_yaml(&text, &path.display().to_string())
                .map_err(|e| e.to_string().trim_end().replace('\n', "; "))?,
        );
        let old = std::mem::replace(
            &mut *self.current.write().expect("not poisoned"),
            policy.clone(),
        );
        self.publish(&policy, Some(&old));
        Ok(true)
    }

    /// Polls the policy file until `stop`, when the policy comes from one.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) -> Option<JoinHandle<()>> {
        let (path, interval) = self.file.clone()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (this, path) = (this.clone(), path.clone());
                // File reads and compiling stay off the threads that serve traffic.
                let _ = tokio::task::spawn_blocking(move || this.poll(&path)).await;
            }
        }))
    }

    fn poll(&self, path: &std::path::Path) {
        match self.reload_if_changed() {
            Ok(true) => {
                *self.rejected.lock().expect("not poisoned") = None;
                self.reloads.with_label_values(&["success"]).inc();
                let p = self.current();
                tracing::info!(file = %path.display(), hash = short(&p.hash), rules = p.rules().len(), "policy reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                let key = hash_hex(e.as_bytes());
                let mut rejected = self.rejected.lock().expect("not poisoned");
                if rejected.as_deref() != Some(key.as_str()) {
                    self.reloads.with_label_values(&["failure"]).inc();
                    tracing::error!(error = %e, "policy file changed but is invalid; keeping the running policy");
                    *rejected = Some(key);
                }
            }
        }
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}
