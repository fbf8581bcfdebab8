//! The injector's config file (`mcp-sentinel inject --config`), rendered by the Helm chart into a
//! ConfigMap: what every injected sidecar gets unless a pod annotation says otherwise. Read like
//! the sidecar's config: every key checked, unknown keys rejected, every error listed.

use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::validate;
use crate::config::{ConfigErrors, LogConfig, LogFormat};
use crate::yaml::{Reader, Section, parse};

/// Requests and limits for the sidecar; unset ones are left out of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Resources {
    /// The container's `resources` object.
    pub fn to_json(&self) -> serde_json::Value {
        let pair = |cpu: &Option<String>, memory: &Option<String>| {
            let mut m = serde_json::Map::new();
            if let Some(c) = cpu {
                m.insert("cpu".into(), c.clone().into());
            }
            if let Some(mem) = memory {
                m.insert("memory".into(), mem.clone().into());
            }
            m
        };
        let mut out = serde_json::Map::new();
        let requests = pair(&self.cpu_request, &self.memory_request);
        let limits = pair(&self.cpu_limit, &self.memory_limit);
        if !requests.is_empty() {
            out.insert("requests".into(), requests.into());
        }
        if !limits.is_empty() {
            out.insert("limits".into(), limits.into());
        }
        out.into()
    }

    /// Every request must be a quantity no larger than its limit (the API server's rule).
    pub fn check(&self) -> Result<(), ResourcesError> {
        for (what, request, limit) in [
            ("cpu", &self.cpu_request, &self.cpu_limit),
            ("memory", &self.memory_request, &self.memory_limit),
        ] {
            let r = request.as_deref().map(validate::quantity).transpose()?;
            let l = limit.as_deref().map(validate::quantity).transpose()?;
            if let (Some(r), Some(l)) = (r, l)
                && r > l
            {
                return Err(ResourcesError::RequestOverLimit(what));
            }
        }
        Ok(())
    }
}

/// Why `Resources::check` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcesError {
    #[error(transparent)]
    Quantity(#[from] validate::Invalid),
    /// `cpu` or `memory`.
    #[error("{0} request is larger than its limit")]
    RequestOverLimit(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReview {
    /// Audience of the projected token: the API server's (its service-account issuer).
    pub audience: String,
    pub expiration_seconds: i64,
}

/// Whether Services reach an injected pod's MCP server around the sentinel (`exposure`): the
/// injector lists the pod's namespace's Services (read-only) and warns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    /// `None`: in-cluster config (the injector's service-account token).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Upper bound on listing the Services; the webhook's own timeout must leave room for it.
    pub timeout: Duration,
}

pub const DEFAULT_SERVICE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The sidecar's traffic port unless set otherwise: off every known mesh's ports (`mesh`).
pub const DEFAULT_TRAFFIC_PORT: u16 = 9480;
/// The sidecar's admin port (`/healthz`, `/readyz`, `/metrics`) unless set otherwise.
pub const DEFAULT_ADMIN_PORT: u16 = 9481;

#[derive(Debug, Clone)]
pub struct Settings {
    pub source: String,
    pub image: String,
    pub image_pull_policy: String,
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+) instead of a container.
    pub native_sidecar: bool,
    /// ConfigMap with `config.yaml` and `policy.yaml`, in the pod's namespace.
    pub config_map: String,
    /// Secret with API keys, in the pod's namespace (optional: the pod starts without it).
    pub secret: String,
    pub upstream_path: String,
    /// The traffic port's name when the upstream's port has none.
    pub default_port_name: String,
    /// The sidecar's traffic and admin ports (per pod: the `traffic-port` and `admin-port`
    /// annotations); distinct.
    pub traffic_port: u16,
    pub admin_port: u16,
    pub resources: Resources,
    pub token_review: Option<TokenReview>,
    /// The sidecar's `shutdown.deadline`: injected pods get a grace period that covers it.
    pub shutdown_deadline: Duration,
    /// Off (`None`) unless the file turns it on: it needs `list services` in the namespaces.
    pub service_check: Option<ServiceCheck>,
    pub log: LogConfig,
    /// Extra environment of the sidecar container (the chart's `sidecar.env`): Kubernetes
    /// EnvVar objects, a `value` or a `valueFrom` (a Secret's key for an API key).
    pub env: Vec<serde_json::Value>,
    /// The namespaces the chart protects (its release namespace and `sidecar.namespaces`: the
    /// sidecar's NetworkPolicy and ConfigMap are there). An opted-in pod elsewhere is refused:
    /// injected, its server's port would be open to every pod. `None` (the key absent): any
    /// namespace.
    pub namespaces: Option<Vec<String>>,
}

