//! The stdio target: `sentinel-stdio` is the passthrough sentinel (audit off, as every target
//! but `sentinel-audit`) running this bench binary as its stdio MCP server, in the role that
//! answers as the HTTP upstream does (upstream.rs, `main_stdio`). Each load-generator connection
//! opens a legacy session, which the sentinel serves with a child of its own: up to the largest
//! BENCH_CONNS children at once, plus the warm pool that modern-era requests would use.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::procs::Upstream;

/// Children allowed at once: the default 64 would refuse sessions at 64 connections plus the
/// pool, and ended sessions take a moment to free their slot.
const MAX_CHILDREN: u64 = 256;

/// How the report describes the target's stdio settings.
pub const SETTINGS: &str = "upstream.stdio.max_children 256, pool 2 (the default)";

/// The base config with `upstream.stdio.max_children` raised, as `sentinel-stdio.yaml`. The
/// file's `upstream.url` stays: `-- PROG ARGS` on the command line takes its place.
pub fn sentinel_config(base: &Path, workdir: &Path) -> Result<PathBuf> {
    crate::procs::config_edited(base, workdir, "sentinel-stdio", |map| {
        let upstream = map
            .entry("upstream".into())
            .or_insert_with(|| serde_yaml_ng::Mapping::new().into())
            .as_mapping_mut()
            .context("upstream is not a mapping")?;
        upstream.insert(
            "stdio".into(),
            serde_yaml_ng::to_value(serde_json::json!({ "max_children": MAX_CHILDREN }))?,
        );
        Ok(())
    })
}

/// This binary in its stdio-server role, as the sentinel's `-- PROG ARGS`.
pub fn command(role_flag: &str) -> Result<Upstream> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    Ok(Upstream::Command(vec![
        exe.into_os_string(),
        OsString::from(role_flag),
    ]))
}
