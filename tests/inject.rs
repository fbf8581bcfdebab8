//! The injector's decision on pod fixtures: the JSON Patch it answers with is applied to the pod
//! the API server sent, the result is read with k8s-openapi, and the containers, ports, probes,
//! volumes and security context are checked. Only pods labelled mcp-sentinel.io/inject are
//! injected; opted-in pods it cannot inject are refused, saying what to fix (admitted unchanged,
//! with a warning, when annotated `on-failure: admit`); bodies that are not AdmissionReviews get
//! a clean refusal.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use mcp_sentinel::k8s::inject::{self, Answer, InjectResult, Malformed, Mode};
use mcp_sentinel::k8s::settings::{Settings, TokenReview};
use serde_json::{Value, json};

#[path = "common/k8s.rs"]
#[allow(dead_code)]
mod k8s_tools;
#[path = "inject/loopback.rs"]
mod loopback;
#[path = "inject/ports.rs"]
mod ports;
#[path = "inject/real_pods.rs"]
mod real_pods;
#[path = "inject/socket.rs"]
mod socket;
#[path = "inject/stdio.rs"]
mod stdio;
#[path = "inject/strict.rs"]
mod strict;

const IMAGE: &str = "registry.example.com/mcp-sentinel:0.1.0";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn settings() -> Settings {
    Settings::with_image(IMAGE)
}

fn answer(review: &Value, mode: Mode, settings: &Settings) -> Answer {
    inject::review_body(&serde_json::to_vec(review).unwrap(), mode, settings)
        .expect("a well-formed AdmissionReview gets an answer")
}

/// The response part of the answer, as the API server reads it.
fn response(a: &Answer) -> Value {
    let v: Value = serde_json::from_slice(&a.to_json()).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    v["response"].clone()
}

/// Applies the answer's patch to the request's pod, as the API server does.
fn patched(review: &Value, a: &Answer) -> Value {
    let resp = response(a);
    assert_eq!(resp["allowed"], true, "{resp}");
    assert_eq!(resp["uid"], review["request"]["uid"]);
    assert_eq!(resp["patchType"], "JSONPatch", "{resp}");
    let bytes = base64_decode(resp["patch"].as_str().expect("a patch"));
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod that was sent");
    pod
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Asserts the pod was admitted unchanged (no patch), and returns the warnings.
fn unchanged(review: &Value, a: &Answer) -> Vec<String> {
    let resp = response(a);
    assert_eq!(resp["allowed"], true, "{resp}");
    assert_eq!(resp["uid"], review["request"]["uid"]);
    assert!(resp.get("patch").is_none(), "{resp}");
    resp["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn typed(pod: &Value) -> Pod {
    serde_json::from_value(pod.clone()).expect("the patched pod is a valid Pod")
}

fn container<'p>(list: &'p [Container], name: &str) -> &'p Container {
    list.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env(c: &Container, name: &str) -> String {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("no env {name}"))
}

fn ports(c: &Container) -> Vec<(String, i32)> {
    c.ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect()
}

fn set(review: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = review
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent}"));
    target[key.replace("~1", "/")] = value;
}

/// The upstream container's ports.
fn set_ports(review: &mut Value, ports: Value) {
    set(review, "/request/object/spec/containers/0/ports", ports);
}

/// Two upstream ports: `http` on 8080 and `name` on `port`.
fn beside_http(review: &mut Value, name: &str, port: u16) {
    set_ports(
        review,
        json!([{"name": "http", "containerPort": 8080}, {"name": name, "containerPort": port}]),
    );
}

fn annotate(review: &mut Value, key: &str, value: &str) {
    let annotations = &mut review["request"]["object"]["metadata"]["annotations"];
    if annotations.is_null() {
        *annotations = json!({});
    }
    annotations[key] = json!(value);
}

