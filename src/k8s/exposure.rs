//! Paths around the sentinel that the injector can see. The injector renames the MCP server's
//! container port so that Services targeting it by name reach the sentinel instead; a Service
//! that selects the pod and targets the server's port by *number* (or leaves `targetPort` unset,
//! which means the same number, or names the port's new name) still reaches the server directly.
//! The injector cannot change Services: it says so in the admission response's warnings, logs
//! it and counts it (`mcp_sentinel_injector_service_checks_total{result="exposed"}`). The
//! NetworkPolicy stays the second layer that closes the port.
//!
//! `direct_routes` is a pure function of the patched pod and the namespace's Services; the
//! webhook fetches the Services (`ServiceLister`, read-only `list services`) when the injector's
//! `service_check` is on.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::settings::ServiceCheck;
use crate::auth::kubernetes::{ReviewerError, client};

/// The MCP server's port in an injected pod: the container port the injector renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPort {
    pub number: i32,
    /// Its name after injection (`mcp-upstream`).
    pub renamed: String,
    /// The name Services target to reach the sentinel: the port's name before injection (the
    /// sentinel's traffic port took it over).
    pub traffic_name: String,
}

/// The server's port, read from the pod as sent (`pod`) and the injector's patch: the one
/// `add` that renames a container port (`/spec/containers/I/ports/J/name`). `None` when the
/// patch renames no port (a stdio server, which has none).
pub fn server_port(pod: &Value, patch: &[Value], default_name: &str) -> Option<ServerPort> {
    patch.iter().find_map(|op| {
        let path = op["path"].as_str()?;
        let rest = path.strip_prefix("/spec/containers/")?;
        let (container, rest) = rest.split_once("/ports/")?;
        let port = rest.strip_suffix("/name")?;
        let (container, port): (usize, usize) = (container.parse().ok()?, port.parse().ok()?);
        let original = &pod["spec"]["containers"][container]["ports"][port];
        let number = i32::try_from(original["containerPort"].as_i64()?).ok()?;
        let traffic_name = original["name"]
            .as_str()
            .map_or_else(|| default_name.to_string(), str::to_string);
        Some(ServerPort {
            number,
            renamed: op["value"].as_str()?.to_string(),
            traffic_name,
        })
    })
}

/// One warning per Service port that selects the pod (by its `labels`) and reaches `server`
/// without the sentinel.
pub fn direct_routes(
    labels: &BTreeMap<String, String>,
    server: &ServerPort,
    services: &[Service],
) -> Vec<String> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        // A Service without a selector has endpoints someone manages by hand: not visible here.
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let name = svc.metadata.name.as_deref().unwrap_or("?");
        for port in spec.ports.iter().flatten() {
            if let Some(how) = reaches(port, server) {
                out.push(format!(
                    "mcp-sentinel: Service {name} port {} reaches the MCP server's port {} directly ({how}), around the sentinel: set its targetPort to {:?}, the name that now leads to the sentinel",
                    port.name.as_deref().map_or_else(|| port.port.to_string(), |n| format!("{n:?} ({})", port.port)),
                    server.number,
                    server.traffic_name,
                ));
            }
        }
    }
    out
}

/// How `port` reaches the server's port, if it does.
fn reaches(port: &ServicePort, server: &ServerPort) -> Option<&'static str> {
    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
        return None;
    }
    match &port.target_port {
        None if port.port == server.number => Some("targetPort unset: the port number"),
        None => None,
        Some(IntOrString::Int(n)) if *n == server.number => Some("targetPort by number"),
        Some(IntOrString::String(s)) if *s == server.renamed => {
            Some("targetPort names the server's renamed port")
        }
        Some(_) => None,
    }
}

/// How a check ended, for `mcp_sentinel_injector_service_checks_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// No Service reaches the server directly.
    Clear,
    Exposed,
    /// The Services could not be listed (in time).
    Failed,
}

impl CheckResult {
    pub const ALL: [CheckResult; 3] = [
        CheckResult::Clear,
        CheckResult::Exposed,
        CheckResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Clear => "clear",
            CheckResult::Exposed => "exposed",
            CheckResult::Failed => "failed",
        }
    }
}

/// Lists a namespace's Services through the API server (read-only).
#[derive(Clone)]
pub struct ServiceLister {
    client: kube::Client,
    timeout: Duration,
}

impl ServiceLister {
    /// Loads the client config (a kubeconfig, or in-cluster); does not contact the API server.
    pub async fn new(cfg: &ServiceCheck) -> Result<Self, ReviewerError> {
        Ok(Self {
            // The client's own timeouts are looser: `list` gives up first, saying why plainly.
            client: client(cfg.kubeconfig.as_deref(), None, cfg.timeout * 2).await?,
            timeout: cfg.timeout,
        })
    }

