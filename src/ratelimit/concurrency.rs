//! In-flight `tools/call` counts per key. A permit is taken before the call is forwarded and
//! travels with the response body: it is returned when the body ends or is dropped (the
//! client went away), never earlier. Only keys with calls in flight are kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Default)]
pub struct Concurrency {
    in_flight: Mutex<HashMap<String, u32>>,
}

/// Held while calls are in flight; returns them when dropped.
pub struct Permit {
    owner: Arc<Concurrency>,
    key: String,
    n: u32,
}

/// Every permit a request holds.
#[derive(Default)]
pub struct Permits(Vec<Permit>);

impl Permits {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Concurrency {
    /// Takes `n` slots of `key` if that keeps it within `limit`.
    pub fn acquire(self: &Arc<Self>, key: String, n: u32, limit: u32) -> Option<Permit> {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = map.get(key.as_str()).copied().unwrap_or(0);
        if now.saturating_add(n) > limit {
            return None;
        }
        map.insert(key.clone(), now + n);
        Some(Permit {
            owner: self.clone(),
            key,
            n,
        })
    }

    /// Calls in flight under `key`.
    pub fn in_flight(&self, key: &str) -> u32 {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    pub fn keys(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Permits {
    pub fn push(&mut self, p: Permit) {
        self.0.push(p);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get_mut(self.key.as_str()) {
            *c = c.saturating_sub(self.n);
            if *c == 0 {
                map.remove(self.key.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_and_return() {
        let c = Arc::new(Concurrency::default());
        let a = c.acquire("k".into(), 1, 2).unwrap();
        let b = c.acquire("k".into(), 1, 2).unwrap();
        assert!(c.acquire("k".into(), 1, 2).is_none());
        assert!(c.acquire("other".into(), 2, 2).is_some());
        assert_eq!(c.in_flight("k"), 2);
        drop(a);
        let batch = c.acquire("k".into(), 2, 2);
        assert!(batch.is_none(), "two more do not fit beside one");
        drop(b);
        let mut all = Permits::default();
        all.push(c.acquire("k".into(), 2, 2).unwrap());
        assert_eq!(c.in_flight("k"), 2);
        drop(all);
        assert_eq!(c.keys(), 0, "keys without calls in flight are forgotten");
    }
}
