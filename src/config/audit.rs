//! The `audit` section: which sinks get a record of every request, how records are batched
//! and spooled while a sink is down, whether calls are refused when a record cannot be stored,
//! and how tool arguments are redacted. Absent: one `stdout` sink.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::ratelimit::{redacted_url, redis_url};
use crate::yaml::{Reader, Section, parse};

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `false`: no records at all.
    pub enabled: bool,
    /// Names this sentinel in records (with a per-start suffix); default `$HOSTNAME`.
    pub instance: String,
    /// Refuse calls (503) while a record could not be stored durably.
    pub fail_closed: bool,
    /// Records waiting per sink before new ones are dropped (or refused, fail-closed).
    pub queue_capacity: usize,
    /// Records per delivery, at most.
    pub batch_size: usize,
    /// How long a delivery waits for more records after the first (fewer, larger batches);
    /// zero delivers at once.
    pub flush_interval: Duration,
    /// While a sink is down, how often it is tried again.
    pub retry_interval: Duration,
    pub spool: Option<SpoolConfig>,
    pub redact: RedactConfig,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Per sink; past it new records are dropped (and counted).
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RedactConfig {
    /// Mask values that look like secrets anywhere in the arguments.
    pub secrets: bool,
    /// Rules for every tool.
    pub fields: Vec<FieldRule>,
    /// Rules for one tool (by exact name), applied before (and winning over) `fields`.
    pub tools: Vec<(String, Vec<FieldRule>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    /// A JSON pointer into `params.arguments` (RFC 6901; `/a/b`, `/items/0`).
    pub pointer: String,
    pub action: RedactAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactAction {
    /// Remove the field.
    Drop,
    /// Replace with `sha256:<hex>` of its JSON text.
    Hash,
    /// Record as sent: no secret masking under it.
    Keep,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique; the `sink` metric label and the spool subdirectory. Default: the type.
    pub name: String,
    pub kind: SinkKind,
}

#[derive(Clone)]
pub enum SinkKind {
    Stdout,
    /// For `mcp-sentinel stdio`, whose stdout carries MCP only.
    Stderr,
    File {
        path: PathBuf,
        /// Rotate past this size: `path` → `path.1` → … → `path.<max_files>`.
        max_bytes: u64,
        max_files: u32,
    },
    Redis {
        url: String,
        stream: String,
        /// Approximate `MAXLEN ~` of the stream.
        max_len: u64,
        timeout: Duration,
    },
    Postgres {
        url: String,
        table: String,
        timeout: Duration,
    },
}

impl SinkKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::Stderr => "stderr",
            SinkKind::File { .. } => "file",
            SinkKind::Redis { .. } => "redis",
            SinkKind::Postgres { .. } => "postgres",
        }
    }
}

impl std::fmt::Debug for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkKind::Stdout => f.write_str("stdout"),
            SinkKind::Stderr => f.write_str("stderr"),
            SinkKind::File { path, .. } => write!(f, "file {}", path.display()),
            SinkKind::Redis { url, stream, .. } => {
                write!(f, "redis {} stream {stream}", redacted_url(url))
            }
            SinkKind::Postgres { url, table, .. } => {
                write!(f, "postgres {} table {table}", redacted_url(url))
            }
        }
    }
}

/// Every `type` of sink: the config's reference document (src/config/reference.yaml) shows
/// each, so the schema generated from it knows every sink's keys.
pub const SINK_TYPES: [&str; 5] = ["stdout", "stderr", "file", "redis", "postgres"];

pub const DEFAULT_QUEUE: usize = 10_000;
pub const DEFAULT_BATCH: usize = 512;

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            instance: default_instance(),
            fail_closed: false,
            queue_capacity: DEFAULT_QUEUE,
            batch_size: DEFAULT_BATCH,
            flush_interval: Duration::from_millis(20),
            retry_interval: Duration::from_secs(1),
            spool: None,
            redact: RedactConfig {
                secrets: true,
                ..RedactConfig::default()
            },
            sinks: vec![SinkConfig {
                name: "stdout".into(),
                kind: SinkKind::Stdout,
            }],
        }
    }
}

