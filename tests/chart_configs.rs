//! Every sidecar config the chart renders is one the sentinel starts with: for each values
//! fixture in tests/fixtures/k8s/values/, helm renders the chart and the real binary's `check`
//! reads each ConfigMap's `config.yaml`, with its `policy.yaml` (and `pins.json`) where the
//! sidecar mounts it. The
//! chart's schema refuses typos before anything renders (tests/fixtures/k8s/values-invalid/);
//! this is what a pod would read at start. And `sidecar.env` reaches the sidecar the injector
//! adds and the chart's static one alike.

mod common;

use std::process::Command;

use common::k8s;
use common::sentinel::TempDir;
use k8s_openapi::api::core::v1::Pod;
use mcp_sentinel::k8s::inject::{self, InjectResult, Mode};
use mcp_sentinel::k8s::settings::Settings;
use serde_json::{Value, json};

/// Where the sidecar mounts its ConfigMap (helm/mcp-sentinel/files/sidecar.yaml).
const CONFIG_MOUNT: &str = "/etc/mcp-sentinel/config/";

#[test]
fn every_rendered_sidecar_config_passes_check() {
    let mut fixtures: Vec<_> = std::fs::read_dir(k8s::root().join("tests/fixtures/k8s/values"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    let dir = TempDir::new("chart-configs");
    let mut checked = 0;
    let mut pinned = 0;
    for fixture in &fixtures {
        let rendered = k8s::helm_template(&["-f", fixture.to_str().unwrap()]);
        for doc in k8s::documents(&rendered) {
            let Some(config) = doc["data"]["config.yaml"]
                .as_str()
                .filter(|_| doc["kind"] == "ConfigMap")
            else {
                continue;
            };
            let name = format!(
                "{}-{}",
                doc["metadata"]["namespace"].as_str().unwrap(),
                doc["metadata"]["name"].as_str().unwrap()
            );
            let mount = dir.0.join(&name);
            std::fs::create_dir_all(&mount).unwrap();
            for file in ["policy.yaml", "pins.json"] {
                if let Some(text) = doc["data"][file].as_str() {
                    std::fs::write(mount.join(file), text).unwrap();
                }
            }
            let config = config.replace(CONFIG_MOUNT, &format!("{}/", mount.display()));
            std::fs::write(mount.join("config.yaml"), config).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_mcp-sentinel"))
                .args(["check", "--config"])
                .arg(mount.join("config.yaml"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: ConfigMap {name}: {}{}",
                fixture.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
            if doc["data"]["pins.json"].is_string() {
                // The pins the chart mounts are the ones the config's integrity section reads.
                let summary = String::from_utf8_lossy(&out.stdout);
                assert!(summary.contains("integrity: pins /"), "{name}: {summary}");
                pinned += 1;
            }
        }
    }
    assert!(pinned > 0, "a fixture renders sidecar.pins");
    assert!(
        checked >= fixtures.len(),
        "every fixture renders at least one sidecar config ({checked} for {} fixtures)",
        fixtures.len()
    );
}

/// The sidecar (first init container) of `pod`, normalised through the typed model.
fn sidecar_of(pod: Value) -> Value {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let sidecar = pod.spec.unwrap().init_containers.unwrap().remove(0);
    assert_eq!(sidecar.name, "mcp-sentinel");
    serde_json::to_value(sidecar).unwrap()
}

#[test]
fn the_sidecar_env_reaches_the_injected_and_the_static_sidecar() {
    let fixture = k8s::root().join("tests/fixtures/k8s/values/sidecar-env.yaml");
    let docs = k8s::documents(&k8s::helm_template(&["-f", fixture.to_str().unwrap()]));
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let user_env = [
        json!({"name": "OTEL_EXPORTER_OTLP_HEADERS",
               "valueFrom": {"secretKeyRef": {"name": "otel-collector-auth", "key": "headers"}}}),
        json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT",
               "value": "http://otel-collector.observability:4317"}),
        json!({"name": "OTEL_RESOURCE_ATTRIBUTES",
               "value": "k8s.pod.name=$(MCP_SENTINEL_POD_NAME),deployment.environment=staging"}),
    ];
    let mut settings = rendered_settings(&docs);
    assert_eq!(settings.env, user_env);
    // The example pod's namespace, as if listed in sidecar.namespaces.
    settings.namespaces = Some(vec!["mcp-demo".into()]);

    // The injector's sidecar for the example pod.
    let review_file = k8s::root().join("tests/fixtures/k8s/review-example-pod.json");
    let review: Value = serde_json::from_slice(&std::fs::read(review_file).unwrap()).unwrap();
    let answer = inject::review_body(
        &serde_json::to_vec(&review).unwrap(),
        Mode::Annotated,
        &settings,
    )
    .unwrap();
    assert_eq!(answer.result, InjectResult::Injected, "{}", answer.detail);
    let resp = serde_json::from_slice::<Value>(&answer.to_json()).unwrap()["response"].clone();
    let injected = sidecar_of(k8s::patched_pod(&review, &resp));

    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut expected = vec![
        json!({"name": "MCP_SENTINEL_UPSTREAM", "value": "http://127.0.0.1:8080/mcp"}),
        json!({"name": "MCP_SENTINEL_CONFIG", "value": "/etc/mcp-sentinel/config/config.yaml"}),
        json!({"name": "MCP_SENTINEL_LISTEN", "value": "0.0.0.0:9480"}),
        json!({"name": "MCP_SENTINEL_ADMIN_LISTEN", "value": "0.0.0.0:9481"}),
        json!({"name": "MCP_SENTINEL_POD_NAME", "valueFrom": field("metadata.name")}),
        json!({"name": "MCP_SENTINEL_POD_NAMESPACE", "valueFrom": field("metadata.namespace")}),
    ];
    // The template's OTEL_RESOURCE_ATTRIBUTES is replaced by the chart's, at the end.
    expected.extend(user_env);
    assert_eq!(injected["env"], Value::Array(expected));

    // The chart's static example pod: the same sidecar.
    let deployment = find("Deployment", "mcp-server");
    let template = &deployment["spec"]["template"];
    let static_sidecar =
        sidecar_of(json!({"metadata": template["metadata"], "spec": template["spec"]}));
    assert_eq!(static_sidecar, injected);
}

/// `sidecar.nativeSidecar: auto` (the default) gives native sidecars from Kubernetes 1.32, where
/// Services resolve a native sidecar's named ports (kubernetes#127958), and a regular container
/// before; `true` and `false` force either.
#[test]
fn native_sidecars_from_kubernetes_1_32_unless_forced() {
    for (args, native) in [
        (vec!["--kube-version", "1.31.4"], false),
        (vec!["--kube-version", "1.32.0"], true),
        (vec![], true),
        (
            vec![
                "--kube-version",
                "1.31.4",
                "--set",
                "sidecar.nativeSidecar=true",
            ],
            true,
        ),
        (vec!["--set", "sidecar.nativeSidecar=false"], false),
    ] {
        let docs = k8s::documents(&k8s::helm_template(&args));
        let settings = rendered_settings(&docs);
        assert_eq!(settings.native_sidecar, native, "{args:?}");
    }
}

/// The injector refuses opted-in pods outside the namespaces the chart puts the NetworkPolicy
/// in: its settings name them.
#[test]
fn the_injector_knows_the_namespaces_the_chart_protects() {
    for (args, want) in [
        (vec![], vec!["mcp-sentinel"]),
        (
            vec!["--set", "sidecar.namespaces={tools,mcp-sentinel,search}"],
            vec!["mcp-sentinel", "tools", "search"],
        ),
    ] {
        let docs = k8s::documents(&k8s::helm_template(&args));
        let settings = rendered_settings(&docs);
        let want: Vec<String> = want.into_iter().map(String::from).collect();
        assert_eq!(settings.namespaces, Some(want), "{args:?}");
        for ns in settings.namespaces.iter().flatten() {
            assert!(
                docs.iter()
                    .any(|d| d["kind"] == "NetworkPolicy"
                        && d["metadata"]["namespace"] == ns.as_str()),
                "a NetworkPolicy in {ns}"
            );
        }
    }
}

/// The injector's settings as the chart rendered them (`docs`).
fn rendered_settings(docs: &[Value]) -> Settings {
    let injector = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "mcp-sentinel-injector")
        .expect("the injector's settings");
    Settings::from_yaml(
        injector["data"]["injector.yaml"].as_str().unwrap(),
        "injector.yaml",
    )
    .expect("the rendered injector settings are valid")
}
