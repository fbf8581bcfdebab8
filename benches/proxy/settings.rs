//! The bench's settings, read from the environment (the list is in main.rs), and its targets and
//! workloads by name.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;

use crate::loadgen::{Check, Workload};
use crate::memory::Scenario;
use crate::upstream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Direct,
    Sentinel,
    SentinelShipped,
    SentinelFull,
    SentinelJwt,
    SentinelPolicy,
    SentinelRlMemory,
    SentinelRlRedis,
    SentinelAudit,
    SentinelStdio,
    SentinelOtel100,
    SentinelOtel10,
    /// `sentinel-shipped` plus tracing at 10%: what tracing costs in the configuration users run.
    SentinelShippedOtel10,
    /// `sentinel` a second time, same binary and config: the difference between the two in the
    /// same rounds is the noise any comparison of this run is read through (an A/A test).
    SentinelAgain,
    Nginx,
    /// The `integrity` scenario's second sentinel (integrity.rs); not a BENCH_TARGETS entry.
    SentinelIntegrity,
}

/// Targets run only when BENCH_TARGETS names them.
const ON_REQUEST: [Kind; 1] = [Kind::SentinelAgain];

/// Every target, in the default order of BENCH_TARGETS (the order of the tables).
const ALL: [Kind; 14] = [
    Kind::Direct,
    Kind::Sentinel,
    Kind::SentinelShipped,
    Kind::SentinelFull,
    Kind::SentinelJwt,
    Kind::SentinelPolicy,
    Kind::SentinelRlMemory,
    Kind::SentinelRlRedis,
    Kind::SentinelAudit,
    Kind::SentinelStdio,
    Kind::SentinelOtel100,
    Kind::SentinelOtel10,
    Kind::SentinelShippedOtel10,
    Kind::Nginx,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Sentinel => "sentinel",
            Kind::SentinelShipped => "sentinel-shipped",
            Kind::SentinelFull => "sentinel-full",
            Kind::SentinelJwt => "sentinel-jwt",
            Kind::SentinelPolicy => "sentinel-policy",
            Kind::SentinelRlMemory => "sentinel-rl-memory",
            Kind::SentinelRlRedis => "sentinel-rl-redis",
            Kind::SentinelAudit => "sentinel-audit",
            Kind::SentinelStdio => "sentinel-stdio",
            Kind::SentinelOtel100 => "sentinel-otel-100",
            Kind::SentinelOtel10 => "sentinel-otel-10",
            Kind::SentinelShippedOtel10 => "sentinel-shipped-otel-10",
            Kind::SentinelAgain => "sentinel-again",
            Kind::Nginx => "nginx",
            Kind::SentinelIntegrity => "sentinel-integrity",
        }
    }
}

pub struct Settings {
    pub seconds: f64,
    pub rounds: usize,
    pub warmup: f64,
    pub conns: Vec<usize>,
    /// The throughput workloads (json, sse, list); may be empty when only memory is measured.
    pub workloads: Vec<Workload>,
    /// The memory scenarios (streams, large), run after the throughput rounds.
    pub memory: Vec<Scenario>,
    /// BENCH_WORKLOADS holds `integrity`: tool integrity's cost (integrity.rs).
    pub integrity: bool,
    /// Streams the `streams` scenario holds open at once (BENCH_STREAMS).
    pub streams: usize,
    pub targets: Vec<Kind>,
    pub nginx_workers: usize,
    pub sentinel_bin: PathBuf,
    /// The config as given (BENCH_SENTINEL_CONFIG, default examples/passthrough.yaml): what
    /// `sentinel-shipped` runs, unchanged.
    pub shipped_config: PathBuf,
    /// The same with audit switched off (unless it sets `audit` itself): the base of `sentinel`
    /// and of every variant but `sentinel-shipped`, `sentinel-full` and `sentinel-audit`.
    pub sentinel_config: PathBuf,
    pub strict: bool,
    /// BENCH_PIN=1: the CPUs of the proxies under test and of everything else.
    pub pin: Option<Pin>,
    /// The CPUs this bench may use (before it pins itself).
    pub cpus: usize,
}

/// Where BENCH_PIN=1 runs each process: every proxy under test (sentinels, nginx) on the last
/// CPU, alone; this bench's threads (load generator, OTLP receiver) and its other processes
/// (upstream, stdout drains) on the others. `taskset` CPU lists.
pub struct Pin {
    pub rest: String,
    pub proxy: String,
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let seconds = env_number("BENCH_SECONDS", 2.0)?;
        let rounds = env_number("BENCH_ROUNDS", 5.0)? as usize;
        let warmup = env_number("BENCH_WARMUP_SECONDS", 0.5)?;
        let nginx_workers = env_number("BENCH_NGINX_WORKERS", 1.0)? as usize;
        let streams = env_number("BENCH_STREAMS", 1000.0)? as usize;
        ensure!(
            (0.1..=60.0).contains(&seconds),
            "BENCH_SECONDS must be 0.1..=60"
        );
        ensure!((1..=50).contains(&rounds), "BENCH_ROUNDS must be 1..=50");
        ensure!(
            (0.0..=10.0).contains(&warmup),
            "BENCH_WARMUP_SECONDS must be 0..=10"
        );
        ensure!(
            (1..=64).contains(&nginx_workers),
            "BENCH_NGINX_WORKERS must be 1..=64"
        );
        ensure!(
            (10..=20_000).contains(&streams),
            "BENCH_STREAMS must be 10..=20000"
        );