/// `$HOSTNAME` (the pod name in Kubernetes), else `mcp-sentinel`.
fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| valid_name(h))
        .unwrap_or_else(|| "mcp-sentinel".into())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn name(v: &Value) -> Result<String, String> {
    let n = parse::string(v)?;
    if !valid_name(&n) {
        return Err(format!(
            "{n:?} must be 1-128 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(n)
}

fn positive(v: &Value) -> Result<Duration, String> {
    let d = parse::duration(v)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn whole(min: u64, max: u64) -> impl Fn(&Value) -> Result<u64, String> {
    move |v| {
        v.as_u64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("must be a whole number from {min} to {max}"))
    }
}

impl AuditConfig {
    /// Reads the `audit` section; the default (stdout) when absent.
    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Self {
        let mut cfg = Self::default();
        if !s.is_present() {
            return cfg;
        }
        if let Some(v) = r.field(s, "enabled", parse::boolean) {
            cfg.enabled = v;
        }
        if let Some(v) = r.field(s, "instance", name) {
            cfg.instance = v;
        }
        if let Some(v) = r.field(s, "fail_closed", parse::boolean) {
            cfg.fail_closed = v;
        }
        if let Some(v) = r.field(s, "queue_capacity", whole(1, 10_000_000)) {
            cfg.queue_capacity = v as usize;
        }
        if let Some(v) = r.field(s, "batch_size", whole(1, 5_000)) {
            cfg.batch_size = v as usize;
        }
        if let Some(v) = r.field(s, "flush_interval", |v| {
            let d = parse::duration(v)?;
            if d > Duration::from_secs(10) {
                return Err("must be at most 10s".into());
            }
            Ok(d)
        }) {
            cfg.flush_interval = v;
        }
        if let Some(v) = r.field(s, "retry_interval", positive) {
            cfg.retry_interval = v;
        }
        let mut sp = r.child(s, "spool");
        if sp.is_present() {
            let has_dir = sp.has("dir");
            let dir = r.field(&mut sp, "dir", |v| parse::string(v).map(PathBuf::from));
            let max_bytes = r
                .field(&mut sp, "max_bytes", parse::byte_size)
                .map_or(1 << 30, |n| n as u64);
            if !has_dir {
                r.error("audit.spool.dir", "is required");
            }
            cfg.spool = dir.map(|dir| SpoolConfig { dir, max_bytes });
        }
        r.close(sp);
        let mut red = r.child(s, "redact");
        if let Some(v) = r.field(&mut red, "secrets", parse::boolean) {
            cfg.redact.secrets = v;
        }
        let fields = r.list(&mut red, "fields", "rules");
        cfg.redact.fields = read_rules(r, "audit.redact.fields", fields);
        // Its keys are tool names, not config keys: read as data, never closed.
        let tools = r.child(&mut red, "tools");
        if let Some(map) = r.entries(&tools) {
            for (tool, rules) in map {
                let Some(tool) = tool.as_str() else {
                    r.error("audit.redact.tools", "keys must be tool names");
                    continue;
                };
                let path = format!("audit.redact.tools.{tool}");
                let Value::Sequence(items) = rules else {
                    r.error(path, "must be a list of rules");
                    continue;
                };
                let rules = read_rules(r, &path, items);
                cfg.redact.tools.push((tool.to_string(), rules));
            }
        }
        r.close(red);
        if s.has("sinks") {
            let items = r.list(s, "sinks", "sinks");
            cfg.sinks = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("audit.sinks[{i}]");
                if let Some(sink) = read_sink(r, &path, item) {
                    if cfg.sinks.iter().any(|x| x.name == sink.name) {
                        r.error(
                            format!("{path}.name"),
                            format!("{:?} is used twice: give each sink a name", sink.name),
                        );
                        continue;
                    }
                    cfg.sinks.push(sink);
                }
            }
            if items.is_empty() && cfg.enabled {
                r.error(
                    "audit.sinks",
                    "must list at least one sink (or set enabled: false)",
                );
            }
        } else {
            let _ = r.list(s, "sinks", "sinks");
        }
        if cfg.fail_closed && !cfg.enabled {
            r.error("audit.fail_closed", "needs enabled: true");
        }
        cfg
    }

    /// One line for `check` and the startup log. Holds no secrets.
    pub fn summary(&self) -> String {
        if !self.enabled {
            return "audit: off".into();
        }
        let sinks: Vec<String> = self
            .sinks
            .iter()
            .map(|s| format!("{} ({:?})", s.name, s.kind))
            .collect();
        let spool = self.spool.as_ref().map_or("no spool".to_string(), |s| {
            format!(
                "spool {} (max {} bytes per sink)",
                s.dir.display(),
                s.max_bytes
            )
        });
        format!(
            "audit: instance {}, sinks: {}; {spool}; fail_closed {}",
            self.instance,
            sinks.join(", "),
            self.fail_closed
        )
    }
}

fn read_rules(r: &mut Reader, path: &str, items: &[Value]) -> Vec<FieldRule> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let mut s = r.section(&p, Some(item));
        let has_pointer = s.has("pointer");
        let pointer = r.field(&mut s, "pointer", |v| {
            let p = parse::string(v)?;
            if !p.starts_with('/') || p.len() < 2 {
                return Err(format!(
                    "{p:?} is not a JSON pointer to a field, such as /password"
                ));
            }
            Ok(p)
        });
        let action = r.choice(
            &mut s,
            "action",
            &[
                ("drop", RedactAction::Drop),
                ("hash", RedactAction::Hash),
                ("keep", RedactAction::Keep),
            ],
        );
        if !has_pointer {
            r.error(format!("{p}.pointer"), "is required");
        }
        if !s.has("action") {
            r.error(format!("{p}.action"), "is required");
        }
        r.close(s);
        if let (Some(pointer), Some(action)) = (pointer, action) {
            out.push(FieldRule { pointer, action });
        }
    }
    out
}

