//! The injection decision: a pure function from an AdmissionReview (and the injector's settings)
//! to the answer. Only pods labelled `mcp-sentinel.io/inject` with an opt-in value are injected
//! (the API server sends no others; any that still arrive are skipped). An opted-in pod the
//! injector cannot protect is refused, saying what to fix, since admitted it would run without
//! its sentinel, unless it is annotated `mcp-sentinel.io/on-failure: admit` (then it is admitted
//! unchanged with a warning saying so). A body that is not an AdmissionReview at all is
//! refused, and never with a panic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};

use super::annotations as ann;
use super::mesh;
use super::probes;
use super::settings::Settings;
use super::stdio;
use super::template::{self, Params, Sidecar};
use super::upstream::{self, Socket, Upstream};
use super::validate;

/// Webhook path for opted-in pods in namespaces not labelled `mcp-sentinel.io/inject`.
pub const PATH_ANNOTATED: &str = "/inject/annotated";
/// Webhook path for opted-in pods in namespaces labelled `mcp-sentinel.io/inject`.
pub const PATH_NAMESPACE: &str = "/inject/namespace";

/// Which webhook entry called: the MutatingWebhookConfiguration tells them apart by
/// namespace label. Both decide the same way: the pod label is the opt-in in either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Annotated,
    Namespace,
}

impl Mode {
    pub fn from_path(path: &str) -> Option<Mode> {
        match path {
            PATH_ANNOTATED => Some(Mode::Annotated),
            PATH_NAMESPACE => Some(Mode::Namespace),
            _ => None,
        }
    }
}

/// What happened to a pod, for `mcp_sentinel_injections_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectResult {
    Injected,
    /// Not asked for (or not a pod creation), or a pod the sidecar cannot serve (host network).
    Skipped,
    AlreadyInjected,
    /// Asked for but impossible (bad annotation, no port to take over, a collision, an
    /// unreadable pod) and annotated `on-failure: admit`: admitted unchanged with a warning.
    Error,
    /// Asked for but impossible: the pod is refused (not created).
    Refused,
}

impl InjectResult {
    pub const ALL: [InjectResult; 5] = [
        InjectResult::Injected,
        InjectResult::Skipped,
        InjectResult::AlreadyInjected,
        InjectResult::Error,
        InjectResult::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InjectResult::Injected => "injected",
            InjectResult::Skipped => "skipped",
            InjectResult::AlreadyInjected => "already_injected",
            InjectResult::Error => "error",
            InjectResult::Refused => "refused",
        }
    }
}

/// The answer to one AdmissionReview.
#[derive(Debug)]
pub struct Answer {
    pub review: AdmissionReview<DynamicObject>,
    pub result: InjectResult,
    /// Why, for the log (never sent anywhere else than the warning it may also be).
    pub detail: String,
    /// `namespace/name` (or the generateName prefix) for the log.
    pub pod: String,
}

impl Answer {
    /// The body to send back: the AdmissionReview as JSON, with the patch base64-encoded as the
    /// API server's Go types spell `[]byte` (kube-core writes an array of numbers).
    pub fn to_json(&self) -> Vec<u8> {
        review_json(&self.review)
    }
}

/// An AdmissionReview as the API server expects it (see `Answer::to_json`).
pub fn review_json(review: &AdmissionReview<DynamicObject>) -> Vec<u8> {
    use base64::Engine;
    let mut v = serde_json::to_value(review).expect("an AdmissionReview serializes");
    if let Some(patch) = v.pointer_mut("/response/patch")
        && let Some(bytes) = patch.as_array()
    {
        let raw: Vec<u8> = bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
    }
    serde_json::to_vec(&v).expect("JSON serializes")
}

/// A body that is not an AdmissionReview v1 with a request.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("expected an admission.k8s.io/v1 AdmissionReview")]
    NotAReview,
    #[error("the AdmissionReview has no request uid")]
    NoRequest,
}

impl Malformed {
    /// The clean answer: an AdmissionReview refusing it, without a uid (none could be read).
    pub fn answer(&self) -> AdmissionReview<DynamicObject> {
        AdmissionResponse::invalid(self.to_string()).into_review()
    }
}

