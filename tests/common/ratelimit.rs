//! Rate-limit test pieces: a sentinel with API keys for three callers and a `rate_limits`
//! section, a tool call as one of them, the exact 429 answer, and Redis servers — the shared
//! one on 127.0.0.1:6379 and throwaway ones on a Unix socket that a test may stop.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::bed::Bed;
use super::client::{RawResponse, raw_post};
use super::keys::{pairs, write_keys};
use super::sentinel::{self, TempDir, TestSentinel};
use super::upstream::UpstreamConfig;

pub const ALICE: &str = "ak_alice_ratelimit_01";
pub const BOB: &str = "ak_bob_ratelimit_02";
pub const CAROL: &str = "ak_carol_ratelimit_03";

/// A sentinel in front of `upstream_url` that knows alice (groups dev, ops), bob (dev) and
/// carol (no group) by API key, with `rate_limits` (indented YAML, without the key).
pub async fn keyed(upstream_url: &str, rate_limits: &str, dir: &TempDir) -> TestSentinel {
    let cfg = sentinel::config_from_yaml(&keyed_yaml(rate_limits, dir), upstream_url);
    sentinel::start_with(cfg, true).await
}

/// A JSON upstream and a [`keyed`] sentinel in front of it: the bed of most rate-limit tests.
pub async fn keyed_bed(tag: &str, rate_limits: &str) -> Bed {
    Bed::start(tag, UpstreamConfig::json(), |dir| {
        keyed_yaml(rate_limits, dir)
    })
    .await
}

/// The keys of alice, bob and carol written into `dir`, and a config with `rate_limits`.
fn keyed_yaml(rate_limits: &str, dir: &TempDir) -> String {
    let keys = dir.path("keys.yaml");
    write_keys(
        &keys,
        &[
            (ALICE, "alice", &["dev", "ops"]),
            (BOB, "bob", &["dev"]),
            (CAROL, "carol", &[]),
        ],
    );
    format!(
        "policy: {{default: allow}}\nauth:\n  api_keys:\n    file: {}\nrate_limits:\n{rate_limits}",
        keys.display()
    )
}

pub fn call_body(id: i64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}})
}

/// `tools/call` of `tool` as the holder of `key` (a stateless 2025-06-18 request).
pub async fn call(url: &str, key: &str, id: i64, tool: &str, arguments: Value) -> RawResponse {
    post(url, key, &call_body(id, tool, arguments)).await
}

pub async fn post(url: &str, key: &str, body: &Value) -> RawResponse {
    let headers = pairs(&[("X-API-Key", key), ("MCP-Protocol-Version", "2025-06-18")]);
    raw_post(url, &headers, body).await
}

pub async fn echo(url: &str, key: &str, id: i64) -> RawResponse {
    call(url, key, id, "echo", json!({"text": "hi"})).await
}

pub async fn add(url: &str, key: &str, id: i64) -> RawResponse {
    call(url, key, id, "add", json!({"a": 1, "b": 2})).await
}

/// Asserts the over-the-rate answer: status, every rate-limit header and the body, exactly but
/// for the wait, which may be up to `WAIT_SLACK` seconds under `wait`.
pub fn assert_limited(
    r: &RawResponse,
    id: Value,
    policy: &str,
    quota: u64,
    window: u64,
    wait: u64,
) {
    assert_eq!(r.status, 429, "{}", r.body);
    // The wait counts down from the budget's first call: the seconds the test's own calls took
    // come off it, and on a loaded machine that is a second or two.
    let got: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a numeric Retry-After: {}", r.body));
    assert!(
        (wait.saturating_sub(WAIT_SLACK)..=wait).contains(&got),
        "Retry-After {got}, want {wait} less at most {WAIT_SLACK} s"
    );
    let wait = got;
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(format!("\"{policy}\";q={quota};w={window}"))
    );
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"{policy}\";r=0;t={wait}"))
    );
    assert_eq!(r.content_type(), "application/json");
    let body: Value = serde_json::from_str(&r.body).expect("a JSON-RPC error body");
    assert_eq!(
        body,
        json!({"jsonrpc":"2.0","id":id,"error":{"code":429,"message":"Rate limit exceeded",
            "data":{"retryAfter":wait,"policy":policy}}})
    );
}

/// How many seconds a test's own calls may take off a budget's wait.
const WAIT_SLACK: u64 = 3;

/// Asserts the fail-closed answer while Redis is down.
pub fn assert_unavailable(r: &RawResponse, id: Value, wait: u64) {
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.header("retry-after").as_deref(),
        Some(wait.to_string().as_str())
    );
    assert_eq!(r.header("ratelimit-policy"), None);
    assert_eq!(r.header("ratelimit"), None);
    let body: Value = serde_json::from_str(&r.body).expect("a JSON-RPC error body");
    assert_eq!(
        body,
        json!({"jsonrpc":"2.0","id":id,"error":{"code":-32603,"message":"Rate limiter unavailable",
            "data":{"retryAfter":wait}}})
    );
}

/// The machine's Redis on 127.0.0.1:6379 (`scripts/services.sh` starts it). Missing is a
/// failure, never a skip.
pub fn shared_redis_url() -> String {
    let addr = "127.0.0.1:6379";
    let answered = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("address"),
        Duration::from_secs(2),
    )
    .ok()
    .and_then(|s| ping(s).then_some(()));
    assert!(
        answered.is_some(),
        "Redis is not answering on {addr}: run scripts/services.sh (these tests need a real Redis)"
    );
    format!("redis://{addr}/0")
}

fn ping(mut s: impl Read + Write) -> bool {
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A process-unique key prefix, so runs and tests never share budgets in the shared Redis.
pub fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("mcp-sentinel-test:{tag}:{}:{nanos}:", std::process::id())
}

/// A `redis-server` of the test's own on a Unix socket in a temp dir: stopped, frozen and
/// restarted at will without touching the shared one.
pub struct OwnRedis {
    child: Option<Child>,
    pub socket: PathBuf,
    dir: TempDir,
}

impl OwnRedis {
    pub fn start(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let mut r = Self {
            child: None,
            socket: dir.path("redis.sock"),
            dir,
        };
        r.restart();
        r
    }

    /// `unix:///…/redis.sock`
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Starts it (again) on the same socket and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = std::os::unix::net::UnixStream::connect(&self.socket)
                .ok()
                .is_some_and(ping);
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "own redis-server did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (connections drop at once).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// SIGSTOP: it keeps its connections but answers nothing — the hanging Redis.
    pub fn freeze(&self, on: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if on { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.stop();
    }
}
