//! Pins learned on first sight, shared by the replicas of one server through a Redis hash: the
//! first replica to see a definition decides its pin for all (HSETNX), and every replica reads
//! the hash at start and every `sync_interval`. Redis being down never holds a list or a call:
//! learning goes on locally, is counted, and is written when Redis is back.

use std::collections::HashMap;
use std::time::Duration;

use prometheus::IntCounter;
use redis::AsyncCommands;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fingerprint::{Definition, Kind};

/// One round trip's longest wait.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Learned pins waiting to be written; beyond it, the next sync writes them.
const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct ShareConfig {
    pub url: String,
    pub key: String,
    pub sync_interval: Duration,
}

/// A hash field: the kind and the name.
pub fn field(kind: Kind, name: &str) -> String {
    format!("{}:{name}", kind.as_str())
}

fn parse_field(field: &str) -> Option<(Kind, String)> {
    let (kind, name) = field.split_once(':')?;
    let kind = Kind::PINNED.into_iter().find(|k| k.as_str() == kind)?;
    Some((kind, name.to_string()))
}

/// A learned definition as the hash holds it.
fn value(def: &Definition) -> String {
    json!({"fingerprint": def.fingerprint, "definition": def.fields}).to_string()
}

fn definition(kind: Kind, name: &str, text: &str) -> Option<Definition> {
    let v: Value = serde_json::from_str(text).ok()?;
    let fields: Map<String, Value> = v.get("definition")?.as_object()?.clone();
    let def = Definition::of(kind, &Value::Object(fields))?;
    // A value that does not hash to its fingerprint, or names another definition, is not
    // trusted.
    (def.name == name && v.get("fingerprint")?.as_str()? == def.fingerprint).then_some(def)
}

/// The writer's end, held by the integrity state.
pub struct Share {
    tx: mpsc::Sender<Definition>,
}

impl Share {
    /// Queues a learned definition for the hash.
    pub fn learned(&self, def: &Definition) {
        let _ = self.tx.try_send(def.clone());
    }
}

/// The task's end: a Redis connection, made again after an error.
pub struct Syncer {
    cfg: ShareConfig,
    client: redis::Client,
    conn: Option<redis::aio::MultiplexedConnection>,
    rx: mpsc::Receiver<Definition>,
    errors: IntCounter,
    /// Learned here and not yet written.
    unwritten: HashMap<(Kind, String), Definition>,
}

pub fn channel(cfg: &ShareConfig, errors: IntCounter) -> Result<(Share, Syncer), String> {
    let client = redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis: {e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    Ok((
        Share { tx },
        Syncer {
            cfg: cfg.clone(),
            client,
            conn: None,
            rx,
            errors,
            unwritten: HashMap::new(),
        },
    ))
}

impl Syncer {
    async fn connection(&mut self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
        self.conn = Some(c.clone());
        Ok(c)
    }

    fn failed(&mut self, what: &str, e: &redis::RedisError) {
        self.conn = None;
        self.errors.inc();
        tracing::warn!(error = %e, key = %self.cfg.key, "integrity: redis {what} failed; pins stay local until it answers");
    }

    /// Every pin the hash holds.
    pub async fn read_all(&mut self) -> Vec<Definition> {
        let key = self.cfg.key.clone();
        let all: redis::RedisResult<HashMap<String, String>> = async {
            let mut c = self.connection().await?;
            tokio::time::timeout(TIMEOUT, c.hgetall(&key))
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))?
        }
        .await;
        match all {
            Ok(map) => map
                .iter()
                .filter_map(|(f, v)| {
                    let (kind, name) = parse_field(f)?;
                    definition(kind, &name, v)
                })
                .collect(),
            Err(e) => {
                self.failed("read", &e);
                Vec::new()
            }
        }
    }

    /// Writes a learned pin unless another replica's is there first; the pin in force.
    async fn write(&mut self, def: Definition) -> Option<Definition> {
        let key = self.cfg.key.clone();
        let f = field(def.kind, &def.name);
        let result: redis::RedisResult<Option<String>> = async {
            let mut c = self.connection().await?;
            let set: bool = tokio::time::timeout(TIMEOUT, c.hset_nx(&key, &f, value(&def)))
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))??;
            if set {
                return Ok(None);
            }
            tokio::time::timeout(TIMEOUT, c.hget(&key, &f))
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))?
        }
        .await;
        match result {
            Ok(None) => None,
            Ok(Some(theirs)) => definition(def.kind, &def.name, &theirs),
            Err(e) => {
                self.failed("write", &e);
                self.unwritten.insert((def.kind, def.name.clone()), def);
                None
            }
        }
    }

    /// Writes what is learned here, reads what others learned, until `stop`; `adopt` takes each
    /// pin another replica decided.
    pub async fn run(mut self, stop: CancellationToken, adopt: impl Fn(Definition) + Send) {
        let mut tick = tokio::time::interval(self.cfg.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                learned = self.rx.recv() => {
                    let Some(def) = learned else { return };
                    if let Some(theirs) = self.write(def).await {
                        adopt(theirs);
                    }
                }
                _ = tick.tick() => {
                    for def in std::mem::take(&mut self.unwritten).into_values() {
                        if let Some(theirs) = self.write(def).await {
                            adopt(theirs);
                        }
                    }
                    for def in self.read_all().await {
                        adopt(def);
                    }
                }
            }
        }
    }
}
