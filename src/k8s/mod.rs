//! Kubernetes: the sidecar injector. `template` renders the one sidecar spec shared with the Helm
//! chart, `inject` decides what happens to a pod (a pure function of the AdmissionReview),
//! `webhook` serves it over HTTPS, `settings` reads the injector's config file, `mesh` knows the
//! service meshes' proxies it coexists with, `exposure` warns about Services that reach an
//! injected pod's server around the sentinel.

pub mod exposure;
pub mod inject;
pub mod mesh;
pub mod probes;
pub mod settings;
pub mod stdio;
pub mod template;
pub mod upstream;
pub mod validate;
pub mod webhook;

/// Every annotation the injector reads, on the pod.
pub mod annotations {
    /// `"false"`: never inject (an opt-out only: the opt-in is the pod label `INJECT_LABEL`,
    /// which the API server filters on; an annotation cannot widen what reaches the webhook).
    pub const INJECT: &str = "mcp-sentinel.io/inject";
    /// `admit`: an opted-in pod the injector cannot protect is admitted unchanged, with a
    /// warning, instead of refused. `refuse` (the default) refuses it.
    pub const ON_FAILURE: &str = "mcp-sentinel.io/on-failure";
    /// The upstream's container port, by name or number. Default: the pod's only container port.
    pub const UPSTREAM_PORT: &str = "mcp-sentinel.io/upstream-port";
    /// The path of a Unix socket the server listens on instead of a port (`unix:` upstream):
    /// an emptyDir in memory is mounted at its directory in the server's container
    /// (`kubectl.kubernetes.io/default-container`'s, or the only one) and the sidecar's; no
    /// port is renamed.
    pub const UPSTREAM_SOCKET: &str = "mcp-sentinel.io/upstream-socket";
    /// With `UPSTREAM_SOCKET`: the server container's env var that gets the socket's path.
    pub const UPSTREAM_SOCKET_ENV: &str = "mcp-sentinel.io/upstream-socket-env";
    /// A server on a port that reads its bind address from this env var: the injector sets it
    /// to 127.0.0.1 in the server's container, so only the pod (the sentinel) reaches it.
    pub const UPSTREAM_HOST_ENV: &str = "mcp-sentinel.io/upstream-host-env";
    /// The upstream's MCP path. Default: the injector's `upstream_path` (`/mcp`).
    pub const UPSTREAM_PATH: &str = "mcp-sentinel.io/upstream-path";
    /// The port name the sidecar's traffic port takes. Default: the upstream port's name.
    pub const TRAFFIC_PORT_NAME: &str = "mcp-sentinel.io/traffic-port-name";
    /// The sidecar's traffic port number. Default: the injector's `traffic_port` (9480).
    pub const TRAFFIC_PORT: &str = "mcp-sentinel.io/traffic-port";
    /// The sidecar's admin port number (`/healthz`, `/readyz`, `/metrics`). Default: the
    /// injector's `admin_port` (9481).
    pub const ADMIN_PORT: &str = "mcp-sentinel.io/admin-port";
    /// The ConfigMap holding `config.yaml` and `policy.yaml`. Default: the injector's `config_map`.
    pub const CONFIG: &str = "mcp-sentinel.io/config";
    /// A stdio MCP server: its argv as a JSON array of strings. The sentinel runs it as its
    /// child in the server's own container (no sidecar); also a request to inject.
    pub const STDIO_COMMAND: &str = "mcp-sentinel.io/stdio-command";
    /// The stdio server's container. Default: `kubectl.kubernetes.io/default-container`, or the
    /// pod's only container.
    pub const STDIO_CONTAINER: &str = "mcp-sentinel.io/stdio-container";
    /// Kubernetes' own name for a pod's main container (Istio's injector sets it too).
    pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
    pub const CPU_REQUEST: &str = "mcp-sentinel.io/cpu-request";
    pub const CPU_LIMIT: &str = "mcp-sentinel.io/cpu-limit";
    pub const MEMORY_REQUEST: &str = "mcp-sentinel.io/memory-request";
    pub const MEMORY_LIMIT: &str = "mcp-sentinel.io/memory-limit";
}

/// The namespace label that lets the webhook see the opted-in pods of a namespace (with
/// `webhook.annotatedPods` off, the only namespaces it sees).
pub const NAMESPACE_LABEL: &str = "mcp-sentinel.io/inject";

/// The pod label that opts a pod in: the webhook's `objectSelector` (and `matchConditions`)
/// select on it, so the API server sends no other pod to the injector.
pub const INJECT_LABEL: &str = "mcp-sentinel.io/inject";

/// The values of `INJECT_LABEL` (and `NAMESPACE_LABEL`) that opt in: the spellings people
/// type. The chart renders the same list (`mcp-sentinel.optInValues`); a test compares them.
pub const OPT_IN_VALUES: [&str; 2] = ["true", "enabled"];
