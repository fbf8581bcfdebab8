//! Rules as the limiter uses them: which calls of which principals a rule applies to, and the
//! key that names the budget a call draws from.

use crate::config::ratelimit::{KeyPart, MatchConfig, RuleConfig};
use crate::glob::is_match as glob;
use crate::identity::{Principal, push_escaped as escape};
use crate::mcp::{Message, Method, Target};

use super::gcra::Gcra;

pub struct Rule {
    pub name: String,
    matcher: MatchConfig,
    /// Each limit with its policy name (`RateLimit-Policy`) and the rate it was written as.
    pub limits: Vec<Limit>,
    key: Vec<KeyPart>,
    pub concurrency: Option<u32>,
}

pub struct Limit {
    pub gcra: Gcra,
    /// The policy name: the rule's name, with `.N` when the rule has several limits.
    pub policy: String,
    /// The header's quota and window: `q` requests per `w` seconds.
    pub quota: u64,
    pub window: u64,
}

/// One call of a request, as the rules see it.
pub struct Call<'a> {
    pub method: &'a str,
    pub tool: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// The calls a rule can limit: requests (notifications and responses are never limited —
    /// a cancellation must always get through).
    pub fn of(m: &'a Message) -> Option<Self> {
        if m.kind != crate::mcp::Kind::Request {
            return None;
        }
        let tool = match (&m.method, &m.target) {
            (Method::ToolsCall, Target::Tool(name)) => Some(name.as_str()),
            _ => None,
        };
        Some(Self {
            method: m.method_name.as_deref().unwrap_or(""),
            tool,
        })
    }

    pub fn is_tool_call(&self) -> bool {
        self.tool.is_some()
    }
}

impl Rule {
    pub fn new(cfg: &RuleConfig) -> Self {
        let several = cfg.limits.len() > 1;
        let limits = cfg
            .limits
            .iter()
            .enumerate()
            .filter_map(|(i, rc)| {
                let gcra = Gcra::from_rate(rc)?;
                let policy = if several {
                    format!("{}.{}", cfg.name, i + 1)
                } else {
                    cfg.name.clone()
                };
                let (quota, window) = if rc.period.subsec_nanos() == 0 {
                    (rc.count, rc.period.as_secs())
                } else {
                    // Sub-second periods are advertised per second.
                    (
                        (rc.count as f64 / rc.period.as_secs_f64()).max(1.0) as u64,
                        1,
                    )
                };
                Some(Limit {
                    gcra,
                    policy,
                    quota,
                    window,
                })
            })
            .collect();
        Self {
            name: cfg.name.clone(),
            matcher: cfg.matcher.clone(),
            limits,
            key: cfg.key.clone(),
            concurrency: cfg.concurrency,
        }
    }

    /// The principal side of the match, the same for every call of a request.
    pub fn matches_principal(&self, p: &Principal) -> bool {
        let m = &self.matcher;
        (m.subjects.is_empty() || m.subjects.iter().any(|g| glob(g, &p.subject)))
            && (m.issuers.is_empty()
                || p.issuer
                    .as_deref()
                    .is_some_and(|i| m.issuers.iter().any(|g| glob(g, i))))
            && (m.groups.is_empty() || m.groups.iter().any(|g| p.groups.contains(g)))
            && (m.auth_methods.is_empty() || m.auth_methods.contains(&p.method))
            && m.claims.iter().all(|(name, want)| claim_is(p, name, want))
    }

    pub fn matches_call(&self, call: &Call<'_>) -> bool {
        let m = &self.matcher;
        (m.methods.is_empty() || m.methods.iter().any(|g| glob(g, call.method)))
            && (m.tools.is_empty()
                || call
                    .tool
                    .is_some_and(|t| m.tools.iter().any(|g| glob(g, t))))
    }

