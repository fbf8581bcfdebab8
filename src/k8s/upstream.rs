//! Where the sidecar reaches the MCP server: a container port it takes over (renamed, so
//! Services that target the name reach the sentinel), or a Unix socket in a volume that only the
//! server's container and the sidecar mount (`upstream-socket`), so nothing else can reach it.

use k8s_openapi::api::core::v1::{ContainerPort, PodSpec};
use serde_json::{Value, json};

use super::annotations as ann;
use super::inject::{Verdict, append, bad_annotation};
use super::mesh;
use super::validate;

/// The port the sidecar takes over: `spec.containers[container].ports[port]`.
pub(super) struct Upstream<'p> {
    pub container: usize,
    pub port_index: usize,
    pub port: &'p ContainerPort,
}

/// The upstream's port: the one `wanted` names (by name or number), else the pod's only port.
/// A mesh's proxy (`mesh`) is never the upstream: its ports are not counted, nor may be chosen.
pub(super) fn find_port<'p>(
    spec: &'p PodSpec,
    wanted: Option<&str>,
) -> Result<Upstream<'p>, Verdict> {
    let (ports, proxies): (Vec<Upstream<'p>>, Vec<Upstream<'p>>) = spec
        .containers
        .iter()
        .enumerate()
        .flat_map(|(ci, c)| {
            c.ports
                .iter()
                .flatten()
                .enumerate()
                .map(move |(pi, p)| Upstream {
                    container: ci,
                    port_index: pi,
                    port: p,
                })
        })
        .partition(|u| mesh::mesh_of(&spec.containers[u.container].name).is_none());
    let n = ports.len();
    let found = match wanted {
        Some(w) => {
            let by_number = w.parse::<i32>().ok();
            if by_number.is_none() {
                validate::port_name(w).map_err(|e| bad_annotation(ann::UPSTREAM_PORT, e))?;
            }
            let matches = |u: &Upstream<'_>| match by_number {
                Some(n) => u.port.container_port == n,
                None => u.port.name.as_deref() == Some(w),
            };
            if let Some(u) = proxies.iter().find(|u| matches(u)) {
                let c = &spec.containers[u.container].name;
                return Err(Verdict::Error(format!(
                    "annotation {}: port {w:?} is the {} proxy's (container {c}), not the MCP server's",
                    ann::UPSTREAM_PORT,
                    mesh::mesh_of(c).map_or("mesh", |m| m.name),
                )));
            }
            ports.into_iter().find(|u| matches(u)).ok_or_else(|| {
                Verdict::Error(format!(
                    "annotation {}: no container declares port {w:?}",
                    ann::UPSTREAM_PORT
                ))
            })?
        }
        None if n == 1 => {
            let only = ports.into_iter().next().expect("one port");
            let containers = spec
                .containers
                .iter()
                .filter(|c| mesh::mesh_of(&c.name).is_none())
                .count();
            if containers > 1 {
                // A server may listen without declaring its port: the one declared port could be
                // another container's (an exporter's), and the server left without a sentinel.
                return Err(Verdict::Error(format!(
                    "the pod's only declared port ({}) is container {}'s, and the pod has {containers} containers; set {} to the MCP server's",
                    only.port.container_port,
                    spec.containers[only.container].name,
                    ann::UPSTREAM_PORT
                )));
            }
            only
        }
        None => {
            return Err(Verdict::Error(format!(
                "the pod declares {n} container ports; set {} to the MCP server's",
                ann::UPSTREAM_PORT
            )));
        }
    };
    match found.port.protocol.as_deref() {
        None | Some("TCP") => Ok(found),
        Some(other) => Err(Verdict::Error(format!(
            "the upstream port uses {other}; the sentinel forwards TCP"
        ))),
    }
}

/// The `upstream-socket` annotation, read: the server listens on `path`, in `dir`, a volume the
/// server's container (`container`) and the sidecar share.
pub(super) struct Socket {
    pub path: String,
    dir: String,
    container: usize,
    /// `upstream-socket-env`: the server container's variable that gets `path`.
    env: Option<String>,
}

/// The socket the pod's annotations ask for, if any.
pub(super) fn socket<'a>(
    spec: &PodSpec,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<Socket>, Verdict> {
    let Some(path) = get(ann::UPSTREAM_SOCKET) else {
        return match get(ann::UPSTREAM_SOCKET_ENV) {
            Some(_) => Err(Verdict::Error(format!(
                "annotation {} needs {} (the socket's path)",
                ann::UPSTREAM_SOCKET_ENV,
                ann::UPSTREAM_SOCKET
            ))),
            None => Ok(None),
        };
    };
    let dir = validate::socket_path(path).map_err(|e| bad_annotation(ann::UPSTREAM_SOCKET, e))?;
    if get(ann::UPSTREAM_PORT).is_some() {
        return Err(Verdict::Error(format!(
            "annotations {} and {} both name the upstream; keep one",
            ann::UPSTREAM_SOCKET,
            ann::UPSTREAM_PORT
        )));
    }
    let env = match get(ann::UPSTREAM_SOCKET_ENV) {
        Some(name) => {
            validate::env_name(name).map_err(|e| bad_annotation(ann::UPSTREAM_SOCKET_ENV, e))?;
            Some(name.to_string())
        }
        None => None,
    };
    Ok(Some(Socket {
        path: path.to_string(),
        dir: dir.to_string(),
        container: server_container(spec, get)?,
        env,
    }))
}