/// Reads an AdmissionReview from `body` and answers it.
pub fn review_body(body: &[u8], mode: Mode, settings: &Settings) -> Result<Answer, Malformed> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Malformed::Json(e.to_string()))?;
    if value["apiVersion"] != "admission.k8s.io/v1" || value["kind"] != "AdmissionReview" {
        return Err(Malformed::NotAReview);
    }
    let uid = match value.pointer("/request/uid") {
        Some(Value::String(uid)) if !uid.is_empty() => uid.clone(),
        _ => return Err(Malformed::NoRequest),
    };
    let object = value
        .pointer("/request/object")
        .cloned()
        .unwrap_or_default();
    match serde_json::from_value::<AdmissionReview<DynamicObject>>(value) {
        Ok(review) => match review.try_into() {
            Ok(request) => Ok(review_request(&request, mode, settings)),
            Err(_) => Err(Malformed::NoRequest),
        },
        // The uid is known, so the pod can still be answered: like any pod the injector cannot
        // protect (refused if it opted in, unless it chose to be admitted anyway).
        Err(e) => {
            let mut resp = AdmissionResponse::invalid("");
            resp.uid = uid;
            resp.allowed = true;
            resp.result = Default::default();
            let detail = format!("cannot read the admission request: {e}");
            let (resp, result, detail) = if opted_in(&object) {
                let verdict = refuse_unprotected::<()>(&object, Err(Verdict::Error(detail)))
                    .expect_err("an error stays an error");
                settle(resp, verdict)
            } else {
                // Whether it opted in cannot even be read (nor could the API server's selector
                // have matched it): admitted unchanged, counted as an error.
                resp.warnings = Some(vec![warning(&detail)]);
                (resp, InjectResult::Error, detail)
            };
            Ok(Answer {
                review: resp.into_review(),
                result,
                detail,
                pod: String::new(),
            })
        }
    }
}

fn warning(detail: &str) -> String {
    format!("mcp-sentinel: not injected: {detail}")
}

/// Answers one admission request.
///
/// `_mode` is which webhook entry called; both decide the same way.
pub fn review_request(
    req: &AdmissionRequest<DynamicObject>,
    _mode: Mode,
    settings: &Settings,
) -> Answer {
    let resp = AdmissionResponse::from(req);
    let pod_name = req.object.as_ref().map_or_else(String::new, |o| {
        let name = o.metadata.name.clone().unwrap_or_else(|| {
            format!("{}*", o.metadata.generate_name.clone().unwrap_or_default())
        });
        format!("{}/{name}", req.namespace.clone().unwrap_or_default())
    });
    let answer = |resp: AdmissionResponse, result, detail: String| Answer {
        review: resp.into_review(),
        result,
        detail,
        pod: pod_name.clone(),
    };
    let is_pod_create = req.kind.group.is_empty()
        && req.kind.kind == "Pod"
        && req.sub_resource.is_none()
        && req.operation == Operation::Create;
    let Some(object) = req.object.as_ref().filter(|_| is_pod_create) else {
        return answer(resp, InjectResult::Skipped, "not a pod creation".into());
    };
    let json = serde_json::to_value(object).unwrap_or_default();
    let planned = serde_json::from_value::<Pod>(json.clone())
        .map_err(|e| Verdict::Error(format!("cannot read the pod: {e}")))
        .and_then(|pod| plan(&pod, &json, req.namespace.as_deref(), settings))
        .and_then(|(ops, warnings)| {
            let patched = resp
                .clone()
                .with_patch(verify(&json, ops)?)
                .map_err(|e| Verdict::Error(format!("cannot encode the patch: {e}")))?;
            Ok((patched, warnings))
        });
    match refuse_unprotected(&json, planned) {
        Ok((mut resp, warnings)) => {
            if !warnings.is_empty() {
                resp.warnings = Some(warnings);
            }
            answer(resp, InjectResult::Injected, String::new())
        }
        Err(verdict) => {
            let (resp, result, detail) = settle(resp, verdict);
            answer(resp, result, detail)
        }
    }
}

/// The response (from `resp`, the request's) to a pod that is not patched, what happened, and why.
fn settle(
    mut resp: AdmissionResponse,
    verdict: Verdict,
) -> (AdmissionResponse, InjectResult, String) {
    match verdict {
        Verdict::Skip(detail, warn) => {
            if warn {
                resp.warnings = Some(vec![warning(&detail)]);
            }
            (resp, InjectResult::Skipped, detail)
        }
        Verdict::Already => (
            resp,
            InjectResult::AlreadyInjected,
            "already has the sidecar".into(),
        ),
        Verdict::Error(detail) => {
            resp.warnings = Some(vec![format!(
                "mcp-sentinel: admitted WITHOUT the sentinel ({}: {ADMIT}): {detail}",
                ann::ON_FAILURE
            )]);
            (resp, InjectResult::Error, detail)
        }
        Verdict::Refuse { detail, stdio } => {
            let what = if stdio {
                "a stdio MCP server runs only under its sentinel"
            } else {
                "the pod asked for the sentinel and is not started without it"
            };
            let message = format!(
                "mcp-sentinel: refused: {what}: {detail} (fix that, or annotate the pod {}: {ADMIT} to start it unprotected)",
                ann::ON_FAILURE
            );
            resp.allowed = false;
            resp.result = kube_core::Status::failure(&message, "Forbidden").with_code(403);
            (resp, InjectResult::Refused, detail)
        }
    }
}

/// Why a pod is left alone.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Not injected, by choice; `true`: tell the user why.
    Skip(String, bool),
    Already,
    /// Cannot be injected; after `refuse_unprotected`, a pod that chose to be admitted anyway.
    Error(String),
    /// Not admitted at all; `stdio`: a stdio server's pod.
    Refuse {
        detail: String,
        stdio: bool,
    },
}

