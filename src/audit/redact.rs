//! Redaction of call arguments before they are recorded: per-tool and global rules by JSON
//! pointer (drop, hash, keep), then every string that looks like a secret — bearer tokens,
//! JWTs, PEM private keys, cloud and SaaS API keys — masked wherever it sits.

use serde_json::Value;

use super::record::sha256_hex;
use crate::config::audit::{FieldRule, RedactAction, RedactConfig};

pub struct Redactor {
    secrets: bool,
    fields: Vec<FieldRule>,
    tools: Vec<(String, Vec<FieldRule>)>,
}

impl Redactor {
    pub fn new(cfg: &RedactConfig) -> Self {
        Self {
            secrets: cfg.secrets,
            fields: cfg.fields.clone(),
            tools: cfg.tools.clone(),
        }
    }

    /// The arguments as they may be recorded.
    pub fn apply(&self, tool: Option<&str>, mut args: Value) -> Value {
        let per_tool = tool
            .and_then(|t| self.tools.iter().find(|(n, _)| n == t))
            .map_or(&[][..], |(_, r)| r.as_slice());
        let mut kept: Vec<&str> = Vec::new();
        // Tool rules first: a pointer a tool rule decides is not touched by a global rule.
        for rule in per_tool.iter().chain(
            self.fields
                .iter()
                .filter(|g| !per_tool.iter().any(|t| t.pointer == g.pointer)),
        ) {
            match rule.action {
                RedactAction::Keep => kept.push(&rule.pointer),
                RedactAction::Drop => remove(&mut args, &rule.pointer),
                RedactAction::Hash => {
                    if let Some(v) = args.pointer_mut(&rule.pointer) {
                        let text = serde_json::to_string(v).unwrap_or_default();
                        *v = Value::String(format!("sha256:{}", sha256_hex(text.as_bytes())));
                    }
                }
            }
        }
        if self.secrets {
            mask(&mut args, &mut String::new(), &kept, false);
        }
        args
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&key);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Masks secrets under `v` (at JSON pointer `path`), except under `kept` pointers. The path is
/// only built when there are `kept` pointers to compare it with.
fn mask(v: &mut Value, path: &mut String, kept: &[&str], sensitive_key: bool) {
    if !kept.is_empty() && kept.contains(&path.as_str()) {
        return;
    }
    match v {
        Value::String(s) => {
            if let Some(kind) = secret_kind(s).or(sensitive_key.then_some("field")) {
                *s = format!("[redacted:{kind}]");
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                if !kept.is_empty() {
                    path.push('/');
                    path.push_str(&i.to_string());
                }
                mask(item, path, kept, sensitive_key);
                path.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                let len = path.len();
                if !kept.is_empty() {
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                }
                mask(item, path, kept, sensitive_key || sensitive_name(k));
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Field names whose string values are secrets whatever they look like: the name, lowercased
/// and without `-` and `_`, contains one of these.
fn sensitive_name(k: &str) -> bool {
    const NAMES: [&[u8]; 8] = [
        b"password",
        b"passwd",
        b"secret",
        b"token",
        b"apikey",
        b"authorization",
        b"privatekey",
        b"credential",
    ];
    // Normalized on the stack (names are short); a longer name gets a heap copy.
    let mut stack = [0u8; 64];
    let mut heap = Vec::new();
    let normal = k
        .bytes()
        .filter(|b| !matches!(b, b'-' | b'_'))
        .map(|b| b.to_ascii_lowercase());
    let k: &[u8] = if k.len() <= stack.len() {
        let mut n = 0;
        for b in normal {
            stack[n] = b;
            n += 1;
        }
        &stack[..n]
    } else {
        heap.extend(normal);
        &heap
    };
    NAMES.iter().any(|n| k.windows(n.len()).any(|w| w == *n))
}

/// What kind of secret `s` looks like, if any.
pub fn secret_kind(s: &str) -> Option<&'static str> {
    if s.contains("-----BEGIN") && s.contains("PRIVATE KEY") {
        return Some("private_key");
    }
    if s.trim_start()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
    {
        return Some("bearer");
    }
    s.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .find_map(token_kind)
}

fn token_kind(t: &str) -> Option<&'static str> {
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    let b64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // A JWT: three base64url parts, the header a JSON object (`eyJ` is `{"`).
    if t.split('.').count() == 3 && t.starts_with("eyJ") && t.split('.').all(b64url) && t.len() > 30
    {
        return Some("jwt");
    }
    for (prefix, len) in [("AKIA", 16), ("ASIA", 16)] {
        if let Some(rest) = t.strip_prefix(prefix)
            && rest.len() == len
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Some("aws_access_key");
        }
    }
    if let Some(rest) = t.strip_prefix("AIza")
        && rest.len() == 35
        && b64url(rest)
    {
        return Some("gcp_api_key");
    }
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        if let Some(rest) = t.strip_prefix(prefix)
            && rest.len() >= 36
            && alnum(rest)
        {
            return Some("github_token");
        }
    }
    if let Some(rest) = t.strip_prefix("github_pat_")
        && rest.len() >= 22
        && b64url(rest)
    {
        return Some("github_token");
    }
    for prefix in ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xapp-"] {
        if let Some(rest) = t.strip_prefix(prefix)
            && rest.len() >= 10
        {
            return Some("slack_token");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(pointer: &str, action: RedactAction) -> FieldRule {
        FieldRule {
            pointer: pointer.into(),
            action,
        }
    }

    #[test]
    fn secrets_look_like_secrets() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        for (s, kind) in [
            ("Bearer abc.def", Some("bearer")),
            (jwt, Some("jwt")),
            ("key AKIAIOSFODNN7EXAMPLE here", Some("aws_access_key")),
            (
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                Some("gcp_api_key"),
            ),
            (
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                Some("github_token"),
            ),
            ("xoxb-1234-5678-abcdefgh", Some("slack_token")),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
                Some("private_key"),
            ),
            ("hello world", None),
            ("AKIA-short", None),
            ("eyJ.not.a.jwt", None),
        ] {
            assert_eq!(secret_kind(s), kind, "{s}");
        }
    }

