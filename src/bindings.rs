//! Session and task binding (session hijacking, MCP security best practices): each legacy
//! `Mcp-Session-Id` belongs to the principal whose `initialize` created it, each 2025-11-25 task
//! id to the principal whose request created it. Anyone else presenting the id gets 404.
//!
//! Memory stays bounded under churn: a binding goes when its session is deleted, when the
//! upstream answers 404 for it, after `idle_ttl` without use, and, when `max_bindings` is
//! reached, the least recently used goes first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::identity::Principal;

/// Who owns an id: the creator's namespaced identity ([`Principal::identity`]), so the same
/// subject from another issuer or another authenticator is someone else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(Box<str>);

impl Owner {
    pub fn of(p: &Principal) -> Self {
        Self(p.identity().into())
    }
}

/// What a presented id is to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Created by this caller.
    Own,
    /// Created by another principal: a hijack attempt.
    Foreign,
    /// Not known (expired, deleted, or from before a restart).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Session,
    Task,
}

struct Entry {
    owner: Owner,
    last_used: Instant,
}

pub struct Bindings {
    map: Mutex<HashMap<(Kind, Box<str>), Entry>>,
    idle_ttl: Duration,
    max: usize,
}

impl Bindings {
    pub fn new(idle_ttl: Duration, max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            idle_ttl,
            max: max.max(1),
        }
    }

    /// Records that `owner` created `id`.
    pub fn bind(&self, kind: Kind, id: &str, owner: Owner) {
        let now = Instant::now();
        let mut map = self.map.lock().expect("not poisoned");
        if map.len() >= self.max && !map.contains_key(&(kind, id.into())) {
            map.retain(|_, e| now.duration_since(e.last_used) < self.idle_ttl);
            if map.len() >= self.max {
                // Evict the least recently used sixteenth at once, so a full table costs one
                // scan per many binds rather than one per bind.
                let mut ages: Vec<Instant> = map.values().map(|e| e.last_used).collect();
                let n = (self.max / 16).max(1).min(ages.len() - 1);
                let (_, cutoff, _) = ages.select_nth_unstable(n);
                let cutoff = *cutoff;
                map.retain(|_, e| e.last_used > cutoff);
            }
        }
        map.insert(
            (kind, id.into()),
            Entry {
                owner,
                last_used: now,
            },
        );
    }

    /// Whose `id` is, from `owner`'s side; an own binding is refreshed.
    pub fn check(&self, kind: Kind, id: &str, owner: &Owner) -> Binding {
        let now = Instant::now();
        let mut map = self.map.lock().expect("not poisoned");
        let key = (kind, Box::<str>::from(id));
        let Some(e) = map.get_mut(&key) else {
            return Binding::Unknown;
        };
        if now.duration_since(e.last_used) >= self.idle_ttl {
            map.remove(&key);
            return Binding::Unknown;
        }
        if e.owner == *owner {
            e.last_used = now;
            Binding::Own
        } else {
            Binding::Foreign
        }
    }

    pub fn remove(&self, kind: Kind, id: &str) {
        self.map
            .lock()
            .expect("not poisoned")
            .remove(&(kind, Box::<str>::from(id)));
    }

    /// Drops every binding idle for `idle_ttl`; run periodically.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut map = self.map.lock().expect("not poisoned");
        map.retain(|_, e| now.duration_since(e.last_used) < self.idle_ttl);
        map.len()
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AuthMethod;

    fn owner(s: &str) -> Owner {
        Owner::of(&Principal::new(s, AuthMethod::Jwt))
    }

    #[test]
    fn own_foreign_unknown() {
        let b = Bindings::new(Duration::from_secs(60), 10);
        b.bind(Kind::Session, "s1", owner("alice"));
        assert_eq!(b.check(Kind::Session, "s1", &owner("alice")), Binding::Own);
        assert_eq!(
            b.check(Kind::Session, "s1", &owner("bob")),
            Binding::Foreign
        );
        assert_eq!(b.check(Kind::Task, "s1", &owner("alice")), Binding::Unknown);
        // The same subject proven another way is another principal.
        let other = Owner::of(&Principal::new("alice", AuthMethod::ApiKey));
        assert_eq!(b.check(Kind::Session, "s1", &other), Binding::Foreign);
        b.remove(Kind::Session, "s1");
        assert_eq!(
            b.check(Kind::Session, "s1", &owner("alice")),
            Binding::Unknown
        );
    }

    #[test]
    fn issuers_and_methods_own_separately() {
        let jwt = |sub: &str, iss: &str| {
            let mut p = Principal::new(sub, AuthMethod::Jwt);
            p.issuer = Some(iss.to_string());
            Owner::of(&p)
        };
        let sa = "system:serviceaccount:ns:sa";
        let owners = [
            ("alice of issuer a", jwt("alice", "https://a.example")),
            ("alice of issuer b", jwt("alice", "https://b.example")),
            ("alice with no issuer", owner("alice")),
            (
                "alice's API key",
                Owner::of(&Principal::new("alice", AuthMethod::ApiKey)),
            ),
            (
                "the service account",
                Owner::of(&Principal::new(sa, AuthMethod::Kubernetes)),
            ),
            (
                "an API key named like it",
                Owner::of(&Principal::new(sa, AuthMethod::ApiKey)),
            ),
            ("a JWT named like it", jwt(sa, "https://a.example")),
            (
                "a certificate named like it",
                Owner::of(&Principal::new(sa, AuthMethod::Mtls)),
            ),
        ];
        let b = Bindings::new(Duration::from_secs(60), 100);
        for (i, (_, o)) in owners.iter().enumerate() {
            b.bind(Kind::Session, &format!("s{i}"), o.clone());
        }
        for (i, (name, _)) in owners.iter().enumerate() {
            for (j, (_, o)) in owners.iter().enumerate() {
                let want = if i == j {
                    Binding::Own
                } else {
                    Binding::Foreign
                };
                assert_eq!(
                    b.check(Kind::Session, &format!("s{i}"), o),
                    want,
                    "{name} / {j}"
                );
            }
        }
    }

    #[test]
    fn bounded_under_churn() {
        let b = Bindings::new(Duration::from_secs(60), 100);
        for i in 0..10_000 {
            b.bind(Kind::Session, &format!("s{i}"), owner("a"));
            assert!(b.len() <= 100);
        }
        // The newest survive.
        assert_eq!(b.check(Kind::Session, "s9999", &owner("a")), Binding::Own);
        assert_eq!(b.check(Kind::Session, "s0", &owner("a")), Binding::Unknown);
    }

    #[test]
    fn idle_bindings_expire() {
        let b = Bindings::new(Duration::from_millis(30), 100);
        b.bind(Kind::Task, "t", owner("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.sweep(), 0);
        b.bind(Kind::Task, "t2", owner("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.check(Kind::Task, "t2", &owner("a")), Binding::Unknown);
    }
}
