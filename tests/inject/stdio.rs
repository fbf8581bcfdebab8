//! stdio MCP servers (`mcp-sentinel.io/stdio-command`): the server's own container runs the
//! sentinel, which runs the server as its child; an init container copies the binary in. A pod
//! that asks for it and cannot have it is refused, never admitted without its sentinel.

use k8s_openapi::api::core::v1::{Container, Volume};
use mcp_sentinel::k8s::inject::{InjectResult, Mode};
use serde_json::{Value, json};

use super::{
    IMAGE, annotate, answer, fixture, patched, ports, response, set, settings, typed, unchanged,
};

const STDIO: &str = "mcp-sentinel.io/stdio-command";

fn review() -> Value {
    fixture("review-pod-stdio.json")
}

/// The sentinel's probes, as the sidecar template gives them.
fn probes() -> Value {
    json!({
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "sentinel-admin"},
            "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 30},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "sentinel-admin"},
            "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "sentinel-admin"},
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
    })
}

/// The mounts the wrapped container gains, after its own.
fn sentinel_mounts() -> Vec<Value> {
    vec![
        json!({"name": "mcp-sentinel-bin", "mountPath": "/mcp-sentinel-bin", "readOnly": true}),
        json!({"name": "mcp-sentinel-config", "mountPath": "/etc/mcp-sentinel/config", "readOnly": true}),
        json!({"name": "mcp-sentinel-secrets", "mountPath": "/etc/mcp-sentinel/secrets", "readOnly": true}),
        json!({"name": "mcp-sentinel-audit-spool", "mountPath": "/var/spool/mcp-sentinel"}),
    ]
}

/// `mcp-sentinel run … --` and the server's argv.
fn wrapped(argv: &[&str]) -> Vec<String> {
    let mut command: Vec<String> = [
        "/mcp-sentinel-bin/mcp-sentinel",
        "run",
        "--config",
        "/etc/mcp-sentinel/config/config.yaml",
        "--listen",
        "0.0.0.0:9480",
        "--admin-listen",
        "0.0.0.0:9481",
        "--",
    ]
    .map(String::from)
    .to_vec();
    command.extend(argv.iter().map(|a| a.to_string()));
    command
}

fn as_container(v: Value) -> Container {
    serde_json::from_value(v).expect("a Container")
}

