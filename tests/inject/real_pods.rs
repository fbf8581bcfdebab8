//! The injector's decision on pods as the API server sends them from real workloads: a
//! Deployment's pod, an Istio-injected pod, a Linkerd-injected pod, a multi-container pod and a
//! Job's pod without ports. Each is patched, or refused with the message that says what to fix
//! (and admitted unchanged, with a warning saying so, when annotated `on-failure: admit`).

use mcp_sentinel::k8s::inject::{InjectResult, Mode};
use serde_json::Value;

use super::{
    annotate, answer, assert_refused_unless_admitted, container, fixture, patched, ports, settings,
    typed,
};

/// The reason given for a pod with `n` container ports and no `upstream-port` annotation.
fn no_choice(n: usize) -> String {
    format!(
        "the pod declares {n} container ports; set mcp-sentinel.io/upstream-port to the MCP server's"
    )
}

/// Refused for `expect`, and admitted unchanged with a warning when annotated to be.
fn refused(review: &Value, what: &str, expect: &str) {
    assert_eq!(
        assert_refused_unless_admitted(review, what),
        expect,
        "{what}"
    );
}

/// Injects `review` and returns the patched pod, as JSON.
fn injected(review: &Value) -> Value {
    let a = answer(review, Mode::Namespace, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    patched(review, &a)
}

#[test]
fn a_deployments_pod_is_patched() {
    let review = fixture("review-pod.json");
    let pod = typed(&injected(&review));
    let spec = pod.spec.unwrap();
    let init = spec.init_containers.unwrap();
    assert_eq!(init[0].name, "mcp-sentinel");
    assert_eq!(ports(&init[0])[0], ("http".to_string(), 15080));
    assert_eq!(ports(&spec.containers[0]), [("mcp-upstream".into(), 8080)]);
    // The API server's default 30 s already covers the default 25 s deadline + 5 s.
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
}

/// Istio's proxy declares Envoy's Prometheus port 15090, the sentinel's admin port: refused,
/// saying so, rather than started without the sentinel.
#[test]
fn an_istio_injected_pod_is_refused_over_the_admin_port() {
    let mut review = fixture("review-pod-istio.json");
    refused(&review, "istio, no port chosen", &no_choice(2));
    annotate(&mut review, "mcp-sentinel.io/upstream-port", "http");
    refused(
        &review,
        "istio, port chosen",
        "container istio-proxy already uses port 15090, which the sidecar needs",
    );
}

/// Linkerd's proxy comes first with two ports of its own: once the MCP server's port is
/// chosen, the sentinel goes in beside it and Linkerd's containers are left as they were.
#[test]
fn a_linkerd_injected_pod_is_patched_once_the_port_is_chosen() {
    let mut review = fixture("review-pod-linkerd.json");
    refused(&review, "linkerd, no port chosen", &no_choice(3));
    annotate(&mut review, "mcp-sentinel.io/upstream-port", "http");
    let pod = injected(&review);
    let before = &review["request"]["object"]["spec"];
    assert_eq!(pod["spec"]["containers"][0], before["containers"][0]);
    assert_eq!(
        pod["spec"]["initContainers"][1],
        before["initContainers"][0]
    );
    let spec = typed(&pod).spec.unwrap();
    let init = spec.init_containers.unwrap();
    assert_eq!(init[0].name, "mcp-sentinel");
    assert_eq!(init[1].name, "linkerd-init");
    assert_eq!(
        ports(container(&spec.containers, "server")),
        [("mcp-upstream".into(), 8080)]
    );
    assert_eq!(
        ports(container(&spec.containers, "linkerd-proxy")),
        [
            ("linkerd-proxy".into(), 4143),
            ("linkerd-admin".into(), 4191)
        ]
    );
}

#[test]
fn a_multi_container_pod_is_patched_on_the_chosen_port_and_refused_without_one() {
    let mut review = fixture("review-pod-two-containers.json");
    let spec = typed(&injected(&review)).spec.unwrap();
    assert_eq!(
        ports(container(&spec.containers, "server")),
        [("mcp-upstream".into(), 3000), ("metrics".into(), 9090)]
    );
    assert_eq!(
        ports(container(&spec.containers, "cache")),
        [("cache".into(), 6379)]
    );
    review["request"]["object"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("mcp-sentinel.io/upstream-port");
    refused(&review, "two containers, no port chosen", &no_choice(3));
}

#[test]
fn a_jobs_pod_without_ports_is_refused() {
    let review = fixture("review-pod-job.json");
    refused(&review, "job", &no_choice(0));
}
