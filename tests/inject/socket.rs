//! A server bound to a Unix socket (`upstream-socket`): only the sidecar, which mounts the same
//! in-memory volume, can reach it. No port is renamed; the sidecar's upstream is
//! `unix:<socket>:<path>`, and `upstream-socket-env` hands the path to the server.

use mcp_sentinel::k8s::inject::{InjectResult, Mode};
use serde_json::{Value, json};

use super::{
    annotate, answer, assert_refused_unless_admitted, container, env, fixture, patched, ports,
    response, set, settings, typed,
};

const SOCKET: &str = "mcp-sentinel.io/upstream-socket";
const SOCKET_ENV: &str = "mcp-sentinel.io/upstream-socket-env";

fn mounts(c: &k8s_openapi::api::core::v1::Container) -> Vec<(String, String)> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect()
}

fn injected(review: &Value) -> Value {
    let a = answer(review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    assert!(response(&a).get("warnings").is_none(), "{:?}", response(&a));
    patched(review, &a)
}

#[test]
fn a_server_on_a_socket_shares_it_with_the_sidecar_only() {
    let review = fixture("review-pod-socket.json");
    let pod = typed(&injected(&review));
    let spec = pod.spec.unwrap();
    let init = spec.init_containers.unwrap();
    let s = &init[0];
    assert_eq!(
        env(s, "MCP_SENTINEL_UPSTREAM"),
        "unix:/var/run/mcp/mcp.sock:/mcp"
    );
    assert_eq!(
        ports(s),
        [("mcp".into(), 9480), ("sentinel-admin".into(), 9481)]
    );
    assert_eq!(
        mounts(s).last().unwrap(),
        &(
            "mcp-sentinel-socket".to_string(),
            "/var/run/mcp".to_string()
        )
    );
    let server = container(&spec.containers, "server");
    assert!(server.ports.is_none());
    assert_eq!(
        mounts(server),
        [
            (
                "kube-api-access-x7k2p".to_string(),
                "/var/run/secrets/kubernetes.io/serviceaccount".to_string()
            ),
            ("mcp-sentinel-socket".into(), "/var/run/mcp".into())
        ]
    );
    assert_eq!(env(server, "MCP_SOCKET"), "/var/run/mcp/mcp.sock");
    assert_eq!(env(server, "LOG_LEVEL"), "info");
    let volumes = spec.volumes.unwrap();
    let socket = volumes
        .iter()
        .find(|v| v.name == "mcp-sentinel-socket")
        .unwrap();
    let dir = socket.empty_dir.as_ref().unwrap();
    assert_eq!(dir.medium.as_deref(), Some("Memory"));
    assert_eq!(dir.size_limit.as_ref().unwrap().0, "1Mi");
}

/// The server's ports stay as they are (none is renamed: the NetworkPolicy closes them); the
/// traffic port takes `traffic-port-name`, else the default name; the upstream path applies.
#[test]
fn no_port_is_renamed_and_the_traffic_port_takes_the_default_name() {
    let mut review = fixture("review-pod.json");
    annotate(&mut review, SOCKET, "/run/mcp.sock");
    annotate(&mut review, "mcp-sentinel.io/upstream-path", "/api/mcp");
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    // The port the server still declares is not the sentinel's: said so.
    assert_eq!(
        response(&a)["warnings"],
        json!([
            "mcp-sentinel: the server's container server still declares port http (8080): Services that target it reach the server, not the sentinel (which serves port name \"mcp\")"
        ])
    );
    let pod = typed(&patched(&review, &a));
    let spec = pod.spec.unwrap();
    let s = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        env(s, "MCP_SENTINEL_UPSTREAM"),
        "unix:/run/mcp.sock:/api/mcp"
    );
    assert_eq!(ports(s)[0], ("mcp".into(), 9480));
    assert_eq!(ports(&spec.containers[0]), [("http".into(), 8080)]);

    annotate(&mut review, "mcp-sentinel.io/traffic-port-name", "mcp-api");
    let a = answer(&review, Mode::Annotated, &settings());
    let init = typed(&patched(&review, &a))
        .spec
        .unwrap()
        .init_containers
        .unwrap();
    assert_eq!(ports(&init[0])[0], ("mcp-api".into(), 9480));
}

/// The variable already set to the socket's path is left alone; to anything else, refused.
#[test]
fn the_socket_env_is_set_once_and_never_overridden() {
    let mut review = fixture("review-pod-socket.json");
    let env_list = "/request/object/spec/containers/0/env";
    set(
        &mut review,
        env_list,
        json!([{"name": "MCP_SOCKET", "value": "/var/run/mcp/mcp.sock"}]),
    );
    let pod = injected(&review);
    assert_eq!(
        pod["spec"]["containers"][0]["env"],
        json!([{"name": "MCP_SOCKET", "value": "/var/run/mcp/mcp.sock"}])
    );
    set(
        &mut review,
        env_list,
        json!([{"name": "MCP_SOCKET", "value": "/tmp/other.sock"}]),
    );
    assert_eq!(
        assert_refused_unless_admitted(&review, "env set elsewhere"),
        "container server already sets MCP_SOCKET, to another value than /var/run/mcp/mcp.sock; annotation mcp-sentinel.io/upstream-socket-env"
    );
}

