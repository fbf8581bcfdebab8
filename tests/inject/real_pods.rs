//! The injector's decision on pods as the API server sends them from real workloads: a
//! Deployment's pod (and one whose probes name its port), an Istio-injected pod (its proxy a
//! container, or a native sidecar), a Linkerd-injected pod, a multi-container pod and a Job's pod
//! without ports. Each is patched, or refused with the message that says what to fix
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
    assert_eq!(ports(&init[0])[0], ("http".to_string(), 9480));
    assert_eq!(ports(&spec.containers[0]), [("mcp-upstream".into(), 8080)]);
    // The API server's default 30 s already covers the default 25 s deadline + 5 s.
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
}

/// The names of the pod's init containers, in order.
fn init_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every port number declared by the pod's containers and init containers, each once: the
/// sentinel's are off the mesh's.
fn assert_no_port_clash(pod: &Value) {
    let spec = typed(pod).spec.unwrap();
    let mut numbers: Vec<i32> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| ports(c).into_iter().map(|(_, n)| n))
        .collect();
    let all = numbers.len();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), all, "{numbers:?}");
}

const ISTIO_EXCLUDE: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const LINKERD_SKIP: &str = "config.linkerd.io/skip-inbound-ports";

/// The mesh injected first: its iptables init container (first in the pod) is as it was but for
/// the sidecar's admin port added to the inbound ports it leaves alone (`flag`'s value, `was`
/// before), so the kubelet's probes reach the sidecar and not a mesh proxy that starts only
/// after the sidecar's startup probe passed (a regular container) or refuses plain HTTP (Istio,
/// STRICT mTLS). The annotations say the same to a mesh injector that runs later and to CNI
/// plugins.
fn admin_port_left_alone(pod: &Value, before: &Value, flag: &str, was: &str) {
    let mut expect = before["initContainers"][0].clone();
    let args = expect["args"].as_array_mut().unwrap();
    let at = args.iter().position(|a| a == flag).unwrap() + 1;
    assert_eq!(args[at], was);
    args[at] = format!("{was},9481").into();
    assert_eq!(pod["spec"]["initContainers"][0], expect);
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations[ISTIO_EXCLUDE], "9481", "{annotations}");
    // Linkerd's mesh-wide default (4567,4568), which a pod annotation replaces, kept.
    assert_eq!(annotations[LINKERD_SKIP], "4567,4568,9481", "{annotations}");
}

/// Istio's proxy (a regular container) declares Envoy's Prometheus port 15090 and holds
/// 15000-15100: its port is not the MCP server's, and the sentinel's ports are off Istio's, so
/// the pod is patched without an annotation, the sentinel after istio-init. An annotation that
/// puts the sentinel on one of Istio's ports, or makes Envoy's port the upstream, is refused.
#[test]
fn an_istio_injected_pod_is_patched_without_an_annotation() {
    let mut review = fixture("review-pod-istio.json");
    let pod = injected(&review);
    assert_no_port_clash(&pod);
    assert_eq!(init_names(&pod), ["istio-init", "mcp-sentinel"]);
    let before = &review["request"]["object"]["spec"];
    assert_eq!(pod["spec"]["containers"][1], before["containers"][1]);
    admin_port_left_alone(&pod, before, "-d", "15090,15021,15020");
    let spec = typed(&pod).spec.unwrap();
    let init = spec.init_containers.unwrap();
    assert_eq!(
        ports(&init[1]),
        [("http".into(), 9480), ("sentinel-admin".into(), 9481)]
    );
    assert_eq!(
        ports(container(&spec.containers, "server")),
        [("mcp-upstream".into(), 8080)]
    );
    assert_eq!(
        ports(container(&spec.containers, "istio-proxy")),
        [("http-envoy-prom".into(), 15090)]
    );

    // A list of the pod's own gains the port; one that holds it already is left as it is.
    for (theirs, ours) in [("8443", "8443,9481"), ("9000-9999", "9000-9999")] {
        let mut listed = review.clone();
        annotate(&mut listed, ISTIO_EXCLUDE, theirs);
        let pod = injected(&listed);
        assert_eq!(pod["metadata"]["annotations"][ISTIO_EXCLUDE], ours);
    }

    let mut mesh_port = review.clone();
    annotate(&mut mesh_port, "mcp-sentinel.io/admin-port", "15090");
    refused(
        &mesh_port,
        "istio, admin port 15090",
        "the sidecar's port 15090 is one of Istio's (container istio-proxy); set mcp-sentinel.io/admin-port to another",
    );
    // Not declared by istio-proxy, but Envoy's outbound listener all the same.
    let mut outbound = review.clone();
    annotate(&mut outbound, "mcp-sentinel.io/traffic-port", "15001");
    refused(
        &outbound,
        "istio, traffic port 15001",
        "the sidecar's port 15001 is one of Istio's (container istio-proxy); set mcp-sentinel.io/traffic-port to another",
    );
    annotate(
        &mut review,
        "mcp-sentinel.io/upstream-port",
        "http-envoy-prom",
    );
    refused(
        &review,
        "istio, Envoy's port chosen",
        "annotation mcp-sentinel.io/upstream-port: port \"http-envoy-prom\" is the Istio proxy's (container istio-proxy), not the MCP server's",
    );
}