#[test]
fn annotated_pod_gets_a_native_sidecar_that_takes_its_port_name() {
    let review = fixture("review-pod.json");
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    assert!(response(&a).get("warnings").is_none());
    let json = patched(&review, &a);
    let pod = typed(&json);
    let spec = pod.spec.as_ref().unwrap();

    // The sidecar: first init container, restartPolicy Always, forwarding to the upstream.
    let init = spec.init_containers.as_ref().unwrap();
    assert_eq!(init.len(), 1);
    let s = &init[0];
    assert_eq!(s.name, "mcp-sentinel");
    assert_eq!(s.restart_policy.as_deref(), Some("Always"));
    assert_eq!(s.image.as_deref(), Some(IMAGE));
    assert_eq!(s.args.as_deref(), Some(&["run".to_string()][..]));
    assert_eq!(env(s, "MCP_SENTINEL_UPSTREAM"), "http://127.0.0.1:8080/mcp");
    assert_eq!(
        env(s, "MCP_SENTINEL_CONFIG"),
        "/etc/mcp-sentinel/config/config.yaml"
    );
    assert_eq!(env(s, "MCP_SENTINEL_LISTEN"), "0.0.0.0:9480");
    assert_eq!(env(s, "MCP_SENTINEL_ADMIN_LISTEN"), "0.0.0.0:9481");

    // Port names: Services that target "http" now reach the sentinel.
    assert_eq!(
        ports(s),
        [
            ("http".to_string(), 9480),
            ("sentinel-admin".to_string(), 9481)
        ]
    );
    let server = container(&spec.containers, "server");
    assert_eq!(ports(server), [("mcp-upstream".to_string(), 8080)]);
    assert_eq!(spec.containers.len(), 1);

    // Probes on the admin port; the startup probe must not wait for the upstream.
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p.as_ref().unwrap().http_get.as_ref().unwrap();
        (
            g.path.clone().unwrap(),
            serde_json::to_value(&g.port).unwrap(),
        )
    };
    assert_eq!(
        probe(&s.startup_probe),
        ("/healthz".into(), json!("sentinel-admin"))
    );
    assert_eq!(
        probe(&s.liveness_probe),
        ("/healthz".into(), json!("sentinel-admin"))
    );
    assert_eq!(
        probe(&s.readiness_probe),
        ("/readyz".into(), json!("sentinel-admin"))
    );

    // Hardened.
    let sc = s.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");

    // Resources from the settings.
    let res = s.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "50m");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "128Mi");
    assert!(res.limits.as_ref().unwrap().get("cpu").is_none());

    // Volumes: the pod's own kept, the config ConfigMap, the optional Secret and the audit
    // spool (an emptyDir) added.
    let volumes = spec.volumes.as_ref().unwrap();
    let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kube-api-access-x7k2p",
            "mcp-sentinel-config",
            "mcp-sentinel-secrets",
            "mcp-sentinel-audit-spool"
        ]
    );
    let spool = volumes[3].empty_dir.as_ref().unwrap();
    assert_eq!(spool.size_limit.as_ref().unwrap().0, "1Gi");
    assert_eq!(
        volumes[1].config_map.as_ref().unwrap().name,
        "mcp-sentinel-config"
    );
    let secret = volumes[2].secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("mcp-sentinel-api-keys"));
    assert_eq!(secret.optional, Some(true));
    let mounts: Vec<(&str, &str, Option<bool>)> = s
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (
                "mcp-sentinel-config",
                "/etc/mcp-sentinel/config",
                Some(true)
            ),
            (
                "mcp-sentinel-secrets",
                "/etc/mcp-sentinel/secrets",
                Some(true)
            ),
            ("mcp-sentinel-audit-spool", "/var/spool/mcp-sentinel", None),
        ]
    );

    // Metadata: the sidecar label and scrape annotations added, nothing removed.
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["mcp-sentinel.io/sidecar"], "true");
    assert_eq!(labels["app.kubernetes.io/name"], "weather-mcp");
    let ann = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9481");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert_eq!(ann["mcp-sentinel.io/inject"], "true");

    // Fields the typed model does not know survive: the patch only adds.
    assert_eq!(
        json["spec"]["containers"][0]["futureContainerField"],
        json!({"kept": true})
    );
    assert_eq!(a.pod, "tools/weather-mcp-6d5f8b7c9d-*");
}

#[test]
fn injection_is_idempotent() {
    let mut review = fixture("review-pod.json");
    let first = answer(&review, Mode::Annotated, &settings());
    let pod = patched(&review, &first);
    review["request"]["object"] = pod;
    for mode in [Mode::Annotated, Mode::Namespace] {
        let again = answer(&review, mode, &settings());
        assert_eq!(again.result, InjectResult::AlreadyInjected);
        assert!(unchanged(&review, &again).is_empty());
    }
}

