//! The audited target: `sentinel-audit` is the passthrough sentinel with the stdout sink (into
//! its log file, as the bench's spawner redirects stdout) and the PostgreSQL sink (table
//! `mcp_sentinel_bench_<pid>_<target>` in BENCH_PG_URL, default the `make services` database,
//! dropped at the end) on. `sentinel-full` has the same two sinks (its stdout a pipe); the
//! other sentinel targets but `sentinel-shipped` (the shipped default: stdout only) run with
//! `audit: {enabled: false}`, so the difference is audit's. Its RSS is sampled after every
//! round: sustained load must not grow it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// BENCH_PG_URL, checked to accept connections.
pub fn pg_url() -> Result<String> {
    let url = std::env::var("BENCH_PG_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned());
    let cfg: tokio_postgres::Config = url
        .parse()
        .with_context(|| format!("BENCH_PG_URL={url:?} is not a PostgreSQL URL"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if rt.block_on(cfg.connect(tokio_postgres::NoTls)).is_err() {
        bail!(
            "sentinel-audit needs PostgreSQL at {url} (run `make services`, set BENCH_PG_URL, or \
             leave the target out of BENCH_TARGETS)"
        );
    }
    Ok(url)
}

/// The PostgreSQL table of `target`'s records.
pub fn table(target: &str) -> String {
    format!(
        "mcp_sentinel_bench_{}_{}",
        std::process::id(),
        target.replace('-', "_")
    )
}

fn with_audit(
    base: &Path,
    workdir: &Path,
    name: &str,
    section: serde_json::Value,
) -> Result<PathBuf> {
    crate::procs::config_with(base, workdir, name, "audit", section)
}

/// The base config of every unaudited sentinel target: audit off, unless `base` sets `audit`.
pub fn unaudited(base: &Path, workdir: &Path) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(base).with_context(|| format!("reading {}", base.display()))?;
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    if config.get("audit").is_some() {
        return Ok(base.to_path_buf());
    }
    with_audit(base, workdir, "sentinel-base", json!({"enabled": false}))
}

pub fn sentinel_config(base: &Path, workdir: &Path, pg: &str) -> Result<PathBuf> {
    let name = "sentinel-audit";
    with_audit(base, workdir, name, section(workdir, pg, name))
}

/// Audit to stdout and to PostgreSQL (table [`table`]`(target)`), a spool in the work dir.
pub fn section(workdir: &Path, pg: &str, target: &str) -> serde_json::Value {
    json!({
        "instance": "bench",
        "spool": {"dir": workdir.join(format!("{target}-spool"))},
        "sinks": [
            {"type": "stdout"},
            {"type": "postgres", "url": pg, "table": table(target)},
        ],
    })
}

/// The sentinel's audit counters (`mcp_sentinel_audit_records_total` lines).
pub fn audit_counters(admin: std::net::SocketAddr) -> Vec<String> {
    metric_lines(admin, "mcp_sentinel_audit_records_total{")
}

/// The lines of a sentinel's `/metrics` that start with `prefix`.
pub fn metric_lines(admin: std::net::SocketAddr, prefix: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return Vec::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Rows `target` delivered, then its table dropped.
pub fn rows_and_drop(pg: &str, target: &str) -> Result<i64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(pg, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let t = table(target);
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await?
            .get(0);
        client.batch_execute(&format!("DROP TABLE {t}")).await?;
        Ok(n)
    })
}

/// RSS after each round must level off: the last sample within 20% (+ 4 MB) of the sample
/// after the first round. Prints the series; true when the bar holds.
pub fn print_rss(samples: &[u64]) -> bool {
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let series: Vec<String> = samples.iter().map(|k| format!("{:.1}", mb(*k))).collect();
    println!(
        "sentinel-audit RSS after each round (MB): {}",
        series.join(", ")
    );
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return true;
    };
    let ok = mb(*last) <= mb(*first) * 1.2 + 4.0;
    println!(
        "  [{}] sentinel-audit RSS stays bounded under sustained load: {:.1} MB after round 1, \
         {:.1} MB after the last",
        if ok { "PASS" } else { "FAIL" },
        mb(*first),
        mb(*last)
    );
    ok
}