    /// The budget's name for this call: `rule:part:part`, each part escaped so that no two
    /// different keys can be written the same way. The `subject` part is the caller's whole
    /// namespaced identity (method, issuer, subject), so callers of two issuers or two
    /// authenticators never share a budget.
    pub fn key(&self, p: &Principal, call: &Call<'_>) -> String {
        let mut key = String::with_capacity(self.name.len() + 32);
        key.push_str(&self.name);
        for part in &self.key {
            key.push(':');
            match part {
                KeyPart::Subject => p.write_identity(&mut key),
                KeyPart::Group => self.groups(&mut key, p),
                KeyPart::Tool => escape(&mut key, call.tool.unwrap_or("")),
                KeyPart::Method => escape(&mut key, call.method),
                KeyPart::AuthMethod => key.push_str(p.method.as_str()),
                KeyPart::Claim(name) => match p.claims.get(name) {
                    Some(serde_json::Value::String(s)) => escape(&mut key, s),
                    Some(other) => escape(&mut key, &other.to_string()),
                    None => {}
                },
            }
        }
        key
    }

    /// With `match.groups`, the first of those the principal is in (so the group shares one
    /// budget); otherwise all of the principal's groups, sorted.
    fn groups(&self, key: &mut String, p: &Principal) {
        if let Some(g) = self.matcher.groups.iter().find(|g| p.groups.contains(g)) {
            escape(key, g);
            return;
        }
        let mut all: Vec<&str> = p.groups.iter().map(String::as_str).collect();
        all.sort_unstable();
        for (i, g) in all.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            escape(key, g);
        }
    }
}