/// A container with the sidecar's name and image makes the pod pass as injected only when it is
/// the sidecar as rendered: one with a command, arguments or listen address of its own, or whose
/// port another container declares too (the server put on the port the NetworkPolicy opens
/// beside a sidecar that does not listen there), is refused.
#[test]
fn a_pod_that_only_looks_injected_is_refused() {
    let mut review = fixture("review-pod.json");
    let first = answer(&review, Mode::Annotated, &settings());
    review["request"]["object"] = patched(&review, &first);
    let sidecar = "/request/object/spec/initContainers/0";
    assert_eq!(review.pointer(sidecar).unwrap()["name"], "mcp-sentinel");
    let listen = |r: &Value| {
        r.pointer(&format!("{sidecar}/env"))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .position(|e| e["name"] == "MCP_SENTINEL_LISTEN")
            .unwrap()
    };
    type Edit = fn(&mut Value, usize);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |r, _| {
                set(
                    r,
                    "/request/object/spec/initContainers/0/command",
                    json!(["/mcp-sentinel"]),
                )
            },
            "it has a command of its own",
        ),
        (
            |r, _| {
                set(
                    r,
                    "/request/object/spec/initContainers/0/args",
                    json!(["run", "--upstream", "http://127.0.0.1:1/"]),
                )
            },
            r#"its arguments are ["run","--upstream","http://127.0.0.1:1/"], not the sidecar's"#,
        ),
        (
            |r, at| {
                set(
                    r,
                    &format!("/request/object/spec/initContainers/0/env/{at}/value"),
                    json!("127.0.0.1:1"),
                )
            },
            r#"MCP_SENTINEL_LISTEN is Some("127.0.0.1:1"), not every address at the port it declares for it"#,
        ),
        (
            |r, _| {
                set(
                    r,
                    "/request/object/spec/containers/0/ports",
                    json!([{"name": "http", "containerPort": 9480}]),
                )
            },
            "container server declares its port 9480 too",
        ),
        (
            // The kubelet takes the last entry of a name.
            |r, _| {
                r["request"]["object"]["spec"]["initContainers"][0]["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "MCP_SENTINEL_LISTEN", "value": "127.0.0.1:1"}))
            },
            r#"MCP_SENTINEL_LISTEN is Some("127.0.0.1:1"), not every address at the port it declares for it"#,
        ),
        (
            |r, at| {
                set(
                    r,
                    &format!("/request/object/spec/initContainers/0/env/{at}/value"),
                    json!("0.0.0.0:+9480"),
                )
            },
            r#"MCP_SENTINEL_LISTEN is Some("0.0.0.0:+9480"), not every address at the port it declares for it"#,
        ),
        (
            // A port it declares, but not the traffic port the NetworkPolicy opens.
            |r, at| {
                set(
                    r,
                    &format!("/request/object/spec/initContainers/0/env/{at}/value"),
                    json!("0.0.0.0:9481"),
                )
            },
            r#"MCP_SENTINEL_LISTEN is Some("0.0.0.0:9481"), not every address at the port it declares for it"#,
        ),
    ];
    for (edit, why) in cases {
        let mut spoof = review.clone();
        let at = listen(&spoof);
        edit(&mut spoof, at);
        let a = answer(&spoof, Mode::Annotated, &settings());
        assert_eq!(a.result, InjectResult::Refused, "{why}: {}", a.detail);
        assert_eq!(
            a.detail,
            format!(
                "container mcp-sentinel has the sentinel's image, but the pod is not as the injector leaves it: {why}; remove the container and let the injector add the sentinel"
            )
        );
    }
    // A stdio server's install container, with no server container running what it copies.
    let mut install = fixture("review-pod.json");
    install["request"]["object"]["spec"]["initContainers"] = json!([{
        "name": "mcp-sentinel", "image": IMAGE, "args": ["install-to", "/mcp-sentinel-bin"]
    }]);
    let a = answer(&install, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Refused, "{}", a.detail);
    assert_eq!(
        a.detail,
        "container mcp-sentinel has the sentinel's image, but the pod is not as the injector leaves it: no container runs /mcp-sentinel-bin/mcp-sentinel; remove the container and let the injector add the sentinel"
    );
    // The sidecar as rendered, listening on every IPv6 address too, still passes.
    let mut v6 = review.clone();
    let at = listen(&v6);
    set(
        &mut v6,
        &format!("{sidecar}/env/{at}/value"),
        json!("[::]:9480"),
    );
    let a = answer(&v6, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::AlreadyInjected, "{}", a.detail);
}

#[test]
fn regular_container_when_native_sidecars_are_off() {
    let review = fixture("review-pod.json");
    let mut s = settings();
    s.native_sidecar = false;
    let a = answer(&review, Mode::Annotated, &s);
    assert_eq!(a.result, InjectResult::Injected);
    let pod = typed(&patched(&review, &a));
    let spec = pod.spec.unwrap();
    assert!(spec.init_containers.is_none());
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["server", "mcp-sentinel"]);
    let sidecar = &spec.containers[1];
    assert_eq!(sidecar.restart_policy, None);
    assert!(sidecar.startup_probe.is_some());
    assert_eq!(ports(sidecar)[0], ("http".to_string(), 9480));
}

