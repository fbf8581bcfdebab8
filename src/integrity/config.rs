//! The `integrity` section of the config: where pins come from, what a drift or a finding does.
//! Absent, nothing is checked. Each part is on when written: pinning with `pins_file` or
//! `trust_on_first_use`, the description scanner with `descriptions`, the secret scanner with
//! `secrets`.

use std::path::PathBuf;
use std::time::Duration;

use super::poison::{Class, Scanner};
use super::secrets::SecretScanner;
use super::share::ShareConfig;
use crate::yaml::{Reader, Section, parse};

/// What a drift or an unpinned definition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinAction {
    /// Removed from lists; calls refused naming why.
    Block,
    /// Passes; metric, audit field and log line.
    Warn,
    /// Passes; counted only.
    Allow,
}

impl PinAction {
    pub const CHOICES: [(&'static str, PinAction); 3] = [
        ("block", PinAction::Block),
        ("warn", PinAction::Warn),
        ("allow", PinAction::Allow),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PinAction::Block => "block",
            PinAction::Warn => "warn",
            PinAction::Allow => "allow",
        }
    }
}

/// What a finding of the description scanner does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanAction {
    /// Passes; metric, audit field and log line.
    Flag,
    /// The invisible characters are removed from what the client receives (invisible
    /// Unicode only).
    Strip,
    /// The definition is removed from lists and calls to it refused.
    Block,
}

impl ScanAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanAction::Flag => "flag",
            ScanAction::Strip => "strip",
            ScanAction::Block => "block",
        }
    }
}

/// What a secret found in a result does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretAction {
    /// Replaced by `[REDACTED:<detector>]` in the answer the client receives.
    Redact,
    /// The result is replaced by a JSON-RPC error.
    Block,
    /// Passes; metric and audit field.
    Flag,
}

impl SecretAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretAction::Redact => "redact",
            SecretAction::Block => "block",
            SecretAction::Flag => "flag",
        }
    }
}

/// A result larger than `max_scan_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversized {
    /// Replaced by a JSON-RPC error saying it was too large to scan.
    Block,
    /// Passes unscanned; counted and noted in the audit record as `oversized`.
    Pass,
}

#[derive(Debug, Clone)]
pub struct PinConfig {
    pub file: Option<PathBuf>,
    pub reload_interval: Duration,
    pub trust_on_first_use: bool,
    pub on_drift: PinAction,
    pub on_unpinned: PinAction,
    /// Pins learned on first sight shared through Redis (trust on first use only).
    pub share: Option<ShareConfig>,
}

#[derive(Debug, Clone)]
pub struct DescriptionConfig {
    pub max_length: usize,
    /// The action of each class, in `Class::ALL` order.
    pub actions: [ScanAction; 5],
}

impl DescriptionConfig {
    pub fn action(&self, class: Class) -> ScanAction {
        self.actions[Class::ALL
            .iter()
            .position(|c| *c == class)
            .expect("class is in ALL")]
    }
}

#[derive(Debug, Clone)]
pub struct SecretConfig {
    pub action: SecretAction,
    pub builtin: bool,
    pub disable: Vec<String>,
    /// (name, regex)
    pub patterns: Vec<(String, String)>,
    pub max_scan_bytes: usize,
    pub oversized: Oversized,
}

#[derive(Debug, Clone, Default)]
pub struct IntegrityConfig {
    pub pins: Option<PinConfig>,
    pub descriptions: Option<DescriptionConfig>,
    pub secrets: Option<SecretConfig>,
}

/// The default action of each description finding class, in `Class::ALL` order: hidden
/// characters are taken out, instructions aimed at the model block, the rest are flagged (they
/// have honest uses: a tool may name another, or fetch a URL).
fn default_action(class: Class) -> ScanAction {
    match class {
        Class::InvisibleUnicode => ScanAction::Strip,
        Class::Instructions => ScanAction::Block,
        Class::Shadowing | Class::Exfiltration | Class::Length => ScanAction::Flag,
    }
}

/// The longest result the secret scanner reads; the rewriter holds at most 16 MiB.
pub const MAX_SCAN_LIMIT: usize = 16 << 20;

impl IntegrityConfig {
    pub fn is_on(&self) -> bool {
        self.pins.is_some() || self.descriptions.is_some() || self.secrets.is_some()
    }

