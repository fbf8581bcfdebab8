//! stdio MCP servers: nothing in another container can reach a server that speaks on its
//! stdin/stdout, so the sentinel runs it as its child in the server's own container. An init
//! container copies the static binary into an emptyDir (`install_to`: the image has no shell and
//! no `cp`), and the container's command becomes `mcp-sentinel run … -- <the server's argv>`.

use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};

use super::annotations as ann;
use super::inject::{Verdict, add, append};
use super::template::Sidecar;

/// The binary's file name in the shared volume.
pub const BINARY: &str = "mcp-sentinel";

/// The sidecar's env vars that the wrapped command passes as flags of `run` instead (env would
/// leak into the child). `MCP_SENTINEL_UPSTREAM` is not one: the child is the upstream.
const FLAGS: [(&str, &str); 3] = [
    ("MCP_SENTINEL_CONFIG", "--config"),
    ("MCP_SENTINEL_LISTEN", "--listen"),
    ("MCP_SENTINEL_ADMIN_LISTEN", "--admin-listen"),
];
const UPSTREAM_ENV: &str = "MCP_SENTINEL_UPSTREAM";
/// The sidecar's env vars a stdio server's container goes without (it keeps its own env, which
/// the child may inherit): the pod's identity for tracing's resource. So does everything not
/// `MCP_SENTINEL_*` (OTEL_RESOURCE_ATTRIBUTES, the chart's `sidecar.env`).
const SIDECAR_ONLY: [&str; 2] = ["MCP_SENTINEL_POD_NAME", "MCP_SENTINEL_POD_NAMESPACE"];

const PROBES: [&str; 3] = ["startupProbe", "livenessProbe", "readinessProbe"];