#[test]
fn annotations_choose_port_path_config_and_resources() {
    let review = fixture("review-pod-two-containers.json");
    let a = answer(&review, Mode::Namespace, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let pod = typed(&patched(&review, &a));
    let spec = pod.spec.as_ref().unwrap();
    // Native sidecar first, before the pod's own init container.
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["mcp-sentinel", "migrate"]);
    let s = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        env(s, "MCP_SENTINEL_UPSTREAM"),
        "http://127.0.0.1:3000/api/mcp"
    );
    assert_eq!(ports(s)[0], ("mcp".to_string(), 9480));
    // Only the upstream's port is renamed.
    assert_eq!(
        ports(container(&spec.containers, "server")),
        [
            ("mcp-upstream".to_string(), 3000),
            ("metrics".to_string(), 9090)
        ]
    );
    assert_eq!(
        ports(container(&spec.containers, "cache")),
        [("cache".to_string(), 6379)]
    );
    let res = s.resources.as_ref().unwrap();
    let requests = res.requests.as_ref().unwrap();
    let limits = res.limits.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "200m");
    assert_eq!(requests["memory"].0, "32Mi");
    assert_eq!(limits["cpu"].0, "1");
    assert_eq!(limits["memory"].0, "256Mi");
    let config = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "mcp-sentinel-config")
        .unwrap();
    assert_eq!(config.config_map.as_ref().unwrap().name, "search-sentinel");
    // The pod's own Prometheus annotations win; a warning says so.
    let ann = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["prometheus.io/port"], "9090");
    assert!(!ann.contains_key("prometheus.io/path"));
    let warnings = response(&a)["warnings"].clone();
    assert!(
        warnings[0].as_str().unwrap().contains("prometheus.io"),
        "{warnings}"
    );
    // The metadata had no labels: the map is created.
    assert_eq!(
        pod.metadata.labels.unwrap()["mcp-sentinel.io/sidecar"],
        "true"
    );
    assert_eq!(a.pod, "agents/search-mcp");
}

#[test]
fn token_review_mounts_a_projected_token() {
    let review = fixture("review-pod.json");
    let mut s = settings();
    s.token_review = Some(TokenReview {
        audience: "https://kubernetes.default.svc".into(),
        expiration_seconds: 7200,
    });
    let pod = typed(&patched(&review, &answer(&review, Mode::Annotated, &s)));
    let spec = pod.spec.unwrap();
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "mcp-sentinel-token")
        .expect("token volume");
    let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let token = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(
        token.audience.as_deref(),
        Some("https://kubernetes.default.svc")
    );
    assert_eq!(token.expiration_seconds, Some(7200));
    assert_eq!(token.path, "token");
    let sidecar = &spec.init_containers.unwrap()[0];
    let mount = sidecar
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "mcp-sentinel-token")
        .expect("token mount");
    assert_eq!(mount.mount_path, "/var/run/secrets/mcp-sentinel");
    assert_eq!(mount.read_only, Some(true));
}