fn claim_is(p: &Principal, name: &str, want: &str) -> bool {
    match p.claims.get(name) {
        Some(serde_json::Value::String(s)) => s == want,
        Some(serde_json::Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(want)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ratelimit::RateConfig;
    use crate::identity::AuthMethod;
    use std::time::Duration;

    fn rule(matcher: MatchConfig, key: Vec<KeyPart>) -> Rule {
        Rule::new(&RuleConfig {
            name: "r".into(),
            matcher,
            limits: vec![RateConfig {
                count: 10,
                period: Duration::from_secs(60),
                burst: 10,
            }],
            key,
            concurrency: None,
        })
    }

    fn alice() -> Principal {
        let mut p = Principal::new("system:serviceaccount:ns:alice", AuthMethod::Kubernetes);
        p.groups = vec!["ops".into(), "dev".into()];
        p.claims
            .insert("tenant".into(), serde_json::json!("acme:eu"));
        p.claims
            .insert("roles".into(), serde_json::json!(["reader", "writer"]));
        p
    }

    const CALL: Call<'static> = Call {
        method: "tools/call",
        tool: Some("search"),
    };

    #[test]
    fn principal_matching() {
        let p = alice();
        let m = |f: fn(&mut MatchConfig)| {
            let mut c = MatchConfig::default();
            f(&mut c);
            rule(c, vec![]).matches_principal(&p)
        };
        assert!(m(|_| {}));
        assert!(m(|c| c.subjects = vec!["system:serviceaccount:ns:*".into()]));
        assert!(!m(|c| c.subjects = vec!["bob".into()]));
        // Issuers: only a JWT principal has one.
        assert!(!m(|c| c.issuers = vec!["*".into()]));
        let mut jwt = Principal::new("alice", AuthMethod::Jwt);
        jwt.issuer = Some("https://a.example".into());
        let issuer_rule = |globs: &[&str]| {
            let c = MatchConfig {
                issuers: globs.iter().map(|g| g.to_string()).collect(),
                ..MatchConfig::default()
            };
            rule(c, vec![]).matches_principal(&jwt)
        };
        assert!(issuer_rule(&["https://a.example"]));
        assert!(issuer_rule(&["https://b.example", "https://a.*"]));
        assert!(!issuer_rule(&["https://b.example"]));
        assert!(!issuer_rule(&["https://a.example/"]));
        assert!(m(|c| c.groups = vec!["x".into(), "dev".into()]));
        assert!(!m(|c| c.groups = vec!["x".into()]));
        assert!(m(|c| c.auth_methods = vec![AuthMethod::Kubernetes]));
        assert!(!m(|c| c.auth_methods = vec![AuthMethod::Jwt]));
        assert!(m(|c| c.claims = vec![("tenant".into(), "acme:eu".into())]));
        assert!(m(|c| c.claims = vec![("roles".into(), "writer".into())]));
        assert!(!m(|c| c.claims = vec![("roles".into(), "admin".into())]));
        assert!(!m(|c| c.claims = vec![("missing".into(), "x".into())]));
    }

    #[test]
    fn call_matching() {
        let c = MatchConfig {
            tools: vec!["sea*".into()],
            ..MatchConfig::default()
        };
        let r = rule(c, vec![]);
        assert!(r.matches_call(&CALL));
        assert!(!r.matches_call(&Call {
            method: "tools/call",
            tool: Some("add")
        }));
        assert!(!r.matches_call(&Call {
            method: "tools/list",
            tool: None
        }));
        let c = MatchConfig {
            methods: vec!["resources/*".into()],
            ..MatchConfig::default()
        };
        let r = rule(c, vec![]);
        assert!(!r.matches_call(&CALL));
        assert!(r.matches_call(&Call {
            method: "resources/read",
            tool: None
        }));
    }

    #[test]
    fn keys_escape_their_parts() {
        let p = alice();
        let r = rule(
            MatchConfig::default(),
            vec![
                KeyPart::Subject,
                KeyPart::Tool,
                KeyPart::Method,
                KeyPart::AuthMethod,
                KeyPart::Claim("tenant".into()),
                KeyPart::Claim("roles".into()),
                KeyPart::Claim("none".into()),
                KeyPart::Group,
            ],
        );
        assert_eq!(
            r.key(&p, &CALL),
            "r:kubernetes::system%3Aserviceaccount%3Ans%3Aalice:search:tools/call:kubernetes:acme%3Aeu:[\"reader\"%2C\"writer\"]::dev,ops"
        );
        // With match.groups, the matched group alone.
        let c = MatchConfig {
            groups: vec!["ops".into()],
            ..MatchConfig::default()
        };
        assert_eq!(rule(c, vec![KeyPart::Group]).key(&p, &CALL), "r:ops");
        assert_eq!(rule(MatchConfig::default(), vec![]).key(&p, &CALL), "r");
    }

    #[test]
    fn subject_budgets_are_per_namespaced_identity() {
        let r = rule(MatchConfig::default(), vec![KeyPart::Subject]);
        let who = |sub: &str, method: AuthMethod, iss: Option<&str>| {
            let mut p = Principal::new(sub, method);
            p.issuer = iss.map(str::to_string);
            r.key(&p, &CALL)
        };
        let sa = "system:serviceaccount:ns:sa";
        let keys = [
            who("alice", AuthMethod::Jwt, Some("https://a.example")),
            who("alice", AuthMethod::Jwt, Some("https://b.example")),
            who("alice", AuthMethod::ApiKey, None),
            who(sa, AuthMethod::Kubernetes, None),
            who(sa, AuthMethod::ApiKey, None),
            who(sa, AuthMethod::Mtls, None),
            who(sa, AuthMethod::Jwt, Some("https://a.example")),
            // Parts that would run together unescaped.
            who("b:c", AuthMethod::Jwt, Some("a")),
            who("c", AuthMethod::Jwt, Some("a:b")),
        ];
        assert_eq!(keys[0], "r:jwt:https%3A//a.example:alice");
        assert_eq!(keys[3], "r:kubernetes::system%3Aserviceaccount%3Ans%3Asa");
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn only_requests_are_calls() {
        let env = crate::mcp::Envelope::parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                 {"jsonrpc":"2.0","method":"notifications/cancelled","params":{}},
                 {"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        )
        .unwrap();
        let calls: Vec<Call<'_>> = env.messages.iter().filter_map(Call::of).collect();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].method, calls[0].tool), ("tools/call", Some("a")));
        assert_eq!((calls[1].method, calls[1].tool), ("ping", None));
    }
}
