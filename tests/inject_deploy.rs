//! deploy/ against the injector: the example pod in deploy/example.yaml (sidecar added
//! statically by the chart) is exactly what the injector makes of the same pod written without
//! it, with the settings deploy/injector.yaml gives the injector; and every config deploy/ ships
//! is valid for the binary that reads it.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec};
use mcp_sentinel::k8s::inject::{self, InjectResult, Mode};
use mcp_sentinel::k8s::settings::Settings;
use serde_json::Value;

#[allow(dead_code)]
#[path = "common/k8s.rs"]
mod k8s;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-sentinel");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a multi-document YAML file in deploy/, as JSON.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy").join(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find(docs: &[Value], kind: &str, name: &str) -> Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .clone()
}

fn config_map_entry(file: &str, name: &str, key: &str) -> String {
    let cm: ConfigMap = serde_json::from_value(find(&documents(file), "ConfigMap", name)).unwrap();
    cm.data.unwrap()[key].clone()
}

fn injector_settings() -> Settings {
    let text = config_map_entry("injector.yaml", "mcp-sentinel-injector", "injector.yaml");
    Settings::from_yaml(&text, "deploy/injector.yaml")
        .expect("the deployed injector settings are valid")
}

/// Pods normalised through the typed model, so field order and spelling do not matter.
fn normalised(pod: &Value) -> Value {
    let pod: Pod = serde_json::from_value(pod.clone()).unwrap();
    serde_json::to_value(pod).unwrap()
}

#[test]
fn the_static_example_carries_the_injectors_sidecar() {
    let fixture = root().join("tests/fixtures/k8s/review-example-pod.json");
    let review: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    // The example's namespace has its own NetworkPolicy (example.yaml), which the injector of
    // injector.yaml is not told of: it protects `mcp-sentinel`.
    let mut settings = injector_settings();
    assert_eq!(settings.namespaces, Some(vec!["mcp-sentinel".to_string()]));
    settings.namespaces = Some(vec!["mcp-demo".into()]);
    let answer = inject::review_body(
        &serde_json::to_vec(&review).unwrap(),
        Mode::Annotated,
        &settings,
    )
    .unwrap();
    assert_eq!(answer.result, InjectResult::Injected, "{}", answer.detail);
    let resp = serde_json::from_slice::<Value>(&answer.to_json()).unwrap()["response"].clone();
    let mut injected = k8s::patched_pod(&review, &resp);
    // The opt-in annotation is the one thing the static pod does not need.
    injected["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("mcp-sentinel.io/inject");
    let injected = normalised(&injected);

    let deployment = find(&documents("example.yaml"), "Deployment", "mcp-server");
    let template: PodTemplateSpec =
        serde_json::from_value(deployment["spec"]["template"].clone()).unwrap();
    let static_pod = serde_json::to_value(Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        status: None,
    })
    .unwrap();

    for (what, pointer) in [
        ("the sidecar (first init container)", "/spec/initContainers"),
        ("the containers (upstream port renamed)", "/spec/containers"),
        ("the volumes", "/spec/volumes"),
        ("the labels", "/metadata/labels"),
        ("the annotations", "/metadata/annotations"),
    ] {
        assert_eq!(
            injected.pointer(pointer),
            static_pod.pointer(pointer),
            "{what} differ between the injector's output and deploy/example.yaml; if the chart's \
             example changed on purpose, update tests/fixtures/k8s/review-example-pod.json"
        );
    }
    assert_eq!(injected["spec"], static_pod["spec"]);
}

