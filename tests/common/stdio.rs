//! Stdio upstreams in tests: the demo server over rmcp's stdio transport, a misbehaving Python
//! server, and configs that run them as the sentinel's children.

use std::path::{Path, PathBuf};

use mcp_sentinel::Config;

pub const SENTINEL: &str = env!("CARGO_BIN_EXE_mcp-sentinel");
pub const FAULTY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stdio/faulty_server.py"
);

/// An example binary built beside the sentinel: `make test` builds the examples first (`cargo
/// build --example ...`; `--all-targets` builds examples only as test harnesses). Not built
/// from here: a cargo run inside the test process sees the test's environment, makes build
/// scripts rerun and the next build recompile their dependents.
pub fn example(name: &str) -> PathBuf {
    let exe = Path::new(SENTINEL)
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        exe.exists(),
        "{} is missing: run `cargo build --example {name}` first (make test does)",
        exe.display()
    );
    exe
}

/// The demo server on stdio (rmcp's stdio transport, both eras).
pub fn demo_stdio() -> Vec<String> {
    vec![example("demo_stdio_upstream").display().to_string()]
}

/// The Python interpreter itself: `python3` on PATH may be a wrapper (pyenv's shim is a shell
/// script that adds variables and processes of its own).
pub fn python() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = std::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 runs (make test installs it)");
            assert!(out.status.success(), "python3 -c failed");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .clone()
}

/// The misbehaving Python server with `flags`.
pub fn faulty(flags: &[&str]) -> Vec<String> {
    let mut argv = vec![python(), FAULTY.to_string()];
    argv.extend(flags.iter().map(|f| f.to_string()));
    argv
}

/// A config from YAML text running `argv` as the upstream, on ephemeral loopback ports, with
/// the built binary as the children's launcher.
pub fn stdio_config(yaml: &str, argv: Vec<String>) -> Config {
    let mut cfg = Config::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin_listen = "127.0.0.1:0".parse().unwrap();
    cfg.upstream.url = None;
    cfg.upstream.command = Some(argv);
    cfg.upstream.stdio.launcher = Some(SENTINEL.into());
    cfg
}

/// Anyone may call anything: for tests of the transport, not the policy.
pub const OPEN: &str = "auth: {anonymous: allow}\npolicy: {default: allow}\nlog: {level: warn}\n";

/// `mcp-sentinel stdio --config <yaml, written in dir> <upstream...>` (`--upstream URL`, or `--`
/// and a program), its stdin, stdout and stderr piped.
pub fn front(
    dir: &super::sentinel::TempDir,
    yaml: &str,
    upstream: &[String],
) -> std::process::Child {
    let config = dir.path("front.yaml");
    std::fs::write(&config, yaml).unwrap();
    std::process::Command::new(SENTINEL)
        .args(["stdio", "--config", config.to_str().unwrap()])
        .args(upstream)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
