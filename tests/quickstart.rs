//! The README's Kubernetes quick start, run as written wherever no cluster is needed: its shell
//! block is read from README.md and its steps run in bash. `helm install` becomes `helm template`
//! with the same arguments (the real, pinned helm of scripts/k8s-tools.sh), `kubectl` and the
//! image build are recorded instead of run, and the sentinel then runs the way the injected
//! sidecar does — the rendered ConfigMap's `config.yaml` and `policy.yaml` and the Secret's
//! `api-keys.yaml` at the paths the sidecar mounts them, everything else from the environment the
//! sidecar template sets — in front of a real MCP server. Step 6's requests, sent with the real
//! `curl` to that sentinel (the only edit: its address for the port-forward's), must print 401
//! and then 200.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::k8s;
use common::sentinel::{TempDir, spawn_sidecar};
use common::upstream::spawn_upstream;
use mcp_sentinel::k8s::settings::Settings;
use mcp_sentinel::k8s::template::{self, Params};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The quick start's shell block, split into its numbered steps (`# N. …` comment lines).
fn steps() -> Vec<(u32, String)> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let section = readme
        .split("\n## Kubernetes quick start\n")
        .nth(1)
        .expect("README.md has a Kubernetes quick start");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the quick start has a sh block");
    let mut steps: Vec<(u32, String)> = Vec::new();
    for line in block.lines() {
        let number = line
            .strip_prefix("# ")
            .and_then(|rest| rest.split_once(". "))
            .and_then(|(n, _)| n.parse::<u32>().ok());
        match (number, steps.last_mut()) {
            (Some(n), _) => steps.push((n, String::new())),
            (None, Some((_, text))) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => panic!("the block starts with a numbered step comment: {line}"),
        }
    }
    let numbers: Vec<u32> = steps.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "the quick start's steps");
    steps
}

fn step(steps: &[(u32, String)], n: u32) -> &str {
    &steps.iter().find(|(k, _)| *k == n).unwrap().1
}

