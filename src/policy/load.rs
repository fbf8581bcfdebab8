//! Reads a policy document (inline under `policy:` in the config, or a file of its own that is
//! watched for changes) into a compiled `Policy`, collecting every error with its key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::pattern::Pattern;
use super::{AnswerStyle, Condition, Effect, Policy, Rule, Test};
use crate::identity::AuthMethod;
use crate::yaml::{ConfigErrors, Reader, Section, parse};

/// Where the running policy comes from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// Written under `policy:` in the config file; fixed for the process's life.
    Inline,
    /// A file of its own (a mounted ConfigMap), polled and swapped in when it changes.
    File {
        path: PathBuf,
        reload_interval: Duration,
    },
}

/// The `policy` section of the config: where the policy comes from and the policy it held
/// when the config was read.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub source: PolicySource,
    pub initial: Arc<Policy>,
}

/// A rule's `effect`, and the policy's `default`.
const EFFECTS: &[(&str, Effect)] = &[("allow", Effect::Allow), ("deny", Effect::Deny)];

/// The keys of a policy document, inline or in a file.
const DOC_KEYS: [&str; 4] = ["default", "answer", "builtin_rules", "rules"];

impl PolicyConfig {
    /// Reads the config's `policy` section. Absent, it is an error: there is no implicit
    /// allow, and an empty policy would silently deny everything.
    pub fn read(r: &mut Reader, s: &mut Section<'_>, raw: Option<&Value>) -> Option<Self> {
        if !s.is_present() {
            r.error(
                "policy",
                "is required: set `default: deny` and the rules that allow, or `file:` a policy \
                 file (examples/passthrough.yaml uses `default: allow`, for local testing only)",
            );
            return None;
        }
        let file = r.field(s, "file", |v| parse::string(v).map(PathBuf::from));
        let reload_interval = r
            .field(s, "reload_interval", |v| {
                let d = parse::duration(v)?;
                if d.is_zero() {
                    return Err("must be greater than zero".into());
                }
                Ok(d)
            })
            .unwrap_or(Duration::from_secs(2));
        match file {
            Some(path) => {
                for key in DOC_KEYS {
                    if r.field(s, key, |_| Ok(())).is_some() {
                        r.error(
                            format!("policy.{key}"),
                            "belongs in the policy file when `file` is set",
                        );
                    }
                }
                match Policy::load(&path) {
                    Ok(policy) => Some(Self {
                        source: PolicySource::File {
                            path,
                            reload_interval,
                        },
                        initial: Arc::new(policy),
                    }),
                    Err(errors) => {
                        r.extend(errors);
                        None
                    }
                }
            }
            None => {
                let text = raw.map(serde_yaml_ng::to_string).transpose().ok().flatten();
                let hash = hash_hex(text.unwrap_or_default().as_bytes());
                read_doc(r, s, "policy.", hash).map(|policy| Self {
                    source: PolicySource::Inline,
                    initial: Arc::new(policy),
                })
            }
        }
    }
}

impl PolicyConfig {
    /// One line for `check` and the startup log.
    pub fn summary(&self) -> String {
        let p = &self.initial;
        let from = match &self.source {
            PolicySource::Inline => "inline".to_string(),
            PolicySource::File {
                path,
                reload_interval,
            } => format!("{} (reloaded every {reload_interval:?})", path.display()),
        };
        format!(
            "policy: {from}, {} rules, default {}, denials answered as {}, sha256 {}",
            p.rules().len(),
            p.default.as_str(),
            match p.answer {
                AnswerStyle::Unknown => "unknown",
                AnswerStyle::Forbidden => "forbidden (403)",
            },
            &p.hash[..16]
        )
    }
}

impl Policy {
    /// Reads and compiles a policy file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let (text, name) = crate::yaml::read_text(path)?;
        Self::from_yaml(&text, &name)
    }

    /// Compiles a policy document; `source` names it in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ConfigErrors> {
        let hash = hash_hex(text.as_bytes());
        crate::yaml::read_document(text, source, |r, top, _| read_doc(r, top, "", hash))
    }
}

pub(super) fn hash_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_doc(r: &mut Reader, s: &mut Section<'_>, prefix: &str, hash: String) -> Option<Policy> {
    let default = r.choice(s, "default", EFFECTS);
    if default.is_none() && !r.has_error_at(&format!("{prefix}default")) {
        r.error(
            format!("{prefix}default"),
            "is required (allow or deny): there is no implicit allow",
        );
    }
    let answer = r
        .choice(
            s,
            "answer",
            &[
                ("unknown", AnswerStyle::Unknown),
                ("forbidden", AnswerStyle::Forbidden),
            ],
        )
        .unwrap_or(AnswerStyle::Unknown);
    let builtin = r.field(s, "builtin_rules", parse::boolean).unwrap_or(true);
    let items = r.list(s, "rules", "rules");
    let mut rules = Vec::with_capacity(items.len());
    let mut names = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{prefix}rules[{i}]");
        let mut rs = r.section(&path, Some(item));
        if let Some(rule) = read_rule(r, &mut rs, &path)
            && let Some(rule) = rule_named(r, &path, rule, &mut names)
        {
            rules.push(rule);
        }
        r.close(rs);
    }
    let default = default?;
    Some(Policy::compile(default, answer, builtin, rules, hash))
}

fn rule_named(
    r: &mut Reader,
    path: &str,
    rule: Rule,
    names: &mut HashSet<Arc<str>>,
) -> Option<Rule> {
    if rule.name.starts_with("builtin") {
        r.error(
            format!("{path}.name"),
            "names starting with builtin are reserved",
        );
        return None;
    }
    if !names.insert(rule.name.clone()) {
        r.error(
            format!("{path}.name"),
            format!("{:?} is used by an earlier rule", rule.name),
        );
        return None;
    }
    Some(rule)
}

