//! Every sidecar config the chart renders is one the sentinel starts with: for each values
//! fixture in tests/fixtures/k8s/values/, helm renders the chart and the real binary's `check`
//! reads each ConfigMap's `config.yaml`, with its `policy.yaml` (and `pins.json`) where the
//! sidecar mounts it. The
//! chart's schema refuses typos before anything renders (tests/fixtures/k8s/values-invalid/);
//! this is what a pod would read at start.

mod common;

use std::process::Command;

use common::k8s;
use common::sentinel::TempDir;

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