/// The `on-failure` annotation's value that admits a pod the injector cannot protect.
const ADMIT: &str = "admit";
/// Its default: refuse such a pod.
const REFUSE: &str = "refuse";

/// A pod (`json`, as sent) that opted in and cannot have its sentinel is refused, whatever the
/// reason (admitted, it would run without one), unless annotated `on-failure: admit`: then it
/// is admitted unchanged (`Verdict::Error`). A pod that did not opt in is never refused (nor
/// injected: skipped, with the reason as a warning).
fn refuse_unprotected<T>(json: &Value, planned: Result<T, Verdict>) -> Result<T, Verdict> {
    let annotation = |key: &str| {
        json.pointer(&format!("/metadata/annotations/{}", escape(key)))
            .and_then(Value::as_str)
    };
    let stdio = annotation(ann::STDIO_COMMAND).is_some();
    let admit = annotation(ann::ON_FAILURE) == Some(ADMIT);
    match planned {
        Err(Verdict::Error(why) | Verdict::Skip(why, true)) if admit => Err(Verdict::Error(why)),
        Err(Verdict::Error(detail) | Verdict::Skip(detail, true)) if opted_in(json) => {
            Err(Verdict::Refuse { detail, stdio })
        }
        Err(Verdict::Error(why)) => Err(Verdict::Skip(why, true)),
        other => other,
    }
}

/// A pod outside the namespaces the chart protects would get its sidecar, but no NetworkPolicy
/// closing its server's port to other pods (nor the sidecar's ConfigMap).
fn protected_namespace(namespace: Option<&str>, settings: &Settings) -> Result<(), Verdict> {
    let (Some(protected), Some(ns)) = (&settings.namespaces, namespace) else {
        return Ok(());
    };
    if protected.iter().any(|p| p == ns) {
        return Ok(());
    }
    Err(Verdict::Error(format!(
        "namespace {ns} is not one the injector's chart protects ({}): the MCP server's port would have no NetworkPolicy closing it to other pods; add {ns} to sidecar.namespaces",
        protected.join(", ")
    )))
}

/// Why `c`, a container with the sidecar's name and image, is not the sidecar as rendered
/// (`defaults`) — by a command, arguments or listen addresses of its own, or a port another
/// container of `spec` declares too — so that it cannot make the pod pass as injected while the
/// server sits on a port the NetworkPolicy opens; `None` when it is.
fn not_the_sidecar(c: &Container, spec: &PodSpec, defaults: &Sidecar) -> Option<String> {
    if c.command.as_ref().is_some_and(|cmd| !cmd.is_empty()) {
        return Some("it has a command of its own".into());
    }
    let args = serde_json::to_value(c.args.clone().unwrap_or_default()).unwrap_or_default();
    if args != defaults.container["args"] {
        return Some(format!("its arguments are {args}, not the sidecar's"));
    }
    // The kubelet takes the last of several entries of one name.
    let env = |var: &str| {
        c.env
            .iter()
            .flatten()
            .rfind(|e| e.name == var)
            .and_then(|e| e.value.as_deref())
    };
    let ports = declared(c);
    let traffic = ports.first().copied();
    let admin = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("sentinel-admin"))
        .map(|p| p.container_port);
    for (var, want) in [
        ("MCP_SENTINEL_LISTEN", traffic),
        ("MCP_SENTINEL_ADMIN_LISTEN", admin),
    ] {
        if let Some(why) = listens_on(var, env(var), want) {
            return Some(why);
        }
    }
    shared_port(c, spec)
}

/// Why the pod does not run the sentinel a stdio server's install container (`install-to`)
/// copies: a server container running the copied binary's `run` and listening on every address
/// at its first declared port, which no other container declares; `None` when it does.
fn not_stdio_wrapped(spec: &PodSpec, defaults: &Sidecar) -> Option<String> {
    let binary = defaults.stdio.binary();
    let Some(server) = spec.containers.iter().find(|c| {
        c.command
            .as_ref()
            .is_some_and(|cmd| cmd.first() == Some(&binary))
    }) else {
        return Some(format!("no container runs {binary}"));
    };
    let cmd = server.command.as_deref().unwrap_or_default();
    if cmd.get(1).map(String::as_str) != Some("run") {
        return Some(format!(
            "container {} runs {binary} without `run`",
            server.name
        ));
    }
    let flags: Vec<&String> = cmd.iter().take_while(|a| *a != "--").collect();
    let flag = |name: &str| {
        flags
            .iter()
            .rposition(|a| *a == name)
            .and_then(|i| flags.get(i + 1))
            .map(|v| v.as_str())
    };
    let traffic = declared(server).first().copied();
    if let Some(why) = listens_on("--listen", flag("--listen"), traffic) {
        return Some(format!("container {}: {why}", server.name));
    }
    shared_port(server, spec)
}

