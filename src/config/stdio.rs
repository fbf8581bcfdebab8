//! A stdio upstream: the MCP server is a command the sentinel runs as its child and talks to
//! over stdin/stdout (`upstream.command`), with the settings of those children.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::yaml::{Reader, Section, parse};

/// How clients share children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Legacy sessions get a child each; modern-era requests go to a warm pool.
    Session,
    /// One child for every caller, ids remapped: only for servers stateless by design.
    Shared,
}

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Session => "session",
            Sharing::Shared => "shared",
        }
    }
}

/// Resource limits set on each child before it starts (`None`: inherited).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildLimits {
    /// Address space, bytes (RLIMIT_AS).
    pub memory: Option<u64>,
    /// CPU time (RLIMIT_CPU), whole seconds.
    pub cpu_seconds: Option<u64>,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct StdioSettings {
    /// The whole environment of a child, beside `inherit_env`.
    pub env: BTreeMap<String, String>,
    /// Variables of the sentinel's own environment a child gets (when set).
    pub inherit_env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub sharing: Sharing,
    /// Warm children serving modern-era (stateless) requests, in `session` sharing.
    pub pool: usize,
    /// Most children running at once (sessions and pool); beyond it, 503 + Retry-After.
    pub max_children: usize,
    /// A session with no request for this long ends with its child.
    pub idle_ttl: Duration,
    /// Longest wait for a child's answer to `initialize` (and for a pool child to start).
    pub start_timeout: Duration,
    /// Longest line a child may write to stdout; a longer one is dropped unread.
    pub max_line_bytes: usize,
    /// Longest wait for a child to take a message on stdin; then it is hung and ended.
    pub write_timeout: Duration,
    pub limits: ChildLimits,
    /// The `mcp-sentinel` binary, which launches each child (sets its limits, ties its life to
    /// the sentinel's). Not read from the file: `run` sets it to itself.
    pub launcher: Option<PathBuf>,
}

/// Variables a child gets from the sentinel's environment unless `inherit_env` says otherwise:
/// what a command line needs to find its interpreter, none of them a secret.
pub const DEFAULT_INHERIT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

impl Default for StdioSettings {
    fn default() -> Self {
        Self {
            env: BTreeMap::new(),
            inherit_env: DEFAULT_INHERIT_ENV.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            sharing: Sharing::Session,
            pool: 2,
            max_children: 64,
            idle_ttl: Duration::from_secs(15 * 60),
            start_timeout: Duration::from_secs(20),
            max_line_bytes: 16 << 20,
            write_timeout: Duration::from_secs(10),
            limits: ChildLimits::default(),
            launcher: None,
        }
    }
}

fn positive(v: &serde_yaml_ng::Value) -> Result<usize, String> {
    v.as_u64()
        .filter(|n| *n > 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "must be a positive whole number".to_string())
}

fn nonzero_duration(v: &serde_yaml_ng::Value) -> Result<Duration, String> {
    match parse::duration(v)? {
        d if d.is_zero() => Err("must be longer than 0s".into()),
        d => Ok(d),
    }
}

/// An environment variable name: what a shell accepts.
fn env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("{name:?} is not an environment variable name"))
    }
}

impl StdioSettings {
    /// Reads the stdio keys of the `upstream` section: `command` (returned), `env`,
    /// `inherit_env`, `cwd` and the `stdio` block.
    pub fn read(r: &mut Reader, up: &mut Section<'_>) -> (Option<Vec<String>>, Self) {
        let mut cfg = Self::default();
        let command = r.field(up, "command", |v| {
            let argv = parse::strings(v)?;
            match argv.first() {
                None => Err("must name a program: [program, args...]".to_string()),
                Some(p) if p.is_empty() => Err("the program must not be empty".to_string()),
                Some(_) => Ok(argv),
            }
        });
        if let Some(env) = r.field(up, "env", |v| {
            let map = v.as_mapping().ok_or("must be a mapping of NAME: value")?;
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let k = k.as_str().ok_or("names must be strings")?;
                env_name(k)?;
                let v = match v {
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    serde_yaml_ng::Value::Number(n) => n.to_string(),
                    serde_yaml_ng::Value::Bool(b) => b.to_string(),
                    _ => return Err(format!("{k}: the value must be a string")),
                };
                out.insert(k.to_string(), v);
            }
            Ok(out)
        }) {
            cfg.env = env;
        }
        if let Some(names) = r.field(up, "inherit_env", |v| {
            let names = parse::strings(v)?;
            for n in &names {
                env_name(n)?;
                if n.starts_with("MCP_SENTINEL_") {
                    return Err(format!(
                        "{n}: the sentinel's own settings never reach a child"
                    ));
                }
            }
            Ok(names)
        }) {
            cfg.inherit_env = names;
        }
        if let Some(cwd) = r.field(up, "cwd", |v| parse::string(v).map(PathBuf::from)) {
            cfg.cwd = Some(cwd);
        }
        let mut s = r.child(up, "stdio");
        if let Some(v) = r.choice(
            &mut s,
            "sharing",
            &[("session", Sharing::Session), ("shared", Sharing::Shared)],
        ) {
            cfg.sharing = v;
        }
        if let Some(v) = r.field(&mut s, "pool", positive) {
            cfg.pool = v;
        }
        if let Some(v) = r.field(&mut s, "max_children", positive) {
            cfg.max_children = v;
        }
        if let Some(v) = r.field(&mut s, "idle_ttl", nonzero_duration) {
            cfg.idle_ttl = v;
        }
        if let Some(v) = r.field(&mut s, "start_timeout", nonzero_duration) {
            cfg.start_timeout = v;
        }
        if let Some(v) = r.field(&mut s, "max_line_bytes", |v| {
            parse::byte_size(v).and_then(|n| {
                if n < 1024 {
                    Err("must be at least 1KiB".to_string())
                } else {
                    Ok(n)
                }
            })
        }) {
            cfg.max_line_bytes = v;
        }
        if let Some(v) = r.field(&mut s, "write_timeout", nonzero_duration) {
            cfg.write_timeout = v;
        }
        let mut l = r.child(&mut s, "limits");
        cfg.limits.memory = r.field(&mut l, "memory", |v| {
            parse::byte_size(v).and_then(|n| {
                if n < (16 << 20) {
                    Err("must be at least 16MiB: no interpreter starts in less".to_string())
                } else {
                    Ok(n as u64)
                }
            })
        });
        cfg.limits.cpu_seconds = r.field(&mut l, "cpu_time", |v| {
            nonzero_duration(v).map(|d| d.as_secs().max(1))
        });
        cfg.limits.open_files = r.field(&mut l, "open_files", |v| {
            positive(v).and_then(|n| {
                if n < 16 {
                    Err("must be at least 16".to_string())
                } else {
                    Ok(n as u64)
                }
            })
        });
        r.close(l);
        r.close(s);
        if cfg.sharing == Sharing::Session && cfg.pool > cfg.max_children {
            r.error(
                "upstream.stdio.pool",
                "must not be larger than upstream.stdio.max_children",
            );
        }
        (command, cfg)
    }

    /// The environment a child starts with: `inherit_env` read from `own`, then `env`.
    pub fn child_env(&self, own: impl Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .inherit_env
            .iter()
            .filter_map(|k| own(k).map(|v| (k.clone(), v)))
            .collect();
        out.extend(self.env.clone());
        out
    }
}
