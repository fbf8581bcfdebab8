//! The verified-token cache: the hot path is a SHA-256 of the token and a read-locked map
//! lookup. Entries are served until the token's `exp`, and never after a key rotation removed a
//! key of the issuer's set they may have been verified with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::identity::Principal;

const CACHE_SHARDS: usize = 16;

/// A verified token, cached.
pub(super) struct Entry {
    pub principal: Principal,
    /// The token's `exp`: never served at or after it.
    pub exp: f64,
    pub issuer: usize,
    /// Generation of the issuer's key set the token was verified with.
    pub generation: u64,
}

/// Verified tokens by SHA-256 of the token: sharded read-write-locked maps, bounded in total
/// (`size / shards` per shard). When a shard is full, its expired and invalidated entries go
/// first, else an arbitrary one.
pub(super) struct Cache {
    shards: Vec<RwLock<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
    /// Per issuer: entries verified with an older key set generation are stale (a key they
    /// may have used was removed). Checked on every hit, which closes the race between a
    /// rotation and a verification that was already under way.
    floors: Vec<AtomicU64>,
}

impl Cache {
    pub(super) fn new(size: usize, issuers: usize) -> Self {
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

    pub(super) fn get(&self, key: &[u8; 32], now: f64) -> Option<Principal> {
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

    pub(super) fn insert(&self, key: [u8; 32], entry: Entry, now: f64) {
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
    pub(super) fn invalidate(&self, issuer: usize, generation: u64) {
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
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}