impl Settings {
    /// Settings for `image` with every other key at its default (tests, and the defaults the
    /// file overrides).
    pub fn with_image(image: &str) -> Self {
        Self {
            source: "<defaults>".into(),
            image: image.into(),
            image_pull_policy: "IfNotPresent".into(),
            native_sidecar: true,
            config_map: "mcp-sentinel-config".into(),
            secret: "mcp-sentinel-api-keys".into(),
            upstream_path: "/mcp".into(),
            default_port_name: "mcp".into(),
            traffic_port: DEFAULT_TRAFFIC_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            resources: Resources {
                cpu_request: Some("50m".into()),
                memory_request: Some("32Mi".into()),
                cpu_limit: None,
                memory_limit: Some("128Mi".into()),
            },
            token_review: None,
            shutdown_deadline: Duration::from_secs(25),
            service_check: None,
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Json,
            },
            env: Vec::new(),
            namespaces: None,
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        crate::yaml::load_file(path, Self::read)
    }

    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ConfigErrors> {
        crate::yaml::read_document(text, source, Self::read)
    }

    fn read(r: &mut Reader, top: &mut Section<'_>, doc: &Value) -> Option<Self> {
        let mut s = Settings::with_image("");
        s.source = r.file().to_string();
        match r.field(top, "image", non_empty) {
            Some(v) => s.image = v,
            None if present(doc, &["image"]) => {}
            None => r.error(
                "image",
                "required: the sidecar image, e.g. registry/mcp-sentinel:0.1.0",
            ),
        }
        if let Some(v) = r.field(top, "image_pull_policy", |v| {
            let p = parse::string(v)?;
            match p.as_str() {
                "Always" | "IfNotPresent" | "Never" => Ok(p),
                _ => Err("must be Always, IfNotPresent or Never".into()),
            }
        }) {
            s.image_pull_policy = v;
        }
        if let Some(v) = r.field(top, "native_sidecar", parse::boolean) {
            s.native_sidecar = v;
        }
        if let Some(v) = r.field(top, "config_map", checked(validate::object_name)) {
            s.config_map = v;
        }
        if let Some(v) = r.field(top, "secret", checked(validate::object_name)) {
            s.secret = v;
        }
        if let Some(v) = r.field(top, "upstream_path", checked(validate::http_path)) {
            s.upstream_path = v;
        }
        if let Some(v) = r.field(top, "default_port_name", checked(validate::port_name)) {
            s.default_port_name = v;
        }
        let traffic = r.field(top, "traffic_port", port);
        let admin = r.field(top, "admin_port", port);
        s.traffic_port = traffic.unwrap_or(s.traffic_port);
        s.admin_port = admin.unwrap_or(s.admin_port);
        if s.traffic_port == s.admin_port && (traffic.is_some() || admin.is_some()) {
            r.error(
                if admin.is_some() {
                    "admin_port"
                } else {
                    "traffic_port"
                },
                format!(
                    "the traffic and admin ports must differ (both are {})",
                    s.traffic_port
                ),
            );
        }
        read_resources(r, top, doc, &mut s.resources);
        read_token_review(r, top, &mut s.token_review);
        if let Some(v) = r.field(top, "shutdown_deadline", parse::duration) {
            s.shutdown_deadline = v;
        }
        s.service_check = read_service_check(r, top);
        s.env = read_env(r, top);
        s.namespaces = r.field(top, "namespaces", |v| {
            let list = parse::strings(v)?;
            for ns in &list {
                validate::object_name(ns).map_err(|e| format!("{ns:?}: {e}"))?;
            }
            Ok(list)
        });
        s.log.read(r, top);
        Some(s)
    }