/// Runs `script` in bash in `dir` with `helm`, `kubectl`, `make` and `docker` replaced by
/// recorders (helm install → helm template into `rendered.yaml`); returns stdout.
fn run_bash(dir: &Path, helm: &Path, script: &str) -> String {
    let prelude = format!(
        r#"set -euo pipefail
cd {root}
helm() {{
    [ "$1" = install ] || {{ echo "unexpected helm $1" >&2; return 99; }}
    shift
    {helm} template "$@" > {dir}/rendered.yaml
}}
kubectl() {{ printf '%s\n' "$*" >> {dir}/kubectl.log; }}
make() {{ printf '%s\n' "$*" >> {dir}/make.log; }}
docker() {{ printf '%s\n' "$*" >> {dir}/docker.log; }}
cd {dir}
"#,
        root = ROOT,
        helm = helm.display(),
        dir = dir.display(),
    );
    // helm takes the chart's path relative to the repository: run it from there, the rest in dir.
    let script = script.replace(
        "helm install mcp-sentinel helm/mcp-sentinel",
        &format!("helm install mcp-sentinel {ROOT}/helm/mcp-sentinel"),
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the quick start's script failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The ConfigMap `name` in `namespace` from a multi-document rendering.
fn config_map(rendered: &str, namespace: &str, name: &str) -> Value {
    k8s::documents(rendered)
        .into_iter()
        .find(|v| {
            v["kind"] == "ConfigMap"
                && v["metadata"]["name"] == name
                && v["metadata"]["namespace"] == namespace
        })
        .unwrap_or_else(|| panic!("the rendering has no ConfigMap {namespace}/{name}"))
}

/// The sidecar as the injector renders it: its volume mounts and environment.
fn sidecar() -> Value {
    let settings = Settings::with_image("registry.example.com/mcp-sentinel:0.1.0");
    let params = Params {
        image: settings.image.clone(),
        image_pull_policy: settings.image_pull_policy.clone(),
        upstream_url: "http://127.0.0.1:8080/mcp".into(),
        traffic_port_name: "http".into(),
        traffic_port: settings.traffic_port,
        admin_port: settings.admin_port,
        resources: settings.resources.to_json(),
        config_map: settings.config_map.clone(),
        secret: settings.secret.clone(),
        token_review: None,
        native: true,
        env: Vec::new(),
    };
    template::render(&params).unwrap().container
}

// Several threads: bash blocks one while the in-process MCP server answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_kubernetes_quick_start_works_as_written() {
    let steps = steps();
    let helm = k8s::helm();
    let dir = TempDir::new("quickstart");

    // Steps 1-5: the image, the policy, the install, the key, the label.
    let script: String = (1..=5).map(|n| step(&steps, n)).collect();
    run_bash(
        &dir.0,
        &helm,
        &format!("{script}\nprintf %s \"$KEY\" > key\n"),
    );
    let log = |name: &str| std::fs::read_to_string(dir.path(name)).unwrap_or_default();
    assert!(
        log("kubectl.log").contains(
            "-n tools create secret generic mcp-sentinel-api-keys --from-file=api-keys.yaml"
        ),
        "step 4 creates the Secret the sidecar mounts: {}",
        log("kubectl.log")
    );
    assert!(
        log("kubectl.log").contains("mcp-sentinel.io/inject"),
        "step 5 labels the pods"
    );
    let rendered = log("rendered.yaml");
    assert!(
        rendered.contains("image: registry.example.com/mcp-sentinel:0.1.0"),
        "step 3's image reaches the injector"
    );

    // The pod: the ConfigMap and the Secret where the sidecar mounts them.
    let cm = config_map(&rendered, "tools", "mcp-sentinel-config");
    let container = sidecar();
    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let local = |mount: &str| dir.0.join(mount.trim_start_matches('/'));
    let mut config_path = PathBuf::new();
    let mut relocated = Vec::new();
    for (name, path) in &mounts {
        std::fs::create_dir_all(local(path)).unwrap();
        relocated.push((path.clone(), local(path).display().to_string()));
        match name.as_str() {
            "mcp-sentinel-config" => {
                for (file, text) in cm["data"].as_object().unwrap() {
                    std::fs::write(local(path).join(file), text.as_str().unwrap()).unwrap();
                }
                config_path = local(path).join("config.yaml");
            }
            "mcp-sentinel-secrets" => {
                std::fs::copy(dir.path("api-keys.yaml"), local(path).join("api-keys.yaml"))
                    .unwrap();
            }
            _ => {}
        }
    }
    // The config names files under the mounts: the same files, where this test put them.
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    for (from, to) in &relocated {
        config = config.replace(from.as_str(), to);
    }
    std::fs::write(&config_path, config).unwrap();
    assert!(
        std::fs::read_to_string(local("/etc/mcp-sentinel/config").join("policy.yaml"))
            .unwrap()
            .contains("groups: [mcp-users]"),
        "step 2's policy reached the ConfigMap"
    );

    // The sidecar's environment, as the template sets it, pointed at a real MCP server.
    let upstream = spawn_upstream().await;
    let env: Vec<String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        env,
        [
            "MCP_SENTINEL_UPSTREAM",
            "MCP_SENTINEL_CONFIG",
            "MCP_SENTINEL_LISTEN",
            "MCP_SENTINEL_ADMIN_LISTEN",
            "MCP_SENTINEL_POD_NAME",
            "MCP_SENTINEL_POD_NAMESPACE",
            "OTEL_RESOURCE_ATTRIBUTES"
        ],
        "the sidecar is configured by these, which this test sets"
    );
    let config_arg = config_path.display().to_string();
    let upstream_url = upstream.url();
    let mut sentinel = spawn_sidecar(
        &[
            ("MCP_SENTINEL_UPSTREAM", upstream_url.as_str()),
            ("MCP_SENTINEL_CONFIG", config_arg.as_str()),
            // As the kubelet sets them (the downward API, then the expansion).
            ("MCP_SENTINEL_POD_NAME", "weather-7d9f8-abcde"),
            ("MCP_SENTINEL_POD_NAMESPACE", "tools"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.pod.name=weather-7d9f8-abcde,k8s.namespace.name=tools",
            ),
        ],
        Stdio::null(),
    );
    let ready = format!("{}/readyz", sentinel.admin);
    let started = Instant::now();
    while reqwest::get(&ready).await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sidecar became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Step 6, with the sentinel's address for the port-forward's.
    let address = sentinel
        .traffic
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    let verify = format!("KEY=$(cat key)\n{}", step(&steps, 6)).replace("127.0.0.1:8080", &address);
    let printed = run_bash(&dir.0, &helm, &verify);
    let _ = sentinel.child.kill();
    let _ = sentinel.child.wait();
    assert_eq!(printed, "401\n200\n", "step 6 prints 401, then 200");
    assert_eq!(
        upstream.mcp_requests().len(),
        1,
        "only the call with the key reached the server"
    );
}