    #[test]
    fn sensitive_names_ignore_case_dashes_and_underscores() {
        let long = format!("{}_Pass-Word", "x".repeat(80));
        for (k, sensitive) in [
            ("password", true),
            ("DB_PASSWORD", true),
            ("x-api-key", true),
            ("Api_Key", true),
            ("PRIVATE-KEY", true),
            ("access_token", true),
            ("Authorization", true),
            ("credentials", true),
            ("client-secret", true),
            ("pass", false),
            ("text", false),
            ("api", false),
            ("", false),
            (long.as_str(), true),
            ("ÄPI_KEY", false),
            ("ÄPI_KEYö", false),
            ("tökén", false),
        ] {
            assert_eq!(sensitive_name(k), sensitive, "{k}");
        }
    }

    #[test]
    fn rules_then_secrets() {
        let r = Redactor::new(&RedactConfig {
            secrets: true,
            fields: vec![
                rule("/password", RedactAction::Drop),
                rule("/path", RedactAction::Drop),
            ],
            tools: vec![(
                "delete_file".into(),
                vec![
                    rule("/path", RedactAction::Hash),
                    rule("/note", RedactAction::Keep),
                ],
            )],
        });
        let args = json!({"path": "/etc/passwd", "password": "x", "note": "Bearer ok-here",
            "nested": {"auth": "Bearer abc", "list": ["AKIAIOSFODNN7EXAMPLE", 3]},
            "api_key": "plain", "n": 1});
        let out = r.apply(Some("delete_file"), args.clone());
        assert_eq!(
            out,
            json!({"path": format!("sha256:{}", sha256_hex(b"\"/etc/passwd\"")),
                "note": "Bearer ok-here",
                "nested": {"auth": "[redacted:bearer]", "list": ["[redacted:aws_access_key]", 3]},
                "api_key": "[redacted:field]", "n": 1})
        );
        // Another tool: only the global rules.
        let out = r.apply(Some("echo"), args);
        assert!(out.get("path").is_none() && out.get("password").is_none());
        assert_eq!(out["note"], "[redacted:bearer]");
    }

    #[test]
    fn odd_pointers_do_nothing() {
        let r = Redactor::new(&RedactConfig {
            secrets: false,
            fields: vec![
                rule("/a/5", RedactAction::Drop),
                rule("/x/y/z", RedactAction::Hash),
                rule("/a/0", RedactAction::Drop),
            ],
            tools: vec![],
        });
        assert_eq!(r.apply(None, json!({"a": [1, 2]})), json!({"a": [2]}));
        assert_eq!(r.apply(None, json!("text")), json!("text"));
    }
}
