//! The rate-limited targets: `sentinel-rl-memory` and `sentinel-rl-redis` are the passthrough
//! sentinel plus a `rate_limits` rule that matches every request, keyed by subject and tool,
//! with a budget no run can exhaust (so every request pays for a check and none is refused).
//! The Redis one talks to BENCH_REDIS_ADDR (127.0.0.1:6379, `make services`), whose own
//! round trip the bench measures with PINGs, to hold the Redis limiter to "one round trip".

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

/// Default Redis for `sentinel-rl-redis`.
pub const DEFAULT_REDIS: &str = "127.0.0.1:6379";

/// `base` with a `rate_limits` section on `backend`, written to the work dir.
pub fn sentinel_config(
    base: &Path,
    workdir: &Path,
    name: &str,
    redis: Option<SocketAddr>,
) -> Result<PathBuf> {
    crate::procs::config_with(base, workdir, name, "rate_limits", section(redis))
}

/// The `rate_limits` section: the one rule, in memory or on `redis`.
pub fn section(redis: Option<SocketAddr>) -> serde_json::Value {
    // A million a second per key, with a burst as large: never refused, always checked.
    let rule = json!({"name": "bench", "limits": [{"rate": "1000000/second", "burst": 1_000_000}],
        "key": ["subject", "tool"]});
    match redis {
        None => json!({"backend": "memory", "rules": [rule]}),
        Some(addr) => json!({
            "backend": "redis",
            "redis": {"url": format!("redis://{addr}/0"), "timeout": "100ms",
                "key_prefix": format!("mcp-sentinel-bench:{}:", std::process::id())},
            "rules": [rule],
        }),
    }
}

/// The Redis the bench uses: BENCH_REDIS_ADDR, answering PING.
pub fn redis_addr() -> Result<SocketAddr> {
    let addr = std::env::var("BENCH_REDIS_ADDR").unwrap_or_else(|_| DEFAULT_REDIS.to_owned());
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("BENCH_REDIS_ADDR={addr:?} is not HOST:PORT"))?;
    if round_trips(addr, 1).is_err() {
        bail!(
            "sentinel-rl-redis needs Redis on {addr} (run `make services`, set BENCH_REDIS_ADDR, \
             or leave the target out of BENCH_TARGETS)"
        );
    }
    Ok(addr)
}

/// `n` PING round trips on one connection, one after another.
pub fn round_trips(addr: SocketAddr, n: usize) -> Result<Vec<Duration>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 7];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        s.write_all(b"PING\r\n")?;
        s.read_exact(&mut buf)?;
        out.push(start.elapsed());
        if &buf != b"+PONG\r\n" {
            bail!("Redis on {addr} did not answer PING");
        }
    }
    Ok(out)
}

/// A RESP command.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `n` round trips of the limiter's own check (EVALSHA of its script on one key with the
/// bench rule's numbers), one after another: the Redis work one rate-limited call costs.
pub fn check_round_trips(addr: SocketAddr, n: usize) -> Result<Vec<Duration>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    w.write_all(&command(&[
        b"SCRIPT",
        b"LOAD",
        mcp_sentinel::ratelimit::redis::SCRIPT.as_bytes(),
    ]))?;
    r.read_line(&mut line)?;
    line.clear();
    r.read_line(&mut line)?;
    let sha = line.trim().to_owned();
    ensure!(sha.len() == 40, "SCRIPT LOAD answered {sha:?}");
    let key = format!("mcp-sentinel-bench:{}:rtt", std::process::id());
    let cmd = command(&[
        b"EVALSHA",
        sha.as_bytes(),
        b"1",
        key.as_bytes(),
        b"1",
        b"999999",
        b"1",
    ]);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        w.write_all(&cmd)?;
        line.clear();
        r.read_line(&mut line)?;
        ensure!(line.starts_with("*4"), "EVALSHA answered {line:?}");
        for _ in 0..4 {
            line.clear();
            r.read_line(&mut line)?;
        }
        out.push(start.elapsed());
    }
    Ok(out)
}

/// p50 and p99 of `rtts`.
pub fn percentiles(mut rtts: Vec<Duration>) -> (Duration, Duration) {
    rtts.sort();
    (rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100])
}