    /// One line per setting, for the startup log.
    pub fn summary(&self) -> Vec<String> {
        vec![
            format!("source: {}", self.source),
            format!("image: {} ({})", self.image, self.image_pull_policy),
            format!(
                "sidecar: {}",
                if self.native_sidecar {
                    "native (init container, restartPolicy Always)"
                } else {
                    "regular container"
                }
            ),
            format!("config_map: {}, secret: {}", self.config_map, self.secret),
            format!(
                "upstream_path: {}, default_port_name: {}",
                self.upstream_path, self.default_port_name
            ),
            format!(
                "ports: traffic {}, admin {}",
                self.traffic_port, self.admin_port
            ),
            format!("resources: {}", self.resources.to_json()),
            format!("shutdown_deadline: {:?}", self.shutdown_deadline),
            // Names only: a plain value may be a secret.
            format!(
                "env: {:?}",
                self.env
                    .iter()
                    .filter_map(|e| e["name"].as_str())
                    .collect::<Vec<_>>()
            ),
            format!(
                "service_check: {}",
                self.service_check
                    .as_ref()
                    .map_or("off".to_string(), |c| format!(
                        "on ({}, timeout {:?})",
                        c.kubeconfig
                            .as_ref()
                            .map_or("in-cluster".to_string(), |p| p.display().to_string()),
                        c.timeout
                    ))
            ),
            format!(
                "token_review: {}",
                self.token_review
                    .as_ref()
                    .map_or("off".to_string(), |t| format!("audience {}", t.audience))
            ),
        ]
    }
}

fn non_empty(v: &Value) -> Result<String, String> {
    let s = parse::string(v)?;
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s)
}

fn checked(
    check: fn(&str) -> Result<(), validate::Invalid>,
) -> impl Fn(&Value) -> Result<String, String> {
    move |v| {
        let s = parse::string(v)?;
        check(&s).map_err(|e| e.to_string())?;
        Ok(s)
    }
}

fn port(v: &Value) -> Result<u16, String> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| "must be a port number, 1-65535".to_string())
}

fn quantity(v: &Value) -> Result<String, String> {
    // YAML may read `cpu: 1` as a number; Kubernetes quantities are strings.
    let s = match v {
        Value::Number(n) => n.to_string(),
        _ => parse::string(v)?,
    };
    validate::quantity(&s).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Whether the document has a non-null value at `path`.
fn present(doc: &Value, path: &[&str]) -> bool {
    let mut v = doc;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return false,
        }
    }
    !v.is_null()
}

fn read_resources(r: &mut Reader, top: &mut Section<'_>, doc: &Value, out: &mut Resources) {
    let mut res = r.child(top, "resources");
    for (kind, cpu, memory) in [
        ("requests", &mut out.cpu_request, &mut out.memory_request),
        ("limits", &mut out.cpu_limit, &mut out.memory_limit),
    ] {
        let mut section = r.child(&mut res, kind);
        let given = present(doc, &["resources", kind]);
        let c = r.field(&mut section, "cpu", quantity);
        let m = r.field(&mut section, "memory", quantity);
        r.close(section);
        // A section that is present replaces the default one as a whole.
        if given {
            *cpu = c;
            *memory = m;
        }
    }
    r.close(res);
    if let Err(why) = out.check() {
        r.error("resources", why.to_string());
    }
}

