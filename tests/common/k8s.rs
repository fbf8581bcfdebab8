//! The pinned Kubernetes tools of scripts/k8s-tools.sh (helm 3.10, kubernetes-validate),
//! installed into their cache when missing, and what the tests do with them. A test that cannot
//! get a tool fails, saying why; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path scripts/k8s-tools.sh puts in `var` (`HELM`, `KUBE_VALIDATE`).
pub fn tool(var: &str) -> PathBuf {
    let out = Command::new("bash")
        .current_dir(root())
        .arg("-c")
        .arg(format!(
            "source scripts/k8s-tools.sh && k8s_tools >&2 && printf %s \"${var}\""
        ))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/k8s-tools.sh cannot provide ${var}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(path.is_file(), "${var}: {} is not a file", path.display());
    path
}

pub fn helm() -> PathBuf {
    tool("HELM")
}

pub fn kube_validate() -> PathBuf {
    tool("KUBE_VALIDATE")
}

/// `helm template` of the chart (release mcp-sentinel, namespace mcp-sentinel, Kubernetes 1.33)
/// with extra arguments (`--set k=v`, `-f file`), as text.
pub fn helm_template(args: &[&str]) -> String {
    let out = Command::new(helm())
        .current_dir(root())
        .args([
            "template",
            "mcp-sentinel",
            "helm/mcp-sentinel",
            "--namespace",
            "mcp-sentinel",
            "--kube-version",
            "1.33.0",
        ])
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a multi-document YAML rendering (empty ones left out).
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The pod of an AdmissionReview with the JSON patch of the injector's `response` applied.
pub fn patched_pod(review: &Value, response: &Value) -> Value {
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}
