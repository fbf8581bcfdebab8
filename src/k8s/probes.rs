//! The upstream's own references to the port the injector renames. A probe or lifecycle hook
//! that names the port resolves the name within its container; once renamed (`mcp-upstream`)
//! the old name would resolve to nothing and the kubelet would fail the probe. Each reference
//! becomes the port's number, as Istio does when it rewrites probes. gRPC probes take a number
//! only.

use serde_json::{Value, json};

/// The handlers that may name a port: probes and lifecycle hooks, each by `httpGet` or
/// `tcpSocket`.
const HOLDERS: [&str; 5] = [
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle/postStart",
    "lifecycle/preStop",
];
const HANDLERS: [&str; 2] = ["httpGet", "tcpSocket"];

/// JSON Patch `replace` ops that turn every reference to the port named `old` in
/// `/spec/containers/{index}` of `pod` into `number`. Numbers, and names of other ports, are left
/// as they are.
pub fn renamed_port_ops(pod: &Value, index: usize, old: &str, number: i32) -> Vec<Value> {
    let mut ops = Vec::new();
    for holder in HOLDERS {
        for handler in HANDLERS {
            let path = format!("/spec/containers/{index}/{holder}/{handler}/port");
            if pod.pointer(&path).and_then(Value::as_str) == Some(old) {
                ops.push(json!({ "op": "replace", "path": path, "value": number }));
            }
        }
    }
    ops
}

/// The probes and hooks (`HOLDERS`, as `livenessProbe`, `lifecycle/preStop`) of
/// `/spec/containers/{index}` that the kubelet sends to the port `number` (named `name`), by
/// `httpGet` or `tcpSocket`, from the node.
pub fn holders_of(pod: &Value, index: usize, name: Option<&str>, number: i32) -> Vec<&'static str> {
    HOLDERS
        .into_iter()
        .filter(|holder| {
            HANDLERS.iter().any(|handler| {
                let path = format!("/spec/containers/{index}/{holder}/{handler}/port");
                match pod.pointer(&path) {
                    Some(Value::String(s)) => Some(s.as_str()) == name,
                    Some(v) => v.as_i64() == Some(i64::from(number)),
                    None => false,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_references_by_the_old_name_become_the_number() {
        let pod = json!({"spec": {"containers": [
            {"name": "sidecar", "livenessProbe": {"httpGet": {"port": "http"}}},
            {"name": "server",
             "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
             "readinessProbe": {"tcpSocket": {"port": 8080}},
             "startupProbe": {"httpGet": {"port": "metrics"}},
             "lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": "http"}},
                           "postStart": {"tcpSocket": {"port": "http"}}}}
        ]}});
        assert_eq!(
            renamed_port_ops(&pod, 1, "http", 8080),
            [
                json!({"op": "replace", "path": "/spec/containers/1/livenessProbe/httpGet/port", "value": 8080}),
                json!({"op": "replace", "path": "/spec/containers/1/lifecycle/postStart/tcpSocket/port", "value": 8080}),
                json!({"op": "replace", "path": "/spec/containers/1/lifecycle/preStop/httpGet/port", "value": 8080}),
            ]
        );
        assert!(renamed_port_ops(&pod, 1, "web", 8080).is_empty());
    }
}
