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

/// Istio's pod annotation listing the inbound ports its iptables rules leave alone.
pub const ISTIO_EXCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Linkerd's.
pub const LINKERD_SKIP_INBOUND: &str = "config.linkerd.io/skip-inbound-ports";

/// The pod annotations (the sidecar's `podAnnotations`) that are lists of ports: the sidecar's
/// ports are added to the pod's own list, never put in its place.
pub const PORT_LISTS: [&str; 2] = [ISTIO_EXCLUDE_INBOUND, LINKERD_SKIP_INBOUND];

/// The mesh init containers that set the pod's iptables rules, and the flags of their argument
/// lists that name the inbound ports left alone (`-d` is istio-iptables' short
/// `--istio-local-exclude-ports`), written as a flag and a value or as `flag=value`.
const INBOUND_EXCLUSION_FLAGS: [(&str, &[&str]); 2] = [
    ("istio-init", &["-d", "--istio-local-exclude-ports"]),
    ("linkerd-init", &["--inbound-ports-to-ignore"]),
];

/// Whether `list` (ports and `lo-hi` ranges, comma-separated, as both meshes write them) holds
/// `port`.
fn lists(list: &str, port: u16) -> bool {
    list.split(',').map(str::trim).any(|item| {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        match (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&port),
            _ => false,
        }
    })
}

/// `list` with the ports of `ours` (a list of the same form) it lacks appended; `None` when it
/// holds them all already.
pub fn with_ports(list: &str, ours: &str) -> Option<String> {
    let missing: Vec<&str> = ours
        .split(',')
        .map(str::trim)
        .filter(|p| p.parse::<u16>().is_ok_and(|port| !lists(list, port)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let list = list.trim().trim_end_matches(',').trim_end();
    Some(if list.is_empty() {
        missing.join(",")
    } else {
        format!("{list},{}", missing.join(","))
    })
}

/// The argument list of a mesh's iptables init container `name` with `port` among the inbound
/// ports it leaves alone: the mesh injected before the sentinel, so the annotations it read are
/// past. `None` when the container is no such one or already leaves the port alone.
pub fn exclude_inbound(name: &str, args: &[String], port: u16) -> Option<Vec<String>> {
    let (_, flags) = INBOUND_EXCLUSION_FLAGS.iter().find(|(n, _)| *n == name)?;
    let port = port.to_string();
    let mut out = args.to_vec();
    for (i, arg) in args.iter().enumerate() {
        if flags.contains(&arg.as_str()) {
            // A flag without its value is the mesh's to report; leave it.
            let value = args.get(i + 1)?;
            out[i + 1] = with_ports(value, &port)?;
            return Some(out);
        }
        if let Some((flag, value)) = arg.split_once('=')
            && flags.contains(&flag)
        {
            out[i] = format!("{flag}={}", with_ports(value, &port)?);
            return Some(out);
        }
    }
    out.extend([flags[0].to_string(), port]);
    Some(out)
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
    fn port_lists_gain_only_the_ports_they_lack() {
        assert_eq!(with_ports("", "9481").as_deref(), Some("9481"));
        assert_eq!(with_ports("8443", "9481").as_deref(), Some("8443,9481"));
        assert_eq!(
            with_ports("8443, 9000 ,", "9481").as_deref(),
            Some("8443, 9000,9481")
        );
        assert_eq!(with_ports("9481", "9481"), None);
        assert_eq!(with_ports("15020, 9481", "9481"), None);
        assert_eq!(with_ports("9000-9999", "9481"), None);
        assert_eq!(with_ports("9000 - 9999", "9481"), None);
        assert_eq!(
            with_ports("9482-9999,*", "9481").as_deref(),
            Some("9482-9999,*,9481")
        );
    }

    #[test]
    fn a_mesh_init_container_leaves_the_port_alone() {
        let args = |a: &[&str]| a.iter().map(ToString::to_string).collect::<Vec<_>>();
        let istio = args(&[
            "istio-iptables",
            "-p",
            "15001",
            "-b",
            "*",
            "-d",
            "15090,15021",
        ]);
        let mut want = istio.clone();
        want[6] = "15090,15021,9481".into();
        assert_eq!(exclude_inbound("istio-init", &istio, 9481).unwrap(), want);
        let long = args(&["--istio-local-exclude-ports=15020", "-b", "*"]);
        assert_eq!(
            exclude_inbound("istio-init", &long, 9481).unwrap(),
            args(&["--istio-local-exclude-ports=15020,9481", "-b", "*"])
        );
        let none = args(&["istio-iptables", "-b", "*"]);
        assert_eq!(
            exclude_inbound("istio-init", &none, 9481).unwrap(),
            args(&["istio-iptables", "-b", "*", "-d", "9481"])
        );
        let linkerd = args(&[
            "--incoming-proxy-port",
            "4143",
            "--inbound-ports-to-ignore",
            "4190,4191",
        ]);
        assert_eq!(
            exclude_inbound("linkerd-init", &linkerd, 9481).unwrap(),
            args(&[
                "--incoming-proxy-port",
                "4143",
                "--inbound-ports-to-ignore",
                "4190,4191,9481"
            ])
        );
        let covered = args(&["--inbound-ports-to-ignore", "9000-9999"]);
        assert_eq!(exclude_inbound("linkerd-init", &covered, 9481), None);
        assert_eq!(exclude_inbound("istio-validation", &istio, 9481), None);
        assert_eq!(exclude_inbound("migrate", &istio, 9481), None);
        let dangling = args(&["istio-iptables", "-d"]);
        assert_eq!(exclude_inbound("istio-init", &dangling, 9481), None);
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