        let conns = env_list("BENCH_CONNS", "1,32")
            .iter()
            .map(|c| c.parse::<usize>().ok().filter(|c| (1..=1024).contains(c)))
            .collect::<Option<Vec<_>>>()
            .context("BENCH_CONNS must be a list of numbers in 1..=1024")?;

        let mut workloads = Vec::new();
        let mut memory = Vec::new();
        let mut integrity = false;
        for key in env_list("BENCH_WORKLOADS", "json,sse,list,streams,large,integrity") {
            if key == "integrity" {
                integrity = true;
                continue;
            }
            match Scenario::from_key(&key) {
                Some(scenario) => {
                    if !memory.contains(&scenario) {
                        memory.push(scenario);
                    }
                }
                None => workloads.push(workload(&key)?),
            }
        }

        let mut targets = vec![Kind::Direct];
        let names: Vec<&str> = ALL.iter().map(|k| k.name()).collect();
        for name in env_list("BENCH_TARGETS", &names.join(",")) {
            let Some(kind) = ALL
                .iter()
                .chain(&ON_REQUEST)
                .copied()
                .find(|k| k.name() == name)
            else {
                bail!(
                    "unknown target {name:?} in BENCH_TARGETS ({}, {})",
                    names.join(", "),
                    ON_REQUEST.map(Kind::name).join(", ")
                );
            };
            if !targets.contains(&kind) {
                targets.push(kind);
            }
        }
        ensure!(
            (!conns.is_empty() && (!workloads.is_empty() || integrity)) || !memory.is_empty(),
            "nothing to measure"
        );

        let cpus = std::thread::available_parallelism()?.get();
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let sentinel_bin = std::env::var_os("SENTINEL_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_mcp-sentinel")),
            PathBuf::from,
        );
        let shipped_config = std::env::var_os("BENCH_SENTINEL_CONFIG")
            .map_or_else(|| manifest.join("examples/passthrough.yaml"), PathBuf::from);
        Ok(Self {
            seconds,
            rounds,
            warmup,
            conns,
            workloads,
            memory,
            integrity,
            streams,
            targets,
            nginx_workers,
            sentinel_bin,
            sentinel_config: shipped_config.clone(),
            shipped_config,
            strict: std::env::var("BENCH_STRICT").is_ok_and(|v| v == "1"),
            pin: pin(cpus)?,
            cpus,
        })
    }

    pub fn has(&self, kind: Kind) -> bool {
        self.targets.contains(&kind)
    }
}

/// BENCH_PIN: "1" pins (see [`Pin`]), "0" or unset does not.
fn pin(cpus: usize) -> Result<Option<Pin>> {
    match std::env::var("BENCH_PIN").as_deref() {
        Err(_) | Ok("0") => Ok(None),
        Ok("1") => {
            ensure!(cpus >= 2, "BENCH_PIN=1 needs two CPUs or more");
            let rest = match cpus - 2 {
                0 => "0".to_owned(),
                last => format!("0-{last}"),
            };
            Ok(Some(Pin {
                rest,
                proxy: (cpus - 1).to_string(),
            }))
        }
        Ok(other) => bail!("BENCH_PIN must be 0 or 1, not {other:?}"),
    }
}

fn env_number(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Stateless requests, as a client of the 2025-06-18 era sends them without a session.
pub fn workload(key: &str) -> Result<Workload> {
    Ok(match key {
        "json" => Workload {
            key: "json",
            title: "tools/call answered as JSON",
            body: Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#,
            ),
            check: Check::Json,
        },
        "sse" => Workload {
            key: "sse",
            title: "tools/call answered as SSE with 10 progress events",
            body: Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"progress","arguments":{"steps":10},"_meta":{"progressToken":"bench-1"}}}"#,
            ),
            check: Check::Sse {
                events: upstream::PROGRESS_EVENTS + 1,
            },
        },
        "list" => Workload {
            key: "list",
            title: "tools/list (20 tools with schemas)",
            body: Bytes::from_static(br#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}"#),
            check: Check::ToolsList {
                tools: upstream::TOOL_COUNT,
            },
        },
        other => bail!(
            "unknown workload {other:?} in BENCH_WORKLOADS (json, sse, list; memory: streams, \
             large)"
        ),
    })
}