#[test]
fn unnamed_upstream_port_gets_the_default_name_and_a_warning() {
    let mut review = fixture("review-pod.json");
    set_ports(&mut review, json!([{"containerPort": 8080}]));
    review["request"]["object"]["metadata"]["annotations"] = json!({});
    let a = answer(&review, Mode::Namespace, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let warnings = response(&a)["warnings"].clone();
    assert!(
        warnings[0].as_str().unwrap().contains("\"mcp\""),
        "{warnings}"
    );
    let pod = typed(&patched(&review, &a));
    let spec = pod.spec.unwrap();
    assert_eq!(
        ports(&spec.init_containers.unwrap()[0])[0],
        ("mcp".to_string(), 9480)
    );
    assert_eq!(
        ports(&spec.containers[0]),
        [("mcp-upstream".to_string(), 8080)]
    );
}

#[test]
fn pods_not_asking_are_skipped_without_a_word() {
    // The annotation alone does not opt in (nor does a label value that is not an opt-in),
    // even with a bad port or a bad annotation: a pod that did not opt in is never refused.
    for label in [None, Some("false"), Some("yes")] {
        let mut review = fixture("review-pod.json");
        let labels = review["request"]["object"]["metadata"]["labels"]
            .as_object_mut()
            .unwrap();
        labels.remove("mcp-sentinel.io/inject");
        if let Some(v) = label {
            labels.insert("mcp-sentinel.io/inject".into(), json!(v));
        }
        beside_http(&mut review, "grpc", 9000);
        annotate(&mut review, "mcp-sentinel.io/upstream-port", "nope");
        for mode in [Mode::Annotated, Mode::Namespace] {
            let a = answer(&review, mode, &settings());
            assert_eq!(a.result, InjectResult::Skipped, "{label:?}");
            assert_eq!(a.detail, "not labelled mcp-sentinel.io/inject");
            assert!(unchanged(&review, &a).is_empty());
        }
    }

    // Every accepted spelling of the label opts in (the same list the chart renders).
    for v in mcp_sentinel::k8s::OPT_IN_VALUES {
        let mut review = fixture("review-pod.json");
        set(
            &mut review,
            "/request/object/metadata/labels/mcp-sentinel.io~1inject",
            json!(v),
        );
        let a = answer(&review, Mode::Annotated, &settings());
        assert_eq!(a.result, InjectResult::Injected, "{v}");
    }

    // A labelled pod annotated "false" opts out.
    let mut review = fixture("review-pod.json");
    annotate(&mut review, "mcp-sentinel.io/inject", "false");
    let a = answer(&review, Mode::Namespace, &settings());
    assert_eq!(a.result, InjectResult::Skipped);
    assert!(unchanged(&review, &a).is_empty());

    // Not a pod creation.
    let mut update = fixture("review-pod.json");
    update["request"]["operation"] = json!("UPDATE");
    let a = answer(&update, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Skipped);
    assert!(unchanged(&update, &a).is_empty());
    let mut deployment = fixture("review-pod.json");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let a = answer(&deployment, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Skipped);
}

/// The message the API server returns for an opted-in HTTP server's pod it cannot protect.
fn refusal(detail: &str) -> String {
    format!(
        "mcp-sentinel: refused: the pod asked for the sentinel and is not started without it: {detail} (fix that, or annotate the pod mcp-sentinel.io/on-failure: admit to start it unprotected)"
    )
}

/// Refused (403, the message saying what to fix, no patch); and annotated `on-failure: admit`,
/// admitted unchanged with a warning that says so, counted as an error. Returns the detail.
fn assert_refused_unless_admitted(review: &Value, what: &str) -> String {
    let a = answer(review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Refused, "{what}: {}", a.detail);
    let resp = response(&a);
    assert_eq!(resp["uid"], review["request"]["uid"], "{what}");
    assert_eq!(resp["allowed"], false, "{what}");
    assert_eq!(resp["status"]["code"], 403, "{what}");
    assert_eq!(resp["status"]["message"], refusal(&a.detail), "{what}");
    assert!(resp.get("patch").is_none(), "{what}");

    let mut admit = review.clone();
    annotate(&mut admit, "mcp-sentinel.io/on-failure", "admit");
    let b = answer(&admit, Mode::Annotated, &settings());
    assert_eq!(b.result, InjectResult::Error, "{what}: {}", b.detail);
    assert_eq!(b.detail, a.detail, "{what}");
    assert_eq!(
        unchanged(&admit, &b),
        [format!(
            "mcp-sentinel: admitted WITHOUT the sentinel (mcp-sentinel.io/on-failure: admit): {}",
            a.detail
        )],
        "{what}"
    );
    a.detail
}

/// Where the chart protects only some namespaces (its release namespace and
/// `sidecar.namespaces`: the NetworkPolicy that closes the server's port to other pods is
/// there), an opted-in pod elsewhere is refused rather than injected and left open; opted out,
/// it is not refused.
#[test]
fn opted_in_pods_outside_the_protected_namespaces_are_refused() {
    let review = fixture("review-pod.json");
    let mut protected = settings();
    protected.namespaces = Some(vec!["mcp-sentinel".into(), "tools".into()]);
    let a = answer(&review, Mode::Annotated, &protected);
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);

    protected.namespaces = Some(vec!["mcp-sentinel".into()]);
    let a = answer(&review, Mode::Annotated, &protected);
    assert_eq!(a.result, InjectResult::Refused, "{}", a.detail);
    assert_eq!(
        a.detail,
        "namespace tools is not one the injector's chart protects (mcp-sentinel): the MCP server's port would have no NetworkPolicy closing it to other pods; add tools to sidecar.namespaces"
    );
    let resp = response(&a);
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["message"], refusal(&a.detail));

    let mut opted_out = review.clone();
    annotate(&mut opted_out, "mcp-sentinel.io/inject", "false");
    let a = answer(&opted_out, Mode::Annotated, &protected);
    assert_eq!(a.result, InjectResult::Skipped, "{}", a.detail);

    // Without the key (the injector run without the chart), every namespace.
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
}