/// The chart's ports are the injector's defaults (off every mesh's); the NetworkPolicy opens the
/// traffic port by number and the admin port by name; the injector's own admin port is its
/// binary's default.
#[test]
fn the_deployed_ports_are_the_defaults() {
    use mcp_sentinel::k8s::settings::{DEFAULT_ADMIN_PORT, DEFAULT_TRAFFIC_PORT};
    let s = injector_settings();
    assert_eq!(
        (s.traffic_port, s.admin_port),
        (DEFAULT_TRAFFIC_PORT, DEFAULT_ADMIN_PORT)
    );
    let policy = find(
        &documents("example.yaml"),
        "NetworkPolicy",
        "mcp-sentinel-upstream",
    );
    let ports: Vec<&Value> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| &rule["ports"][0]["port"])
        .collect();
    assert_eq!(
        ports,
        [
            &Value::from(DEFAULT_TRAFFIC_PORT),
            &Value::from("sentinel-admin")
        ]
    );
    let injector = find(
        &documents("injector.yaml"),
        "Deployment",
        "mcp-sentinel-injector",
    );
    let args = &injector["spec"]["template"]["spec"]["containers"][0]["args"];
    let admin = format!(
        "--admin-listen={}",
        mcp_sentinel::k8s::webhook::DEFAULT_ADMIN_LISTEN
    );
    assert!(
        args.as_array()
            .unwrap()
            .contains(&Value::from(admin.as_str())),
        "{args}"
    );
}

#[test]
fn shipped_sidecar_configs_pass_check() {
    for (file, namespace) in [
        ("example.yaml", "mcp-demo"),
        ("injector.yaml", "mcp-sentinel"),
    ] {
        let cm = find(&documents(file), "ConfigMap", "mcp-sentinel-config");
        assert_eq!(cm["metadata"]["namespace"], namespace);
        let dir =
            std::env::temp_dir().join(format!("mcp-sentinel-deploy-{}-{file}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The policy file is mounted from the same ConfigMap: check reads it where it would be.
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, cm["data"]["policy.yaml"].as_str().unwrap()).unwrap();
        let text = cm["data"]["config.yaml"].as_str().unwrap().replace(
            "/etc/mcp-sentinel/config/policy.yaml",
            policy.to_str().unwrap(),
        );
        assert!(
            text.contains(policy.to_str().unwrap()),
            "{file}: policy file"
        );
        let config = dir.join("config.yaml");
        std::fs::write(&config, text).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--strict", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("rules, default deny"),
            "{file}: the shipped policy denies by default"
        );
    }
}

#[test]
fn the_deployed_injector_runs_the_image_it_injects() {
    let settings = injector_settings();
    let deployment = find(
        &documents("injector.yaml"),
        "Deployment",
        "mcp-sentinel-injector",
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], settings.image.as_str());
    assert_eq!(container["args"][0], "inject");
    // Rendered for no particular cluster: a regular container, which Services reach by port
    // name on every version (a native sidecar's named ports only from 1.32).
    assert!(!settings.native_sidecar);
}

/// The injector's only API access is the Service check's: list Services, nothing else, bound to
/// its own service account, whose token is mounted for that alone.
#[test]
fn the_deployed_injector_may_only_list_services() {
    let docs = documents("injector.yaml");
    let settings = injector_settings();
    assert!(settings.service_check.is_some(), "the Service check is on");
    let role = find(&docs, "ClusterRole", "mcp-sentinel-injector-service-check");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}])
    );
    let binding = find(
        &docs,
        "ClusterRoleBinding",
        "mcp-sentinel-injector-service-check",
    );
    assert_eq!(
        binding["roleRef"]["name"],
        "mcp-sentinel-injector-service-check"
    );
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "mcp-sentinel-injector", "namespace": "mcp-sentinel"}])
    );
    let roles = docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
        .count();
    assert_eq!(roles, 1, "no other role");
    let deployment = find(&docs, "Deployment", "mcp-sentinel-injector");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
}

