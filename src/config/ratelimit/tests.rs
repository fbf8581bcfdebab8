use std::time::Duration;

use super::*;
use crate::config::Config;

fn load(section: &str) -> Result<Config, Vec<(String, String)>> {
    let text =
        format!("auth: {{anonymous: allow}}\npolicy: {{default: allow}}\nrate_limits:\n{section}");
    Config::from_yaml(&text, "rl.yaml")
        .map_err(|e| e.0.into_iter().map(|e| (e.key, e.why)).collect::<Vec<_>>())
}

/// The one error of a section, as `(key, why)`.
fn error(section: &str) -> (String, String) {
    let errs = load(section).expect_err(section);
    assert_eq!(errs.len(), 1, "{section}: {errs:?}");
    errs.into_iter().next().unwrap()
}

const RULE: &str = "  rules:\n    - name: r\n      limits: [{rate: 10/minute}]\n";

#[test]
fn absent_section_means_no_limits() {
    let c = Config::from_yaml("auth: {anonymous: allow}\npolicy: {default: allow}", "t").unwrap();
    assert!(c.rate_limits.is_none());
    assert!(c.summary().contains(&"rate_limits: none".to_string()));
}

#[test]
fn a_full_section() {
    let c = load(
        "  backend: redis
  failure_mode: local
  memory: {max_keys: 5000}
  redis:
    url: redis://:s3cret@127.0.0.1:6379/2
    timeout: 20ms
    key_prefix: 'app:'
    failure_threshold: 2
    probe_interval: 250ms
  rules:
    - name: per-caller
      match:
        subjects: ['system:serviceaccount:*']
        issuers: ['https://idp.example', 'https://*.corp.example']
        groups: [ci, bots]
        auth_methods: [kubernetes, api_key]
        claims: {tenant: acme}
        methods: ['tools/*']
        tools: [search, 'db_*']
      limits:
        - {rate: 100/minute, burst: 20}
        - {rate: 1000/day}
      key: [subject, tool, 'claim:tenant']
      concurrency: 4
    - name: slow
      concurrency: 1
      key: []
",
    )
    .unwrap();
    let rl = c.rate_limits.as_ref().unwrap();
    let Backend::Redis(redis) = &rl.backend else {
        panic!("redis backend")
    };
    assert_eq!(redis.timeout, Duration::from_millis(20));
    assert_eq!(redis.key_prefix, "app:");
    assert_eq!(redis.failure_threshold, 2);
    assert_eq!(redis.probe_interval, Duration::from_millis(250));
    assert_eq!(rl.failure_mode, FailureMode::Local);
    assert_eq!(rl.max_keys, 5000);
    let r = &rl.rules[0];
    assert_eq!(r.matcher.groups, ["ci", "bots"]);
    assert_eq!(
        r.matcher.issuers,
        ["https://idp.example", "https://*.corp.example"]
    );
    assert_eq!(
        r.matcher.auth_methods,
        [AuthMethod::Kubernetes, AuthMethod::ApiKey]
    );
    assert_eq!(r.matcher.claims, [("tenant".into(), "acme".into())]);
    assert_eq!(
        r.limits,
        [
            RateConfig {
                count: 100,
                period: Duration::from_secs(60),
                burst: 20
            },
            RateConfig {
                count: 1000,
                period: Duration::from_secs(86_400),
                burst: 1000
            }
        ]
    );
    assert_eq!(
        r.key,
        [
            KeyPart::Subject,
            KeyPart::Tool,
            KeyPart::Claim("tenant".into())
        ]
    );
    assert_eq!(r.concurrency, Some(4));
    assert!(rl.rules[1].key.is_empty() && rl.rules[1].limits.is_empty());
    // The summary names the rules and never the password.
    let line = c
        .summary()
        .into_iter()
        .find(|l| l.starts_with("rate_limits"))
        .unwrap();
    assert!(line.contains("per-caller, slow"), "{line}");
    assert!(line.contains("redis://:***@127.0.0.1:6379/2"), "{line}");
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn defaults() {
    let c = load(RULE).unwrap();
    let rl = c.rate_limits.unwrap();
    assert!(matches!(rl.backend, Backend::Memory));
    assert_eq!(rl.failure_mode, FailureMode::Closed);
    assert_eq!(rl.max_keys, DEFAULT_MAX_KEYS);
    assert_eq!(rl.rules[0].key, [KeyPart::Subject]);
    assert_eq!(rl.rules[0].limits[0].burst, 10);
    let c = load(&format!(
        "  backend: redis\n  redis: {{url: 'unix:///run/redis.sock'}}\n{RULE}"
    ))
    .unwrap();
    let Some(Backend::Redis(r)) = c.rate_limits.map(|r| r.backend) else {
        panic!("redis")
    };
    assert_eq!(
        (r.timeout, r.failure_threshold, r.probe_interval),
        (Duration::from_millis(100), 3, Duration::from_secs(1))
    );
    assert_eq!(r.key_prefix, "mcp-sentinel:rl:");
}

#[test]
fn rates() {
    for (text, count, period) in [
        ("5/second", 5, Duration::from_secs(1)),
        ("5/s", 5, Duration::from_secs(1)),
        ("7/hour", 7, Duration::from_secs(3600)),
        ("10/30s", 10, Duration::from_secs(30)),
        ("3/500ms", 3, Duration::from_millis(500)),
    ] {
        let c = load(&format!(
            "  rules:\n    - name: r\n      limits: [{{rate: {text}}}]\n"
        ))
        .unwrap();
        let l = c.rate_limits.unwrap().rules[0].limits[0];
        assert_eq!((l.count, l.period), (count, period), "{text}");
    }
}

#[test]
fn every_bad_value_is_reported_with_its_key() {
    let lim = |l: &str| format!("  rules:\n    - name: r\n      limits: [{l}]\n");
    let rule = |r: &str| format!("  rules:\n    - name: r\n      limits: [{{rate: 1/s}}]\n{r}");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("  backend: disk\n{RULE}"),
            "rate_limits.backend",
            "memory or redis",
        ),
        (
            format!("  backend: redis\n{RULE}"),
            "rate_limits.redis",
            "is required",
        ),
        (
            format!("  redis: {{url: 'redis://x'}}\n{RULE}"),
            "rate_limits.redis",
            "only read with backend: redis",
        ),
        (
            format!("  backend: redis\n  redis: {{timeout: 1s}}\n{RULE}"),
            "rate_limits.redis.url",
            "is required",
        ),
        (
            format!("  backend: redis\n  redis: {{url: 'http://x'}}\n{RULE}"),
            "rate_limits.redis.url",
            "not a URL such as",
        ),
        (
            format!("  backend: redis\n  redis: {{url: 'rediss://x'}}\n{RULE}"),
            "rate_limits.redis.url",
            "not supported",
        ),
        (
            format!("  backend: redis\n  redis: {{url: 'redis://x', timeout: 0s}}\n{RULE}"),
            "rate_limits.redis.timeout",
            "greater than zero",
        ),
        (
            format!("  backend: redis\n  redis: {{url: 'redis://x', timeout: 1m}}\n{RULE}"),
            "rate_limits.redis.timeout",
            "at most 10s",
        ),
        (
            format!(
                "  backend: redis\n  redis: {{url: 'redis://x', failure_threshold: 0}}\n{RULE}"
            ),
            "rate_limits.redis.failure_threshold",
            "from 1 to 1000",
        ),
        (
            format!("  backend: redis\n  redis: {{url: 'redis://x', probe_interval: 0ms}}\n{RULE}"),
            "rate_limits.redis.probe_interval",
            "greater than zero",
        ),
        (
            format!("  backend: redis\n  redis: {{url: 'redis://x', port: 1}}\n{RULE}"),
            "rate_limits.redis.port",
            "unknown key",
        ),
        (
            format!("  failure_mode: maybe\n{RULE}"),
            "rate_limits.failure_mode",
            "closed, open or local",
        ),
        (
            format!("  failure_mode: open\n{RULE}"),
            "rate_limits.failure_mode",
            "backend: redis only",
        ),
        (
            format!("  memory: {{max_keys: 0}}\n{RULE}"),
            "rate_limits.memory.max_keys",
            "from 1",
        ),
        (
            format!("  colour: red\n{RULE}"),
            "rate_limits.colour",
            "unknown key",
        ),
        (
            "  backend: memory\n".into(),
            "rate_limits.rules",
            "is required",
        ),
        (
            "  rules: []\n".into(),
            "rate_limits.rules",
            "non-empty list",
        ),
        (
            "  rules:\n    - limits: [{rate: 1/s}]\n".into(),
            "rate_limits.rules[0].name",
            "is required",
        ),
        (
            "  rules:\n    - {name: 'a b', concurrency: 1}\n".into(),
            "rate_limits.rules[0].name",
            "letters, digits",
        ),
        (
            "  rules:\n    - {name: a, concurrency: 1}\n    - {name: a, concurrency: 2}\n".into(),
            "rate_limits.rules[1].name",
            "used twice",
        ),
        (
            "  rules:\n    - {name: a}\n".into(),
            "rate_limits.rules[0]",
            "needs limits, concurrency or both",
        ),
        (
            "  rules:\n    - {name: a, limits: 5}\n".into(),
            "rate_limits.rules[0].limits",
            "non-empty list",
        ),
        (
            lim("{burst: 5}"),
            "rate_limits.rules[0].limits[0].rate",
            "is required",
        ),
        (
            lim("{rate: fast}"),
            "rate_limits.rules[0].limits[0].rate",
            "not a rate",
        ),
        (
            lim("{rate: 0/minute}"),
            "rate_limits.rules[0].limits[0].rate",
            "at least one",
        ),
        (
            lim("{rate: 5/fortnight}"),
            "rate_limits.rules[0].limits[0].rate",
            "not a rate",
        ),
        (
            lim("{rate: 5/0s}"),
            "rate_limits.rules[0].limits[0].rate",
            "from 1ms to a year",
        ),
        (
            lim("{rate: 5/9000h}"),
            "rate_limits.rules[0].limits[0].rate",
            "from 1ms to a year",
        ),
        (
            lim("{rate: 2000000/second}"),
            "rate_limits.rules[0].limits[0].rate",
            "microsecond",
        ),
        (
            lim("{rate: 5/s, burst: 0}"),
            "rate_limits.rules[0].limits[0].burst",
            "from 1",
        ),
        (
            lim("{rate: 5/s, burst: -3}"),
            "rate_limits.rules[0].limits[0].burst",
            "from 1",
        ),
        (
            lim("{rate: 5/s, per: 1}"),
            "rate_limits.rules[0].limits[0].per",
            "unknown key",
        ),
        (
            rule("      key: [subject, colour]\n"),
            "rate_limits.rules[0].key",
            "not a key part",
        ),
        (
            rule("      key: ['claim:']\n"),
            "rate_limits.rules[0].key",
            "not a key part",
        ),
        (
            rule("      key: [tool, tool]\n"),
            "rate_limits.rules[0].key",
            "listed twice",
        ),
        (
            rule("      concurrency: 0\n"),
            "rate_limits.rules[0].concurrency",
            "from 1",
        ),
        (
            rule("      concurrency: many\n"),
            "rate_limits.rules[0].concurrency",
            "from 1",
        ),
        (
            rule("      match: {who: me}\n"),
            "rate_limits.rules[0].match.who",
            "unknown key",
        ),
        (
            rule("      match: {subjects: []}\n"),
            "rate_limits.rules[0].match.subjects",
            "at least one",
        ),
        (
            rule("      match: {issuers: []}\n"),
            "rate_limits.rules[0].match.issuers",
            "at least one",
        ),
        (
            rule("      match: {groups: ['']}\n"),
            "rate_limits.rules[0].match.groups",
            "empty name",
        ),
        (
            rule("      match: {auth_methods: [password]}\n"),
            "rate_limits.rules[0].match.auth_methods",
            "not one of",
        ),
        (
            rule("      match: {claims: [tenant]}\n"),
            "rate_limits.rules[0].match.claims",
            "mapping",
        ),
        (
            rule("      match: {claims: {tenant: 3}}\n"),
            "rate_limits.rules[0].match.claims",
            "string values",
        ),
        (
            rule("      match: {methods: 3}\n"),
            "rate_limits.rules[0].match.methods",
            "list of strings",
        ),
        (
            rule("      match: {methods: ['resources/*'], tools: [x]}\n"),
            "rate_limits.rules[0].match.tools",
            "can never match",
        ),
        (
            rule("      match: {methods: [ping]}\n      concurrency: 2\n"),
            "rate_limits.rules[0].concurrency",
            "tools/call only",
        ),
        (
            rule("      extra: 1\n"),
            "rate_limits.rules[0].extra",
            "unknown key",
        ),
        (
            "  rules: {name: a}\n".into(),
            "rate_limits.rules",
            "non-empty list",
        ),
    ];
    for (section, key, why) in cases {
        let (k, w) = error(&section);
        assert_eq!(k, key, "{section}");
        assert!(w.contains(why), "{section}: {w}");
    }
    // Not a mapping at all.
    let errs = Config::from_yaml(
        "auth: {anonymous: allow}\npolicy: {default: allow}\nrate_limits: 5",
        "t",
    )
    .unwrap_err()
    .0;
    assert_eq!(errs[0].key, "rate_limits");
}

#[test]
fn globs() {
    use crate::glob::is_match as glob;
    assert!(glob("*", ""));
    assert!(glob("tools/*", "tools/call"));
    assert!(!glob("tools/*", "prompts/get"));
    assert!(glob("db_*_read", "db_users_read"));
    assert!(!glob("db_*_read", "db_users_write"));
    assert!(glob("a*b*c", "aXbYbc"));
    assert!(glob("exact", "exact"));
    assert!(!glob("exact", "exactly"));
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redacted_url("redis://user:pw@h:1/0"),
        "redis://user:***@h:1/0"
    );
    assert_eq!(redacted_url("redis://:pw@h"), "redis://:***@h");
    assert_eq!(redacted_url("redis://h:6379"), "redis://h:6379");
    assert_eq!(redacted_url("unix:///run/r.sock"), "unix:///run/r.sock");
}
