//! Every pod fixture patched by the injector, as a Pod manifest, validated with
//! kubernetes-validate --strict for Kubernetes 1.29 and 1.33 (the versions the chart is checked
//! against): the OpenAPI schema, field by field. The validator comes from scripts/k8s-tools.sh,
//! as for scripts/k8s-check.sh; a test that cannot get it fails. The schema does not hold the API
//! server's cross-field rules, so `semantics` checks those a patch could break: unique container
//! names, unique port names and numbers in range, and named probe and hook ports that resolve in
//! their container.

use std::path::Path;
use std::process::Command;

use mcp_sentinel::k8s::inject::{InjectResult, Mode};
use serde_json::Value;

use super::{answer, fixture, patched, settings};

const KUBE_VERSIONS: [&str; 2] = ["1.29", "1.33"];
/// Fixtures the injector refuses by design (a Job's pod with no port and no stdio command).
const REFUSED: [&str; 1] = ["review-pod-job.json"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The names of every pod fixture: `review-pod*.json`.
fn pod_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/fixtures/k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("review-pod") && n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_patched_fixture_validates_strictly() {
    let validator = super::k8s_tools::kube_validate();
    let dir = std::env::temp_dir().join(format!("mcp-sentinel-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for name in pod_fixtures() {
        let review = fixture(&name);
        let a = answer(&review, Mode::Annotated, &settings());
        if REFUSED.contains(&name.as_str()) {
            assert_eq!(a.result, InjectResult::Refused, "{name}: {}", a.detail);
            continue;
        }
        assert_eq!(a.result, InjectResult::Injected, "{name}: {}", a.detail);
        let mut pod = patched(&review, &a);
        // review-pod.json's marker that unknown fields survive the patch; no schema has it.
        if let Some(Value::Object(c)) = pod.pointer_mut("/spec/containers/0") {
            c.remove("futureContainerField");
        }
        // The API server names a generateName pod after admission, as it stores it.
        if pod["metadata"]["name"].is_null() {
            let prefix = pod["metadata"]["generateName"].as_str().unwrap_or("pod-");
            pod["metadata"]["name"] = format!("{prefix}x7k2p").into();
        }
        semantics(&name, &pod);
        assert_eq!(pod["apiVersion"], "v1", "{name}");
        assert_eq!(pod["kind"], "Pod", "{name}");
        let path = dir.join(name.replace(".json", ".yaml"));
        std::fs::write(&path, serde_yaml_ng::to_string(&pod).unwrap()).unwrap();
        files.push(path);
    }
    assert!(files.len() >= 8, "{files:?}");
    for version in KUBE_VERSIONS {
        let out = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .expect("kubernetes-validate runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        let passed = text.lines().filter(|l| l.contains("passed")).count();
        assert_eq!(passed, files.len(), "Kubernetes {version}:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The API server's own validation rules (pkg/apis/core/validation) that a patch could break and
/// the OpenAPI schema does not express.
fn semantics(name: &str, pod: &Value) {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
        .collect();
    let mut names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "{name}: container names are unique");
    let mut port_names = Vec::new();
    for c in &containers {
        let ports = c["ports"].as_array().cloned().unwrap_or_default();
        for p in &ports {
            let number = p["containerPort"].as_i64().unwrap();
            assert!((1..=65535).contains(&number), "{name}: port {number}");
            if let Some(n) = p["name"].as_str() {
                assert!(
                    n.len() <= 15,
                    "{name}: port name {n} is at most 15 characters"
                );
                port_names.push(n.to_string());
            }
        }
        for holder in ["livenessProbe", "readinessProbe", "startupProbe"]
            .into_iter()
            .map(|h| &c[h])
            .chain(
                ["postStart", "preStop"]
                    .into_iter()
                    .map(|h| &c["lifecycle"][h]),
            )
        {
            for handler in ["httpGet", "tcpSocket"] {
                if let Some(port) = holder[handler]["port"].as_str() {
                    assert!(
                        ports.iter().any(|p| p["name"] == port),
                        "{name}: container {} names port {port}, which it does not declare",
                        c["name"]
                    );
                }
            }
        }
    }
    let total = port_names.len();
    port_names.sort_unstable();
    port_names.dedup();
    assert_eq!(
        port_names.len(),
        total,
        "{name}: port names are unique in the pod"
    );
}