#[test]
fn host_network_pods_are_refused() {
    let mut review = fixture("review-pod.json");
    set(&mut review, "/request/object/spec/hostNetwork", json!(true));
    let detail = assert_refused_unless_admitted(&review, "host network");
    assert_eq!(detail, "host-network pods are not injected");
}

/// A hostPort on the server's port forwards the node's port straight to the server, around any
/// sidecar: refused. A hostPort on another port of the pod is not the injector's business.
#[test]
fn a_host_port_on_the_servers_port_is_refused() {
    let mut review = fixture("review-pod.json");
    set(
        &mut review,
        "/request/object/spec/containers/0/ports/0/hostPort",
        json!(8080),
    );
    let detail = assert_refused_unless_admitted(&review, "host port");
    assert_eq!(
        detail,
        "the MCP server's port 8080 has hostPort 8080, which reaches it around the sentinel; remove hostPort and reach the server through a Service"
    );
    let mut review = fixture("review-pod.json");
    set_ports(
        &mut review,
        json!([
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9100, "hostPort": 9100, "protocol": "TCP"},
        ]),
    );
    annotate(&mut review, "mcp-sentinel.io/upstream-port", "http");
    let a = answer(&review, Mode::Namespace, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
}

/// Opted-in pods the injector cannot protect: refused with a message that names the problem,
/// unless annotated to be admitted anyway.
#[test]
fn pods_it_cannot_inject_are_refused_unless_annotated_to_be_admitted() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "two ports, no choice",
            |r| beside_http(r, "grpc", 9000),
            "declares 2 container ports",
        ),
        (
            "no ports",
            |r| set_ports(r, json!([])),
            "declares 0 container ports",
        ),
        (
            "traffic name taken",
            |r| {
                beside_http(r, "metrics", 9000);
                annotate(r, "mcp-sentinel.io/upstream-port", "http");
                annotate(r, "mcp-sentinel.io/traffic-port-name", "metrics");
            },
            "already has a port named \"metrics\"",
        ),
        (
            "sidecar port taken",
            |r| {
                beside_http(r, "other", 9481);
                annotate(r, "mcp-sentinel.io/upstream-port", "http");
            },
            "container server already uses port 9481, which the sidecar needs; set mcp-sentinel.io/admin-port to another",
        ),
        (
            "sidecar port taken by an init container",
            |r| {
                let proxy = json!([{"name": "proxy", "image": "p", "restartPolicy": "Always",
                    "ports": [{"containerPort": 9480}]}]);
                set(r, "/request/object/spec/initContainers", proxy);
            },
            "container proxy already uses port 9480, which the sidecar needs; set mcp-sentinel.io/traffic-port to another",
        ),
        (
            "UDP upstream",
            |r| {
                set(
                    r,
                    "/request/object/spec/containers/0/ports/0/protocol",
                    json!("UDP"),
                )
            },
            "uses UDP",
        ),
        (
            "request over limit",
            |r| {
                annotate(r, "mcp-sentinel.io/cpu-request", "2");
                annotate(r, "mcp-sentinel.io/cpu-limit", "500m");
            },
            "cpu request is larger than its limit",
        ),
        (
            "volume name taken",
            |r| {
                set(
                    r,
                    "/request/object/spec/volumes/0/name",
                    json!("mcp-sentinel-config"),
                );
                set(
                    r,
                    "/request/object/spec/containers/0/volumeMounts/0/name",
                    json!("mcp-sentinel-config"),
                );
            },
            "already has a volume named \"mcp-sentinel-config\"",
        ),
        (
            "containers not a list",
            |r| set(r, "/request/object/spec/containers", json!("server")),
            "cannot read the pod",
        ),
        (
            "no spec",
            |r| {
                r["request"]["object"]
                    .as_object_mut()
                    .unwrap()
                    .remove("spec");
            },
            "the pod has no spec",
        ),
    ];
    // Annotations it cannot follow: (annotation, value, what the warning says).
    let annotations = [
        (
            "inject",
            "yes",
            "annotation mcp-sentinel.io/inject=\"yes\" must be \"false\" (to opt out) or absent",
        ),
        (
            "on-failure",
            "ignore",
            "annotation mcp-sentinel.io/on-failure=\"ignore\" must be \"admit\" or \"refuse\"",
        ),
        (
            "upstream-port",
            "grpc",
            "no container declares port \"grpc\"",
        ),
        (
            "upstream-port",
            "9999",
            "no container declares port \"9999\"",
        ),
        ("upstream-port", "Not_A_Name", "is not a port name"),
        ("traffic-port-name", "HTTP", "is not a port name"),
        ("traffic-port-name", "sentinel-admin", "collide"),
        (
            "upstream-path",
            "mcp?x=1",
            "annotation mcp-sentinel.io/upstream-path",
        ),
        ("config", "My_Config", "annotation mcp-sentinel.io/config"),
        (
            "memory-limit",
            "lots",
            "annotation mcp-sentinel.io/memory-limit",
        ),
    ];
    let annotated = annotations.map(|(key, value, expect)| {
        let mut review = fixture("review-pod.json");
        annotate(&mut review, &format!("mcp-sentinel.io/{key}"), value);
        (format!("{key}: {value}"), review, expect)
    });
    let edited = cases.into_iter().map(|(what, edit, expect)| {
        let mut review = fixture("review-pod.json");
        edit(&mut review);
        (what.to_string(), review, expect)
    });
    for (what, review, expect) in annotated.into_iter().chain(edited) {
        if what == "on-failure: ignore" {
            // Its own value is the problem: refused, and no admit annotation to try.
            let a = answer(&review, Mode::Annotated, &settings());
            assert_eq!(a.result, InjectResult::Refused, "{what}");
            assert_eq!(a.detail, expect);
            continue;
        }
        let detail = assert_refused_unless_admitted(&review, &what);
        assert!(detail.contains(expect), "{what}: {detail}");
    }
}