#[test]
fn a_stdio_server_runs_as_the_sentinels_child_in_its_own_container() {
    let review = review();
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    assert_eq!(
        response(&a)["warnings"],
        json!([
            "mcp-sentinel: the everything container's own livenessProbe is replaced by the sentinel's (admin port /healthz, /readyz)"
        ])
    );
    let pod = typed(&patched(&review, &a));
    let spec = pod.spec.as_ref().unwrap();

    // The copy: the only init container, hardened, writing into the shared volume.
    let hardened = json!({
        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
        "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "privileged": false,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    });
    assert_eq!(
        spec.init_containers.as_deref().unwrap(),
        [as_container(json!({
            "name": "mcp-sentinel",
            "image": IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "args": ["install-to", "/mcp-sentinel-bin"],
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
            "securityContext": hardened,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "mcp-sentinel-bin", "mountPath": "/mcp-sentinel-bin"}],
        }))]
    );

    // The server's container: the sentinel's command, ports, probes and mounts; the rest its own.
    let mut expected = json!({
        "name": "everything",
        "image": "node:22-bookworm-slim",
        "command": wrapped(&["npx", "-y", "@modelcontextprotocol/server-everything", "stdio"]),
        "env": [{"name": "HOME", "value": "/home/node"},
                {"name": "npm_config_cache", "value": "/home/node/.npm"}],
        "ports": [{"name": "mcp", "containerPort": 9480, "protocol": "TCP"},
                  {"name": "sentinel-admin", "containerPort": 9481, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [
            {"name": "kube-api-access-x7k2p", "readOnly": true,
             "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
            {"name": "npm-cache", "mountPath": "/home/node/.npm"},
        ],
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    });
    expected["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .extend(sentinel_mounts());
    expected
        .as_object_mut()
        .unwrap()
        .extend(probes().as_object().unwrap().clone());
    assert_eq!(spec.containers, [as_container(expected)]);

    // Volumes: the pod's own, the sidecar's, and the binary's.
    let volumes: Vec<Volume> = serde_json::from_value(json!([
        {"name": "mcp-sentinel-config", "configMap": {"name": "mcp-sentinel-config"}},
        {"name": "mcp-sentinel-secrets", "secret": {"secretName": "mcp-sentinel-api-keys", "optional": true}},
        {"name": "mcp-sentinel-audit-spool", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "mcp-sentinel-bin", "emptyDir": {"sizeLimit": "64Mi"}},
    ]))
    .unwrap();
    let all = spec.volumes.as_deref().unwrap();
    let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names[..2], ["kube-api-access-x7k2p", "npm-cache"]);
    assert_eq!(all[2..], volumes);

    // Metadata as for a sidecar: PodMonitor and NetworkPolicy select the label.
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["mcp-sentinel.io/sidecar"], "true");
    let ann = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["prometheus.io/port"], "9481");
    assert_eq!(a.pod, "tools/everything-mcp-7f9c6d5b84-*");
}

/// The sidecar's extra environment (the chart's sidecar.env) and its pod identity for tracing
/// are the sidecar's: a stdio server's container, whose env its child may inherit, keeps its own.
#[test]
fn the_sidecars_env_stays_out_of_a_stdio_servers_container() {
    let review = review();
    let plain = typed(&patched(
        &review,
        &answer(&review, Mode::Annotated, &settings()),
    ));
    let mut with_env = settings();
    with_env.env = vec![json!({"name": "OTEL_EXPORTER_OTLP_HEADERS",
        "valueFrom": {"secretKeyRef": {"name": "otel", "key": "headers"}}})];
    let a = answer(&review, Mode::Annotated, &with_env);
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let pod = typed(&patched(&review, &a));
    let server = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        server.command.as_deref().unwrap(),
        wrapped(&[
            "npx",
            "-y",
            "@modelcontextprotocol/server-everything",
            "stdio"
        ])
    );
    let names: Vec<&str> = server
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["HOME", "npm_config_cache"]);
    assert_eq!(pod.spec, plain.spec);
}

#[test]
fn stdio_injection_is_idempotent() {
    let mut review = review();
    let first = answer(&review, Mode::Annotated, &settings());
    review["request"]["object"] = patched(&review, &first);
    for mode in [Mode::Annotated, Mode::Namespace] {
        let again = answer(&review, mode, &settings());
        assert_eq!(
            again.result,
            InjectResult::AlreadyInjected,
            "{}",
            again.detail
        );
        assert!(unchanged(&review, &again).is_empty());
    }
    // The server's sentinel listening elsewhere than its declared port: not as injected.
    let command = review["request"]["object"]["spec"]["containers"][0]["command"]
        .as_array_mut()
        .unwrap();
    let at = command.iter().position(|a| a == "--listen").unwrap() + 1;
    command[at] = "127.0.0.1:1".into();
    let spoof = answer(&review, Mode::Annotated, &settings());
    assert_eq!(spoof.result, InjectResult::Refused, "{}", spoof.detail);
    assert!(
        spoof.detail.contains(
            r#"--listen is Some("127.0.0.1:1"), not every address at the port it declares for it"#
        ),
        "{}",
        spoof.detail
    );
}

#[test]
fn a_labelled_stdio_pod_is_wrapped_and_false_still_opts_out() {
    let mut review = review();
    // The label opts in, no inject annotation. No args, no probes and no ports of its own:
    // nothing to remove, lists created.
    let server = "/request/object/spec/containers/0";
    for field in ["args", "livenessProbe", "command"] {
        review
            .pointer_mut(server)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(field);
    }
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    assert!(response(&a).get("warnings").is_none());
    let pod = typed(&patched(&review, &a));
    let c = &pod.spec.unwrap().containers[0];
    let argv = [
        "npx",
        "-y",
        "@modelcontextprotocol/server-everything",
        "stdio",
    ];
    assert_eq!(c.command.as_deref(), Some(&wrapped(&argv)[..]));
    assert_eq!(c.args, None);

    annotate(&mut review, "mcp-sentinel.io/inject", "false");
    let a = answer(&review, Mode::Namespace, &settings());
    assert_eq!(a.result, InjectResult::Skipped);
    assert!(unchanged(&review, &a).is_empty());
}

