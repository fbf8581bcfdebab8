//! Audit test pieces: a keyed sentinel with an `audit` section, the shared PostgreSQL on
//! 127.0.0.1:5432 (database `test`) and Redis, throwaway PostgreSQL clusters a test may stop,
//! and readers of what each sink holds.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::keys::write_keys;
use super::sentinel::{self, TempDir, TestSentinel};

pub const ALICE: &str = "ak_alice_audit_01";

/// The machine's PostgreSQL (`scripts/services.sh` starts it). Missing is a failure.
pub fn shared_pg_url() -> String {
    let addr = "127.0.0.1:5432";
    assert!(
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
            .is_ok(),
        "PostgreSQL is not answering on {addr}: run scripts/services.sh (these tests need a real PostgreSQL)"
    );
    format!("postgres://postgres@{addr}/test")
}

/// A table (or stream) name no other test or run uses.
pub fn unique_name(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("audit_{tag}_{}_{nanos}_{n}", std::process::id())
}

/// A sentinel that knows alice (groups dev) by API key, with `extra` (top-level YAML: policy,
/// rate_limits) and `audit` (indented YAML, without the key).
pub async fn audited(upstream_url: &str, extra: &str, audit: &str, dir: &TempDir) -> TestSentinel {
    audited_ready(upstream_url, extra, audit, dir, true).await
}

/// `audited`, waiting for readiness (the upstream answering) only when `ready`.
pub async fn audited_ready(
    upstream_url: &str,
    extra: &str,
    audit: &str,
    dir: &TempDir,
    ready: bool,
) -> TestSentinel {
    let keys = dir.path("keys.yaml");
    write_keys(&keys, &[(ALICE, "alice", &["dev"])]);
    let yaml = format!(
        "auth:\n  api_keys:\n    file: {}\n{extra}\naudit:\n{audit}",
        keys.display()
    );
    let cfg = sentinel::config_from_yaml(&yaml, upstream_url);
    sentinel::start_with(cfg, ready).await
}

/// Records of a PostgreSQL sink table, in the order they arrived.
pub async fn pg_records(url: &str, table: &str) -> Vec<Value> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(conn);
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return Vec::new();
    }
    client
        .query(&format!("SELECT line FROM {table} ORDER BY n"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect()
}

pub async fn pg_exec(url: &str, sql: &str) -> u64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(conn);
    client.execute(sql, &[]).await.unwrap()
}

pub async fn redis_records(url: &str, stream: &str) -> Vec<Value> {
    mcp_sentinel::audit::verify::read_redis(url, stream)
        .await
        .expect("Redis answers")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn file_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `read` until it returns `n` records (at most `within`); then a moment more, to catch
/// any extra (duplicate) ones.
pub async fn wait_records<F, Fut>(n: usize, within: Duration, mut read: F) -> Vec<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Value>>,
{
    let deadline = Instant::now() + within;
    loop {
        let got = read().await;
        if got.len() >= n || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return read().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `mcp-sentinel audit verify ARGS`: exit code and stdout.
pub fn verify(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-sentinel"))
        .args(["audit", "verify"])
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Sequence numbers of one chain's records, in the order the sink holds them.
pub fn seqs(records: &[Value], instance: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["instance"] == instance)
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

/// A PostgreSQL cluster of the test's own (initdb in a temp dir, Unix socket only) that a
/// test may stop and start. Run as the `postgres` user when the tests run as root.
pub struct OwnPostgres {
    dir: TempDir,
    data: PathBuf,
    running: bool,
}

fn pg_bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            let mut v: Vec<PathBuf> = d.filter_map(|e| Some(e.ok()?.path())).collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    versions
        .last()
        .map(|v| v.join("bin").join(name))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn as_owner(bin: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
        c
    } else {
        Command::new(pg_bin(bin))
    }
}

impl OwnPostgres {
    pub fn start(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let data = dir.path("data");
        let out = as_owner("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb (the Debian postgresql package) is installed");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            dir,
            data,
            running: false,
        };
        pg.restart();
        pg
    }

    /// libpq key/value form: the Unix socket directory as host.
    pub fn url(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.dir.0.display()
        )
    }

    pub fn restart(&mut self) {
        assert!(!self.running, "already running");
        let opts = format!(
            "-c listen_addresses='' -k {} -c fsync=off",
            self.dir.0.display()
        );
        let out = as_owner("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path("log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "own PostgreSQL did not start: {}",
            std::fs::read_to_string(self.dir.path("log")).unwrap_or_default()
        );
        self.running = true;
    }

    /// Immediate shutdown: connections drop at once.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = as_owner("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
