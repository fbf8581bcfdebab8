//! Readiness: a set of named blockers (the upstream not answering, keys not fetched yet, …),
//! ready when the set is empty. Kept apart from the admin HTTP server that reports it, so the
//! parts that block and clear it need not know that server. Floor 0.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus::IntGauge;

/// Readiness as a set of named blockers: ready when the set is empty.
pub struct Readiness {
    blockers: Mutex<BTreeSet<&'static str>>,
    /// 1 while ready (`mcp_sentinel_ready`).
    gauge: IntGauge,
}

impl Readiness {
    pub fn new(gauge: IntGauge, initial: &[&'static str]) -> Self {
        let r = Self {
            blockers: Mutex::new(initial.iter().copied().collect()),
            gauge,
        };
        r.publish(&r.blockers.lock().expect("not poisoned"));
        r
    }

    pub fn block(&self, name: &'static str) {
        let mut b = self.blockers.lock().expect("not poisoned");
        if b.insert(name) {
            tracing::info!(blocker = name, "not ready");
        }
        self.publish(&b);
    }

    pub fn clear(&self, name: &'static str) {
        let mut b = self.blockers.lock().expect("not poisoned");
        if b.remove(name) {
            tracing::info!(blocker = name, "blocker cleared");
        }
        self.publish(&b);
    }

    pub fn blockers(&self) -> Vec<&'static str> {
        self.blockers
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .collect()
    }

    fn publish(&self, b: &BTreeSet<&'static str>) {
        self.gauge.set(i64::from(b.is_empty()));
    }
}
