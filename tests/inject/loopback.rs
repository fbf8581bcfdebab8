//! A server on a port that binds loopback only (`upstream-host-env: NAME`): the injector sets
//! NAME=127.0.0.1 in the server's container, so only the pod — the sentinel — reaches it, whatever
//! the Services and the NetworkPolicy. The kubelet's probes come from the node, which such a
//! server does not answer: a probe or hook on its port refuses the pod, saying so.

use mcp_sentinel::k8s::inject::{InjectResult, Mode};
use serde_json::json;

use super::{
    annotate, answer, assert_refused_unless_admitted, container, env, fixture, patched, ports, set,
    settings, typed,
};

const HOST_ENV: &str = "mcp-sentinel.io/upstream-host-env";

#[test]
fn the_server_is_told_to_listen_on_loopback() {
    let mut review = fixture("review-pod.json");
    annotate(&mut review, HOST_ENV, "HOST");
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let pod = typed(&patched(&review, &a));
    let spec = pod.spec.unwrap();
    let server = container(&spec.containers, "server");
    assert_eq!(env(server, "HOST"), "127.0.0.1");
    assert_eq!(ports(server), [("mcp-upstream".into(), 8080)]);
    let sidecar = &spec.init_containers.unwrap()[0];
    assert_eq!(
        env(sidecar, "MCP_SENTINEL_UPSTREAM"),
        "http://127.0.0.1:8080/mcp"
    );

    // Already set so: kept, not added twice.
    let mut review = fixture("review-pod.json");
    annotate(&mut review, HOST_ENV, "HOST");
    set(
        &mut review,
        "/request/object/spec/containers/0/env",
        json!([{"name": "HOST", "value": "127.0.0.1"}]),
    );
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let pod = typed(&patched(&review, &a));
    let server = container(&pod.spec.as_ref().unwrap().containers, "server").clone();
    assert_eq!(server.env.unwrap().len(), 1);
}

#[test]
fn what_a_loopback_server_cannot_serve_refuses_the_pod() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "a readiness probe by name",
            json!({"readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}),
            "container server's readinessProbe reaches port 8080 from the node, which a server bound to 127.0.0.1 (annotation mcp-sentinel.io/upstream-host-env) does not answer: remove it or make it an exec probe (the sentinel's readiness already fails while the server does not answer)",
        ),
        (
            "a preStop hook by number",
            json!({"lifecycle": {"preStop": {"tcpSocket": {"port": 8080}}}}),
            "container server's lifecycle/preStop reaches port 8080 from the node, which a server bound to 127.0.0.1 (annotation mcp-sentinel.io/upstream-host-env) does not answer: remove it or make it an exec probe (the sentinel's readiness already fails while the server does not answer)",
        ),
        (
            "the variable set to another address",
            json!({"env": [{"name": "HOST", "value": "0.0.0.0"}]}),
            "container server already sets HOST, to another value than 127.0.0.1; annotation mcp-sentinel.io/upstream-host-env",
        ),
    ];
    for (what, fields, expect) in cases {
        let mut review = fixture("review-pod.json");
        annotate(&mut review, HOST_ENV, "HOST");
        for (k, v) in fields.as_object().unwrap() {
            set(
                &mut review,
                &format!("/request/object/spec/containers/0/{k}"),
                v.clone(),
            );
        }
        assert_eq!(
            assert_refused_unless_admitted(&review, what),
            expect,
            "{what}"
        );
    }

    let mut review = fixture("review-pod.json");
    annotate(&mut review, HOST_ENV, "not a name");
    let detail = assert_refused_unless_admitted(&review, "bad name");
    assert!(
        detail.starts_with("annotation mcp-sentinel.io/upstream-host-env: "),
        "{detail}"
    );

    // A probe on another port of the server is the server's business.
    let mut review = fixture("review-pod.json");
    annotate(&mut review, HOST_ENV, "HOST");
    set(
        &mut review,
        "/request/object/spec/containers/0/livenessProbe",
        json!({"httpGet": {"path": "/metrics", "port": 9100}}),
    );
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);

    let mut review = fixture("review-pod-socket.json");
    annotate(&mut review, HOST_ENV, "HOST");
    assert_eq!(
        assert_refused_unless_admitted(&review, "with a socket"),
        "annotations mcp-sentinel.io/upstream-host-env and mcp-sentinel.io/upstream-socket: a server on a Unix socket has no address to bind (use mcp-sentinel.io/upstream-socket-env)"
    );
}