/// Istio 1.2x with native sidecars (`ENABLE_NATIVE_SIDECARS`): istio-proxy is an init container
/// with `restartPolicy: Always` after istio-init. The sentinel goes after it, so Envoy and its
/// iptables rules are up before the sentinel dials out, and before the app's init containers.
#[test]
fn beside_istios_native_proxy_the_sentinel_starts_after_it() {
    let mut review = fixture("review-pod-istio-native.json");
    let pod = injected(&review);
    assert_no_port_clash(&pod);
    assert_eq!(
        init_names(&pod),
        ["istio-init", "istio-proxy", "mcp-sentinel"]
    );
    let before = &review["request"]["object"]["spec"];
    assert_eq!(
        pod["spec"]["initContainers"][1],
        before["initContainers"][1]
    );

    let migrate = serde_json::json!({"name": "migrate", "image": "registry.example.com/migrate:1"});
    review["request"]["object"]["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .push(migrate);
    assert_eq!(
        init_names(&injected(&review)),
        ["istio-init", "istio-proxy", "mcp-sentinel", "migrate"]
    );
}

/// Linkerd's proxy comes first with two ports of its own, which are not the MCP server's: the
/// pod is patched without an annotation, the sentinel after linkerd-init, and Linkerd's
/// containers are left as they were.
#[test]
fn a_linkerd_injected_pod_is_patched_without_an_annotation() {
    let review = fixture("review-pod-linkerd.json");
    let pod = injected(&review);
    assert_no_port_clash(&pod);
    let before = &review["request"]["object"]["spec"];
    assert_eq!(pod["spec"]["containers"][0], before["containers"][0]);
    admin_port_left_alone(
        &pod,
        before,
        "--inbound-ports-to-ignore",
        "4190,4191,4567,4568",
    );
    assert_eq!(init_names(&pod), ["linkerd-init", "mcp-sentinel"]);
    let spec = typed(&pod).spec.unwrap();
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

/// The upstream's port is renamed `mcp-upstream`: its probes and lifecycle hooks that named it
/// `http` now name its number, in the same patch; numbers and the `metrics` port's name stay.
#[test]
fn probes_that_name_the_renamed_port_use_its_number() {
    let review = fixture("review-pod-probes.json");
    let pod = injected(&review);
    let server = &pod["spec"]["containers"][0];
    let before = &review["request"]["object"]["spec"]["containers"][0];
    assert_eq!(server["livenessProbe"]["httpGet"]["port"], 8080);
    assert_eq!(server["readinessProbe"]["tcpSocket"]["port"], 8080);
    assert_eq!(server["lifecycle"]["preStop"]["httpGet"]["port"], 8080);
    assert_eq!(server["startupProbe"], before["startupProbe"]);
    assert_eq!(
        server["lifecycle"]["postStart"],
        before["lifecycle"]["postStart"]
    );
    assert_eq!(
        server["lifecycle"]["postStart"]["httpGet"]["port"],
        "metrics"
    );
    // Only the port fields changed.
    let mut expected = before.clone();
    for pointer in [
        "/livenessProbe/httpGet/port",
        "/readinessProbe/tcpSocket/port",
        "/lifecycle/preStop/httpGet/port",
    ] {
        *expected.pointer_mut(pointer).unwrap() = 8080.into();
    }
    expected["ports"][0]["name"] = "mcp-upstream".into();
    assert_eq!(*server, expected);
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