    pub fn read(r: &mut Reader, s: &mut Section<'_>) -> Self {
        let mut cfg = IntegrityConfig::default();
        let file = r.field(s, "pins_file", |v| parse::string(v).map(PathBuf::from));
        let reload_interval = r.field(s, "reload_interval", |v| {
            let d = parse::duration(v)?;
            if d.is_zero() {
                return Err("must be greater than zero".into());
            }
            Ok(d)
        });
        let tofu = r
            .field(s, "trust_on_first_use", parse::boolean)
            .unwrap_or(false);
        let on_drift = r.choice(s, "on_drift", &PinAction::CHOICES);
        let on_unpinned = r.choice(s, "on_unpinned", &PinAction::CHOICES);
        let mut rs = r.child(s, "redis");
        let share = if rs.is_present() {
            let url = r.field(&mut rs, "url", |v| {
                let u = parse::string(v)?;
                redis::Client::open(u.as_str()).map_err(|e| e.to_string())?;
                Ok(u)
            });
            let key = r
                .field(&mut rs, "key", parse::string)
                .unwrap_or_else(|| "mcp-sentinel:pins".to_string());
            let sync_interval = r
                .field(&mut rs, "sync_interval", |v| {
                    let d = parse::duration(v)?;
                    if d.is_zero() {
                        return Err("must be greater than zero".into());
                    }
                    Ok(d)
                })
                .unwrap_or(Duration::from_secs(5));
            if url.is_none() && !r.has_error_at("integrity.redis.url") {
                r.error("integrity.redis.url", "is required");
            }
            if !tofu {
                r.error(
                    "integrity.redis",
                    "shares pins learned on first sight: set trust_on_first_use: true",
                );
            }
            url.map(|url| ShareConfig {
                url,
                key,
                sync_interval,
            })
        } else {
            None
        };
        r.close(rs);
        if file.is_some() || tofu {
            if let Some(path) = &file
                && let Err(errors) = super::load_pins(path)
            {
                for e in errors {
                    r.error("integrity.pins_file", format!("{}: {e}", path.display()));
                }
            }
            cfg.pins = Some(PinConfig {
                file,
                reload_interval: reload_interval.unwrap_or(Duration::from_secs(2)),
                trust_on_first_use: tofu,
                on_drift: on_drift.unwrap_or(PinAction::Block),
                on_unpinned: on_unpinned.unwrap_or(PinAction::Block),
                share,
            });
        } else {
            for (key, set) in [
                ("reload_interval", reload_interval.is_some()),
                ("on_drift", on_drift.is_some()),
                ("on_unpinned", on_unpinned.is_some()),
            ] {
                if set {
                    r.error(
                        format!("integrity.{key}"),
                        "applies to pins: set pins_file or trust_on_first_use: true",
                    );
                }
            }
        }

        let mut d = r.child(s, "descriptions");
        if d.is_present() {
            let max_length = r
                .field(&mut d, "max_length", |v| match parse::byte_size(v)? {
                    0 => Err("must be at least 1".to_string()),
                    n => Ok(n),
                })
                .unwrap_or(4096);
            let mut actions = Class::ALL.map(default_action);
            for (i, class) in Class::ALL.into_iter().enumerate() {
                let choices: &[(&str, ScanAction)] = if class == Class::InvisibleUnicode {
                    &[
                        ("flag", ScanAction::Flag),
                        ("strip", ScanAction::Strip),
                        ("block", ScanAction::Block),
                    ]
                } else {
                    // Only invisible characters can be taken out without changing what the
                    // text says.
                    &[("flag", ScanAction::Flag), ("block", ScanAction::Block)]
                };
                if let Some(a) = r.choice(&mut d, class.as_str(), choices) {
                    actions[i] = a;
                }
            }
            cfg.descriptions = Some(DescriptionConfig {
                max_length,
                actions,
            });
        }
        r.close(d);

        let mut sec = r.child(s, "secrets");
        if sec.is_present() {
            let action = r
                .choice(
                    &mut sec,
                    "action",
                    &[
                        ("redact", SecretAction::Redact),
                        ("block", SecretAction::Block),
                        ("flag", SecretAction::Flag),
                    ],
                )
                .unwrap_or(SecretAction::Redact);
            let builtin = r.field(&mut sec, "builtin", parse::boolean).unwrap_or(true);
            let disable = r
                .field(&mut sec, "disable", parse::strings)
                .unwrap_or_default();
            let mut patterns = Vec::new();
            for (i, p) in r
                .list(&mut sec, "patterns", "{name, regex} mappings")
                .iter()
                .enumerate()
            {
                let mut ps = r.section(&format!("integrity.secrets.patterns[{i}]"), Some(p));
                let name = r.field(&mut ps, "name", parse::string);
                let regex = r.field(&mut ps, "regex", parse::string);
                match (name, regex) {
                    (Some(n), Some(x)) => patterns.push((n, x)),
                    _ => r.error(
                        format!("integrity.secrets.patterns[{i}]"),
                        "needs a name and a regex",
                    ),
                }
                r.close(ps);
            }
            let max_scan_bytes = r
                .field(&mut sec, "max_scan_bytes", |v| match parse::byte_size(v)? {
                    0 => Err("must be at least 1".to_string()),
                    n if n > MAX_SCAN_LIMIT => {
                        Err(format!("must be at most {MAX_SCAN_LIMIT} (16MiB)"))
                    }
                    n => Ok(n),
                })
                .unwrap_or(4 << 20);
            let oversized = r
                .choice(
                    &mut sec,
                    "oversized",
                    &[("block", Oversized::Block), ("pass", Oversized::Pass)],
                )
                .unwrap_or(Oversized::Block);
            let mut sound = true;
            for name in &disable {
                if !SecretScanner::BUILTIN.contains(&name.as_str()) {
                    sound = false;
                    r.error(
                        "integrity.secrets.disable",
                        format!(
                            "{name:?} is not a built-in detector ({})",
                            SecretScanner::BUILTIN.join(", ")
                        ),
                    );
                }
            }
            // Each pattern on its own first, so every bad one is named.
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = SecretScanner::new(false, &[], std::slice::from_ref(p)) {
                    sound = false;
                    r.error(format!("integrity.secrets.patterns[{i}]"), e);
                }
            }
            if sound && let Err(e) = SecretScanner::new(builtin, &disable, &patterns) {
                r.error("integrity.secrets", e);
            }
            cfg.secrets = Some(SecretConfig {
                action,
                builtin,
                disable,
                patterns,
                max_scan_bytes,
                oversized,
            });
        }
        r.close(sec);
        cfg
    }

    /// One line for `check` and the startup log.
    pub fn summary(&self) -> String {
        if !self.is_on() {
            return "integrity: off".to_string();
        }
        let mut parts = Vec::new();
        if let Some(p) = &self.pins {
            let from = match (&p.file, p.trust_on_first_use) {
                (Some(f), true) => format!("{} + trust on first use", f.display()),
                (Some(f), false) => f.display().to_string(),
                (None, _) => "trust on first use".to_string(),
            };
            let from = match &p.share {
                Some(s) => format!("{from}, shared in redis key {}", s.key),
                None => from,
            };
            parts.push(format!(
                "pins {from} (drift: {}, unpinned: {})",
                p.on_drift.as_str(),
                p.on_unpinned.as_str()
            ));
        }
        if let Some(d) = &self.descriptions {
            let actions: Vec<String> = Class::ALL
                .iter()
                .map(|c| format!("{} {}", c.as_str(), d.action(*c).as_str()))
                .collect();
            parts.push(format!(
                "descriptions (max {} chars; {})",
                d.max_length,
                actions.join(", ")
            ));
        }
        if let Some(s) = &self.secrets {
            parts.push(format!(
                "secrets {} (built-in {}, {} pattern(s), up to {} bytes, larger: {})",
                s.action.as_str(),
                if s.builtin { "on" } else { "off" },
                s.patterns.len(),
                s.max_scan_bytes,
                match s.oversized {
                    Oversized::Block => "block",
                    Oversized::Pass => "pass",
                }
            ));
        }
        format!("integrity: {}", parts.join("; "))
    }

    /// The scanner the `descriptions` section asks for.
    pub fn scanner(&self) -> Option<Scanner> {
        self.descriptions
            .as_ref()
            .map(|d| Scanner::new(d.max_length))
    }
}
