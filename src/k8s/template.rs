//! The sidecar template shared with the Helm chart (`helm/mcp-sentinel/files/sidecar.yaml`,
//! embedded at build time): placeholder substitution and assembly, exactly as the chart's
//! `templates/_sidecar.tpl` does them. The file's header comment is the contract.

use k8s_openapi::api::core::v1::{Container, Volume, VolumeMount};
use serde_json::{Map, Value};

use super::settings::TokenReview;

/// The template, as the chart ships it.
pub const SIDECAR_TEMPLATE: &str = include_str!("../../helm/mcp-sentinel/files/sidecar.yaml");

/// Every placeholder the template may hold; each is replaced by a JSON value.
pub const PLACEHOLDERS: [&str; 11] = [
    "IMAGE",
    "IMAGE_PULL_POLICY",
    "UPSTREAM_URL",
    "TRAFFIC_PORT_NAME",
    "TRAFFIC_PORT",
    "ADMIN_PORT",
    "RESOURCES",
    "CONFIG_MAP",
    "SECRET",
    "TOKEN_AUDIENCE",
    "TOKEN_EXPIRATION_SECONDS",
];

/// Token values substituted when TokenReview is off (the section is then dropped). The chart
/// substitutes the same ones.
const TOKEN_OFF: (&str, i64) = ("", 3600);

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder ${{{0}}} in the sidecar template")]
    UnknownPlaceholder(String),
    #[error("the rendered sidecar template is not valid YAML: {0}")]
    Yaml(String),
    #[error("the sidecar template has no valid {0}")]
    Shape(&'static str),
}

/// The values one sidecar is rendered with.
#[derive(Debug, Clone)]
pub struct Params {
    pub image: String,
    pub image_pull_policy: String,
    /// `http://127.0.0.1:PORT/PATH` of the upstream in the same pod.
    pub upstream_url: String,
    /// The name Services target, taken over from the upstream's port.
    pub traffic_port_name: String,
    /// The sidecar's ports: traffic (MCP) and admin (`/healthz`, `/readyz`, `/metrics`).
    pub traffic_port: u16,
    pub admin_port: u16,
    /// The container's `resources` object.
    pub resources: Value,
    pub config_map: String,
    pub secret: String,
    pub token_review: Option<TokenReview>,
    /// An init container with `restartPolicy: Always` rather than a regular container.
    pub native: bool,
    /// Extra environment (Kubernetes EnvVar objects, names unique): appended to the
    /// container's, replacing the template's entry of the same name.
    pub env: Vec<Value>,
}

/// A rendered and assembled sidecar: what gets added to a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    /// The container, already merged with `native` when `native` is set.
    pub container: Value,
    pub native: bool,
    pub volumes: Vec<Value>,
    pub pod_labels: Map<String, Value>,
    pub pod_annotations: Map<String, Value>,
    /// What the upstream's port is renamed to.
    pub upstream_port_name: String,
    pub traffic_port: u16,
    pub admin_port: u16,
    /// For a stdio server, in place of the sidecar.
    pub stdio: Stdio,
    /// For an upstream on a Unix socket: the volume the sidecar and the server share.
    pub socket_volume: Value,
}

/// The template's `stdio` section: what a stdio server's pod gets instead of a sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct Stdio {
    /// The init container that copies the binary into `volume`.
    pub install: Value,
    /// The server container's (read-only) mount of `volume`.
    pub volume_mount: Value,
    pub volume: Value,
}

impl Stdio {
    pub fn install_name(&self) -> &str {
        self.install["name"].as_str().unwrap_or_default()
    }

    pub fn volume_name(&self) -> &str {
        self.volume["name"].as_str().unwrap_or_default()
    }

    /// Where the server's container finds the binary.
    pub fn binary(&self) -> String {
        let dir = self.volume_mount["mountPath"].as_str().unwrap_or_default();
        format!("{}/mcp-sentinel", dir.trim_end_matches('/'))
    }
}

impl Sidecar {
    pub fn name(&self) -> &str {
        self.container["name"].as_str().unwrap_or_default()
    }