#[test]
fn annotations_choose_the_container_and_the_port_name() {
    let logger = json!({"name": "logger", "image": "fluent/fluent-bit:3.2", "ports": [{"name": "http", "containerPort": 2020}]});
    let mut review = review();
    review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .insert(0, logger.clone());
    // Istio and Linkerd set kubectl's default container; ours wins over it.
    for (key, value) in [
        ("kubectl.kubernetes.io/default-container", "everything"),
        ("mcp-sentinel.io/stdio-container", "everything"),
    ] {
        let mut review = review.clone();
        annotate(&mut review, key, value);
        if key.starts_with("mcp-sentinel") {
            annotate(
                &mut review,
                "kubectl.kubernetes.io/default-container",
                "logger",
            );
        }
        annotate(&mut review, "mcp-sentinel.io/traffic-port-name", "mcp-http");
        let a = answer(&review, Mode::Annotated, &settings());
        assert_eq!(a.result, InjectResult::Injected, "{key}: {}", a.detail);
        let spec = typed(&patched(&review, &a)).spec.unwrap();
        assert_eq!(spec.containers[0], as_container(logger.clone()), "{key}");
        let c = &spec.containers[1];
        assert_eq!(c.name, "everything");
        assert_eq!(
            c.command.as_ref().unwrap()[0],
            "/mcp-sentinel-bin/mcp-sentinel"
        );
        let ports: Vec<(Option<&str>, i32)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [(Some("mcp-http"), 9480), (Some("sentinel-admin"), 9481)]
        );
    }
}

/// The message the API server returns to whoever created the pod.
const REFUSED: &str = "mcp-sentinel: refused: a stdio MCP server runs only under its sentinel: ";
const REFUSED_FIX: &str =
    " (fix that, or annotate the pod mcp-sentinel.io/on-failure: admit to start it unprotected)";

fn assert_refused(review: &Value, mode: Mode, expect: &str, what: &str) {
    let a = answer(review, mode, &settings());
    assert_eq!(a.result, InjectResult::Refused, "{what}: {}", a.detail);
    assert_eq!(a.detail, expect, "{what}");
    let resp = response(&a);
    assert_eq!(resp["uid"], review["request"]["uid"], "{what}");
    assert_eq!(resp["allowed"], false, "{what}");
    assert_eq!(resp["status"]["code"], 403, "{what}");
    assert_eq!(
        resp["status"]["message"],
        format!("{REFUSED}{expect}{REFUSED_FIX}"),
        "{what}"
    );
    assert!(resp.get("patch").is_none(), "{what}");
}

