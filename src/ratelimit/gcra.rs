//! The generic cell rate algorithm: one number per key, the theoretical arrival time (TAT) of
//! the next request at the sustained rate. A request is admitted when admitting it keeps the
//! TAT within `burst` emission intervals of now. Exact, with no window edges. All times are
//! whole microseconds; the Redis script (`redis.rs`) does the same arithmetic.

use crate::config::ratelimit::{RateConfig, gcra_terms};

/// A limit in GCRA terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// The emission interval T: one request per `interval` µs at the sustained rate.
    pub interval: u64,
    /// The delay tolerance τ = (burst − 1) · T: how far ahead of now the TAT may run.
    pub tolerance: u64,
}

/// What one key's check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The TAT to store when the whole request is admitted.
    pub tat: u64,
    /// µs until this request would be admitted (0 when allowed).
    pub retry_after: u64,
    /// Requests that could still be admitted right now, after this one.
    pub remaining: u64,
    /// µs until the full burst is available again.
    pub reset: u64,
}

impl Gcra {
    /// `count` requests per `period_us`, up to `burst` back to back. `None` when the interval
    /// is below a microsecond or a number overflows.
    pub fn new(count: u64, period_us: u64, burst: u64) -> Option<Self> {
        gcra_terms(count, period_us, burst).map(Self::from_terms)
    }

    /// A configured rate; `None` when it cannot be enforced (the config reader refuses those).
    pub fn from_rate(rate: &RateConfig) -> Option<Self> {
        rate.gcra_terms().map(Self::from_terms)
    }

    fn from_terms((interval, tolerance): (u64, u64)) -> Self {
        Self {
            interval,
            tolerance,
        }
    }

    /// Decides a request of `cost` units at `now` against the stored `tat` (0 for a key never
    /// seen, or forgotten because it went idle).
    pub fn check(&self, tat: u64, now: u64, cost: u64) -> Verdict {
        let tat = tat.max(now);
        let new_tat = tat.saturating_add(cost.saturating_mul(self.interval));
        let limit = now.saturating_add(self.tolerance + self.interval);
        if new_tat <= limit {
            Verdict {
                allowed: true,
                tat: new_tat,
                retry_after: 0,
                remaining: (limit - new_tat) / self.interval,
                reset: new_tat - now,
            }
        } else {
            Verdict {
                allowed: false,
                tat,
                retry_after: new_tat - limit,
                remaining: (limit.saturating_sub(tat)) / self.interval,
                reset: tat - now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn construction() {
        assert_eq!(
            Gcra::new(100, 60 * SEC, 20),
            Some(Gcra {
                interval: 600_000,
                tolerance: 19 * 600_000
            })
        );
        assert_eq!(Gcra::new(0, SEC, 1), None);
        assert_eq!(Gcra::new(1, SEC, 0), None);
        // More than a million a second is below the microsecond resolution.
        assert_eq!(Gcra::new(2_000_000, SEC, 1), None);
        assert_eq!(Gcra::new(1, u64::MAX / 2, u64::MAX / 2), None);
    }

    #[test]
    fn a_fresh_key_admits_the_burst_then_one_per_interval() {
        let g = Gcra::new(1, SEC, 3).unwrap();
        let mut tat = 0;
        let now = 10 * SEC;
        for want_remaining in [2, 1, 0] {
            let v = g.check(tat, now, 1);
            assert!(v.allowed);
            assert_eq!(v.remaining, want_remaining);
            tat = v.tat;
        }
        let v = g.check(tat, now, 1);
        assert_eq!(
            v,
            Verdict {
                allowed: false,
                tat,
                retry_after: SEC,
                remaining: 0,
                reset: 3 * SEC
            }
        );
        // One interval later exactly one more fits.
        let v = g.check(tat, now + SEC, 1);
        assert!(v.allowed && v.remaining == 0);
        assert!(!g.check(v.tat, now + SEC, 1).allowed);
    }

    #[test]
    fn costs_above_one_and_the_strict_edge() {
        let g = Gcra::new(10, SEC, 5).unwrap();
        let v = g.check(0, 0, 5);
        assert!(v.allowed && v.remaining == 0 && v.reset == 500_000);
        // A cost larger than the burst never fits.
        assert!(!g.check(0, 0, 6).allowed);
        // Just before an interval has passed: still refused, with the exact wait.
        let v = g.check(500_000, 99_999, 1);
        assert!(!v.allowed);
        assert_eq!(v.retry_after, 1);
        assert!(g.check(500_000, 100_000, 1).allowed);
    }
}