    /// `(name, containerPort)` of every port the sidecar listens on.
    pub fn ports(&self) -> Vec<(String, i64)> {
        self.container["ports"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or_default().to_string(),
                            p["containerPort"].as_i64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn socket_volume_name(&self) -> &str {
        self.socket_volume["name"].as_str().unwrap_or_default()
    }

    pub fn volume_names(&self) -> Vec<&str> {
        self.volumes
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect()
    }
}

/// Replaces every `${NAME}` of `template` with `values[NAME]` as JSON, in one pass (a value
/// holding `${...}` is never expanded again). An unknown `${UPPER_CASE}` name is an error.
pub fn substitute(template: &str, values: &[(&str, Value)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if name.is_empty() || !after[name_len..].starts_with('}') {
            // Not a placeholder (e.g. `${...}` in a comment): copied as is.
            out.push_str("${");
            rest = after;
            continue;
        }
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| TemplateError::UnknownPlaceholder(name.to_string()))?;
        out.push_str(&value.to_string());
        rest = &after[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders the shipped template.
pub fn render(p: &Params) -> Result<Sidecar, TemplateError> {
    render_from(SIDECAR_TEMPLATE, p)
}

/// Renders `template` (the shipped one, or a test's) with `p` and assembles the sidecar.
pub fn render_from(template: &str, p: &Params) -> Result<Sidecar, TemplateError> {
    let (audience, expiration) = match &p.token_review {
        Some(t) => (t.audience.as_str(), t.expiration_seconds),
        None => TOKEN_OFF,
    };
    let values = [
        ("IMAGE", Value::from(p.image.as_str())),
        ("IMAGE_PULL_POLICY", p.image_pull_policy.as_str().into()),
        ("UPSTREAM_URL", p.upstream_url.as_str().into()),
        ("TRAFFIC_PORT_NAME", p.traffic_port_name.as_str().into()),
        ("TRAFFIC_PORT", p.traffic_port.into()),
        ("ADMIN_PORT", p.admin_port.into()),
        ("RESOURCES", p.resources.clone()),
        ("CONFIG_MAP", p.config_map.as_str().into()),
        ("SECRET", p.secret.as_str().into()),
        ("TOKEN_AUDIENCE", audience.into()),
        ("TOKEN_EXPIRATION_SECONDS", expiration.into()),
    ];
    let text = substitute(template, &values)?;
    let mut doc: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| TemplateError::Yaml(e.to_string()))?;
    let mut take = |key: &'static str| doc.get_mut(key).map(Value::take);

    let mut container = match take("container") {
        Some(Value::Object(c)) => c,
        _ => return Err(TemplateError::Shape("container")),
    };
    if p.native {
        let Some(Value::Object(native)) = take("native") else {
            return Err(TemplateError::Shape("native"));
        };
        container.extend(native);
    }
    if !p.env.is_empty() {
        let Some(Value::Array(env)) = container.get_mut("env") else {
            return Err(TemplateError::Shape("container.env"));
        };
        let names: Vec<&str> = p.env.iter().filter_map(|e| e["name"].as_str()).collect();
        env.retain(|e| !e["name"].as_str().is_some_and(|n| names.contains(&n)));
        env.extend(p.env.iter().cloned());
    }
    let mut volumes = match take("volumes") {
        Some(Value::Array(v)) => v,
        _ => return Err(TemplateError::Shape("volumes")),
    };
    if p.token_review.is_some() {
        let Some(Value::Object(mut tr)) = take("tokenReview") else {
            return Err(TemplateError::Shape("tokenReview"));
        };
        let (Some(mount), Some(volume)) = (tr.remove("volumeMount"), tr.remove("volume")) else {
            return Err(TemplateError::Shape("tokenReview"));
        };
        match container.get_mut("volumeMounts") {
            Some(Value::Array(mounts)) => mounts.push(mount),
            _ => return Err(TemplateError::Shape("container.volumeMounts")),
        }
        volumes.push(volume);
    }
    let map = |v: Option<Value>, what| match v {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(TemplateError::Shape(what)),
    };
    let pod_labels = map(take("podLabels"), "podLabels")?;
    let pod_annotations = map(take("podAnnotations"), "podAnnotations")?;
    let upstream_port_name = match take("upstreamPortName") {
        Some(Value::String(s)) => s,
        _ => return Err(TemplateError::Shape("upstreamPortName")),
    };
    let stdio = match take("stdio") {
        Some(Value::Object(mut s)) => {
            let mut part = |key| s.remove(key).ok_or(TemplateError::Shape("stdio"));
            Stdio {
                install: part("install")?,
                volume_mount: part("volumeMount")?,
                volume: part("volume")?,
            }
        }
        _ => return Err(TemplateError::Shape("stdio")),
    };

    let socket_volume = take("socket")
        .and_then(|mut s| s.get_mut("volume").map(Value::take))
        .ok_or(TemplateError::Shape("socket"))?;

    let container = Value::Object(container);
    // The typed view must accept what we produced: a template edit that breaks the container
    // fails here (and in the tests), not in the API server.
    serde_json::from_value::<Container>(container.clone())
        .map_err(|_| TemplateError::Shape("container (as a Kubernetes Container)"))?;
    for v in volumes.iter().chain([&stdio.volume, &socket_volume]) {
        serde_json::from_value::<Volume>(v.clone())
            .map_err(|_| TemplateError::Shape("volumes (as Kubernetes Volumes)"))?;
    }
    serde_json::from_value::<Container>(stdio.install.clone())
        .map_err(|_| TemplateError::Shape("stdio.install (as a Kubernetes Container)"))?;
    if serde_json::from_value::<VolumeMount>(stdio.volume_mount.clone()).is_err()
        || stdio.volume_mount["name"] != stdio.volume["name"]
    {
        return Err(TemplateError::Shape("stdio.volumeMount (of stdio.volume)"));
    }
    // The init container writes where the server's container looks: its last argument and its
    // mount of the volume are the server's mount path.
    let dir = &stdio.volume_mount["mountPath"];
    let writes_there = stdio.install["args"].as_array().and_then(|a| a.last()) == Some(dir)
        && stdio.install["volumeMounts"].as_array().is_some_and(|ms| {
            ms.iter()
                .any(|m| m["name"] == stdio.volume["name"] && m["mountPath"] == *dir)
        });
    if !writes_there {
        return Err(TemplateError::Shape(
            "stdio.install (installs into stdio.volumeMount's path)",
        ));
    }
    Ok(Sidecar {
        container,
        native: p.native,
        volumes,
        pod_labels,
        pod_annotations,
        upstream_port_name,
        traffic_port: p.traffic_port,
        admin_port: p.admin_port,
        stdio,
        socket_volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_single_pass_json() {
        let out = substitute(
            "a: ${A}\nb: ${B}\n# ${...} stays\n",
            &[
                ("A", Value::from("x\"${B}")),
                ("B", serde_json::json!({"k": 1})),
            ],
        )
        .unwrap();
        assert_eq!(out, "a: \"x\\\"${B}\"\nb: {\"k\":1}\n# ${...} stays\n");
        assert!(matches!(
            substitute("${NOPE}", &[]),
            Err(TemplateError::UnknownPlaceholder(n)) if n == "NOPE"
        ));
    }

    fn params() -> Params {
        Params {
            image: "img".into(),
            image_pull_policy: "Always".into(),
            upstream_url: "http://127.0.0.1:8080/mcp".into(),
            traffic_port_name: "http".into(),
            traffic_port: 9480,
            admin_port: 9481,
            resources: serde_json::json!({}),
            config_map: "cm".into(),
            secret: "s".into(),
            token_review: None,
            native: true,
            env: Vec::new(),
        }
    }

    #[test]
    fn extra_env_is_appended_and_replaces_the_templates_entry_of_its_name() {
        let names = |s: &Sidecar| -> Vec<String> {
            s.container["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        let ours = [
            "MCP_SENTINEL_UPSTREAM",
            "MCP_SENTINEL_CONFIG",
            "MCP_SENTINEL_LISTEN",
            "MCP_SENTINEL_ADMIN_LISTEN",
            "MCP_SENTINEL_POD_NAME",
            "MCP_SENTINEL_POD_NAMESPACE",
            "OTEL_RESOURCE_ATTRIBUTES",
        ];
        assert_eq!(names(&render(&params()).unwrap()), ours);
        let key = serde_json::json!({"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom":
            {"secretKeyRef": {"name": "otel", "key": "headers"}}});
        let attrs = serde_json::json!({"name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": "k8s.pod.name=$(MCP_SENTINEL_POD_NAME),team=a"});
        let s = render(&Params {
            env: vec![key.clone(), attrs.clone()],
            ..params()
        })
        .unwrap();
        let env = s.container["env"].as_array().unwrap();
        assert_eq!(env[env.len() - 2..], [key, attrs]);
        // Ours but the replaced one, then the extra ones in their order.
        let mut expected = ours[..6].to_vec();
        expected.extend(["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_RESOURCE_ATTRIBUTES"]);
        assert_eq!(names(&s), expected);
    }

    #[test]
    fn the_stdio_section_installs_where_the_server_looks() {
        let s = render(&params()).unwrap().stdio;
        assert_eq!(s.binary(), "/mcp-sentinel-bin/mcp-sentinel");
        assert_eq!(s.install_name(), "mcp-sentinel");
        assert_eq!(s.volume_name(), "mcp-sentinel-bin");
        assert_eq!(s.install["securityContext"]["runAsUser"], 65532);

        let elsewhere = SIDECAR_TEMPLATE.replace(
            r#"args: ["install-to", "/mcp-sentinel-bin"]"#,
            r#"args: ["install-to", "/opt/bin"]"#,
        );
        assert_ne!(elsewhere, SIDECAR_TEMPLATE);
        assert!(matches!(
            render_from(&elsewhere, &params()),
            Err(TemplateError::Shape(
                "stdio.install (installs into stdio.volumeMount's path)"
            ))
        ));
        let start = SIDECAR_TEMPLATE.find("\nstdio:").unwrap();
        let end = SIDECAR_TEMPLATE.find("\nnative:").unwrap();
        let no_stdio = format!("{}{}", &SIDECAR_TEMPLATE[..start], &SIDECAR_TEMPLATE[end..]);
        assert!(matches!(
            render_from(&no_stdio, &params()),
            Err(TemplateError::Shape("stdio"))
        ));
    }

    #[test]
    fn the_socket_volume_is_in_memory_and_required() {
        let s = render(&params()).unwrap();
        assert_eq!(s.socket_volume_name(), "mcp-sentinel-socket");
        assert_eq!(
            s.socket_volume["emptyDir"],
            serde_json::json!({"medium": "Memory", "sizeLimit": "1Mi"})
        );
        let start = SIDECAR_TEMPLATE.find("\nsocket:").unwrap();
        let end = SIDECAR_TEMPLATE[start..].find("\n\n").unwrap() + start;
        let no_socket = format!("{}{}", &SIDECAR_TEMPLATE[..start], &SIDECAR_TEMPLATE[end..]);
        assert!(matches!(
            render_from(&no_socket, &params()),
            Err(TemplateError::Shape("socket"))
        ));
    }

    #[test]
    fn the_ports_follow_the_params() {
        let s = render(&Params {
            traffic_port: 8480,
            admin_port: 8481,
            ..params()
        })
        .unwrap();
        assert_eq!(
            s.ports(),
            [
                ("http".to_string(), 8480),
                ("sentinel-admin".to_string(), 8481)
            ]
        );
        let env: Vec<(&str, &str)> = s.container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .filter(|(n, _)| n.ends_with("LISTEN"))
            .collect();
        assert_eq!(
            env,
            [
                ("MCP_SENTINEL_LISTEN", "0.0.0.0:8480"),
                ("MCP_SENTINEL_ADMIN_LISTEN", "0.0.0.0:8481")
            ]
        );
        assert_eq!(s.pod_annotations["prometheus.io/port"], "8481");
        assert_eq!((s.traffic_port, s.admin_port), (8480, 8481));
    }

    #[test]
    fn the_shipped_template_names_only_known_placeholders() {
        let mut rest = SIDECAR_TEMPLATE;
        let mut seen = Vec::new();
        while let Some(i) = rest.find("${") {
            rest = &rest[i + 2..];
            let end = rest.find('}').unwrap();
            let name = &rest[..end];
            if name != "..." {
                assert!(PLACEHOLDERS.contains(&name), "{name}");
                seen.push(name);
            }
        }
        for p in PLACEHOLDERS {
            assert!(seen.contains(&p), "{p} is never used");
        }
    }
}