#[test]
fn a_stdio_pod_that_cannot_be_wrapped_is_refused() {
    type Edit = fn(&mut Value);
    let parse = "annotation mcp-sentinel.io/stdio-command: not a JSON array of strings (the server's argv, e.g. [\"npx\",\"-y\",\"@modelcontextprotocol/server-everything\"]): ";
    let cases: Vec<(&str, Edit, String)> = vec![
        (
            "a command line, not JSON",
            |r| annotate(r, STDIO, "npx -y @modelcontextprotocol/server-everything"),
            format!("{parse}expected ident at line 1 column 2"),
        ),
        (
            "a string",
            |r| annotate(r, STDIO, "\"npx\""),
            format!("{parse}invalid type: string \"npx\", expected a sequence at line 1 column 5"),
        ),
        (
            "a number in the array",
            |r| annotate(r, STDIO, "[\"node\", 3]"),
            format!("{parse}invalid type: integer `3`, expected a string at line 1 column 10"),
        ),
        (
            "an empty array",
            |r| annotate(r, STDIO, "[]"),
            "annotation mcp-sentinel.io/stdio-command: the array is empty; it must start with the server's program".into(),
        ),
        (
            "an empty argument",
            |r| annotate(r, STDIO, "[\"node\", \"\"]"),
            "annotation mcp-sentinel.io/stdio-command: element 1 is empty or holds a NUL character".into(),
        ),
        (
            "an unknown container",
            |r| annotate(r, "mcp-sentinel.io/stdio-container", "server"),
            "annotation mcp-sentinel.io/stdio-container: the pod has no container \"server\" (it has [\"everything\"])".into(),
        ),
        (
            "two containers, no choice",
            |r| {
                r["request"]["object"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "logger", "image": "fluent/fluent-bit:3.2"}));
            },
            "the pod has 2 containers [\"everything\", \"logger\"]; set mcp-sentinel.io/stdio-container to the stdio server's".into(),
        ),
        (
            "a bad inject annotation",
            |r| annotate(r, "mcp-sentinel.io/inject", "yes"),
            "annotation mcp-sentinel.io/inject=\"yes\" must be \"false\" (to opt out) or absent".into(),
        ),
        (
            "a bad port name",
            |r| annotate(r, "mcp-sentinel.io/traffic-port-name", "HTTP"),
            "annotation mcp-sentinel.io/traffic-port-name: \"HTTP\" is not a port name (1-15 of a-z, 0-9, '-', with a letter, no leading, trailing or double '-')".into(),
        ),
        (
            "host network",
            |r| set(r, "/request/object/spec/hostNetwork", json!(true)),
            "host-network pods are not injected".into(),
        ),
        (
            "the sentinel's port taken",
            |r| set(r, "/request/object/spec/containers/0/ports", json!([{"containerPort": 9480}])),
            "container everything already uses port 9480, which the sidecar needs; set mcp-sentinel.io/traffic-port to another".into(),
        ),
        (
            "the binary's volume name taken",
            |r| set(r, "/request/object/spec/volumes/1/name", json!("mcp-sentinel-bin")),
            "the pod already has a volume named \"mcp-sentinel-bin\"".into(),
        ),
        (
            "an unreadable pod",
            |r| set(r, "/request/object/spec/containers/0/ports", json!("9480")),
            "cannot read the pod: invalid type: string \"9480\", expected a sequence".into(),
        ),
        (
            "the config's mount path taken",
            |r| set(r, "/request/object/spec/containers/0/volumeMounts/1/mountPath", json!("/etc/mcp-sentinel/config/")),
            "container everything already mounts a volume at /etc/mcp-sentinel/config, which the sentinel needs".into(),
        ),
    ];
    for (what, edit, expect) in cases {
        let mut review = review();
        edit(&mut review);
        assert_refused(&review, Mode::Annotated, &expect, what);
    }
}

/// Istio's injector runs first (its webhook's name sorts first). The sentinel's ports are off
/// Envoy's (15000-15100): the server is wrapped beside istio-proxy, whose ports stay its own; an
/// annotation that puts the sentinel on one of Istio's ports refuses the pod, naming the clash.
#[test]
fn beside_istio_the_server_is_wrapped_and_istios_ports_are_refused() {
    let mut review = fixture("review-pod-stdio-istio.json");
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let pod = patched(&review, &a);
    let before = &review["request"]["object"]["spec"];
    let spec = &pod["spec"];
    let proxy = |s: &Value| {
        s["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "istio-proxy")
            .unwrap()
            .clone()
    };
    assert_eq!(proxy(spec), proxy(before));
    let c = as_container(spec["containers"][0].clone());
    assert_eq!(c.name, "everything");
    assert_eq!(
        ports(&c),
        [("mcp".into(), 9480), ("sentinel-admin".into(), 9481)]
    );

    annotate(&mut review, "mcp-sentinel.io/admin-port", "15090");
    assert_refused(
        &review,
        Mode::Annotated,
        "the sidecar's port 15090 is one of Istio's (container istio-proxy); set mcp-sentinel.io/admin-port to another",
        "istio, admin port 15090",
    );
}

/// The init container's command: the copy is the running binary, executable, and it runs.
#[test]
fn install_to_copies_the_binary_that_runs() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_mcp-sentinel");
    let dir = std::env::temp_dir().join(format!("mcp-sentinel-install-to-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(bin)
        .arg("install-to")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = dir.join("mcp-sentinel");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("installed {}\n", copy.display())
    );
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(bin).unwrap());
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let version = Command::new(&copy).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("mcp-sentinel {}\n", env!("CARGO_PKG_VERSION"))
    );
    // Hidden: the help lists what users run.
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("install-to"));

    let missing = Command::new(bin)
        .arg("install-to")
        .arg(dir.join("absent"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).starts_with("mcp-sentinel: cannot install into "),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
