//! Tool integrity's cost (issue 17), BENCH_WORKLOADS entry `integrity`: a 50-tool `tools/list`
//! and a 64 KiB `tools/call` result (log lines, no secret: the common case), through the sentinel
//! with audit off and integrity off (`sentinel`), beside the same config with `integrity` on
//! (`sentinel-integrity`: a pins file holding the 50 tools, the description scanner, the secret
//! scanner, each with its defaults). Interleaved rounds at each BENCH_CONNS; the table shows
//! throughput, p50 and CPU per request (medians over the rounds), and what integrity adds.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use mcp_sentinel::integrity::fingerprint::{Definition, Kind as DefKind};
use mcp_sentinel::integrity::pins::PinSet;

use crate::loadgen::{self, Check, Workload};
use crate::procs::{self, Stdout};
use crate::report::Measure;
use crate::settings::{Kind, Settings};
use crate::throughput::{Target, measure};
use crate::upstream;

fn workloads() -> [Workload; 2] {
    [
        Workload {
            key: "list50",
            title: "tools/list, 50 tools with schemas",
            body: Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{{"cursor":"{}"}}}}"#,
                upstream::FIFTY_CURSOR
            )),
            check: Check::ToolsList {
                tools: upstream::FIFTY_TOOLS,
            },
        },
        Workload {
            key: "result64k",
            title: "tools/call, a 64 KiB text result",
            body: Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"{}","arguments":{{}}}}}}"#,
                upstream::TEXT64K_TOOL
            )),
            check: Check::Json,
        },
    ]
}

/// The `integrity` section of `sentinel-integrity`, with its pins file written to `workdir`.
fn section(workdir: &Path) -> Result<serde_json::Value> {
    let mut tools = upstream::tools(upstream::FIFTY_TOOLS);
    // The tool the 64 KiB result comes from, which the list does not show: pinned by name, so
    // its call is not refused as unpinned.
    tools.push(serde_json::json!({ "name": upstream::TEXT64K_TOOL }));
    let defs: Vec<Definition> = tools
        .iter()
        .filter_map(|t| Definition::of(DefKind::Tool, t))
        .collect();
    let pins = workdir.join("pins-50.json");
    std::fs::write(&pins, PinSet::from_definitions(None, &defs).to_json())
        .with_context(|| format!("writing {}", pins.display()))?;
    Ok(serde_json::json!({"pins_file": pins, "descriptions": {}, "secrets": {}}))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(
    settings: &Settings,
    workdir: &Path,
    upstream_addr: SocketAddr,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let http = procs::Upstream::Http(upstream_addr);
    let on_config = procs::config_with(
        &settings.sentinel_config,
        workdir,
        Kind::SentinelIntegrity.name(),
        "integrity",
        section(workdir)?,
    )?;
    let mut procs_kept = Vec::new();
    let mut targets = Vec::new();
    for (kind, config) in [
        (Kind::Sentinel, settings.sentinel_config.as_path()),
        (Kind::SentinelIntegrity, on_config.as_path()),
    ] {
        let s = procs::start_sentinel(
            &format!("{}-integrity-bench", kind.name()),
            workdir,
            &settings.sentinel_bin,
            config,
            &http,
            Stdout::LogFile,
        )?;
        targets.push(Target::new(kind, s.addr, s.proc.pid()));
        procs_kept.push(s);
    }
    let run_for = Duration::from_secs_f64(settings.seconds);
    println!();
    println!(
        "tool integrity's cost · {} rounds × {} s, interleaved; sentinel = {} (audit off), \
         sentinel-integrity = the same + integrity (pins for the 50 tools, descriptions, secrets)",
        settings.rounds,
        settings.seconds,
        settings.sentinel_config.display()
    );
    println!(
        "  {:<36} {:>5}  {:>20}  {:>10} {:>10}  {:>12} {:>12}  {:>9} {:>9}",
        "workload", "conns", "", "req/s off", "req/s on", "p50 off", "p50 on", "CPU off", "CPU on"
    );
    for workload in &workloads() {
        for &conns in &settings.conns {
            if settings.warmup > 0.0 {
                for t in &targets {
                    rt.block_on(loadgen::run(
                        t.addr,
                        workload,
                        conns,
                        Duration::from_secs_f64(settings.warmup),
                        None,
                        false,
                        &mut |_| {},
                    ))
                    .with_context(|| format!("warming up {} on {}", t.kind.name(), workload.key))?;
                }
            }
            let mut runs: [Vec<Measure>; 2] = [Vec::new(), Vec::new()];
            for round in 0..settings.rounds {
                for step in 0..2 {
                    let t = (step + round) % 2;
                    let m =
                        measure(rt, &targets[t], workload, conns, run_for).with_context(|| {
                            format!(
                                "{} on {} with {conns}",
                                targets[t].kind.name(),
                                workload.key
                            )
                        })?;
                    anyhow::ensure!(
                        m.errors == 0,
                        "{} on {}: {} errors ({:?})",
                        targets[t].kind.name(),
                        workload.key,
                        m.errors,
                        m.first_error
                    );
                    runs[t].push(m);
                }
            }
            let stat =
                |t: usize, f: &dyn Fn(&Measure) -> f64| median(runs[t].iter().map(f).collect());
            let rps = |t| stat(t, &|m: &Measure| m.rps);
            let p50 = |t| stat(t, &|m: &Measure| m.p50.as_secs_f64() * 1e6);
            let cpu = |t| {
                stat(t, &|m: &Measure| {
                    m.proxy_cpu_per_req
                        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
                })
            };
            println!(
                "  {:<36} {:>5}  {:>20}  {:>10.0} {:>10.0}  {:>9.0} µs {:>9.0} µs  {:>6.1} µs {:>6.1} µs   integrity adds {:+.1} µs CPU ({:+.0}%), {:+.0} µs p50",
                workload.title,
                conns,
                "",
                rps(0),
                rps(1),
                p50(0),
                p50(1),
                cpu(0),
                cpu(1),
                cpu(1) - cpu(0),
                (cpu(1) / cpu(0) - 1.0) * 100.0,
                p50(1) - p50(0),
            );
        }
    }
    drop(procs_kept);
    Ok(())
}