fn read_rule(r: &mut Reader, s: &mut Section<'_>, path: &str) -> Option<Rule> {
    let name = r.field(s, "name", |v| {
        let n = parse::string(v)?;
        if n.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(n)
    });
    let rule_effect = r.choice(s, "effect", EFFECTS);
    r.field(s, "description", parse::string);
    let globs = |v: &Value| parse::strings(v).map(|l| l.iter().map(|p| Pattern::glob(p)).collect());
    let subjects = r.field(s, "subjects", globs).unwrap_or_default();
    let issuers = r.field(s, "issuers", globs).unwrap_or_default();
    let groups = r.field(s, "groups", globs).unwrap_or_default();
    let scopes: Vec<String> = r.field(s, "scopes", parse::strings).unwrap_or_default();
    let auth_methods = r
        .field(s, "auth_methods", |v| {
            parse::strings(v)?
                .iter()
                .map(|m| {
                    AuthMethod::ALL
                        .into_iter()
                        .find(|a| a.as_str() == m)
                        .ok_or_else(|| {
                            format!(
                                "{m:?} is not an auth method (anonymous, api_key, jwt, kubernetes, mtls, stdio)"
                            )
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    let claims = r
        .field(s, "claims", |v| {
            let Value::Mapping(m) = v else {
                return Err("must map claim names to a value or a list of values".into());
            };
            m.iter()
                .map(|(k, v)| {
                    let k = k.as_str().ok_or("claim names must be strings")?;
                    let values = match v {
                        Value::Bool(b) => vec![b.to_string()],
                        Value::Number(n) => vec![n.to_string()],
                        v => parse::strings(v)
                            .map_err(|_| format!("claims.{k}: must be a value or a list"))?,
                    };
                    Ok((
                        k.to_string(),
                        values.iter().map(|p| Pattern::glob(p)).collect(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let methods = r.field(s, "methods", globs).unwrap_or_default();
    let tools = r.field(s, "tools", globs);
    let prompts = r.field(s, "prompts", globs);
    let resources = r.field(s, "resources", |v| {
        parse::strings(v)?
            .iter()
            .map(|p| Pattern::resource(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    });
    let arguments = read_conditions(r, s, path);
    if [&tools, &prompts, &resources]
        .iter()
        .any(|l| l.as_ref().is_some_and(Vec::is_empty))
    {
        r.error(
            path.to_string(),
            "tools, resources and prompts must not be empty lists (leave a list out to match any)",
        );
    }
    let name = name.or_else(|| {
        r.error(format!("{path}.name"), "is required");
        None
    })?;
    let rule_effect = rule_effect.or_else(|| {
        if !r.has_error_at(&format!("{path}.effect")) {
            r.error(format!("{path}.effect"), "is required (allow or deny)");
        }
        None
    })?;
    Some(Rule {
        name: name.into(),
        effect: rule_effect,
        builtin: false,
        subjects,
        issuers,
        groups,
        auth_methods,
        claims,
        scopes: scopes.into(),
        methods,
        tools,
        resources,
        prompts,
        arguments: arguments?,
    })
}

fn read_conditions(r: &mut Reader, s: &mut Section<'_>, path: &str) -> Option<Vec<Condition>> {
    let items = r.list(s, "arguments", "conditions");
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let cpath = format!("{path}.arguments[{i}]");
        let mut cs = r.section(&cpath, Some(item));
        let pointer = r.field(&mut cs, "path", |v| {
            let p = parse::string(v)?;
            if !p.starts_with('/') {
                return Err(format!(
                    "{p:?} is not a JSON pointer into the arguments (such as /query or /options/limit)"
                ));
            }
            Ok(p)
        });
        let mut tests = Vec::new();
        if let Some(v) = r.field(&mut cs, "equals", json) {
            tests.push(Test::Equals(v));
        }
        if let Some(v) = r.field(&mut cs, "one_of", |v| match v {
            Value::Sequence(items) => items.iter().map(json).collect(),
            _ => Err("must be a list of values".to_string()),
        }) {
            tests.push(Test::OneOf(v));
        }
        if let Some(v) = r.field(&mut cs, "glob", parse::string) {
            tests.push(Test::Glob(Pattern::glob(&v)));
        }
        let mut range = r.child(&mut cs, "range");
        if range.is_present() {
            let num = |v: &Value| v.as_f64().ok_or_else(|| "must be a number".to_string());
            let min = r.field(&mut range, "min", num);
            let max = r.field(&mut range, "max", num);
            match (min, max) {
                (None, None) => r.error(format!("{cpath}.range"), "needs min, max or both"),
                (Some(a), Some(b)) if a > b => {
                    r.error(format!("{cpath}.range"), "min must not exceed max");
                }
                _ => tests.push(Test::Range { min, max }),
            }
        }
        r.close(range);
        if let Some(v) = r.field(&mut cs, "present", parse::boolean) {
            tests.push(Test::Present(v));
        }
        r.close(cs);
        match (pointer, tests.len()) {
            (Some(pointer), 1) => out.push(Condition {
                pointer,
                test: tests.pop().expect("one test"),
            }),
            (None, _) => {
                if !r.has_error_at(&format!("{cpath}.path")) {
                    r.error(format!("{cpath}.path"), "is required");
                }
                ok = false;
            }
            (Some(_), _) => {
                r.error(
                    cpath,
                    "needs exactly one of equals, one_of, glob, range, present",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn json(v: &Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| format!("not a JSON value: {e}"))
}
