//! API keys: a file (a mounted Secret) of SHA-256 hashes, each mapped to a subject and groups.
//! A presented key is hashed and compared against every entry in constant time; the file is
//! polled and swapped in when its content changes, so revoking a key is editing the Secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::identity::{AuthFailure, AuthMethod, Principal};
use crate::reload::{Reloading, Source};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    sha256: String,
    subject: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

struct Key {
    hash: [u8; 32],
    principal: Arc<Principal>,
}

/// The loaded key set, replaced when the file changes.
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Reloading<KeyFileSource>>,
}

/// Why a key file cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {why}")]
    Invalid { file: String, why: String },
    #[error("{0}")]
    Metrics(#[from] prometheus::Error),
}

/// The key file, as the reloader reads it.
struct KeyFileSource {
    file: PathBuf,
    reloads: IntCounterVec,
    count: IntGauge,
}

impl Source for KeyFileSource {
    type Value = Vec<Key>;
    type Error = KeyFileError;
    const WHAT: &'static str = "API key";

    fn read_error(&self, path: &Path, source: std::io::Error) -> KeyFileError {
        KeyFileError::Read {
            file: path.display().to_string(),
            source,
        }
    }

    fn build(&self, contents: &[Vec<u8>]) -> Result<Vec<Key>, KeyFileError> {
        parse(&contents[0]).map_err(|why| KeyFileError::Invalid {
            file: self.file.display().to_string(),
            why,
        })
    }

    fn swapped(&self, _: &Vec<Key>, new: &Vec<Key>) {
        self.count.set(new.len() as i64);
    }

    fn reloaded(&self, _: &Vec<Key>) {
        self.reloads.with_label_values(&["success"]).inc();
        tracing::info!(file = %self.file.display(), keys = self.count.get(), "API keys reloaded");
    }

    fn rejected(&self, e: &KeyFileError) {
        self.reloads.with_label_values(&["failure"]).inc();
        tracing::warn!(error = %e, "API key file changed but cannot be used; keeping the loaded keys");
    }
}

impl ApiKeys {
    /// Loads the file once; an error here is a startup error.
    pub fn load(file: &Path, registry: &Registry) -> Result<Self, KeyFileError> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_api_keys_reloads_total",
                "API key file reloads after it changed, by result",
            ),
            &["result"],
        )?;
        // Both series from the start at 0: an alert on increase() sees the first failure.
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        let count = IntGauge::new("mcp_sentinel_api_keys", "API keys loaded")?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(count.clone()))?;
        let content = match std::fs::read(file) {
            Ok(c) => c,
            // An optional Secret not created yet: no key works until it appears.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %file.display(), "API key file not found: no API key is accepted until it appears");
                Vec::new()
            }
            Err(source) => {
                return Err(KeyFileError::Read {
                    file: file.display().to_string(),
                    source,
                });
            }
        };
        let keys = parse(&content).map_err(|why| KeyFileError::Invalid {
            file: file.display().to_string(),
            why,
        })?;
        count.set(keys.len() as i64);
        let source = KeyFileSource {
            file: file.to_path_buf(),
            reloads,
            count,
        };
        let inner = Reloading::new(
            source,
            vec![file.to_path_buf()],
            Arc::new(keys),
            Some(&[content]),
        );
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The principal of `key`, compared against every entry without an early exit.
    pub fn verify(&self, key: &str) -> Result<Arc<Principal>, AuthFailure> {
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let keys = self.inner.current();
        let mut found = None;
        for k in keys.iter() {
            if bool::from(k.hash.ct_eq(digest.as_ref())) {
                found = Some(k.principal.clone());
            }
        }
        found.ok_or(AuthFailure::UnknownCredential)
    }

    /// Re-reads the file; `Ok(true)` when a new key set is in use. On error the old one stays.
    pub fn reload_if_changed(&self) -> Result<bool, KeyFileError> {
        self.inner.reload_if_changed()
    }

    /// Polls the file every `interval` until `stop`; a bad file is logged once and the
    /// running keys kept.
    pub fn spawn_reloader(&self, interval: Duration, stop: CancellationToken) -> JoinHandle<()> {
        self.inner.spawn(interval, stop)
    }
}

fn parse(content: &[u8]) -> Result<Vec<Key>, String> {
    if content.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let file: KeyFile = serde_yaml_ng::from_slice(content).map_err(|e| e.to_string())?;
    file.keys
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let hash = decode_hex(&e.sha256)
                .ok_or_else(|| format!("keys[{i}].sha256: must be 64 hex digits"))?;
            if e.subject.is_empty() {
                return Err(format!("keys[{i}].subject: must not be empty"));
            }
            let mut p = Principal::new(e.subject, AuthMethod::ApiKey);
            p.groups = e.groups;
            p.scopes = e.scopes;
            Ok(Key {
                hash,
                principal: Arc::new(p),
            })
        })
        .collect()
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(key: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn write(path: &Path, entries: &[(&str, &str, &[&str])]) {
        let mut text = String::from("keys:\n");
        for (key, subject, groups) in entries {
            text.push_str(&format!(
                "  - sha256: {}\n    subject: {subject}\n    groups: [{}]\n",
                sha(key),
                groups.join(", ")
            ));
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn right_key_wrong_key_and_revocation() {
        let dir = tempdir();
        let path = dir.join("keys.yaml");
        write(
            &path,
            &[("k-alice", "alice", &["dev"]), ("k-bob", "bob", &[])],
        );
        let keys = ApiKeys::load(&path, &Registry::new()).unwrap();
        let alice = keys.verify("k-alice").unwrap();
        assert_eq!(alice.subject, "alice");
        assert_eq!(alice.groups, ["dev"]);
        assert_eq!(alice.method, AuthMethod::ApiKey);
        assert_eq!(keys.verify("k-bob").unwrap().subject, "bob");
        assert_eq!(
            keys.verify("k-mallory").unwrap_err(),
            AuthFailure::UnknownCredential
        );
        assert!(!keys.reload_if_changed().unwrap());

        write(&path, &[("k-bob", "bob", &[])]);
        assert!(keys.reload_if_changed().unwrap());
        assert_eq!(
            keys.verify("k-alice").unwrap_err(),
            AuthFailure::UnknownCredential
        );
        assert_eq!(keys.verify("k-bob").unwrap().subject, "bob");

        // A broken edit keeps the running keys.
        std::fs::write(&path, "keys: [{sha256: nothex, subject: x}]").unwrap();
        assert!(
            keys.reload_if_changed()
                .unwrap_err()
                .to_string()
                .contains("sha256")
        );
        assert_eq!(keys.verify("k-bob").unwrap().subject, "bob");
    }

    #[test]
    fn bad_files_are_refused_at_load() {
        let dir = tempdir();
        let path = dir.join("keys.yaml");
        std::fs::write(&path, "keys:\n  - sha256: abc\n    subject: x\n").unwrap();
        assert!(ApiKeys::load(&path, &Registry::new()).is_err());
        std::fs::write(&path, "keys:\n  - sha: 00\n").unwrap();
        assert!(ApiKeys::load(&path, &Registry::new()).is_err());
        // A Secret that is not there yet: no key works, and it is picked up when it appears.
        let later = dir.join("later.yaml");
        let keys = ApiKeys::load(&later, &Registry::new()).unwrap();
        assert_eq!(
            keys.verify("k").unwrap_err(),
            AuthFailure::UnknownCredential
        );
        write(&later, &[("k", "late", &[])]);
        assert!(keys.reload_if_changed().unwrap());
        assert_eq!(keys.verify("k").unwrap().subject, "late");
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mcp-sentinel-apikeys-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