    /// The Services of `namespace`, within the timeout.
    pub async fn list(&self, namespace: &str) -> Result<Vec<Service>, String> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(self.timeout, api.list(&ListParams::default())).await {
            Ok(Ok(list)) => Ok(list.items),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// The warnings for an injected pod (`pod` as sent, `patch` the injector's), and how the
    /// check ended.
    pub async fn check(
        &self,
        namespace: &str,
        pod: &Value,
        patch: &[Value],
        default_name: &str,
    ) -> (Vec<String>, CheckResult) {
        let Some(server) = server_port(pod, patch, default_name) else {
            return (Vec::new(), CheckResult::Clear);
        };
        let labels: BTreeMap<String, String> =
            serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default();
        match self.list(namespace).await {
            Ok(services) => {
                let warnings = direct_routes(&labels, &server, &services);
                let result = if warnings.is_empty() {
                    CheckResult::Clear
                } else {
                    CheckResult::Exposed
                };
                (warnings, result)
            }
            Err(why) => (
                vec![format!(
                    "mcp-sentinel: could not check whether a Service reaches the MCP server's port {} around the sentinel: {why}",
                    server.number
                )],
                CheckResult::Failed,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn server() -> ServerPort {
        ServerPort {
            number: 8080,
            renamed: "mcp-upstream".into(),
            traffic_name: "http".into(),
        }
    }

    fn labels() -> BTreeMap<String, String> {
        [("app", "mcp-server"), ("pod-template-hash", "7d9f8")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_renamed_port_is_read_from_the_patch() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "ports": [{"containerPort": 9000, "name": "metrics"}]},
            {"name": "b", "ports": [{"containerPort": 9100}, {"containerPort": 8080, "name": "http"}]},
        ]}});
        let patch = [
            json!({"op": "add", "path": "/spec/initContainers", "value": []}),
            json!({"op": "add", "path": "/spec/containers/1/ports/1/name", "value": "mcp-upstream"}),
        ];
        assert_eq!(server_port(&pod, &patch, "mcp"), Some(server()));
        let unnamed =
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 8080}]}]}});
        let patch = [
            json!({"op": "add", "path": "/spec/containers/0/ports/0/name", "value": "mcp-upstream"}),
        ];
        assert_eq!(
            server_port(&unnamed, &patch, "mcp").unwrap().traffic_name,
            "mcp"
        );
        // A stdio server's patch renames no port.
        let stdio = [json!({"op": "add", "path": "/spec/containers/0/args", "value": []})];
        assert_eq!(server_port(&pod, &stdio, "mcp"), None);
    }

    #[test]
    fn services_that_reach_the_server_by_number_are_named() {
        let services = [
            // By name: now the sentinel. Clear.
            service(json!({"metadata": {"name": "by-name"}, "spec": {
                "selector": {"app": "mcp-server"},
                "ports": [{"port": 80, "targetPort": "http"}]}})),
            // By number: around the sentinel.
            service(json!({"metadata": {"name": "by-number"}, "spec": {
                "selector": {"app": "mcp-server"},
                "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}})),
            // targetPort unset: the port number, 8080.
            service(json!({"metadata": {"name": "headless"}, "spec": {
                "clusterIP": "None", "selector": {"app": "mcp-server"},
                "ports": [{"port": 8080}]}})),
            // The renamed port, by its new name.
            service(json!({"metadata": {"name": "renamed"}, "spec": {
                "selector": {"app": "mcp-server"},
                "ports": [{"port": 80, "targetPort": "mcp-upstream"}]}})),
            // Another app's Service, same number.
            service(json!({"metadata": {"name": "other-app"}, "spec": {
                "selector": {"app": "other"},
                "ports": [{"port": 80, "targetPort": 8080}]}})),
            // No selector: hand-made endpoints, not visible here.
            service(json!({"metadata": {"name": "manual"}, "spec": {
                "ports": [{"port": 80, "targetPort": 8080}]}})),
            // UDP on the same number is not the MCP server.
            service(json!({"metadata": {"name": "udp"}, "spec": {
                "selector": {"app": "mcp-server"},
                "ports": [{"port": 53, "targetPort": 8080, "protocol": "UDP"}]}})),
            // A selector the pod only half matches.
            service(json!({"metadata": {"name": "half"}, "spec": {
                "selector": {"app": "mcp-server", "tier": "canary"},
                "ports": [{"port": 80, "targetPort": 8080}]}})),
        ];
        let warnings = direct_routes(&labels(), &server(), &services);
        assert_eq!(
            warnings,
            [
                "mcp-sentinel: Service by-number port \"web\" (80) reaches the MCP server's port 8080 directly (targetPort by number), around the sentinel: set its targetPort to \"http\", the name that now leads to the sentinel",
                "mcp-sentinel: Service headless port 8080 reaches the MCP server's port 8080 directly (targetPort unset: the port number), around the sentinel: set its targetPort to \"http\", the name that now leads to the sentinel",
                "mcp-sentinel: Service renamed port 80 reaches the MCP server's port 8080 directly (targetPort names the server's renamed port), around the sentinel: set its targetPort to \"http\", the name that now leads to the sentinel",
            ]
        );
    }
}