#[test]
fn an_unreadable_object_with_a_uid_is_still_admitted() {
    let mut review = fixture("review-pod.json");
    review["request"]["object"]["metadata"] = json!("not a mapping");
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Error);
    let warnings = unchanged(&review, &a);
    assert!(
        warnings[0].contains("cannot read the admission request"),
        "{warnings:?}"
    );
    // With its opt-in label readable, the same kind of request is refused.
    let mut review = fixture("review-pod.json");
    review["request"]["object"]["metadata"]["generateName"] = json!(5);
    let detail = assert_refused_unless_admitted(&review, "unreadable, labelled");
    assert!(
        detail.starts_with("cannot read the admission request: "),
        "{detail}"
    );
}

#[test]
fn malformed_reviews_get_a_clean_refusal() {
    let s = settings();
    let mut no_uid = fixture("review-pod.json");
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut v1beta1 = fixture("review-pod.json");
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not JSON"),
        (b"{\"kind\":".to_vec(), "not JSON"),
        (vec![0xff, 0xfe, 0x00], "not JSON"),
        (b"[]".to_vec(), "expected an admission.k8s.io/v1 AdmissionReview"),
        (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}".to_vec(), "no request uid"),
        (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":null}".to_vec(), "no request uid"),
        (serde_json::to_vec(&no_uid).unwrap(), "no request uid"),
        (serde_json::to_vec(&v1beta1).unwrap(), "expected an admission.k8s.io/v1 AdmissionReview"),
    ];
    for (body, expect) in cases {
        let err = inject::review_body(&body, Mode::Annotated, &s).unwrap_err();
        assert!(err.to_string().contains(expect), "{err}");
        let refusal = serde_json::to_value(err.answer()).unwrap();
        assert_eq!(refusal["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(refusal["response"]["allowed"], false);
        assert_eq!(refusal["response"]["uid"], "");
        assert!(
            refusal["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains(expect)
        );
    }
    assert!(matches!(
        inject::review_body(b"nope", Mode::Namespace, &s),
        Err(Malformed::Json(_))
    ));
}

#[test]
fn webhook_paths_select_the_mode() {
    assert_eq!(
        Mode::from_path(inject::PATH_ANNOTATED),
        Some(Mode::Annotated)
    );
    assert_eq!(
        Mode::from_path(inject::PATH_NAMESPACE),
        Some(Mode::Namespace)
    );
    assert_eq!(Mode::from_path("/inject"), None);
    assert_eq!(Mode::from_path("/"), None);
}

/// The grace period covers the sentinel's drain deadline plus a margin: raised when the pod's
/// (30 s when unset) is shorter, never lowered.
#[test]
fn the_grace_period_covers_the_drain_deadline() {
    use std::time::Duration;
    let grace = |review: &Value, s: &Settings| {
        typed(&patched(review, &answer(review, Mode::Annotated, s)))
            .spec
            .unwrap()
            .termination_grace_period_seconds
    };
    let with = |seconds: Option<i64>| {
        // The API server defaults it to 30 before the webhook sees the pod; unset, too.
        let mut review = fixture("review-pod.json");
        let spec = review["request"]["object"]["spec"].as_object_mut().unwrap();
        spec.remove("terminationGracePeriodSeconds");
        if let Some(n) = seconds {
            spec.insert("terminationGracePeriodSeconds".into(), json!(n));
        }
        review
    };
    // Default deadline 25 s + 5 s: the kubelet's 30 s default suffices; nothing set.
    let s = settings();
    assert_eq!(s.shutdown_deadline, Duration::from_secs(25));
    assert_eq!(grace(&with(None), &s), None);
    assert_eq!(grace(&with(Some(10)), &s), Some(30));
    assert_eq!(grace(&with(Some(30)), &s), Some(30));
    assert_eq!(grace(&with(Some(120)), &s), Some(120));
    // A longer deadline (rounded up to whole seconds) raises the unset default too.
    let mut long = settings();
    long.shutdown_deadline = Duration::from_millis(40_500);
    assert_eq!(grace(&with(None), &long), Some(46));
    assert_eq!(grace(&with(Some(45)), &long), Some(46));
    assert_eq!(grace(&with(Some(60)), &long), Some(60));
    // The stdio path too: the sentinel is the container's process.
    let mut stdio = fixture("review-pod-stdio.json");
    set(
        &mut stdio,
        "/request/object/spec/terminationGracePeriodSeconds",
        json!(5),
    );
    assert_eq!(grace(&stdio, &settings()), Some(30));
}

/// Paths around the sentinel a pod spec can hold, each refused naming it: the server's port
/// declared twice (a second name Services could target, a hostPort the node forwards), a port on
/// the number the NetworkPolicy opens for the sentinel, a container that takes the sidecar's name
/// without being it, an only declared port that may not be the server's, and a pod that runs to
/// completion beside a regular sidecar container.
#[test]
fn paths_around_the_sentinel_in_the_pod_spec_are_refused() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "the server's port twice",
            |r| {
                set_ports(
                    r,
                    json!([
                        {"name": "http", "containerPort": 8080},
                        {"name": "direct", "containerPort": 8080, "hostPort": 18080},
                    ]),
                );
                annotate(r, "mcp-sentinel.io/upstream-port", "http");
            },
            "container server declares the MCP server's port 8080 a second time (as \"direct\"): it would reach the server around the sentinel; declare it once",
        ),
        (
            "the server's port in another container",
            |r| {
                let c = json!({"name": "debug", "image": "busybox", "ports": [{"containerPort": 8080, "hostPort": 8080}]});
                r["request"]["object"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(c);
                annotate(r, "mcp-sentinel.io/upstream-port", "http");
            },
            "container debug declares the MCP server's port 8080 a second time: it would reach the server around the sentinel; declare it once",
        ),
        (
            "the NetworkPolicy's port",
            |r| {
                set_ports(r, json!([{"name": "http", "containerPort": 9480}]));
                annotate(r, "mcp-sentinel.io/traffic-port", "9490");
            },
            "container server declares port 9480, which the NetworkPolicy opens for the sentinel on every pod (sidecar.trafficPort): move it off 9480, or change sidecar.trafficPort",
        ),
        (
            "a container named like the sidecar",
            |r| {
                let c = json!({"name": "mcp-sentinel", "image": "busybox", "command": ["sleep", "inf"]});
                r["request"]["object"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(c);
            },
            "container mcp-sentinel is not the sentinel (image busybox): the name is the sidecar's; rename it",
        ),
        (
            "the only declared port is an exporter's",
            |r| {
                set(r, "/request/object/spec/containers/0/ports", json!(null));
                let c = json!({"name": "exporter", "image": "prom/statsd-exporter", "ports": [{"name": "metrics", "containerPort": 9102}]});
                r["request"]["object"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(c);
            },
            "the pod's only declared port (9102) is container exporter's, and the pod has 2 containers; set mcp-sentinel.io/upstream-port to the MCP server's",
        ),
    ];
    for (what, edit, expect) in cases {
        let mut review = fixture("review-pod.json");
        edit(&mut review);
        assert_eq!(
            assert_refused_unless_admitted(&review, what),
            expect,
            "{what}"
        );
    }

    let mut review = fixture("review-pod.json");
    set(
        &mut review,
        "/request/object/spec/restartPolicy",
        json!("Never"),
    );
    let mut regular = settings();
    regular.native_sidecar = false;
    let a = answer(&review, Mode::Namespace, &regular);
    assert_eq!(a.result, InjectResult::Refused, "{}", a.detail);
    assert_eq!(
        a.detail,
        "the pod runs to completion (restartPolicy Never), which it would never reach beside the sentinel as a regular container; turn native sidecars on (sidecar.nativeSidecar, Kubernetes 1.29+)"
    );
    // Native sidecars stop by themselves once the app's containers have.
    let a = answer(&review, Mode::Namespace, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
}
