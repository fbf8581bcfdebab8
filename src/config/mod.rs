//! The sentinel's configuration: a YAML file (every key optional, unknown keys rejected),
//! overridden by command-line flags and their environment variables.

pub mod audit;
pub mod auth;
pub mod otel;
pub mod ratelimit;
pub mod schema;
pub mod stdio;
pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::Value;

pub use crate::yaml::{ConfigError, ConfigErrors};
use crate::yaml::{Reader, Section, parse};
pub use auth::{AuthConfig, SessionsConfig, TrafficTls};
pub use upstream::UpstreamUrl;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:15080";
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:15090";
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where this config came from (a file path, or `<defaults>`).
    pub source: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The MCP endpoint path served on the traffic port.
    pub mcp_path: String,
    pub upstream: UpstreamConfig,
    pub limits: Limits,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub runtime: RuntimeConfig,
    pub auth: AuthConfig,
    /// TLS (and client certificates) on the traffic port; plain HTTP when `None`.
    pub tls: Option<TrafficTls>,
    pub sessions: SessionsConfig,
    /// Required: there is no implicit allow.
    pub policy: Option<crate::policy::PolicyConfig>,
    /// Rate and concurrency limits; none when absent.
    pub rate_limits: Option<ratelimit::RateLimitConfig>,
    /// Where the record of every request goes; one stdout sink when absent.
    pub audit: audit::AuditConfig,
    /// Tool integrity (pins, description and secret scanners); off when absent.
    pub integrity: crate::integrity::IntegrityConfig,
    /// OpenTelemetry spans (`tracing`): off unless enabled here or by `OTEL_TRACES_EXPORTER`.
    pub tracing: otel::TracingConfig,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Threads serving traffic. 1 (the default) runs everything on one thread, like
    /// linkerd2-proxy: no cross-thread wake-ups, which is what a sidecar with a fraction of a
    /// core wants. Raise it for a sidecar given several cores.
    pub worker_threads: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// An HTTP upstream; may come from `--upstream` instead of the file.
    pub url: Option<UpstreamUrl>,
    /// A stdio upstream: `[program, args...]` run as the sentinel's child, in place of `url`;
    /// may come from `run -- PROG ARGS...` instead of the file.
    pub command: Option<Vec<String>>,
    /// How stdio children run (environment, sharing, limits).
    pub stdio: stdio::StdioSettings,
    /// Longest wait for the upstream's response headers. Never applied to SSE streams.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to the upstream is kept.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Longest time to receive a request body once its headers are in (then 408).
    pub body_read_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// From SIGTERM to exit, at the most.
    pub deadline: Duration,
    /// How long open SSE streams may keep running after SIGTERM before they are closed.
    pub sse_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A tracing filter (`info`, `mcp_sentinel=debug`); `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: "<defaults>".into(),
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid default"),
            mcp_path: "/mcp".into(),
            upstream: UpstreamConfig {
                url: None,
                command: None,
                stdio: stdio::StdioSettings::default(),
                timeout: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(2),
                pool_idle_timeout: Duration::from_secs(60),
                pool_max_idle: 64,
            },
            limits: Limits {
                max_body_bytes: DEFAULT_MAX_BODY,
                body_read_timeout: Duration::from_secs(30),
            },
            shutdown: ShutdownConfig {
                deadline: Duration::from_secs(25),
                sse_grace: Duration::from_secs(5),
            },
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Json,
            },
            runtime: RuntimeConfig { worker_threads: 1 },
            auth: AuthConfig::default(),
            tls: None,
            sessions: SessionsConfig::default(),
            policy: None,
            rate_limits: None,
            audit: audit::AuditConfig::default(),
            integrity: crate::integrity::IntegrityConfig::default(),
            tracing: otel::TracingConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        crate::yaml::load_file(path, Self::read)
    }

    /// Parses and validates a YAML document; `source` names it in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ConfigErrors> {
        crate::yaml::read_document(text, source, Self::read)
    }

    fn read(r: &mut Reader, top: &mut Section<'_>, doc: &Value) -> Option<Self> {
        let mut cfg = Config {
            source: r.file().to_string(),
            ..Config::default()
        };
        if let Some(v) = r.field(top, "listen", parse::socket_addr) {
            cfg.listen = v;
        }
        if let Some(v) = r.field(top, "admin_listen", parse::socket_addr) {
            cfg.admin_listen = v;
        }
        if let Some(v) = r.field(top, "mcp_path", parse_mcp_path) {
            cfg.mcp_path = v;
        }

        let mut up = r.child(top, "upstream");
        cfg.upstream.url = r.field(&mut up, "url", |v| {
            UpstreamUrl::parse(&parse::string(v)?).map_err(|e| e.to_string())
        });
        if let Some(v) = r.field(&mut up, "timeout", positive_duration) {
            cfg.upstream.timeout = v;
        }
        if let Some(v) = r.field(&mut up, "connect_timeout", positive_duration) {
            cfg.upstream.connect_timeout = v;
        }
        if let Some(v) = r.field(&mut up, "pool_idle_timeout", parse::duration) {
            cfg.upstream.pool_idle_timeout = v;
        }
        if let Some(v) = r.field(&mut up, "pool_max_idle", count) {
            cfg.upstream.pool_max_idle = v;
        }
        (cfg.upstream.command, cfg.upstream.stdio) = stdio::StdioSettings::read(r, &mut up);
        r.close(up);
        if cfg.upstream.url.is_some() && cfg.upstream.command.is_some() {
            r.error(
                "upstream",
                "url and command are two upstreams: set one (a command runs the server as a child)",
            );
        }

        let mut limits = r.child(top, "limits");
        if let Some(v) = r.field(&mut limits, "max_body_bytes", parse::byte_size) {
            cfg.limits.max_body_bytes = v;
        }
        if let Some(v) = r.field(&mut limits, "body_read_timeout", positive_duration) {
            cfg.limits.body_read_timeout = v;
        }
        r.close(limits);

        let mut sd = r.child(top, "shutdown");
        if let Some(v) = r.field(&mut sd, "deadline", positive_duration) {
            cfg.shutdown.deadline = v;
        }
        if let Some(v) = r.field(&mut sd, "sse_grace", parse::duration) {
            cfg.shutdown.sse_grace = v;
        }
        r.close(sd);
        if cfg.shutdown.sse_grace > cfg.shutdown.deadline {
            r.error(
                "shutdown.sse_grace",
                "must not be longer than shutdown.deadline",
            );
        }

        cfg.log.read(r, top);

        let mut rt = r.child(top, "runtime");
        if let Some(v) = r.field(&mut rt, "worker_threads", |v| match count(v)? {
            0 => Err("must be at least 1".to_string()),
            n if n > 256 => Err("must be at most 256".to_string()),
            n => Ok(n),
        }) {
            cfg.runtime.worker_threads = v;
        }
        r.close(rt);

        let mut auth = r.child(top, "auth");
        cfg.auth = AuthConfig::read(r, &mut auth);
        r.close(auth);
        let mut tls = r.child(top, "tls");
        cfg.tls = TrafficTls::read(r, &mut tls);
        r.close(tls);
        let raw_policy = doc.get("policy");
        let mut policy = r.child(top, "policy");
        cfg.policy = crate::policy::PolicyConfig::read(r, &mut policy, raw_policy);
        r.close(policy);
        let mut sessions = r.child(top, "sessions");
        cfg.sessions = SessionsConfig::read(r, &mut sessions);
        r.close(sessions);
        let mut rl = r.child(top, "rate_limits");
        cfg.rate_limits = ratelimit::RateLimitConfig::read(r, &mut rl);
        r.close(rl);
        let mut audit = r.child(top, "audit");
        cfg.audit = audit::AuditConfig::read(r, &mut audit);
        r.close(audit);
        let mut integrity = r.child(top, "integrity");
        cfg.integrity = crate::integrity::IntegrityConfig::read(r, &mut integrity);
        r.close(integrity);
        let mut tracing = r.child(top, "tracing");
        cfg.tracing = otel::TracingConfig::read(r, &mut tracing);
        r.close(tracing);
        if cfg.auth.mtls.is_some() && cfg.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none()) {
            r.error(
                "auth.mtls",
                "needs tls.client_ca_file to verify client certificates",
            );
        }
        if let Some(why) = cfg.auth_problem() {
            r.error("auth", why);
        }

        Some(cfg)
    }

    /// The effective tracing settings: the `tracing` section over the process environment's
    /// `OTEL_*` variables; `None` when off. Errors name the key or variable at fault.
    pub fn tracing_settings(&self) -> Result<Option<otel::TraceSettings>, ConfigErrors> {
        self.tracing
            .resolve(&|k| std::env::var(k).ok())
            .map_err(|errs| {
                ConfigErrors(
                    errs.into_iter()
                        .map(|why| ConfigError {
                            file: self.source.clone(),
                            key: "tracing".into(),
                            why,
                        })
                        .collect(),
                )
            })
    }

    /// Why this config cannot serve traffic as far as authentication goes: no authenticator
    /// and anonymous callers not explicitly allowed. Secure by default.
    pub fn auth_problem(&self) -> Option<&'static str> {
        (!self.auth.anonymous && !self.auth.has_authenticator()).then_some(
            "no authenticator is configured: configure api_keys, jwt, kubernetes or mtls \
             (or auth.stdio for `mcp-sentinel stdio`), or set anonymous: allow to accept \
             every caller (local testing only)",
        )
    }

    /// The upstream, as the startup log and `check` show it. Holds no secrets.
    pub fn summary_upstream(&self) -> String {
        match (&self.upstream.url, &self.upstream.command) {
            (Some(u), _) => u.to_string(),
            // Arguments and environment values may hold secrets: the program, counts and names.
            (None, Some(argv)) => {
                let st = &self.upstream.stdio;
                format!(
                    "stdio command {:?} with {} argument(s), env {:?} + inherited {:?}, sharing {}, pool {}, max_children {}",
                    argv[0],
                    argv.len() - 1,
                    st.env.keys().collect::<Vec<_>>(),
                    st.inherit_env,
                    st.sharing.as_str(),
                    st.pool,
                    st.max_children
                )
            }
            (None, None) => "(not set: pass --upstream or -- PROG ARGS...)".to_string(),
        }
    }

    /// One line per setting, for `check` and the startup log. Holds no secrets.
    pub fn summary(&self) -> Vec<String> {
        let upstream = self.summary_upstream();
        let rate_limits = self
            .rate_limits
            .as_ref()
            .map_or("rate_limits: none".to_string(), |r| r.summary());
        vec![
            format!("source: {}", self.source),
            format!("listen: {} (MCP path {})", self.listen, self.mcp_path),
            format!("admin_listen: {}", self.admin_listen),
            format!(
                "upstream: {upstream} (timeout {:?}, connect timeout {:?})",
                self.upstream.timeout, self.upstream.connect_timeout
            ),
            format!(
                "limits: max_body_bytes {}, body_read_timeout {:?}",
                self.limits.max_body_bytes, self.limits.body_read_timeout
            ),
            format!(
                "shutdown: deadline {:?}, SSE grace {:?}",
                self.shutdown.deadline, self.shutdown.sse_grace
            ),
            format!("runtime.worker_threads: {}", self.runtime.worker_threads),
            match &self.policy {
                Some(p) => p.summary(),
                None => "policy: (none)".to_string(),
            },
            rate_limits,
            self.audit.summary(),
            self.integrity.summary(),
        ]
    }
}

fn positive_duration(v: &Value) -> Result<Duration, String> {
    let d = parse::duration(v)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn count(v: &Value) -> Result<usize, String> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "must be a whole number".to_string())
}

fn parse_mcp_path(v: &Value) -> Result<String, String> {
    let p = parse::string(v)?;
    let valid = p.starts_with('/')
        && !p.contains(['?', '#', ' '])
        && p.parse::<http::uri::PathAndQuery>().is_ok();
    if !valid {
        return Err(format!("{p:?} is not an absolute path such as /mcp"));
    }
    if p.starts_with("/.well-known/") {
        return Err("must not be under /.well-known/".into());
    }
    Ok(p)
}

impl LogConfig {
    /// Reads the `log` section of `top` over these values (the sidecar's config and the
    /// injector's settings both have one).
    pub fn read(&mut self, r: &mut Reader, top: &mut Section<'_>) {
        let mut log = r.child(top, "log");
        if let Some(v) = r.field(&mut log, "level", |v| {
            let s = parse::string(v)?;
            tracing_subscriber::EnvFilter::try_new(&s)
                .map_err(|e| format!("{s:?} is not a log filter: {e}"))?;
            Ok(s)
        }) {
            self.level = v;
        }
        if let Some(v) = r.choice(
            &mut log,
            "format",
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        ) {
            self.format = v;
        }
        r.close(log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        let c = Config::from_yaml(
            "auth: {anonymous: allow}\npolicy: {default: allow}",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.limits.max_body_bytes, 4 << 20);
        assert!(c.upstream.url.is_none());
    }

    #[test]
    fn every_error_is_listed_with_its_key() {
        let text = "listen: nowhere\nbogus: 1\nupstream:\n  url: ftp://x\n  timeout: 0s\n  extra: true\nlimits:\n  max_body_bytes: 4 parsecs\nlog: 3\nauth: {anonymous: allow}\npolicy: {default: deny}\n";
        let errs = Config::from_yaml(text, "bad.yaml").unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen",
                "upstream.url",
                "upstream.timeout",
                "upstream.extra",
                "limits.max_body_bytes",
                "log",
                "bogus"
            ]
        );
        assert!(errs.iter().all(|e| e.file == "bad.yaml"));
        assert_eq!(errs[3].why, "unknown key");
    }

    #[test]
    fn sizes_durations_and_paths() {
        let text = "auth: {anonymous: allow}\npolicy: {default: deny}\nmcp_path: /api/mcp\nupstream:\n  url: http://127.0.0.1:9000/mcp\n  timeout: 5s\nlimits:\n  max_body_bytes: 1MiB\n";
        let c = Config::from_yaml(text, "t").unwrap();
        assert_eq!(c.mcp_path, "/api/mcp");
        assert_eq!(c.upstream.timeout, Duration::from_secs(5));
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        assert!(Config::from_yaml("mcp_path: mcp\n", "t").is_err());
        // Secure by default: no authenticator and no explicit anonymous access is refused.
        let errs = Config::from_yaml("", "t").unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["policy", "auth"]);
        assert!(errs[1].why.contains("anonymous: allow"));
        assert!(errs[0].why.contains("is required"));
        let errs = Config::from_yaml("auth: {mtls: {}}\npolicy: {default: deny}", "t")
            .unwrap_err()
            .0;
        assert_eq!(errs[0].key, "auth.mtls");
        assert!(Config::from_yaml("mcp_path: /.well-known/x\n", "t").is_err());
    }

    #[test]
    fn yaml_syntax_error_is_reported() {
        let errs = Config::from_yaml("listen: [", "t.yaml").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].why.starts_with("not valid YAML"));
    }
}