/// The webhook configuration deploy/ ships (rendered from the chart) sends the API server's
/// pods only when they carry the opt-in label, with exactly the spellings the injector accepts.
#[test]
fn the_webhook_selects_opted_in_pods_with_the_injectors_spellings() {
    let docs = documents("injector.yaml");
    let config = find(
        &docs,
        "MutatingWebhookConfiguration",
        "mcp-sentinel-injector",
    );
    let ours: Vec<&str> = mcp_sentinel::k8s::OPT_IN_VALUES.to_vec();
    let webhooks = config["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 2);
    for w in webhooks {
        let exprs = w["objectSelector"]["matchExpressions"].as_array().unwrap();
        let label = exprs
            .iter()
            .find(|e| e["key"] == mcp_sentinel::k8s::INJECT_LABEL)
            .unwrap_or_else(|| panic!("{}: no pod label selector", w["name"]));
        assert_eq!(label["operator"], "In");
        assert_eq!(label["values"], serde_json::json!(ours));
        let ns = &w["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(ns["key"], mcp_sentinel::k8s::NAMESPACE_LABEL);
        assert_eq!(ns["values"], serde_json::json!(ours));
    }
}

/// deploy/ is for `kubectl apply`: no label claims Helm manages its objects (a Helm upgrade over
/// them, or a tool that trusts those labels, would be misled).
#[test]
fn deploy_manifests_carry_no_helm_only_labels() {
    const HELM_ONLY: [&str; 2] = ["helm.sh/chart", "app.kubernetes.io/managed-by"];
    fn walk(v: &Value, seen: &mut usize) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(labels)) = map.get("labels") {
                    *seen += usize::from(labels.contains_key("app.kubernetes.io/name"));
                    for key in HELM_ONLY {
                        assert!(
                            !labels.contains_key(key),
                            "deploy/ carries {key}: {labels:?}"
                        );
                    }
                }
                map.values().for_each(|v| walk(v, seen));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, seen)),
            _ => {}
        }
    }
    let mut seen = 0;
    for file in [
        "injector.yaml",
        "example.yaml",
        "example-servicemonitor.yaml",
    ] {
        for doc in documents(file) {
            walk(&doc, &mut seen);
        }
    }
    // The chart's own labels were there to check (the walk is not vacuous).
    assert!(
        seen >= 5,
        "only {seen} label sets with app.kubernetes.io/name"
    );
}

/// The image says what it is: OCI labels, with the crate's version and licence as defaults.
#[test]
fn the_image_carries_oci_labels_that_match_the_crate() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let field = |name: &str| {
        cargo
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("Cargo.toml has no {name}"))
            .to_string()
    };
    let final_stage = dockerfile.rsplit_once("\nFROM ").expect("a final stage").1;
    for want in [
        "org.opencontainers.image.title=\"mcp-sentinel\"".to_string(),
        format!("org.opencontainers.image.licenses=\"{}\"", field("license")),
        "org.opencontainers.image.version=\"${VERSION}\"".to_string(),
        "org.opencontainers.image.revision=\"${REVISION}\"".to_string(),
        format!("ARG VERSION={}", field("version")),
    ] {
        assert!(final_stage.contains(&want), "the final stage lacks {want}");
    }
}

/// The NetworkPolicy closes the server's port on pods with the sidecar and on pods that asked
/// for it (the opt-in label, with the injector's spellings): a labelled pod admitted without its
/// sidecar (failurePolicy Ignore during an outage, on-failure: admit) stays closed too. Both
/// policies open the same ports: the sentinel's.
#[test]
fn the_network_policy_closes_pods_that_asked_for_the_sentinel_too() {
    let docs = documents("example.yaml");
    let with_sidecar = find(&docs, "NetworkPolicy", "mcp-sentinel-upstream");
    let opted_in = find(&docs, "NetworkPolicy", "mcp-sentinel-opted-in");
    assert_eq!(
        with_sidecar["spec"]["podSelector"],
        serde_json::json!({"matchLabels": {"mcp-sentinel.io/sidecar": "true"}})
    );
    assert_eq!(
        opted_in["spec"]["podSelector"],
        serde_json::json!({"matchExpressions": [{
            "key": mcp_sentinel::k8s::INJECT_LABEL,
            "operator": "In",
            "values": mcp_sentinel::k8s::OPT_IN_VALUES,
        }]})
    );
    assert_eq!(with_sidecar["spec"]["ingress"], opted_in["spec"]["ingress"]);
    assert_eq!(
        opted_in["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
}