/// The container ports `c` declares.
fn declared(c: &Container) -> Vec<i32> {
    c.ports.iter().flatten().map(|p| p.container_port).collect()
}

/// Why `value` (of `what`) is not every address (`0.0.0.0` or `[::]`) at port `want`.
fn listens_on(what: &str, value: Option<&str>, want: Option<i32>) -> Option<String> {
    let port = value
        .and_then(|v| {
            v.strip_prefix("0.0.0.0:")
                .or_else(|| v.strip_prefix("[::]:"))
        })
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<i32>().ok());
    (port.is_none() || port != want)
        .then(|| format!("{what} is {value:?}, not every address at the port it declares for it"))
}

/// Another container of `spec` declaring one of `c`'s ports.
fn shared_port(c: &Container, spec: &PodSpec) -> Option<String> {
    let own = declared(c);
    all_containers(spec)
        .filter(|other| other.name != c.name)
        .flat_map(|other| other.ports.iter().flatten().map(move |p| (other, p)))
        .find(|(_, p)| own.contains(&p.container_port))
        .map(|(other, p)| {
            format!(
                "container {} declares its port {} too",
                other.name, p.container_port
            )
        })
}

/// Whether the pod (as sent) carries the opt-in label.
fn opted_in(json: &Value) -> bool {
    json.pointer(&format!("/metadata/labels/{}", escape(super::INJECT_LABEL)))
        .and_then(Value::as_str)
        .is_some_and(|v| super::OPT_IN_VALUES.contains(&v))
}

/// The JSON Patch that adds the sentinel to `json` (the pod as the API server sent it), and the
/// warnings to return with it.
fn plan(
    pod: &Pod,
    json: &Value,
    namespace: Option<&str>,
    settings: &Settings,
) -> Result<(Vec<Value>, Vec<String>), Verdict> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |key: &str| annotations.get(key).map(String::as_str);
    let stdio_command = get(ann::STDIO_COMMAND);
    if !opted_in(json) {
        return Err(Verdict::Skip(
            format!("not labelled {}", super::INJECT_LABEL),
            false,
        ));
    }
    match get(ann::INJECT) {
        Some("false") => return Err(Verdict::Skip("opted out by annotation".into(), false)),
        Some(v) if super::OPT_IN_VALUES.contains(&v) => {}
        None => {}
        Some(other) => {
            return Err(Verdict::Error(format!(
                "annotation {}={other:?} must be \"false\" (to opt out) or absent",
                ann::INJECT
            )));
        }
    }
    protected_namespace(namespace, settings)?;
    match get(ann::ON_FAILURE) {
        None | Some(ADMIT | REFUSE) => {}
        Some(other) => {
            return Err(Verdict::Error(format!(
                "annotation {}={other:?} must be \"{ADMIT}\" or \"{REFUSE}\"",
                ann::ON_FAILURE
            )));
        }
    }
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Verdict::Error("the pod has no spec".into()))?;
    let mut probe = template_probe(settings);
    let defaults = template::render(&probe)
        .map_err(|e| Verdict::Error(format!("cannot render the sidecar: {e}")))?;
    let ours = [defaults.name(), defaults.stdio.install_name()];
    if let Some(c) = all_containers(spec).find(|c| ours.contains(&c.name.as_str())) {
        // Only the sentinel itself makes a pod "already injected": a container that merely
        // takes its name would otherwise opt the pod out unseen.
        let repository = |image: &str| {
            let image = image.split('@').next().unwrap_or_default();
            match image.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
                _ => image.to_string(),
            }
        };
        let first_arg = c.args.iter().flatten().next().map(String::as_str);
        let is_sentinel = c
            .image
            .as_deref()
            .is_some_and(|i| repository(i) == repository(&settings.image))
            && matches!(first_arg, Some("run" | "install-to"));
        if is_sentinel {
            // The sidecar (`run`), or a stdio server's install container (`install-to`), which
            // only copies the binary for the server's container to run.
            let why = match first_arg {
                Some("run") => not_the_sidecar(c, spec, &defaults),
                _ => not_stdio_wrapped(spec, &defaults),
            };
            if let Some(why) = why {
                return Err(Verdict::Error(format!(
                    "container {} has the sentinel's image, but the pod is not as the injector leaves it: {why}; remove the container and let the injector add the sentinel",
                    c.name
                )));
            }
            return Err(Verdict::Already);
        }
        return Err(Verdict::Error(format!(
            "container {} is not the sentinel (image {}): the name is the sidecar's; rename it",
            c.name,
            c.image.as_deref().unwrap_or("none")
        )));
    }
    if spec.host_network == Some(true) {
        return Err(Verdict::Skip(
            "host-network pods are not injected".into(),
            true,
        ));
    }
    if spec.os.as_ref().is_some_and(|os| os.name != "linux") {
        return Err(Verdict::Skip("only Linux pods are injected".into(), true));
    }

    let mut warnings = Vec::new();
    let traffic_port_name = match get(ann::TRAFFIC_PORT_NAME) {
        Some(n) => {
            validate::port_name(n).map_err(|e| bad_annotation(ann::TRAFFIC_PORT_NAME, e))?;
            Some(n.to_string())
        }
        None => None,
    };
    let config_map = match get(ann::CONFIG) {
        Some(c) => {
            validate::object_name(c).map_err(|e| bad_annotation(ann::CONFIG, e))?;
            c.to_string()
        }
        None => settings.config_map.clone(),
    };
    let mut resources = settings.resources.clone();
    for (key, slot) in [
        (ann::CPU_REQUEST, &mut resources.cpu_request),
        (ann::CPU_LIMIT, &mut resources.cpu_limit),
        (ann::MEMORY_REQUEST, &mut resources.memory_request),
        (ann::MEMORY_LIMIT, &mut resources.memory_limit),
    ] {
        if let Some(q) = get(key) {
            validate::quantity(q).map_err(|e| bad_annotation(key, e))?;
            *slot = Some(q.to_string());
        }
    }
    resources
        .check()
        .map_err(|e| Verdict::Error(format!("sidecar resources: {e}")))?;
    probe.config_map = config_map;
    probe.resources = resources.to_json();
    (probe.traffic_port, probe.admin_port) = ports(&get, settings)?;
    let admin_port = probe.admin_port;

    let (mut ops, sidecar) = match stdio_command {
        Some(command) => {
            // The server has no port of its own: Services target the traffic port's name.
            probe.traffic_port_name =
                traffic_port_name.unwrap_or_else(|| settings.default_port_name.clone());
            if get(ann::UPSTREAM_SOCKET).is_some() {
                return Err(Verdict::Error(format!(
                    "annotations {} and {} both name the upstream; keep one",
                    ann::STDIO_COMMAND,
                    ann::UPSTREAM_SOCKET
                )));
            }
            let argv = stdio::argv(command).map_err(Verdict::Error)?;
            let container = stdio::container(spec, &get)?;
            let sidecar = template::render(&probe)
                .map_err(|e| Verdict::Error(format!("cannot render the sidecar: {e}")))?;
            check_collisions(
                spec,
                None,
                Some(sidecar.stdio.volume_name()),
                &sidecar,
                settings,
            )?;
            let ops = stdio::wrap(json, spec, container, &argv, &sidecar, &mut warnings)?;
            (ops, sidecar)
        }
        None => sidecar_ops(
            spec,
            json,
            &get,
            settings,
            probe,
            traffic_port_name,
            &mut warnings,
        )?,
    };
    // First, while the init containers' indices are still the pod's own.
    ops.splice(0..0, mesh_init_ops(spec, admin_port));
    metadata_ops(&mut ops, json, annotations, &sidecar, &mut warnings);
    if let Some(seconds) = grace_period(spec.termination_grace_period_seconds, settings) {
        ops.push(add(
            "/spec/terminationGracePeriodSeconds",
            &Value::from(seconds),
        ));
    }
    Ok((ops, warnings))
}

