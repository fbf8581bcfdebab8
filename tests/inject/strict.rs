//! Every pod fixture patched by the injector, as a Pod manifest, validated with
//! kubernetes-validate --strict for Kubernetes 1.29 and 1.33 (the versions the chart is checked
//! against): a patch the API server would refuse fails here. The validator comes from
//! scripts/k8s-tools.sh, as for scripts/k8s-check.sh; a test that cannot get it fails.

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
