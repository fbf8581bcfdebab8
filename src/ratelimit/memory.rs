//! The in-process GCRA store: a TAT per key in sharded maps. Memory stays bounded: a key whose
//! TAT has passed is idle (its budget is full again) and is dropped by sweeps; a full shard
//! first drops its idle keys, then the key closest to idle.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::Cell;
use super::gcra::Verdict;

const SHARDS: usize = 16;

pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<String, u64>>>,
    hasher: RandomState,
    per_shard: usize,
    /// Times are µs since this instant (tokio's clock, so tests can pause it).
    epoch: Instant,
}

impl MemoryStore {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    /// Now, in µs since the store was made; never 0, so "never seen" (0) is always idle.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    fn shard_of(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % SHARDS
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, HashMap<String, u64>> {
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks every cell at once: all are admitted (and recorded), or none is.
    pub fn check(&self, cells: &[Cell]) -> Vec<Verdict> {
        let now = self.now();
        if let [cell] = cells {
            // The common case: one shard, no bookkeeping.
            let mut shard = self.lock(self.shard_of(&cell.key));
            let tat = shard.get(cell.key.as_str()).copied().unwrap_or(0);
            let v = cell.gcra.check(tat, now, cell.cost);
            if v.allowed {
                self.store(&mut shard, &cell.key, v.tat, now);
            }
            return vec![v];
        }
        // Several keys: lock their shards in index order (no deadlock), decide, then commit.
        let idx: Vec<usize> = cells.iter().map(|c| self.shard_of(&c.key)).collect();
        let mut order = idx.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<_> = order.iter().map(|&i| self.lock(i)).collect();
        let slot = |i: usize| order.binary_search(&i).unwrap_or(0);
        let verdicts: Vec<Verdict> = cells
            .iter()
            .zip(&idx)
            .map(|(c, &i)| {
                let tat = guards[slot(i)].get(c.key.as_str()).copied().unwrap_or(0);
                c.gcra.check(tat, now, c.cost)
            })
            .collect();
        if verdicts.iter().all(|v| v.allowed) {
            for ((c, &i), v) in cells.iter().zip(&idx).zip(&verdicts) {
                self.store(&mut guards[slot(i)], &c.key, v.tat, now);
            }
        }
        verdicts
    }

    fn store(&self, shard: &mut HashMap<String, u64>, key: &str, tat: u64, now: u64) {
        if let Some(t) = shard.get_mut(key) {
            *t = tat;
            return;
        }
        if shard.len() >= self.per_shard {
            shard.retain(|_, t| *t > now);
            if shard.len() >= self.per_shard
                && let Some(oldest) = shard
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
            {
                shard.remove(&oldest);
            }
        }
        shard.insert(key.to_string(), tat);
    }

    /// Drops idle keys; returns how many keys are left.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        (0..SHARDS)
            .map(|i| {
                let mut s = self.lock(i);
                s.retain(|_, t| *t > now);
                s.len()
            })
            .sum()
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::gcra::Gcra;
    use super::*;

    fn cell(key: &str, count: u64, period: Duration, burst: u64) -> Cell {
        Cell {
            key: key.into(),
            gcra: Gcra::new(count, period.as_micros() as u64, burst).unwrap(),
            cost: 1,
        }
    }

    /// Admits (`+`) or refuses (`-`) one request per character, `step` apart.
    fn run(store: &MemoryStore, c: &Cell, n: usize) -> String {
        (0..n)
            .map(|_| {
                if store.check(std::slice::from_ref(c))[0].allowed {
                    '+'
                } else {
                    '-'
                }
            })
            .collect()
    }

    async fn sequence(c: &Cell, step: Duration, n: usize) -> String {
        let store = MemoryStore::new(100);
        let mut out = String::new();
        for _ in 0..n {
            out.push_str(&run(&store, c, 1));
            tokio::time::advance(step).await;
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn exact_sequences_for_rates_and_bursts() {
        let sec = Duration::from_secs(1);
        // 1/second, no burst: every other request at 2 per second.
        let c = cell("a", 1, sec, 1);
        assert_eq!(sequence(&c, sec / 2, 8).await, "+-+-+-+-");
        // 10/second, burst 3, 20 per second offered: the burst plus what 200 ms refill, then
        // one every 100 ms.
        let c = cell("a", 10, sec, 3);
        assert_eq!(
            sequence(&c, Duration::from_millis(50), 12).await,
            "+++++-+-+-+-"
        );
        // 60/minute, burst 5, all at once: 5 then nothing until a second has passed.
        let store = MemoryStore::new(100);
        let c = cell("a", 60, Duration::from_secs(60), 5);
        assert_eq!(run(&store, &c, 8), "+++++---");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(run(&store, &c, 1), "-");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(run(&store, &c, 2), "+-");
        // After 5 idle seconds the whole burst is back.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(run(&store, &c, 6), "+++++-");
        // 100/minute (one per 600 ms), burst 2.
        let c = cell("a", 100, Duration::from_secs(60), 2);
        assert_eq!(
            sequence(&c, Duration::from_millis(200), 10).await,
            "++-+--+--+"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_remaining_and_reset() {
        let store = MemoryStore::new(100);
        let c = cell("a", 2, Duration::from_secs(1), 2);
        let v = store.check(std::slice::from_ref(&c))[0];
        assert_eq!((v.allowed, v.remaining, v.reset), (true, 1, 500_000));
        store.check(std::slice::from_ref(&c));
        tokio::time::advance(Duration::from_millis(100)).await;
        let v = store.check(std::slice::from_ref(&c))[0];
        assert!(!v.allowed);
        assert_eq!((v.retry_after, v.remaining, v.reset), (400_000, 0, 900_000));
    }

    #[tokio::test(start_paused = true)]
    async fn several_cells_are_all_or_nothing() {
        let store = MemoryStore::new(100);
        let wide = cell("wide", 100, Duration::from_secs(1), 100);
        let narrow = cell("narrow", 1, Duration::from_secs(1), 2);
        let both = [wide.clone(), narrow.clone()];
        assert!(store.check(&both).iter().all(|v| v.allowed));
        assert!(store.check(&both).iter().all(|v| v.allowed));
        let v = store.check(&both);
        assert!(v[0].allowed && !v[1].allowed);
        // The refused request took nothing from the wide budget: this is its third request.
        assert_eq!(store.check(std::slice::from_ref(&wide))[0].remaining, 97);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_by_dropping_idle_keys_first() {
        let store = MemoryStore::new(SHARDS * 2);
        let slow = |k: &str| cell(k, 1, Duration::from_secs(60), 1);
        for i in 0..1000 {
            store.check(&[slow(&format!("k{i}"))]);
            assert!(store.len() <= SHARDS * 2);
        }
        // Idle keys go in a sweep; a busy one stays.
        tokio::time::advance(Duration::from_secs(61)).await;
        store.check(&[cell("busy", 1, Duration::from_secs(3600), 1)]);
        assert_eq!(store.sweep(), 1);
        assert!(!store.check(&[cell("busy", 1, Duration::from_secs(3600), 1)])[0].allowed);
    }
}