/// The sidecar's traffic and admin ports: the settings', or the pod's `traffic-port` and
/// `admin-port` annotations; distinct.
fn ports<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    settings: &Settings,
) -> Result<(u16, u16), Verdict> {
    let port = |key: &str, default: u16| match get(key) {
        Some(v) => validate::port_number(v).map_err(|e| bad_annotation(key, e)),
        None => Ok(default),
    };
    let traffic = port(ann::TRAFFIC_PORT, settings.traffic_port)?;
    let admin = port(ann::ADMIN_PORT, settings.admin_port)?;
    if traffic == admin {
        return Err(Verdict::Error(format!(
            "the sidecar's traffic and admin ports are both {traffic}; set {} or {} to another",
            ann::TRAFFIC_PORT,
            ann::ADMIN_PORT
        )));
    }
    Ok((traffic, admin))
}

/// The kubelet's `terminationGracePeriodSeconds` when a pod sets none.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Seconds on top of the sentinel's drain deadline: the SIGTERM's delivery and the exit.
pub const GRACE_MARGIN_SECONDS: i64 = 5;

/// The grace period to set on a pod whose own is `current`: the sentinel's drain deadline plus
/// `GRACE_MARGIN_SECONDS`, when the pod's (`DEFAULT_GRACE_SECONDS` if unset) is shorter; `None`
/// when it already suffices (a longer one is never lowered).
pub fn grace_period(current: Option<i64>, settings: &Settings) -> Option<i64> {
    let deadline = settings.shutdown_deadline;
    let seconds = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
    let needed = i64::try_from(seconds)
        .unwrap_or(i64::MAX)
        .saturating_add(GRACE_MARGIN_SECONDS);
    (current.unwrap_or(DEFAULT_GRACE_SECONDS) < needed).then_some(needed)
}

/// How the sidecar reaches the server: a port it takes over, or a socket.
enum Reach<'p> {
    Port(Upstream<'p>),
    Socket(Socket),
}

