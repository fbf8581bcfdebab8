//! Starts the real sentinel in-process on 127.0.0.1:0 with the shipped example config, and
//! reads its admin endpoints.

use std::path::Path;
use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mcp_sentinel::config::UpstreamUrl;
use mcp_sentinel::{Config, Sentinel};
use serde_json::Value;

use super::metrics::{metric_value, try_metric_value};

pub struct TestSentinel {
    sentinel: Option<Sentinel>,
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin port.
    pub admin: String,
}

/// The shipped `examples/passthrough.yaml`, bound to ephemeral loopback ports.
pub fn passthrough_config(upstream_url: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/passthrough.yaml");
    let mut cfg = Config::load(&path).expect("the example config is valid");
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin_listen = "127.0.0.1:0".parse().unwrap();
    cfg.upstream.url = Some(UpstreamUrl::parse(upstream_url).expect("upstream url"));
    cfg
}

/// A config from YAML text, bound to ephemeral loopback ports, in front of `upstream_url`.
pub fn config_from_yaml(yaml: &str, upstream_url: &str) -> Config {
    let mut cfg = Config::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin_listen = "127.0.0.1:0".parse().unwrap();
    cfg.upstream.url = Some(UpstreamUrl::parse(upstream_url).expect("upstream url"));
    cfg
}

/// A scratch directory for one test, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "mcp-sentinel-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A passthrough sentinel in front of `upstream_url`, ready (upstream answering) on return.
pub async fn start(upstream_url: &str) -> TestSentinel {
    start_with(passthrough_config(upstream_url), true).await
}

/// A sentinel with `cfg`; waits for readiness when `wait_ready`.
pub async fn start_with(cfg: Config, wait_ready: bool) -> TestSentinel {
    let mcp_path = cfg.mcp_path.clone();
    let sentinel = Sentinel::start(cfg).await.expect("sentinel starts");
    let t = TestSentinel {
        url: format!("http://{}{}", sentinel.traffic_addr(), mcp_path),
        admin: format!("http://{}", sentinel.admin_addr()),
        sentinel: Some(sentinel),
    };
    if wait_ready {
        t.wait_ready(Duration::from_secs(10)).await;
    }
    t
}

impl TestSentinel {
    pub fn sentinel(&self) -> &Sentinel {
        self.sentinel.as_ref().expect("running")
    }

    pub async fn get_admin(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("{}{path}", self.admin))
            .await
            .expect("admin port answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("admin body"))
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.get_admin("/metrics").await;
        assert_eq!(status, 200);
        body
    }

    /// The value of one series of `/metrics`, e.g.
    /// `mcp_sentinel_requests_total{method="tools/call",outcome="forwarded"}`; 0 for a counter of a
    /// present family that has not counted these labels yet. Panics when the family is absent
    /// (see [`metric_value`]).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits (up to 2 s) for a series to reach `want`: a request is counted when its response
    /// body is done, which can be a moment after the client has read it.
    pub async fn metric_eventually(&self, series: &str, want: f64) -> f64 {
        self.metric_until(series, Duration::from_secs(2), |v| v == want)
            .await
    }

    /// Waits (up to 10 s) for a series to exceed `min`.
    pub async fn metric_eventually_above(&self, series: &str, min: f64) -> f64 {
        self.metric_until(series, Duration::from_secs(10), |v| v > min)
            .await
    }

    /// Polls a series until `done` holds or `within` has passed, and returns its last value. A
    /// family that is not in the scrape yet may still appear (a first count is registered when
    /// it happens); still absent at the deadline, it panics.
    pub async fn metric_until(
        &self,
        series: &str,
        within: Duration,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let read = try_metric_value(&self.metrics().await, series);
            let late = Instant::now() > deadline;
            match read {
                Ok(v) if done(v) || late => return v,
                Err(e) if late => panic!("{e}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get_admin("/readyz").await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "not ready in {within:?}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drains and stops; true when every connection finished before the deadline.
    pub async fn shutdown(mut self) -> bool {
        self.sentinel.take().expect("running").shutdown().await
    }
}

impl Drop for TestSentinel {
    fn drop(&mut self) {
        if let Some(s) = &self.sentinel {
            s.begin_shutdown();
        }
    }
}

/// The real binary, running.
pub struct Child {
    pub child: std::process::Child,
    pub traffic: String,
    pub admin: String,
}

/// Runs the real binary with the example config on ephemeral ports; the bound addresses are
/// read from its start-up log line.
pub fn spawn_binary(upstream: &str, stdout: Stdio) -> Child {
    started_child(spawn_logged(
        &[
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/passthrough.yaml"),
            "--upstream",
            upstream,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        "mcp-sentinel started",
        stdout,
    ))
}

/// Runs `mcp-sentinel run` the way the Kubernetes sidecar does: no flags, everything from the
/// `MCP_SENTINEL_*` environment (`env`), on ephemeral ports.
pub fn spawn_sidecar(env: &[(&str, &str)], stdout: Stdio) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-sentinel"));
    cmd.arg("run")
        .env("MCP_SENTINEL_LISTEN", "127.0.0.1:0")
        .env("MCP_SENTINEL_ADMIN_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied());
    started_child(spawn_command(cmd, "mcp-sentinel started", stdout))
}

fn started_child((child, started): (std::process::Child, Value)) -> Child {
    Child {
        child,
        traffic: format!("http://{}/mcp", started["traffic"].as_str().unwrap()),
        admin: format!("http://{}", started["admin"].as_str().unwrap()),
    }
}

/// Runs the real binary with `args` (JSON logs on stderr) and returns it with the log line whose
/// message is `started`, which names the addresses it bound. The rest of the log is drained so
/// the child never blocks on a full pipe.
pub fn spawn_logged(args: &[&str], started: &str, stdout: Stdio) -> (std::process::Child, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-sentinel"));
    cmd.args(args);
    spawn_command(cmd, started, stdout)
}

/// `spawn_logged` for a command already built.
fn spawn_command(mut cmd: Command, started: &str, stdout: Stdio) -> (std::process::Child, Value) {
    let mut child = cmd
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the binary exited before logging {started:?}"))
            .expect("utf-8 log");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("JSON log line: {line}"));
        if v["message"] == started {
            break v;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, line)
}