#[test]
fn socket_annotations_it_cannot_follow_refuse_the_pod() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "relative path",
            |r| annotate(r, SOCKET, "mcp.sock"),
            "annotation mcp-sentinel.io/upstream-socket: \"mcp.sock\" is not a socket path such as /var/run/mcp/mcp.sock (absolute, in a directory other than /, no empty, '.' or '..' segments, no ':', at most 107 bytes)",
        ),
        (
            "in /",
            |r| annotate(r, SOCKET, "/mcp.sock"),
            "annotation mcp-sentinel.io/upstream-socket: \"/mcp.sock\" is not a socket path",
        ),
        (
            "a colon",
            |r| annotate(r, SOCKET, "/run/a:b.sock"),
            "annotation mcp-sentinel.io/upstream-socket: \"/run/a:b.sock\" is not a socket path",
        ),
        (
            "bad env name",
            |r| annotate(r, SOCKET_ENV, "MCP-SOCKET"),
            "annotation mcp-sentinel.io/upstream-socket-env: \"MCP-SOCKET\" is not an environment variable name (letters, digits and '_', not starting with a digit)",
        ),
        (
            "env without socket",
            |r| {
                r["request"]["object"]["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(SOCKET);
                set_ports(r);
            },
            "annotation mcp-sentinel.io/upstream-socket-env needs mcp-sentinel.io/upstream-socket (the socket's path)",
        ),
        (
            "socket and port",
            |r| annotate(r, "mcp-sentinel.io/upstream-port", "http"),
            "annotations mcp-sentinel.io/upstream-socket and mcp-sentinel.io/upstream-port both name the upstream; keep one",
        ),
        (
            "the sidecar's own mount",
            |r| annotate(r, SOCKET, "/var/spool/mcp-sentinel/s.sock"),
            "annotation mcp-sentinel.io/upstream-socket: the socket's directory /var/spool/mcp-sentinel overlaps the sidecar's mount /var/spool/mcp-sentinel",
        ),
        (
            "above the sidecar's mount",
            |r| annotate(r, SOCKET, "/etc/mcp.sock"),
            "annotation mcp-sentinel.io/upstream-socket: the socket's directory /etc overlaps the sidecar's mount /etc/mcp-sentinel/config",
        ),
        (
            "the server mounts the directory",
            |r| {
                annotate(
                    r,
                    SOCKET,
                    "/var/run/secrets/kubernetes.io/serviceaccount/s.sock",
                )
            },
            "container server already mounts a volume at /var/run/secrets/kubernetes.io/serviceaccount, where the socket's volume goes",
        ),
        (
            "volume name taken",
            |r| {
                set(
                    r,
                    "/request/object/spec/volumes/0/name",
                    json!("mcp-sentinel-socket"),
                )
            },
            "the pod already has a volume named \"mcp-sentinel-socket\"",
        ),
        (
            "two containers, no default",
            |r| {
                let sidecar = json!({"name": "cache", "image": "redis:7"});
                r["request"]["object"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(sidecar);
            },
            "the pod has 2 containers [\"server\", \"cache\"]; set kubectl.kubernetes.io/default-container to the MCP server's, which listens on mcp-sentinel.io/upstream-socket",
        ),
    ];
    for (what, edit, expect) in cases {
        let mut review = fixture("review-pod-socket.json");
        edit(&mut review);
        let detail = assert_refused_unless_admitted(&review, what);
        assert!(detail.starts_with(expect), "{what}: {detail}");
    }
    // A stdio server's pod, refused as one.
    let mut review = fixture("review-pod-socket.json");
    annotate(
        &mut review,
        "mcp-sentinel.io/stdio-command",
        r#"["server"]"#,
    );
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Refused);
    assert_eq!(
        a.detail,
        "annotations mcp-sentinel.io/stdio-command and mcp-sentinel.io/upstream-socket both name the upstream; keep one"
    );
}

/// `kubectl.kubernetes.io/default-container` picks the server among several containers; a
/// mesh's proxy is never it.
#[test]
fn the_server_container_is_the_default_one_or_the_only_app_one() {
    let mut review = fixture("review-pod-socket.json");
    let cache = json!({"name": "cache", "image": "redis:7"});
    let containers = review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    containers.insert(0, cache);
    annotate(
        &mut review,
        "kubectl.kubernetes.io/default-container",
        "server",
    );
    let pod = injected(&review);
    assert_eq!(pod["spec"]["containers"][1]["env"][1]["name"], "MCP_SOCKET");
    assert!(pod["spec"]["containers"][0].get("env").is_none());

    let mut meshed = fixture("review-pod-socket.json");
    let proxy = json!({"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy:edge-24.11.8",
        "ports": [{"name": "linkerd-proxy", "containerPort": 4143}]});
    meshed["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .insert(0, proxy);
    let pod = injected(&meshed);
    assert_eq!(pod["spec"]["containers"][1]["env"][1]["name"], "MCP_SOCKET");
}

/// `review-pod-socket.json` has no port: removing the socket annotation leaves nothing to take.
fn set_ports(r: &mut Value) {
    set(
        r,
        "/request/object/spec/containers/0/ports",
        json!([{"name": "http", "containerPort": 8080}]),
    );
}