fn read_service_check(r: &mut Reader, top: &mut Section<'_>) -> Option<ServiceCheck> {
    let mut sc = r.child(top, "service_check");
    let enabled = r.field(&mut sc, "enabled", parse::boolean).unwrap_or(false);
    let kubeconfig = r.field(&mut sc, "kubeconfig", parse::string);
    let timeout = r.field(&mut sc, "timeout", |v| {
        parse::duration(v).and_then(|d| {
            if d.is_zero() || d > Duration::from_secs(10) {
                Err("must be more than 0 and at most 10s (the webhook's timeout bounds the whole answer)".into())
            } else {
                Ok(d)
            }
        })
    });
    r.close(sc);
    enabled.then(|| ServiceCheck {
        kubeconfig: kubeconfig.map(Into::into),
        timeout: timeout.unwrap_or(DEFAULT_SERVICE_CHECK_TIMEOUT),
    })
}

/// The sources of `valueFrom`, one of which it names.
const ENV_SOURCES: [&str; 4] = [
    "secretKeyRef",
    "configMapKeyRef",
    "fieldRef",
    "resourceFieldRef",
];

/// `env`: Kubernetes EnvVar objects, checked as the API server would (the typed model reads
/// each) plus: no unknown key, one source in `valueFrom`, not both `value` and `valueFrom`,
/// names unique and not the template's own `MCP_SENTINEL_*`.
fn read_env(r: &mut Reader, top: &mut Section<'_>) -> Vec<serde_json::Value> {
    let items = r.list(
        top,
        "env",
        "environment variables ({name, value} or {name, valueFrom})",
    );
    let mut out: Vec<serde_json::Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("env[{i}]");
        match env_var(item, &out) {
            Ok(v) => out.push(v),
            Err(why) => r.error(key, why),
        }
    }
    out
}

fn env_var(item: &Value, seen: &[serde_json::Value]) -> Result<serde_json::Value, String> {
    let map = item
        .as_mapping()
        .ok_or("must be a mapping: {name, value} or {name, valueFrom}")?;
    for k in map.keys() {
        match k.as_str() {
            Some("name" | "value" | "valueFrom") => {}
            Some(k) => return Err(format!("{k:?}: unknown key (name, value, valueFrom)")),
            None => return Err("keys must be strings".into()),
        }
    }
    let json = serde_json::to_value(item).map_err(|e| e.to_string())?;
    let var: k8s_openapi::api::core::v1::EnvVar =
        serde_json::from_value(json.clone()).map_err(|e| format!("not an EnvVar: {e}"))?;
    validate::env_name(&var.name).map_err(|e| e.to_string())?;
    if var.name.starts_with("MCP_SENTINEL_") {
        return Err(format!(
            "{}: MCP_SENTINEL_* variables are the sidecar template's own",
            var.name
        ));
    }
    if seen.iter().any(|e| e["name"] == var.name.as_str()) {
        return Err(format!("{}: set twice", var.name));
    }
    if let Some(from) = json.get("valueFrom") {
        if var.value.is_some() {
            return Err(format!("{}: value and valueFrom are exclusive", var.name));
        }
        let sources = from.as_object().map_or(0, |m| {
            m.keys()
                .filter(|k| ENV_SOURCES.contains(&k.as_str()))
                .count()
        });
        if sources != 1 || from.as_object().is_some_and(|m| m.len() != 1) {
            return Err(format!(
                "{}: valueFrom must name one of {}",
                var.name,
                ENV_SOURCES.join(", ")
            ));
        }
    }
    // As the typed model writes it: what the API server would store.
    serde_json::to_value(&var).map_err(|e| e.to_string())
}