/// The sidecar beside an HTTP server: the container, the upstream's port renamed (or the
/// socket's volume shared), the volumes.
fn sidecar_ops<'a>(
    spec: &PodSpec,
    json: &Value,
    get: &impl Fn(&str) -> Option<&'a str>,
    settings: &Settings,
    mut probe: Params,
    traffic_port_name: Option<String>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Value>, Sidecar), Verdict> {
    let reach = match upstream::socket(spec, get)? {
        Some(socket) => Reach::Socket(socket),
        None => Reach::Port(upstream::find_port(spec, get(ann::UPSTREAM_PORT))?),
    };
    if let Reach::Port(u) = &reach
        && let Some(host_port) = u.port.host_port
    {
        // The node's port forwards straight to the server's: a path no sidecar can close.
        return Err(Verdict::Error(format!(
            "the MCP server's port {} has hostPort {host_port}, which reaches it around the sentinel; remove hostPort and reach the server through a Service",
            u.port.container_port
        )));
    }
    let path = match get(ann::UPSTREAM_PATH) {
        Some(p) => {
            validate::http_path(p).map_err(|e| bad_annotation(ann::UPSTREAM_PATH, e))?;
            p
        }
        None => settings.upstream_path.as_str(),
    };
    probe.traffic_port_name = match (traffic_port_name, &reach) {
        (Some(n), _) => n,
        (None, Reach::Port(u)) => match &u.port.name {
            Some(n) => n.clone(),
            None => {
                warnings.push(format!(
                    "mcp-sentinel: the upstream port {} has no name; Services must target port name {:?}",
                    u.port.container_port, settings.default_port_name
                ));
                settings.default_port_name.clone()
            }
        },
        // No port to take a name from: Services target the default name, as for stdio.
        (None, Reach::Socket(_)) => settings.default_port_name.clone(),
    };
    probe.upstream_url = match &reach {
        Reach::Port(u) => format!("http://127.0.0.1:{}{path}", u.port.container_port),
        Reach::Socket(s) => format!("unix:{}:{path}", s.path),
    };
    let mut sidecar = template::render(&probe)
        .map_err(|e| Verdict::Error(format!("cannot render the sidecar: {e}")))?;
    match &reach {
        Reach::Port(u) => check_collisions(spec, Some(u), None, &sidecar, settings)?,
        Reach::Socket(s) => {
            check_collisions(
                spec,
                None,
                Some(sidecar.socket_volume_name()),
                &sidecar,
                settings,
            )?;
            let volume = sidecar.socket_volume_name().to_string();
            s.mount_into(&mut sidecar.container, &volume)?;
        }
    }

    if !sidecar.native
        && let Some(policy @ ("Never" | "OnFailure")) = spec.restart_policy.as_deref()
    {
        // A regular sidecar container never exits by itself: the pod would never complete.
        return Err(Verdict::Error(format!(
            "the pod runs to completion (restartPolicy {policy}), which it would never reach beside the sentinel as a regular container; turn native sidecars on (sidecar.nativeSidecar, Kubernetes 1.29+)"
        )));
    }
    if let Reach::Socket(s) = &reach {
        let server = &spec.containers[s.container()];
        let declared: Vec<String> = server
            .ports
            .iter()
            .flatten()
            .map(|p| {
                p.name.as_deref().map_or_else(
                    || p.container_port.to_string(),
                    |n| format!("{n} ({})", p.container_port),
                )
            })
            .collect();
        if !declared.is_empty() {
            warnings.push(format!(
                "mcp-sentinel: the server's container {} still declares port {}: Services that target it reach the server, not the sentinel (which serves port name {:?})",
                server.name,
                declared.join(", "),
                probe.traffic_port_name
            ));
        }
    }
    let mut ops = Vec::new();
    let entry = if sidecar.native {
        "initContainers"
    } else {
        "containers"
    };
    match (json.pointer(&format!("/spec/{entry}")), sidecar.native) {
        (Some(Value::Array(init)), true) => {
            let at = mesh::native_sidecar_position(
                init.iter().map(|c| c["name"].as_str().unwrap_or_default()),
            );
            ops.push(add(&format!("/spec/{entry}/{at}"), &sidecar.container))
        }
        (Some(Value::Array(_)), false) => {
            ops.push(add(&format!("/spec/{entry}/-"), &sidecar.container))
        }
        _ => ops.push(add(&format!("/spec/{entry}"), &json!([sidecar.container]))),
    }
    let mut volumes = sidecar.volumes.clone();
    match &reach {
        Reach::Port(u) => {
            ops.push(add(
                &format!(
                    "/spec/containers/{}/ports/{}/name",
                    u.container, u.port_index
                ),
                &Value::from(sidecar.upstream_port_name.as_str()),
            ));
            if let Some(name) = get(ann::UPSTREAM_HOST_ENV) {
                ops.extend(upstream::loopback_ops(json, spec, u, name)?);
            }
            if let Some(old) = &u.port.name {
                ops.extend(probes::renamed_port_ops(
                    json,
                    u.container,
                    old,
                    u.port.container_port,
                ));
            }
        }
        Reach::Socket(s) => {
            if get(ann::UPSTREAM_HOST_ENV).is_some() {
                return Err(Verdict::Error(format!(
                    "annotations {} and {}: a server on a Unix socket has no address to bind (use {})",
                    ann::UPSTREAM_HOST_ENV,
                    ann::UPSTREAM_SOCKET,
                    ann::UPSTREAM_SOCKET_ENV
                )));
            }
            ops.extend(s.server_ops(json, spec, sidecar.socket_volume_name())?);
            volumes.push(sidecar.socket_volume.clone());
        }
    }
    append(&mut ops, json, "/spec/volumes", &volumes);
    Ok((ops, sidecar))
}