/// The server's container, which creates the socket: `kubectl.kubernetes.io/default-container`'s,
/// else the pod's only container that is not a mesh's.
fn server_container<'a>(
    spec: &PodSpec,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<usize, Verdict> {
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    if let Some(i) = get(ann::DEFAULT_CONTAINER).and_then(|d| names.iter().position(|n| *n == d)) {
        return Ok(i);
    }
    let apps: Vec<usize> = (0..names.len())
        .filter(|i| mesh::mesh_of(names[*i]).is_none())
        .collect();
    match apps[..] {
        [i] => Ok(i),
        _ => Err(Verdict::Error(format!(
            "the pod has {} containers {names:?}; set {} to the MCP server's, which listens on {}",
            names.len(),
            ann::DEFAULT_CONTAINER,
            ann::UPSTREAM_SOCKET
        ))),
    }
}

impl Socket {
    /// The server's container: `spec.containers[container()]`.
    pub fn container(&self) -> usize {
        self.container
    }

    /// Mounts `volume` at the socket's directory in the sidecar's `container`, which must not
    /// mount anything there, above or below.
    pub fn mount_into(&self, container: &mut Value, volume: &str) -> Result<(), Verdict> {
        let Some(Value::Array(mounts)) = container.get_mut("volumeMounts") else {
            return Err(Verdict::Error(
                "internal: the sidecar template has no volumeMounts".into(),
            ));
        };
        let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        for m in mounts.iter() {
            let theirs = m["mountPath"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/');
            if nested(&self.dir, theirs) || nested(theirs, &self.dir) {
                return Err(Verdict::Error(format!(
                    "annotation {}: the socket's directory {} overlaps the sidecar's mount {theirs}",
                    ann::UPSTREAM_SOCKET,
                    self.dir
                )));
            }
        }
        mounts.push(json!({ "name": volume, "mountPath": self.dir }));
        Ok(())
    }

    /// The server container's side: `volume` mounted at the socket's directory, and the
    /// `upstream-socket-env` variable set to the socket's path (a variable it already sets to
    /// another value refuses the pod).
    pub fn server_ops(
        &self,
        json: &Value,
        spec: &PodSpec,
        volume: &str,
    ) -> Result<Vec<Value>, Verdict> {
        let server = &spec.containers[self.container];
        if server
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == self.dir)
        {
            return Err(Verdict::Error(format!(
                "container {} already mounts a volume at {}, where the socket's volume goes",
                server.name, self.dir
            )));
        }
        let at = |field: &str| format!("/spec/containers/{}/{field}", self.container);
        let mut ops = Vec::new();
        let mount = json!({ "name": volume, "mountPath": self.dir });
        append(&mut ops, json, &at("volumeMounts"), &[mount]);
        if let Some(name) = &self.env {
            ops.extend(set_env(
                json,
                spec,
                self.container,
                (name, &self.path),
                ann::UPSTREAM_SOCKET_ENV,
            )?);
        }
        Ok(ops)
    }
}

/// The address a server bound to loopback (`upstream-host-env`) is told to listen on.
pub(super) const LOOPBACK: &str = "127.0.0.1";

/// A server on a port that binds loopback only (`upstream-host-env: NAME`): NAME set to
/// `LOOPBACK` in its container, so nothing outside the pod reaches it, whatever the Services and
/// the NetworkPolicy. The kubelet's `httpGet`/`tcpSocket` probes and hooks come from the node,
/// which such a server does not answer: a container that has one on the server's port is refused.
pub(super) fn loopback_ops(
    json: &Value,
    spec: &PodSpec,
    upstream: &Upstream<'_>,
    name: &str,
) -> Result<Vec<Value>, Verdict> {
    validate::env_name(name).map_err(|e| bad_annotation(ann::UPSTREAM_HOST_ENV, e))?;
    let server = &spec.containers[upstream.container];
    if let Some(holder) = super::probes::holders_of(
        json,
        upstream.container,
        upstream.port.name.as_deref(),
        upstream.port.container_port,
    )
    .first()
    {
        return Err(Verdict::Error(format!(
            "container {}'s {holder} reaches port {} from the node, which a server bound to {LOOPBACK} (annotation {}) does not answer: remove it or make it an exec probe (the sentinel's readiness already fails while the server does not answer)",
            server.name,
            upstream.port.container_port,
            ann::UPSTREAM_HOST_ENV
        )));
    }
    set_env(
        json,
        spec,
        upstream.container,
        (name, LOOPBACK),
        ann::UPSTREAM_HOST_ENV,
    )
}

/// `name=value` in `spec.containers[container]`'s env: added, kept when already so, refused when
/// the container sets `name` to anything else (`annotation` asked for it).
fn set_env(
    json: &Value,
    spec: &PodSpec,
    container: usize,
    (name, value): (&str, &str),
    annotation: &str,
) -> Result<Vec<Value>, Verdict> {
    let server = &spec.containers[container];
    let mut ops = Vec::new();
    match server.env.iter().flatten().find(|e| e.name == name) {
        None => append(
            &mut ops,
            json,
            &format!("/spec/containers/{container}/env"),
            &[json!({ "name": name, "value": value })],
        ),
        Some(e) if e.value_from.is_none() && e.value.as_deref() == Some(value) => {}
        Some(_) => {
            return Err(Verdict::Error(format!(
                "container {} already sets {name}, to another value than {value}; annotation {annotation}",
                server.name
            )));
        }
    }
    Ok(ops)
}