fn read_token_review(r: &mut Reader, top: &mut Section<'_>, out: &mut Option<TokenReview>) {
    let mut tr = r.child(top, "token_review");
    let enabled = r.field(&mut tr, "enabled", parse::boolean).unwrap_or(false);
    let audience = r.field(&mut tr, "audience", parse::string);
    let expiration = r.field(&mut tr, "expiration_seconds", |v| {
        v.as_i64()
            .filter(|n| (600..=86_400 * 365).contains(n))
            .ok_or_else(|| "must be a whole number of seconds, at least 600".to_string())
    });
    r.close(tr);
    if !enabled {
        return;
    }
    match audience.filter(|a| !a.trim().is_empty()) {
        Some(audience) => {
            *out = Some(TokenReview {
                audience,
                expiration_seconds: expiration.unwrap_or(3600),
            });
        }
        None => r.error(
            "token_review.audience",
            "required when token_review.enabled: the API server's audience (its service-account issuer)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let s = Settings::from_yaml("image: r/mcp-sentinel:1\n", "t").unwrap();
        assert_eq!(s.image, "r/mcp-sentinel:1");
        assert!(s.native_sidecar);
        assert_eq!(s.config_map, "mcp-sentinel-config");
        assert_eq!(
            s.resources.to_json(),
            serde_json::json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
        );
        assert!(s.token_review.is_none());
        assert_eq!((s.traffic_port, s.admin_port), (9480, 9481));
    }

    #[test]
    fn ports_are_numbers_and_distinct() {
        for (text, key, why) in [
            (
                "traffic_port: 0",
                "traffic_port",
                "must be a port number, 1-65535",
            ),
            (
                "admin_port: 65536",
                "admin_port",
                "must be a port number, 1-65535",
            ),
            (
                "admin_port: \"9481\"",
                "admin_port",
                "must be a port number, 1-65535",
            ),
            (
                "admin_port: 9480",
                "admin_port",
                "the traffic and admin ports must differ (both are 9480)",
            ),
            (
                "traffic_port: 9481",
                "traffic_port",
                "the traffic and admin ports must differ (both are 9481)",
            ),
        ] {
            let errs = Settings::from_yaml(&format!("image: i\n{text}\n"), "t")
                .unwrap_err()
                .0;
            assert_eq!(errs.len(), 1, "{text}: {errs:?}");
            assert_eq!(errs[0].key, key, "{text}");
            assert_eq!(errs[0].why, why, "{text}");
        }
        let s =
            Settings::from_yaml("image: i\ntraffic_port: 9481\nadmin_port: 9480\n", "t").unwrap();
        assert_eq!((s.traffic_port, s.admin_port), (9481, 9480));
    }

    #[test]
    fn full_file() {
        let text = "image: r/s:2\nimage_pull_policy: Always\nnative_sidecar: false\nconfig_map: c\nsecret: k\nupstream_path: /api/mcp\ndefault_port_name: web\ntraffic_port: 8480\nadmin_port: 8481\nresources:\n  requests:\n    cpu: 100m\n  limits:\n    cpu: 1\n    memory: 64Mi\ntoken_review:\n  enabled: true\n  audience: https://kubernetes.default.svc\n  expiration_seconds: 7200\nlog:\n  level: debug\n  format: text\n";
        let s = Settings::from_yaml(text, "t").unwrap();
        assert!(!s.native_sidecar);
        assert_eq!(s.upstream_path, "/api/mcp");
        assert_eq!((s.traffic_port, s.admin_port), (8480, 8481));
        assert_eq!(
            s.resources,
            Resources {
                cpu_request: Some("100m".into()),
                memory_request: None,
                cpu_limit: Some("1".into()),
                memory_limit: Some("64Mi".into()),
            }
        );
        assert_eq!(
            s.token_review,
            Some(TokenReview {
                audience: "https://kubernetes.default.svc".into(),
                expiration_seconds: 7200
            })
        );
        assert_eq!(s.log.format, LogFormat::Text);
    }

    #[test]
    fn the_service_check_is_off_unless_turned_on() {
        let s = Settings::from_yaml("image: r/s:1\n", "t").unwrap();
        assert_eq!(s.service_check, None);
        let s =
            Settings::from_yaml("image: r/s:1\nservice_check:\n  enabled: true\n", "t").unwrap();
        assert_eq!(
            s.service_check,
            Some(ServiceCheck {
                kubeconfig: None,
                timeout: DEFAULT_SERVICE_CHECK_TIMEOUT
            })
        );
        let text =
            "image: r/s:1\nservice_check:\n  enabled: true\n  kubeconfig: /k\n  timeout: 500ms\n";
        let s = Settings::from_yaml(text, "t").unwrap();
        assert_eq!(
            s.service_check,
            Some(ServiceCheck {
                kubeconfig: Some("/k".into()),
                timeout: Duration::from_millis(500)
            })
        );
        let errs = Settings::from_yaml(
            "image: r/s:1\nservice_check:\n  enabled: true\n  timeout: 30s\n  colour: red\n",
            "t",
        )
        .unwrap_err()
        .0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["service_check.timeout", "service_check.colour"]);
    }

    #[test]
    fn every_error_is_listed() {
        let text = "image_pull_policy: Sometimes\nconfig_map: Bad_Name\nupstream_path: mcp\ndefault_port_name: HTTP\nresources:\n  requests:\n    cpu: 2\n  limits:\n    cpu: 1\n    disk: 1Gi\ntoken_review:\n  enabled: true\ncolour: blue\n";
        let errs = Settings::from_yaml(text, "inj.yaml").unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "image",
                "image_pull_policy",
                "config_map",
                "upstream_path",
                "default_port_name",
                "resources.limits.disk",
                "resources",
                "token_review.audience",
                "colour",
            ]
        );
    }

    #[test]
    fn env_is_kubernetes_env_vars_checked_before_any_pod() {
        let text = "image: i\nenv:\n  - name: OTEL_EXPORTER_OTLP_HEADERS\n    valueFrom:\n      secretKeyRef: {name: otel-auth, key: headers}\n  - {name: OTEL_SERVICE_NAME, value: weather}\n";
        let s = Settings::from_yaml(text, "t").unwrap();
        assert_eq!(
            s.env,
            [
                serde_json::json!({"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom":
                    {"secretKeyRef": {"name": "otel-auth", "key": "headers"}}}),
                serde_json::json!({"name": "OTEL_SERVICE_NAME", "value": "weather"}),
            ]
        );
        assert!(
            s.summary()
                .contains(&"env: [\"OTEL_EXPORTER_OTLP_HEADERS\", \"OTEL_SERVICE_NAME\"]".into())
        );
        assert!(
            Settings::from_yaml("image: i\n", "t")
                .unwrap()
                .env
                .is_empty()
        );

        let bad = "image: i\nenv:\n  - {name: MCP_SENTINEL_LISTEN, value: x}\n  - {name: A, value: x}\n  - {name: A, value: y}\n  - {name: B, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n  - {name: C, valueFrom: {}}\n  - {name: D, valuefrom: {fieldRef: {fieldPath: metadata.name}}}\n  - {name: 1E, value: x}\n  - {name: F, value: 1}\n  - just-a-string\n";
        let errs = Settings::from_yaml(bad, "t").unwrap_err().0;
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.key.as_str(), e.why.as_str()))
            .collect();
        assert_eq!(got.len(), 8, "{got:#?}");
        for (i, (key, why)) in got.iter().enumerate() {
            let (want_key, want) = [
                ("env[0]", "MCP_SENTINEL_LISTEN: MCP_SENTINEL_* variables"),
                ("env[2]", "A: set twice"),
                ("env[3]", "B: value and valueFrom are exclusive"),
                ("env[4]", "C: valueFrom must name one of"),
                ("env[5]", "\"valuefrom\": unknown key"),
                ("env[6]", "\"1E\""),
                ("env[7]", "not an EnvVar"),
                ("env[8]", "must be a mapping"),
            ][i];
            assert_eq!(*key, want_key, "{got:#?}");
            assert!(why.starts_with(want), "{key}: {why}");
        }
    }
}