/// The sidecar's labels and Prometheus annotations on the pod (the latter unless it has its own).
fn metadata_ops(
    ops: &mut Vec<Value>,
    json: &Value,
    annotations: &BTreeMap<String, String>,
    sidecar: &Sidecar,
    warnings: &mut Vec<String>,
) {
    let prometheus = |k: &String| k.starts_with("prometheus.io/");
    let has_prometheus = annotations.keys().any(prometheus);
    if has_prometheus && sidecar.pod_annotations.keys().any(prometheus) {
        warnings.push(
            "mcp-sentinel: the pod has prometheus.io annotations of its own; the sidecar's metrics are not announced (use the PodMonitor)".into(),
        );
    }
    let pod_annotations: Vec<(&String, Value)> = sidecar
        .pod_annotations
        .iter()
        .filter(|(k, _)| !(has_prometheus && prometheus(k)))
        .filter_map(|(k, v)| {
            // A mesh's list of ports left alone gets the sidecar's added, not replaced.
            match (
                mesh::PORT_LISTS.contains(&k.as_str()),
                annotations.get(k),
                v,
            ) {
                (true, Some(theirs), Value::String(ours)) => {
                    mesh::with_ports(theirs, ours).map(|v| (k, Value::String(v)))
                }
                _ => Some((k, v.clone())),
            }
        })
        .collect();
    let pod_annotations: Vec<(&String, &Value)> =
        pod_annotations.iter().map(|(k, v)| (*k, v)).collect();
    let labels: Vec<(&String, &Value)> = sidecar.pod_labels.iter().collect();
    insert(ops, json, "/metadata/labels", &labels);
    insert(ops, json, "/metadata/annotations", &pod_annotations);
}

/// When a mesh injected the pod first, its iptables init container has already read the
/// annotations that leave ports alone: the admin port is added to its arguments, so the kubelet's
/// probes reach the sidecar rather than a mesh proxy that may not be up yet (a regular
/// container starts only after the sidecar's startup probe passed) or that refuses plain HTTP
/// (Istio, STRICT mTLS).
fn mesh_init_ops(spec: &PodSpec, admin_port: u16) -> Vec<Value> {
    spec.init_containers
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, c)| {
            let args = c.args.as_deref().unwrap_or_default();
            mesh::exclude_inbound(&c.name, args, admin_port)
                .map(|new| add(&format!("/spec/initContainers/{i}/args"), &json!(new)))
        })
        .collect()
}

/// The sidecar's parameters from the settings; the per-pod ones are filled in by `plan`.
fn template_probe(settings: &Settings) -> Params {
    Params {
        image: settings.image.clone(),
        image_pull_policy: settings.image_pull_policy.clone(),
        upstream_url: String::new(),
        traffic_port_name: settings.default_port_name.clone(),
        traffic_port: settings.traffic_port,
        admin_port: settings.admin_port,
        resources: settings.resources.to_json(),
        config_map: settings.config_map.clone(),
        secret: settings.secret.clone(),
        token_review: settings.token_review.clone(),
        native: settings.native_sidecar,
        env: settings.env.clone(),
    }
}