/// The server's argv from the `stdio-command` annotation: a non-empty JSON array of non-empty
/// strings.
pub fn argv(raw: &str) -> Result<Vec<String>, String> {
    let argv: Vec<String> = serde_json::from_str(raw).map_err(|e| {
        format!(
            "annotation {}: not a JSON array of strings (the server's argv, e.g. \
             [\"npx\",\"-y\",\"@modelcontextprotocol/server-everything\"]): {e}",
            ann::STDIO_COMMAND
        )
    })?;
    if argv.is_empty() {
        return Err(format!(
            "annotation {}: the array is empty; it must start with the server's program",
            ann::STDIO_COMMAND
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.is_empty() || a.contains('\0')) {
        return Err(format!(
            "annotation {}: element {i} is empty or holds a NUL character",
            ann::STDIO_COMMAND
        ));
    }
    Ok(argv)
}

/// The index of the stdio server's container: the `stdio-container` annotation's, else
/// `kubectl.kubernetes.io/default-container`'s, else the pod's only container.
pub(super) fn container<'a>(
    spec: &PodSpec,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<usize, Verdict> {
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let position = |name: &str| names.iter().position(|n| *n == name);
    if let Some(wanted) = get(ann::STDIO_CONTAINER) {
        return position(wanted).ok_or_else(|| {
            Verdict::Error(format!(
                "annotation {}: the pod has no container {wanted:?} (it has {names:?})",
                ann::STDIO_CONTAINER
            ))
        });
    }
    if let Some(i) = get(ann::DEFAULT_CONTAINER).and_then(position) {
        return Ok(i);
    }
    match names.len() {
        1 => Ok(0),
        n => Err(Verdict::Error(format!(
            "the pod has {n} containers {names:?}; set {} to the stdio server's",
            ann::STDIO_CONTAINER
        ))),
    }
}

/// The JSON Patch that wraps container `index`: the binary's init container and volume first,
/// then the container runs the sentinel with `argv` as its child, on the sidecar's ports,
/// probes and mounts. The pod's metadata is the caller's.
pub(super) fn wrap(
    json: &Value,
    spec: &PodSpec,
    index: usize,
    argv: &[String],
    sidecar: &Sidecar,
    warnings: &mut Vec<String>,
) -> Result<Vec<Value>, Verdict> {
    let server = &spec.containers[index];
    let ours = &sidecar.container;
    let at = |field: &str| format!("/spec/containers/{index}/{field}");

    let mut command = vec![Value::from(sidecar.stdio.binary()), "run".into()];
    for env in ours["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().unwrap_or_default();
        if name == UPSTREAM_ENV
            || SIDECAR_ONLY.contains(&name)
            || !name.starts_with("MCP_SENTINEL_")
        {
            continue;
        }
        let Some((_, flag)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(Verdict::Error(format!(
                "internal: the sidecar template sets {name}, which a stdio server's command has no flag for"
            )));
        };
        command.extend([Value::from(*flag), env["value"].clone()]);
    }
    command.push("--".into());
    command.extend(argv.iter().map(|a| Value::from(a.as_str())));

    let mut mounts = vec![sidecar.stdio.volume_mount.clone()];
    mounts.extend(
        ours["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    for m in &mounts {
        let path = m["mountPath"].as_str().unwrap_or_default();
        if server
            .volume_mounts
            .iter()
            .flatten()
            .any(|own| own.mount_path.trim_end_matches('/') == path)
        {
            return Err(Verdict::Error(format!(
                "container {} already mounts a volume at {path}, which the sentinel needs",
                server.name
            )));
        }
    }

    let replaced: Vec<&str> = PROBES
        .into_iter()
        .filter(|p| json.pointer(&at(p)).is_some())
        .collect();
    if !replaced.is_empty() {
        warnings.push(format!(
            "mcp-sentinel: the {} container's own {} replaced by the sentinel's (admin port /healthz, /readyz)",
            server.name,
            if replaced.len() == 1 {
                format!("{} is", replaced[0])
            } else {
                format!("{} are", replaced.join(", "))
            }
        ));
    }

    let mut ops = Vec::new();
    match json.pointer("/spec/initContainers") {
        Some(Value::Array(_)) => ops.push(add("/spec/initContainers/0", &sidecar.stdio.install)),
        _ => ops.push(add("/spec/initContainers", &json!([sidecar.stdio.install]))),
    }
    ops.push(add(&at("command"), &Value::Array(command)));
    if json.pointer(&at("args")).is_some() {
        ops.push(json!({ "op": "remove", "path": at("args") }));
    }
    let ports = ours["ports"].as_array().cloned().unwrap_or_default();
    append(&mut ops, json, &at("ports"), &ports);
    append(&mut ops, json, &at("volumeMounts"), &mounts);
    for probe in PROBES {
        if let Some(p) = ours.get(probe) {
            ops.push(add(&at(probe), p));
        }
    }
    let mut volumes = sidecar.volumes.clone();
    volumes.push(sidecar.stdio.volume.clone());
    append(&mut ops, json, "/spec/volumes", &volumes);
    Ok(ops)
}

/// `mcp-sentinel install-to DIR`, the init container's command: copies the running binary to
/// `DIR/mcp-sentinel`, mode 0755.
pub fn install_to(dir: &Path) -> io::Result<PathBuf> {
    install_from(&std::env::current_exe()?, dir)
}

/// Copies `exe` to `DIR/mcp-sentinel`, mode 0755, through a temporary file renamed into place:
/// a copy some process still runs (a restarted pod's) is replaced, never rewritten.
pub fn install_from(exe: &Path, dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let target = dir.join(BINARY);
    let partial = dir.join(format!(".{BINARY}.partial"));
    std::fs::copy(exe, &partial)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_copies_the_binary_executable_and_replaces_a_previous_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mcp-sentinel-install-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("source");
        std::fs::write(&exe, b"\x7fELF new").unwrap();
        std::fs::write(dir.join(BINARY), b"old").unwrap();
        std::fs::set_permissions(dir.join(BINARY), std::fs::Permissions::from_mode(0o500)).unwrap();

        let target = install_from(&exe, &dir).unwrap();
        assert_eq!(target, dir.join(BINARY));
        assert_eq!(std::fs::read(&target).unwrap(), b"\x7fELF new");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [BINARY, "source"]);

        let missing = install_from(&exe, &dir.join("absent")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn argv_is_a_non_empty_array_of_non_empty_strings() {
        assert_eq!(
            argv(r#"["npx", "-y", "@modelcontextprotocol/server-everything"]"#).unwrap(),
            ["npx", "-y", "@modelcontextprotocol/server-everything"]
        );
        for (raw, expect) in [
            ("npx -y server", "not a JSON array of strings"),
            (r#""npx""#, "not a JSON array of strings"),
            (r#"["npx", 1]"#, "not a JSON array of strings"),
            (r#"{"cmd": "npx"}"#, "not a JSON array of strings"),
            ("[]", "the array is empty"),
            (r#"["npx", ""]"#, "element 1 is empty"),
            (r#"["np\u0000x"]"#, "element 0 is empty or holds a NUL"),
        ] {
            let err = argv(raw).unwrap_err();
            assert!(
                err.starts_with("annotation mcp-sentinel.io/stdio-command: ")
                    && err.contains(expect),
                "{raw}: {err}"
            );
        }
    }
}
