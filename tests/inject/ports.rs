//! The sidecar's ports: the injector's `traffic_port` and `admin_port` (defaults 9480 and 9481,
//! off every known mesh's), moved per pod by the `traffic-port` and `admin-port` annotations;
//! the env, the declared ports and the Prometheus annotation all follow.

use mcp_sentinel::k8s::inject::{InjectResult, Mode};
use serde_json::Value;

use super::{
    annotate, answer, assert_refused_unless_admitted, env, fixture, patched, ports, settings, typed,
};

/// The sidecar of the patched `review`: its ports, its listen addresses, the pod's
/// `prometheus.io/port`.
fn sidecar_ports(review: &Value, settings: &mcp_sentinel::k8s::settings::Settings) -> Summary {
    let a = answer(review, Mode::Annotated, settings);
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let pod = typed(&patched(review, &a));
    let spec = pod.spec.unwrap();
    let s = &spec.init_containers.unwrap()[0];
    assert_eq!(s.name, "mcp-sentinel");
    Summary {
        ports: ports(s),
        listen: env(s, "MCP_SENTINEL_LISTEN"),
        admin_listen: env(s, "MCP_SENTINEL_ADMIN_LISTEN"),
        prometheus: pod.metadata.annotations.unwrap()["prometheus.io/port"].clone(),
    }
}

#[derive(Debug, PartialEq)]
struct Summary {
    ports: Vec<(String, i32)>,
    listen: String,
    admin_listen: String,
    prometheus: String,
}

fn summary(traffic: i32, admin: i32) -> Summary {
    Summary {
        ports: vec![("http".into(), traffic), ("sentinel-admin".into(), admin)],
        listen: format!("0.0.0.0:{traffic}"),
        admin_listen: format!("0.0.0.0:{admin}"),
        prometheus: admin.to_string(),
    }
}

#[test]
fn the_settings_and_the_annotations_choose_the_ports() {
    let mut review = fixture("review-pod.json");
    assert_eq!(sidecar_ports(&review, &settings()), summary(9480, 9481));

    let mut s = settings();
    (s.traffic_port, s.admin_port) = (7480, 7481);
    assert_eq!(sidecar_ports(&review, &s), summary(7480, 7481));

    annotate(&mut review, "mcp-sentinel.io/admin-port", "8481");
    assert_eq!(sidecar_ports(&review, &s), summary(7480, 8481));
    annotate(&mut review, "mcp-sentinel.io/traffic-port", "8480");
    assert_eq!(sidecar_ports(&review, &s), summary(8480, 8481));
    // The settings' admin port, free again once the annotation moved the traffic port.
    annotate(&mut review, "mcp-sentinel.io/traffic-port", "7481");
    assert_eq!(sidecar_ports(&review, &settings()), summary(7481, 8481));
}

#[test]
fn bad_port_annotations_refuse_the_pod() {
    for (key, value, expect) in [
        (
            "traffic-port",
            "http",
            "annotation mcp-sentinel.io/traffic-port: \"http\" is not a port number (1-65535)",
        ),
        (
            "admin-port",
            "0",
            "annotation mcp-sentinel.io/admin-port: \"0\" is not a port number (1-65535)",
        ),
        (
            "admin-port",
            "70000",
            "annotation mcp-sentinel.io/admin-port: \"70000\" is not a port number (1-65535)",
        ),
        (
            "admin-port",
            "9480",
            "the sidecar's traffic and admin ports are both 9480; set mcp-sentinel.io/traffic-port or mcp-sentinel.io/admin-port to another",
        ),
        (
            "traffic-port",
            "8080",
            "container server already uses port 8080, which the sidecar needs; set mcp-sentinel.io/traffic-port to another",
        ),
    ] {
        let mut review = fixture("review-pod.json");
        annotate(&mut review, &format!("mcp-sentinel.io/{key}"), value);
        let what = format!("{key}: {value}");
        assert_eq!(
            assert_refused_unless_admitted(&review, &what),
            expect,
            "{what}"
        );
    }
}

/// A stdio server's container runs the sentinel on the annotated ports: its flags and declared
/// ports follow.
#[test]
fn a_stdio_servers_ports_follow_the_annotations() {
    let mut review = fixture("review-pod-stdio.json");
    annotate(&mut review, "mcp-sentinel.io/traffic-port", "8480");
    annotate(&mut review, "mcp-sentinel.io/admin-port", "8481");
    let a = answer(&review, Mode::Annotated, &settings());
    assert_eq!(a.result, InjectResult::Injected, "{}", a.detail);
    let pod = typed(&patched(&review, &a));
    let server = &pod.spec.unwrap().containers[0];
    let command = server.command.as_ref().unwrap();
    let flag = |name: &str| {
        let i = command.iter().position(|a| a == name).unwrap();
        command[i + 1].as_str()
    };
    assert_eq!(flag("--listen"), "0.0.0.0:8480");
    assert_eq!(flag("--admin-listen"), "0.0.0.0:8481");
    assert_eq!(
        ports(server),
        [("mcp".into(), 8480), ("sentinel-admin".into(), 8481)]
    );
    assert_eq!(
        pod.metadata.annotations.unwrap()["prometheus.io/port"],
        "8481"
    );
}