pub(super) fn bad_annotation(key: &str, why: validate::Invalid) -> Verdict {
    Verdict::Error(format!("annotation {key}: {why}"))
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

/// The sentinel's ports and volumes against the pod's: with `upstream`, the sidecar's (which
/// renames the upstream's port); without, a stdio server's or a socket's (no port renamed).
/// `extra_volume`: the binary's or the socket's volume, added too.
fn check_collisions(
    spec: &PodSpec,
    upstream: Option<&Upstream<'_>>,
    extra_volume: Option<&str>,
    sidecar: &Sidecar,
    settings: &Settings,
) -> Result<(), Verdict> {
    let ours = sidecar.ports();
    let mut names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    if upstream.is_some() {
        names.push(&sidecar.upstream_port_name);
    }
    let mut seen = names.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != names.len() {
        return Err(Verdict::Error(format!(
            "the sidecar's port names {names:?} collide; choose another {}",
            ann::TRAFFIC_PORT_NAME
        )));
    }
    // Which annotation moves the sidecar's port `n`.
    let moved_by = |n: i64| {
        if n == i64::from(sidecar.traffic_port) {
            ann::TRAFFIC_PORT
        } else {
            ann::ADMIN_PORT
        }
    };
    // A mesh's proxy listens on more ports than it declares (Envoy's 15001, 15006...).
    for c in all_containers(spec) {
        let Some(m) = mesh::mesh_of(&c.name) else {
            continue;
        };
        if let Some((_, n)) = ours
            .iter()
            .find(|(_, n)| u16::try_from(*n).is_ok_and(|n| m.holds(n)))
        {
            return Err(Verdict::Error(format!(
                "the sidecar's port {n} is one of {}'s (container {}); set {} to another",
                m.name,
                c.name,
                moved_by(*n)
            )));
        }
    }
    // Init containers too: a native sidecar of the pod's own may listen as well.
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (Some(i), c))
        .chain(spec.init_containers.iter().flatten().map(|c| (None, c)));
    for (ci, c) in containers {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            if let Some((_, n)) = ours.iter().find(|(_, n)| i64::from(p.container_port) == *n) {
                return Err(Verdict::Error(format!(
                    "container {} already uses port {n}, which the sidecar needs; set {} to another",
                    c.name,
                    moved_by(*n)
                )));
            }
            let is_upstream =
                upstream.is_some_and(|u| ci == Some(u.container) && pi == u.port_index);
            // The NetworkPolicy opens the settings' traffic port by number on every pod: a
            // server's port there would be open to all, around the sentinel.
            if i64::from(p.container_port) == i64::from(settings.traffic_port) {
                return Err(Verdict::Error(format!(
                    "container {} declares port {}, which the NetworkPolicy opens for the sentinel on every pod (sidecar.trafficPort): move it off {}, or change sidecar.trafficPort",
                    c.name, p.container_port, p.container_port
                )));
            }
            // The server's port declared a second time (another name, a hostPort): a path to it
            // that is not renamed, and that Services or the node could use.
            if let Some(u) = upstream.filter(|u| {
                !is_upstream
                    && p.container_port == u.port.container_port
                    && p.protocol.as_deref().is_none_or(|proto| proto == "TCP")
            }) {
                return Err(Verdict::Error(format!(
                    "container {} declares the MCP server's port {} a second time{}: it would reach the server around the sentinel; declare it once",
                    c.name,
                    u.port.container_port,
                    p.name
                        .as_deref()
                        .map_or_else(String::new, |n| format!(" (as {n:?})"))
                )));
            }
            if let Some(name) = p
                .name
                .as_deref()
                .filter(|n| !is_upstream && names.contains(n))
            {
                return Err(Verdict::Error(format!(
                    "container {} already has a port named {name:?}",
                    c.name
                )));
            }
        }
    }
    let taken: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let mut volumes = sidecar.volume_names();
    volumes.extend(extra_volume);
    if let Some(v) = volumes.into_iter().find(|v| taken.contains(v)) {
        return Err(Verdict::Error(format!(
            "the pod already has a volume named {v:?}"
        )));
    }
    Ok(())
}

pub(super) fn add(path: &str, value: &Value) -> Value {
    json!({ "op": "add", "path": path, "value": value })
}

/// JSON Pointer escaping of one key (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Appends `items` to the array at `path`, creating it when absent.
pub(super) fn append(ops: &mut Vec<Value>, json: &Value, path: &str, items: &[Value]) {
    if items.is_empty() {
        return;
    }
    if let Some(Value::Array(_)) = json.pointer(path) {
        for item in items {
            ops.push(add(&format!("{path}/-"), item));
        }
    } else {
        ops.push(add(path, &Value::Array(items.to_vec())));
    }
}

/// Sets `entries` in the object at `path`, creating it when absent.
fn insert(ops: &mut Vec<Value>, json: &Value, path: &str, entries: &[(&String, &Value)]) {
    if entries.is_empty() {
        return;
    }
    if let Some(Value::Object(_)) = json.pointer(path) {
        for (k, v) in entries {
            ops.push(add(&format!("{path}/{}", escape(k)), v));
        }
    } else {
        let map: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| ((*k).clone(), (*v).clone()))
            .collect();
        ops.push(add(path, &Value::Object(map)));
    }
}

/// Applies `ops` to a copy of the pod and reads it back: a patch the API server could not apply,
/// or that would produce an unreadable pod, is never sent.
fn verify(json: &Value, ops: Vec<Value>) -> Result<json_patch::Patch, Verdict> {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| Verdict::Error(format!("internal: bad patch: {e}")))?;
    let mut patched = json.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|e| Verdict::Error(format!("internal: the patch does not apply: {e}")))?;
    serde_json::from_value::<Pod>(patched)
        .map_err(|e| Verdict::Error(format!("internal: the patched pod is invalid: {e}")))?;
    Ok(patch)
}