fn read_sink(r: &mut Reader, path: &str, item: &Value) -> Option<SinkConfig> {
    let mut s = r.section(path, Some(item));
    let kind_name = r.choice(&mut s, "type", &SINK_TYPES.map(|t| (t, t)));
    if !s.has("type") {
        r.error(format!("{path}.type"), "is required");
    }
    let name_field = r.field(&mut s, "name", name);
    let required = |r: &mut Reader, s: &Section<'_>, key: &str| {
        if !s.has(key) {
            r.error(format!("{path}.{key}"), "is required");
        }
    };
    let kind = match kind_name {
        Some("stdout") => Some(SinkKind::Stdout),
        Some("stderr") => Some(SinkKind::Stderr),
        Some("file") => {
            required(r, &s, "path");
            let file = r.field(&mut s, "path", |v| parse::string(v).map(PathBuf::from));
            let max_bytes = r
                .field(&mut s, "max_bytes", parse::byte_size)
                .map_or(100 << 20, |n| n as u64);
            let max_files = r
                .field(&mut s, "max_files", whole(1, 1000))
                .map_or(5, |n| n as u32);
            file.map(|path| SinkKind::File {
                path,
                max_bytes,
                max_files,
            })
        }
        Some("redis") => {
            required(r, &s, "url");
            let url = r.field(&mut s, "url", |v| {
                let u = parse::string(v)?;
                redis_url(&u).map_err(|e| e.to_string())?;
                Ok(u)
            });
            let stream = r
                .field(&mut s, "stream", |v| {
                    let n = parse::string(v)?;
                    if n.is_empty() || n.len() > 256 {
                        return Err("must be 1 to 256 characters".into());
                    }
                    Ok(n)
                })
                .unwrap_or_else(|| "mcp-sentinel:audit".into());
            let max_len = r
                .field(&mut s, "max_len", whole(1000, u64::from(u32::MAX)))
                .unwrap_or(1_000_000);
            let timeout = r
                .field(&mut s, "timeout", positive)
                .unwrap_or(Duration::from_secs(2));
            url.map(|url| SinkKind::Redis {
                url,
                stream,
                max_len,
                timeout,
            })
        }
        Some("postgres") => {
            required(r, &s, "url");
            let url = r.field(&mut s, "url", |v| {
                let u = parse::string(v)?;
                u.parse::<tokio_postgres::Config>().map_err(|_| {
                    format!(
                        "{:?} is not a PostgreSQL URL such as postgres://user@host/db",
                        redacted_url(&u)
                    )
                })?;
                Ok(u)
            });
            let table = r
                .field(&mut s, "table", |v| {
                    let t = parse::string(v)?;
                    let ok = !t.is_empty()
                        && t.len() <= 63
                        && t.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        && t.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !ok {
                        return Err(format!(
                            "{t:?} must be a lowercase SQL identifier (letters, digits, _)"
                        ));
                    }
                    Ok(t)
                })
                .unwrap_or_else(|| "mcp_audit".into());
            let timeout = r
                .field(&mut s, "timeout", positive)
                .unwrap_or(Duration::from_secs(5));
            url.map(|url| SinkKind::Postgres {
                url,
                table,
                timeout,
            })
        }
        _ => None,
    };
    r.close(s);
    let kind = kind?;
    Some(SinkConfig {
        name: name_field.unwrap_or_else(|| kind.type_name().to_string()),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn read(audit: &str) -> Result<AuditConfig, Vec<(String, String)>> {
        let text = format!("auth: {{anonymous: allow}}\npolicy: {{default: allow}}\n{audit}");
        Config::from_yaml(&text, "t.yaml")
            .map(|c| c.audit)
            .map_err(|e| e.0.into_iter().map(|e| (e.key, e.why)).collect())
    }

    #[test]
    fn absent_is_one_stdout_sink() {
        let c = read("").unwrap();
        assert!(c.enabled && !c.fail_closed && c.redact.secrets);
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].name, "stdout");
        assert!(c.spool.is_none());
    }

    #[test]
    fn full_section() {
        let c = read(
            "audit:\n  instance: pod-a\n  fail_closed: true\n  queue_capacity: 50\n  batch_size: 10\n  flush_interval: 0s\n  retry_interval: 200ms\n  spool: {dir: /tmp/spool, max_bytes: 1MiB}\n  redact:\n    secrets: false\n    fields: [{pointer: /password, action: drop}]\n    tools:\n      delete_file: [{pointer: /path, action: hash}, {pointer: /note, action: keep}]\n  sinks:\n    - type: stdout\n    - {type: file, path: /tmp/a.jsonl, max_bytes: 1KiB, max_files: 2}\n    - {type: redis, url: 'redis://127.0.0.1:6379/0', stream: s, max_len: 5000}\n    - {type: postgres, name: pg, url: 'postgres://postgres@127.0.0.1/test', table: audit_x}\n",
        )
        .unwrap();
        assert_eq!(c.instance, "pod-a");
        assert!(c.fail_closed && !c.redact.secrets);
        assert_eq!((c.queue_capacity, c.batch_size), (50, 10));
        assert_eq!(c.flush_interval, Duration::ZERO);
        assert_eq!(c.spool.unwrap().max_bytes, 1 << 20);
        assert_eq!(c.redact.fields[0].action, RedactAction::Drop);
        assert_eq!(c.redact.tools[0].0, "delete_file");
        assert_eq!(c.redact.tools[0].1.len(), 2);
        let names: Vec<&str> = c.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["stdout", "file", "redis", "pg"]);
    }

    #[test]
    fn bad_values_are_all_listed() {
        let errs = read(
            "audit:\n  bogus: 1\n  queue_capacity: 0\n  batch_size: lots\n  retry_interval: 0s\n  instance: 'a b'\n  spool: {max_bytes: 0}\n  redact:\n    fields: [{pointer: password, action: shred}, {action: drop}]\n    tools: {echo: 3}\n  sinks:\n    - {type: kafka}\n    - {type: file}\n    - {type: redis, url: 'http://x'}\n    - {type: postgres, url: 'postgres://x/db', table: 'Bad-Name'}\n    - {type: stdout}\n    - {type: stdout}\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "audit.instance",
                "audit.queue_capacity",
                "audit.batch_size",
                "audit.retry_interval",
                "audit.spool.max_bytes",
                "audit.spool.dir",
                "audit.redact.fields[0].pointer",
                "audit.redact.fields[0].action",
                "audit.redact.fields[1].pointer",
                "audit.redact.tools.echo",
                "audit.sinks[0].type",
                "audit.sinks[1].path",
                "audit.sinks[2].url",
                "audit.sinks[3].table",
                "audit.sinks[5].name",
                "audit.bogus",
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn empty_sinks_need_enabled_false() {
        let errs = read("audit: {sinks: []}").unwrap_err();
        assert_eq!(errs[0].0, "audit.sinks");
        let c = read("audit: {enabled: false, sinks: []}").unwrap();
        assert!(!c.enabled);
        let errs = read("audit: {enabled: false, fail_closed: true}").unwrap_err();
        assert_eq!(errs[0].0, "audit.fail_closed");
    }
}
