//! Service meshes the injector coexists with: their proxies' container names and the ports those
//! proxies hold. The sidecar's default ports stay off every one of them; the upstream is never
//! chosen among a proxy's ports; the sentinel's native sidecar starts after the mesh's proxy.

/// One mesh: the containers it injects and the ports its proxy listens on (declared or not).
#[derive(Debug)]
pub struct Mesh {
    pub name: &'static str,
    /// Its proxy (a container, or a native sidecar in initContainers).
    pub proxies: &'static [&'static str],
    /// Its init containers (iptables set-up, network validation).
    pub init: &'static [&'static str],
    /// Inclusive ranges of the ports its proxy uses.
    pub ports: &'static [(u16, u16)],
}

impl Mesh {
    pub fn holds(&self, port: u16) -> bool {
        self.ports
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&port))
    }

    fn owns(&self, container: &str) -> bool {
        self.proxies.contains(&container) || self.init.contains(&container)
    }
}

/// The known meshes. Sources: Istio's "Ports used by Istio" (15000-15100: Envoy admin 15000,
/// outbound 15001, 15004, inbound 15006, HBONE 15008/15009, agent 15020/15021, DNS 15053,
/// Prometheus 15090); Linkerd's proxy (4140, 4143, 4190, 4191) and its CNI validator (4567,
/// 4568); Consul's dataplane (Envoy admin 19000, public listener 20000, 21000-21255); Dapr's
/// daprd (HTTP 3500, 3501, metrics 9090, gRPC 50001, 50002); Kuma's Envoy admin 9901.
pub const MESHES: [Mesh; 5] = [
    Mesh {
        name: "Istio",
        proxies: &["istio-proxy"],
        init: &["istio-init", "istio-validation"],
        ports: &[(15000, 15100)],
    },
    Mesh {
        name: "Linkerd",
        proxies: &["linkerd-proxy"],
        init: &["linkerd-init", "linkerd-network-validator"],
        ports: &[(4140, 4140), (4143, 4143), (4190, 4191), (4567, 4568)],
    },
    Mesh {
        name: "Consul",
        proxies: &["consul-dataplane", "envoy-sidecar"],
        init: &["consul-connect-inject-init"],
        ports: &[(19000, 19000), (20000, 20000), (21000, 21255)],
    },
    Mesh {
        name: "Dapr",
        proxies: &["daprd"],
        init: &[],
        ports: &[(3500, 3501), (9090, 9090), (50001, 50002)],
    },
    Mesh {
        name: "Kuma",
        proxies: &["kuma-sidecar"],
        init: &["kuma-init"],
        ports: &[(9901, 9901)],
    },
];

/// Whether any known mesh's proxy uses `port`.
pub fn is_mesh_port(port: u16) -> bool {
    MESHES.iter().any(|m| m.holds(port))
}

/// The mesh that injected the container named `name`, if any.
pub fn mesh_of(name: &str) -> Option<&'static Mesh> {
    MESHES.iter().find(|m| m.owns(name))
}

/// Where the sentinel's native sidecar goes among `init` (the pod's init container names): after
/// the leading mesh containers (so the mesh's iptables rules are in place and its proxy is up
/// before the sentinel dials out: JWKS, Redis, PostgreSQL), before every other init container.
/// Only the leading run counts: no mesh puts its containers after an app's, and the sentinel
/// stays before every app init container.
pub fn native_sidecar_position<'a>(init: impl IntoIterator<Item = &'a str>) -> usize {
    init.into_iter()
        .take_while(|name| mesh_of(name).is_some())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::settings::{DEFAULT_ADMIN_PORT, DEFAULT_TRAFFIC_PORT};

    #[test]
    fn the_default_ports_are_off_every_mesh() {
        for port in [DEFAULT_TRAFFIC_PORT, DEFAULT_ADMIN_PORT] {
            assert!(!is_mesh_port(port), "{port}");
        }
        assert_eq!((DEFAULT_TRAFFIC_PORT, DEFAULT_ADMIN_PORT), (9480, 9481));
    }

    #[test]
    fn the_list_holds_each_meshs_ports() {
        for port in [
            15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090, 15100, 4140,
            4143, 4190, 4191, 4567, 4568, 19000, 20000, 21000, 21255, 3500, 3501, 9090, 50001,
            50002, 9901,
        ] {
            assert!(is_mesh_port(port), "{port}");
        }
        for port in [14999, 15101, 4142, 4192, 20999, 21256, 3502, 9091, 8080] {
            assert!(!is_mesh_port(port), "{port}");
        }
        assert_eq!(mesh_of("istio-proxy").unwrap().name, "Istio");
        assert_eq!(mesh_of("istio-validation").unwrap().name, "Istio");
        assert_eq!(
            mesh_of("linkerd-network-validator").unwrap().name,
            "Linkerd"
        );
        assert!(mesh_of("server").is_none());
    }

    #[test]
    fn the_native_sidecar_goes_after_the_leading_mesh_containers() {
        for (init, at) in [
            (vec![], 0),
            (vec!["migrate"], 0),
            (vec!["istio-init"], 1),
            (vec!["istio-init", "istio-proxy", "migrate"], 2),
            (vec!["istio-validation", "istio-proxy"], 2),
            (vec!["linkerd-init", "linkerd-proxy", "migrate"], 2),
            (vec!["linkerd-network-validator", "linkerd-proxy"], 2),
            (vec!["migrate", "istio-proxy"], 0),
        ] {
            assert_eq!(
                native_sidecar_position(init.iter().copied()),
                at,
                "{init:?}"
            );
        }
    }
}
