//! The command-line contract: `--version`, `check` (exit 64 with every error listed), `run`
//! refusing a bad config, environment variables standing in for flags, every shipped
//! example config being valid, and the hidden `schema config`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-sentinel");

fn tmp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-sentinel-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `args` (stdin closed) to the end.
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Asserts the run was refused (exit 64) and returns its stderr.
fn refused(out: Output) -> String {
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 stderr");
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    stderr
}

#[test]
fn version() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("mcp-sentinel {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_example_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = run(&["check", "--config", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert!(stdout.contains(": valid"), "{stdout}");
            assert!(
                stdout.contains("upstream: http://127.0.0.1:8080/mcp"),
                "{stdout}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "examples/passthrough.yaml was checked");
}

#[test]
fn check_lists_every_error_and_exits_64() {
    let bad = tmp_file(
        "bad.yaml",
        "listen: nowhere\nupstream:\n  url: ftp://x/mcp\n  timeout: soon\n  colour: blue\nlimits:\n  max_body_bytes: 0\nextra: 1\n",
    );
    let stderr = refused(run(&["check", "--config", bad.to_str().unwrap()]));
    let file = bad.display().to_string();
    assert!(stderr.starts_with("8 errors in config:"), "{stderr}");
    for (key, why) in [
        ("listen", "is not an address"),
        ("upstream.url", "scheme \"ftp\" is not supported"),
        ("upstream.timeout", "is not a duration"),
        ("upstream.colour", "unknown key"),
        ("limits.max_body_bytes", "must be greater than zero"),
        ("extra", "unknown key"),
        ("auth", "no authenticator is configured"),
        ("policy", "is required"),
    ] {
        assert!(
            stderr.contains(&format!("{file}: {key}: ")),
            "{key} missing: {stderr}"
        );
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap();
        assert!(line.contains(why), "{line}");
    }
}

#[test]
fn check_reports_an_unreadable_file() {
    assert!(
        refused(run(&["check", "--config", "/nonexistent/sentinel.yaml"])).contains("cannot read")
    );
}

#[test]
fn run_refuses_an_invalid_config() {
    let bad = tmp_file(
        "run-bad.yaml",
        "upstream:\n  url: http://127.0.0.1:1/mcp\nunknown_section: {}\n",
    );
    assert!(
        refused(run(&["run", "--config", bad.to_str().unwrap()]))
            .contains("unknown_section: unknown key")
    );
    // No upstream anywhere: refused the same way.
    let stderr = refused(
        Command::new(BIN)
            .args(["run", "--listen", "127.0.0.1:0"])
            .env_remove("MCP_SENTINEL_UPSTREAM")
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert!(stderr.contains("upstream.url: required"), "{stderr}");
    // Secure by default: no authenticator and no `anonymous: allow` is refused too.
    assert!(
        stderr.contains("auth: no authenticator is configured"),
        "{stderr}"
    );
    assert!(
        refused(run(&["run", "--upstream", "http://127.0.0.1:1/mcp"])).contains("anonymous: allow")
    );
    refused(run(&["run", "--upstream", "https://x/mcp"]));
}

#[test]
fn environment_variables_stand_in_for_flags_and_override_the_file() {
    let mut child = Command::new(BIN)
        .arg("run")
        .env(
            "MCP_SENTINEL_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/passthrough.yaml"),
        )
        .env("MCP_SENTINEL_UPSTREAM", "http://127.0.0.1:9/other")
        .env("MCP_SENTINEL_LISTEN", "127.0.0.1:0")
        .env("MCP_SENTINEL_ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut started = None;
    for line in lines {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["message"] == "mcp-sentinel started" {
            started = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = started.expect("the sentinel started");
    assert_eq!(v["upstream"], "http://127.0.0.1:9/other");
    assert!(v["traffic"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_ne!(
        v["traffic"], "127.0.0.1:15080",
        "the env var overrides the file"
    );
    assert_ne!(v["admin"], "127.0.0.1:15090");
    assert_eq!(v["level"], "INFO");
}

#[test]
fn a_config_without_a_policy_is_refused() {
    let path = tmp_file("no-policy.yaml", "auth: {anonymous: allow}\n");
    let stderr = refused(run(&["check", "--config", path.to_str().unwrap()]));
    assert!(
        stderr.contains("no-policy.yaml: policy: is required"),
        "{stderr}"
    );
    let path = tmp_file(
        "empty-policy.yaml",
        "auth: {anonymous: allow}\npolicy: {}\n",
    );
    let stderr = refused(run(&["check", "--config", path.to_str().unwrap()]));
    assert!(
        stderr.contains("policy.default: is required (allow or deny)"),
        "{stderr}"
    );
}

const LINTED: &str = "auth:
  anonymous: allow
  scopes_supported: [tools:read]
policy:
  default: deny
  rules:
    - {name: no-admin, effect: deny, tools: [\"admin_*\"]}
    - {name: ops-reset, effect: allow, groups: [ops], tools: [admin_reset]}
    - name: small-transfers
      effect: allow
      groups: [finance]
      scopes: [tools:transfer]
      tools: [transfer]
      arguments: [{path: /amount, range: {max: 100}}]
";

#[test]
fn check_warns_about_rules_that_never_match_and_strict_fails() {
    let path = tmp_file("linted.yaml", LINTED);
    let out = run(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "warning: policy: rules[1] (ops-reset): can never match: the earlier deny rule \"no-admin\" matches every call it matches",
            "warning: policy: rules[2] (small-transfers): scope \"tools:transfer\" is not in auth.scopes_supported, so no token is issued with it",
        ]
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("policy: inline, 4 rules, default deny"),
        "{stdout}"
    );
    assert!(
        refused(run(&[
            "check",
            "--strict",
            "--config",
            path.to_str().unwrap()
        ]))
        .contains("2 warnings (--strict)")
    );
}

#[test]
fn explain_names_the_deciding_rule() {
    let path = tmp_file("explain.yaml", LINTED);
    let explain = |extra: &[&str]| {
        let out = run(&[&["explain", "--config", path.to_str().unwrap()], extra].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let base = [
        "--subject",
        "fin-1",
        "--group",
        "finance",
        "--method",
        "tools/call",
        "--tool",
        "transfer",
    ];
    assert_eq!(
        explain(
            &[
                &base[..],
                &["--scope", "tools:transfer", "--args", r#"{"amount": 50}"#]
            ]
            .concat()
        ),
        "decision: allow\nreason: rule\nrule: small-transfers\n"
    );
    assert_eq!(
        explain(
            &[
                &base[..],
                &["--scope", "tools:transfer", "--args", r#"{"amount": 500}"#]
            ]
            .concat()
        ),
        "decision: deny\nreason: default\nrule: default\n"
    );
    assert_eq!(
        explain(&[&base[..], &["--args", r#"{"amount": 50}"#]].concat()),
        "decision: deny\nreason: insufficient_scope\nrule: small-transfers\nmissing scopes: tools:transfer\n"
    );
    assert_eq!(
        explain(&[
            "--subject",
            "o",
            "--group",
            "ops",
            "--method",
            "tools/call",
            "--tool",
            "admin_reset"
        ]),
        "decision: deny\nreason: rule\nrule: no-admin\n"
    );
    assert_eq!(
        explain(&["--subject", "o", "--method", "tools/list"]),
        "decision: allow\nreason: builtin\nrule: builtin\n"
    );
    let out = run(&[
        "explain",
        "--config",
        path.to_str().unwrap(),
        "--subject",
        "x",
        "--method",
        "tools/call",
        "--tool",
        "t",
        "--args",
        "{nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--args is not JSON"));
}

#[test]
fn explain_and_check_know_issuers() {
    let path = tmp_file(
        "issuers.yaml",
        "auth:
  anonymous: allow
policy:
  default: deny
  rules:
    - {name: corp-alice, effect: allow, subjects: [alice], issuers: [\"https://corp.example\"], tools: [deploy]}
",
    );
    let run = |args: &[&str]| run(&[args, &["--config", path.to_str().unwrap()]].concat());
    let call = [
        "explain",
        "--subject",
        "alice",
        "--method",
        "tools/call",
        "--tool",
        "deploy",
    ];
    for (issuer, want) in [
        (
            Some("https://corp.example"),
            "decision: allow\nreason: rule\nrule: corp-alice\n",
        ),
        (
            Some("https://corp.example.evil"),
            "decision: deny\nreason: default\nrule: default\n",
        ),
        (None, "decision: deny\nreason: default\nrule: default\n"),
    ] {
        let mut args = call.to_vec();
        args.extend(issuer.map(|i| ["--issuer", i]).iter().flatten());
        let out = run(&args);
        assert!(out.status.success(), "{issuer:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{issuer:?}");
    }
    // Only JWT callers have an issuer.
    let mut args = call.to_vec();
    args.extend([
        "--auth-method",
        "api_key",
        "--issuer",
        "https://corp.example",
    ]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--issuer is for --auth-method jwt"));
    // No JWT issuer is configured, so the rule's issuer is nobody's.
    let out = run(&["check"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .collect::<Vec<_>>(),
        [
            "warning: policy: rules[0] (corp-alice): issuer \"https://corp.example\" matches no issuer in auth.jwt, so no caller has it"
        ]
    );
}

/// An answer written to a reader that is gone (`mcp-sentinel check … | head -c0`) ends the
/// command as SIGPIPE ends a Unix tool (141), never with a panic.
#[test]
fn a_closed_stdout_ends_the_command_without_a_panic() {
    for args in [
        &["check", "--config", "examples/passthrough.yaml"][..],
        &[
            "explain",
            "--config",
            "examples/passthrough.yaml",
            "--subject",
            "alice",
            "--method",
            "tools/call",
            "--tool",
            "echo",
        ][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_mcp-sentinel"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}

/// The hidden `schema config` prints the config's JSON Schema; with `--sidecar`, exactly the
/// chart's `sidecar.config` (which scripts/schema-generate.sh writes from it).
#[test]
fn schema_config_prints_the_generated_schema() {
    let out = run(&["schema", "config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(full["additionalProperties"], false);
    assert_eq!(full["properties"]["listen"]["type"], "string");
    let out = run(&["schema", "config", "--sidecar"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sidecar: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/mcp-sentinel/values.schema.json"
    );
    let chart: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart).unwrap()).unwrap();
    assert_eq!(
        sidecar,
        chart["properties"]["sidecar"]["properties"]["config"]
    );
    assert_eq!(sidecar["properties"]["listen"], serde_json::Value::Null);
    let help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    assert!(!help.contains("schema"), "hidden: {help}");
}

/// A long-running sentinel runs with mimalloc's memory-saving options (see `ALLOCATOR_ENV` in
/// src/main.rs), set by running itself again when its caller did not set them; a caller's own
/// value is kept. Same process: the pid the caller started is the sentinel.
#[test]
fn a_running_sentinel_has_the_allocator_options() {
    for (given, expect) in [
        (
            None,
            ["MIMALLOC_ARENA_EAGER_COMMIT=0", "MIMALLOC_PURGE_DELAY=0"],
        ),
        (
            Some(("MIMALLOC_PURGE_DELAY", "7")),
            ["MIMALLOC_ARENA_EAGER_COMMIT=0", "MIMALLOC_PURGE_DELAY=7"],
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-sentinel"));
        cmd.args([
            "run",
            "--config",
            "examples/passthrough.yaml",
            "--upstream",
            "http://127.0.0.1:9/mcp",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
        .env_remove("MIMALLOC_PURGE_DELAY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some((k, v)) = given {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().contains("mcp-sentinel started")),
            "the sentinel starts"
        );
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let environ: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MIMALLOC_"))
            .collect();
        let mut environ = environ;
        environ.sort();
        assert_eq!(environ, expect, "{given:?}");
    }
}

/// `check` with `OTEL_*` variables set (and every other one of them removed).
fn check_with_env(path: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config", path.to_str().unwrap()])
        .stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn check_validates_tracing_with_the_otel_environment() {
    let base = "auth: {anonymous: allow}\npolicy: {default: allow}\n";
    let off = tmp_file("tracing-off.yaml", base);
    let out = check_with_env(&off, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("tracing: off"));

    // The file turns it on and sets the protocol; the environment fills in the rest.
    let on = tmp_file(
        "tracing-on.yaml",
        &format!("{base}tracing:\n  enabled: true\n  protocol: http/protobuf\n"),
    );
    let out = check_with_env(
        &on,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret-123"),
            ("OTEL_SERVICE_NAME", "svc-from-env"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("tracing: OTLP http/protobuf to http://collector:4318/v1/traces"),
        "{stdout}"
    );
    assert!(stdout.contains("service svc-from-env") && stdout.contains("ratio 0.25"));
    assert!(stdout.contains("x-api-key") && !stdout.contains("secret-123"));

    // A bad variable is an error like a bad key, with exit 64; so is an unknown key.
    let stderr = refused(check_with_env(&on, &[("OTEL_TRACES_SAMPLER_ARG", "2")]));
    assert!(stderr.contains("OTEL_TRACES_SAMPLER_ARG"), "{stderr}");
    let bad = tmp_file(
        "tracing-bad.yaml",
        &format!("{base}tracing:\n  enabled: true\n  endpoint: ftp://x:4317\n  colour: red\n"),
    );
    let stderr = refused(check_with_env(&bad, &[]));
    assert!(
        stderr.contains("tracing.endpoint") && stderr.contains("tracing.colour"),
        "{stderr}"
    );
    // Turned on by the environment alone.
    let out = check_with_env(&off, &[("OTEL_TRACES_EXPORTER", "otlp")]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("tracing: OTLP grpc to http://localhost:4317")
    );
}

#[test]
fn check_reads_the_tls_files_for_the_collector() {
    let base = "auth: {anonymous: allow}\npolicy: {default: allow}\n";
    let ca = rcgen::generate_simple_self_signed(vec!["otel".to_string()]).unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["sentinel".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
    let ca_file = tmp_file("otel-ca.pem", &ca.cert.pem());
    let cert_file = tmp_file("otel-client.pem", &client.cert.pem());
    let key_file = tmp_file("otel-client.key", &client.signing_key.serialize_pem());
    let other_key = tmp_file("otel-other.key", &other.signing_key.serialize_pem());
    let not_pem = tmp_file("otel-not-pem.pem", "not a certificate\n");
    let config = |name: &str, endpoint: &str, ca: &std::path::Path, key: &std::path::Path| {
        tmp_file(
            name,
            &format!(
                "{base}tracing:\n  enabled: true\n  endpoint: {endpoint}\n  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
                ca.display(),
                cert_file.display(),
                key.display()
            ),
        )
    };

    let good = config("tls-good.yaml", "https://otel:4317", &ca_file, &key_file);
    let out = check_with_env(&good, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let expected = format!(
        "TLS on: CA {} (tracing.tls.ca_file), client certificate {} with key {}",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    );
    assert!(stdout.contains(&expected), "{stdout}");

    let missing = std::path::Path::new("/nonexistent/otel-ca.pem");
    let stderr = refused(check_with_env(
        &config("tls-missing.yaml", "https://otel:4317", missing, &key_file),
        &[],
    ));
    assert!(
        stderr.contains("tracing.tls.ca_file") && stderr.contains("/nonexistent/otel-ca.pem"),
        "{stderr}"
    );
    let stderr = refused(check_with_env(
        &config("tls-not-pem.yaml", "https://otel:4317", &not_pem, &key_file),
        &[],
    ));
    assert!(stderr.contains("tracing.tls.ca_file"), "{stderr}");
    // A key that is not the certificate's; the key itself is never printed.
    let stderr = refused(check_with_env(
        &config(
            "tls-wrong-key.yaml",
            "https://otel:4317",
            &ca_file,
            &other_key,
        ),
        &[],
    ));
    assert!(
        stderr.contains("tracing.tls.cert_file and tracing.tls.key_file"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    let stderr = refused(check_with_env(
        &config(
            "tls-key-is-cert.yaml",
            "https://otel:4317",
            &ca_file,
            &ca_file,
        ),
        &[],
    ));
    assert!(
        stderr.contains("tracing.tls.key_file") && stderr.contains("no PEM private key"),
        "{stderr}"
    );
    // TLS settings with an http:// endpoint.
    let stderr = refused(check_with_env(
        &config("tls-http.yaml", "http://otel:4317", &ca_file, &key_file),
        &[],
    ));
    assert!(
        stderr.contains("tracing.tls.ca_file: TLS settings need an https:// endpoint"),
        "{stderr}"
    );
    // Half a pair in the file is refused by the reader.
    let half = tmp_file(
        "tls-half.yaml",
        &format!(
            "{base}tracing:\n  enabled: true\n  endpoint: https://otel:4317\n  tls: {{cert_file: {}}}\n",
            cert_file.display()
        ),
    );
    let stderr = refused(check_with_env(&half, &[]));
    assert!(
        stderr.contains("tracing.tls") && stderr.contains("set both or neither"),
        "{stderr}"
    );

    // From the environment: the variable is named.
    let off = tmp_file("tls-env.yaml", base);
    let stderr = refused(check_with_env(
        &off,
        &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/otel-ca.pem"),
        ],
    ));
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        "{stderr}"
    );
    let out = check_with_env(
        &off,
        &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("OTLP grpc to https://otel:4317 (TLS on: CA")
            && stdout.contains("(OTEL_EXPORTER_OTLP_CERTIFICATE), client certificate none"),
        "{stdout}"
    );
}
