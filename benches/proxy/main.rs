//! `make bench`: the sentinel's throughput, latency and memory against a direct connection to a
//! fast upstream and against nginx as a plain reverse proxy. Targets are measured interleaved —
//! several rounds, target order rotated each round — so the machine's noise cancels in the ratios.
//!
//! `sentinel-jwt` is a second sentinel with the same config but JWT authentication (one ES256
//! issuer whose JWKS an in-process HTTPS IdP serves; see idp.rs); the load generator sends it the
//! same valid Bearer token on every request, so it measures cached verification. Its bar — p99
//! added over direct at 64 connections — gets a json cell at 64 connections of its own when
//! BENCH_CONNS does not include 64. `sentinel-policy` is a third with a 1,000-rule policy file
//! (see policy.rs); the run ends with the cost of one decision against that policy, in process.
//!
//! `sentinel-rl-memory` and `sentinel-rl-redis` are the passthrough config plus a rate-limit
//! rule on every request with a budget never exhausted (see ratelimit.rs): what a check costs,
//! in memory and as a Redis round trip (BENCH_REDIS_ADDR, default 127.0.0.1:6379).
//!
//! `sentinel-audit` records every request to stdout (its log file) and PostgreSQL
//! (BENCH_PG_URL, default the `make services` database; see audit.rs); every other sentinel runs
//! with audit off. Its bar: p99 under 10% over the unaudited sentinel, and RSS level under load.
//!
//! `sentinel-stdio` is the sentinel with the same (unaudited) config in front of the same
//! upstream over stdio (`run -- <this binary> --serve-stdio-upstream`: the same answers, one
//! JSON-RPC message a line; see upstream.rs and stdio.rs). A stdio server answers only inside a
//! legacy session, so the load generator opens one per connection for this target: one child (and
//! its launcher) per connection. Its CPU per request is the whole process tree's (sentinel,
//! launchers, servers) and the report adds each child's RSS, read at the end of every timed run.
//!
//! Settings (environment): BENCH_SECONDS (per run, default 2), BENCH_ROUNDS (5),
//! BENCH_WARMUP_SECONDS (0.5), BENCH_CONNS ("1,32"), BENCH_WORKLOADS ("json,sse,list"),
//! BENCH_TARGETS ("direct,sentinel,sentinel-jwt,sentinel-policy,sentinel-rl-memory,
//! sentinel-rl-redis,sentinel-audit,sentinel-stdio,nginx"; direct is always measured),
//! BENCH_NGINX_WORKERS (1), SENTINEL_BIN, BENCH_SENTINEL_CONFIG (examples/passthrough.yaml, also
//! the base of the sentinel-jwt config), NGINX_BIN, BENCH_STRICT=1 (exit 1 when a bar fails).

mod audit;
mod idp;
mod loadgen;
mod policy;
mod procs;
mod ratelimit;
mod report;
mod stdio;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use loadgen::{Check, Workload};
use report::{Cell, Measure, Memory};

/// Re-executing this binary with this flag runs the fast upstream instead of the bench.
const UPSTREAM_ROLE: &str = "--serve-upstream";
/// ... and this one, the same upstream over stdio (run by `sentinel-stdio`).
const STDIO_UPSTREAM_ROLE: &str = "--serve-stdio-upstream";

fn main() -> ExitCode {
    let role = if std::env::args().any(|a| a == UPSTREAM_ROLE) {
        Some(upstream::main())
    } else if std::env::args().any(|a| a == STDIO_UPSTREAM_ROLE) {
        Some(upstream::main_stdio())
    } else {
        None
    };
    if let Some(served) = role {
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench upstream: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo bench` passes `--bench`. Anything else is a test runner (`cargo test --all-targets`,
    // nextest listing with `--list`): the bench takes minutes, so it offers no tests there.
    if !std::env::args().any(|a| a == "--bench") {
        if !std::env::args().any(|a| a == "--list") {
            eprintln!("the proxy bench runs only under `cargo bench --bench proxy` (make bench)");
        }
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: a bar failed and BENCH_STRICT=1");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Direct,
    Sentinel,
    SentinelJwt,
    SentinelPolicy,
    SentinelRlMemory,
    SentinelRlRedis,
    SentinelAudit,
    SentinelStdio,
    Nginx,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Sentinel => "sentinel",
            Kind::SentinelJwt => "sentinel-jwt",
            Kind::SentinelPolicy => "sentinel-policy",
            Kind::SentinelRlMemory => "sentinel-rl-memory",
            Kind::SentinelRlRedis => "sentinel-rl-redis",
            Kind::SentinelAudit => "sentinel-audit",
            Kind::SentinelStdio => "sentinel-stdio",
            Kind::Nginx => "nginx",
        }
    }
}

struct Settings {
    seconds: f64,
    rounds: usize,
    warmup: f64,
    conns: Vec<usize>,
    workloads: Vec<Workload>,
    targets: Vec<Kind>,
    nginx_workers: usize,
    sentinel_bin: PathBuf,
    sentinel_config: PathBuf,
    strict: bool,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let seconds = env_number("BENCH_SECONDS", 2.0)?;
        let rounds = env_number("BENCH_ROUNDS", 5.0)? as usize;
        let warmup = env_number("BENCH_WARMUP_SECONDS", 0.5)?;
        let nginx_workers = env_number("BENCH_NGINX_WORKERS", 1.0)? as usize;
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

        let conns = env_list("BENCH_CONNS", "1,32")
            .iter()
            .map(|c| c.parse::<usize>().ok().filter(|c| (1..=1024).contains(c)))
            .collect::<Option<Vec<_>>>()
            .context("BENCH_CONNS must be a list of numbers in 1..=1024")?;

        let mut workloads = Vec::new();
        for key in env_list("BENCH_WORKLOADS", "json,sse,list") {
            workloads.push(workload(&key)?);
        }

        let mut targets = vec![Kind::Direct];
        for name in env_list(
            "BENCH_TARGETS",
            "direct,sentinel,sentinel-jwt,sentinel-policy,sentinel-rl-memory,sentinel-rl-redis,sentinel-audit,sentinel-stdio,nginx",
        ) {
            let kind = match name.as_str() {
                "direct" => continue,
                "sentinel" => Kind::Sentinel,
                "sentinel-jwt" => Kind::SentinelJwt,
                "sentinel-policy" => Kind::SentinelPolicy,
                "sentinel-rl-memory" => Kind::SentinelRlMemory,
                "sentinel-rl-redis" => Kind::SentinelRlRedis,
                "sentinel-audit" => Kind::SentinelAudit,
                "sentinel-stdio" => Kind::SentinelStdio,
                "nginx" => Kind::Nginx,
                other => {
                    bail!(
                        "unknown target {other:?} in BENCH_TARGETS (direct, sentinel, \
                         sentinel-jwt, sentinel-policy, sentinel-rl-memory, sentinel-rl-redis, \
                         sentinel-audit, sentinel-stdio, nginx)"
                    )
                }
            };
            if !targets.contains(&kind) {
                targets.push(kind);
            }
        }
        ensure!(
            !conns.is_empty() && !workloads.is_empty(),
            "nothing to measure"
        );

        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let sentinel_bin = std::env::var_os("SENTINEL_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_mcp-sentinel")),
            PathBuf::from,
        );
        let sentinel_config = std::env::var_os("BENCH_SENTINEL_CONFIG")
            .map_or_else(|| manifest.join("examples/passthrough.yaml"), PathBuf::from);
        Ok(Self {
            seconds,
            rounds,
            warmup,
            conns,
            workloads,
            targets,
            nginx_workers,
            sentinel_bin,
            sentinel_config,
            strict: std::env::var("BENCH_STRICT").is_ok_and(|v| v == "1"),
        })
    }
}

/// The policy engine alone: one decision against the 1,000-rule policy (bar: under 10 µs).
fn print_decision_costs() -> Result<bool> {
    const BAR_NS: f64 = 10_000.0;
    println!();
    println!(
        "policy decision cost · {} rules, in process, best of 5 × 200,000",
        policy::RULES
    );
    let mut ok = true;
    for (name, ns) in policy::decision_costs()? {
        let pass = ns < BAR_NS;
        ok &= pass;
        println!(
            "  {name:<40} {ns:>8.0} ns   {}",
            if pass {
                "ok (< 10 µs)"
            } else {
                "FAIL (≥ 10 µs)"
            }
        );
    }
    Ok(ok)
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
fn workload(key: &str) -> Result<Workload> {
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
        other => bail!("unknown workload {other:?} in BENCH_WORKLOADS (json, sse, list)"),
    })
}

struct Target {
    kind: Kind,
    addr: std::net::SocketAddr,
    /// Processes whose CPU is the proxy's (empty for direct).
    pids: Vec<u32>,
    /// A stdio upstream behind the sentinel: the proxy's CPU is its whole process tree's (taken
    /// when each timed run starts), and the load generator opens a session per connection.
    stdio: bool,
    /// Sent on every request (sentinel-jwt: `Authorization: Bearer ...`).
    header: Option<(HeaderName, HeaderValue)>,
}

fn bench() -> Result<bool> {
    let started = std::time::Instant::now();
    let mut settings = Settings::from_env()?;
    let workdir = procs::Workdir::create()?;
    // Audit is measured on its own target: every other sentinel runs without it.
    let audited_base = settings.sentinel_config.clone();
    settings.sentinel_config = audit::unaudited(&audited_base, workdir.path())?;
    let (_upstream, upstream_addr) = procs::start_upstream(UPSTREAM_ROLE)?;
    let http = procs::Upstream::Http(upstream_addr);

    let mut targets = vec![Target {
        kind: Kind::Direct,
        addr: upstream_addr,
        pids: Vec::new(),
        stdio: false,
        header: None,
    }];
    let sentinel = if settings.targets.contains(&Kind::Sentinel) {
        Some(start_sentinel_target(
            Kind::Sentinel,
            &settings,
            workdir.path(),
            &settings.sentinel_config,
            &http,
            None,
            &mut targets,
        )?)
    } else {
        None
    };
    // The IdP outlives the sentinel that fetches from it (declared first, dropped last).
    let (idp, sentinel_jwt) = if settings.targets.contains(&Kind::SentinelJwt) {
        let idp = idp::Idp::start(workdir.path()).context("starting the bench IdP")?;
        let config = idp.sentinel_config(&settings.sentinel_config, workdir.path())?;
        let header = Some((http::header::AUTHORIZATION, idp.authorization.clone()));
        let sentinel = start_sentinel_target(
            Kind::SentinelJwt,
            &settings,
            workdir.path(),
            &config,
            &http,
            header,
            &mut targets,
        )?;
        (Some(idp), Some(sentinel))
    } else {
        (None, None)
    };
    let sentinel_policy = if settings.targets.contains(&Kind::SentinelPolicy) {
        let config = policy::sentinel_config(&settings.sentinel_config, workdir.path())?;
        Some(start_sentinel_target(
            Kind::SentinelPolicy,
            &settings,
            workdir.path(),
            &config,
            &http,
            None,
            &mut targets,
        )?)
    } else {
        None
    };
    // Rate-limited sentinels: memory, then Redis (whose round trip is measured for the bar).
    let redis = if settings.targets.contains(&Kind::SentinelRlRedis) {
        Some(ratelimit::redis_addr()?)
    } else {
        None
    };
    let mut rate_limited = Vec::new();
    for (kind, redis) in [
        (Kind::SentinelRlMemory, None),
        (Kind::SentinelRlRedis, redis),
    ] {
        if !settings.targets.contains(&kind) {
            continue;
        }
        let config = ratelimit::sentinel_config(
            &settings.sentinel_config,
            workdir.path(),
            kind.name(),
            redis,
        )?;
        let started = start_sentinel_target(
            kind,
            &settings,
            workdir.path(),
            &config,
            &http,
            None,
            &mut targets,
        )?;
        rate_limited.push((kind.name(), started));
    }
    if !rate_limited.is_empty() {
        println!(
            "  sentinel-rl-memory / sentinel-rl-redis: the sentinel's config plus one rate-limit \
             rule on every request (key subject+tool, 1000000/second: checked, never refused){}",
            redis.map_or(String::new(), |a| format!("; Redis {a}"))
        );
    }
    let audited = if settings.targets.contains(&Kind::SentinelAudit) {
        let pg = audit::pg_url()?;
        let config = audit::sentinel_config(&settings.sentinel_config, workdir.path(), &pg)?;
        let s = start_sentinel_target(
            Kind::SentinelAudit,
            &settings,
            workdir.path(),
            &config,
            &http,
            None,
            &mut targets,
        )?;
        println!(
            "  sentinel-audit: the sentinel's config with audit on: stdout (to its log file) and \
             PostgreSQL ({}, table {}), batches of up to 512, a spool in the work dir",
            pg,
            audit::table()
        );
        Some((s, pg))
    } else {
        None
    };
    let sentinel_stdio = if settings.targets.contains(&Kind::SentinelStdio) {
        let config = stdio::sentinel_config(&settings.sentinel_config, workdir.path())?;
        let command = stdio::command(STDIO_UPSTREAM_ROLE)?;
        Some(start_sentinel_target(
            Kind::SentinelStdio,
            &settings,
            workdir.path(),
            &config,
            &command,
            None,
            &mut targets,
        )?)
    } else {
        None
    };
    let mut audit_rss = Vec::new();
    let nginx = if settings.targets.contains(&Kind::Nginx) {
        let nginx = procs::start_nginx(workdir.path(), upstream_addr, settings.nginx_workers)?;
        targets.push(Target {
            kind: Kind::Nginx,
            addr: nginx.addr,
            pids: nginx.pids(),
            stdio: false,
            header: None,
        });
        Some(nginx)
    } else {
        None
    };

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split(' ').next().unwrap_or("?");
    println!("mcp-sentinel proxy bench");
    println!(
        "  {} rounds × {} s per run, target order rotated each round; {} CPUs, load average {} \
         at start (other work on the machine makes every number noisier); all on 127.0.0.1",
        settings.rounds, settings.seconds, cpus, load
    );
    println!(
        "  load generator: 1 thread, closed loop, HTTP/1.1 keep-alive; upstream: 1 thread, own process"
    );
    if let Some(sentinel) = &sentinel {
        println!(
            "  sentinel: {} with {} ({} threads after start-up)",
            settings.sentinel_bin.display(),
            settings.sentinel_config.display(),
            procs::thread_count(sentinel.proc.pid()).map_or("?".to_owned(), |n| n.to_string()),
        );
        if std::env::var_os("SENTINEL_BIN").is_none() {
            println!(
                "  note: this is the binary `cargo bench` built, with dev-dependency features \
                 unified in; `make bench` measures the release build"
            );
        }
    } else {
        println!("  sentinel: NOT MEASURED (BENCH_TARGETS leaves it out)");
    }
    if let (Some(idp), Some(sentinel)) = (&idp, &sentinel_jwt) {
        println!(
            "  sentinel-jwt: the same binary and config with auth.jwt instead (one ES256 issuer, \
             JWKS over HTTPS from the bench's own IdP, fetched {}× before ready; {} threads); \
             every request carries the same valid Bearer token, so verification after the \
             first is a cache hit",
            idp.jwks_fetches(),
            procs::thread_count(sentinel.proc.pid()).map_or("?".to_owned(), |n| n.to_string()),
        );
    }
    if sentinel_policy.is_some() {
        println!(
            "  sentinel-policy: the same binary and config with a {}-rule policy file instead of \
             `default: allow` (every call decided, every tools/list filtered item by item)",
            policy::RULES
        );
    }
    if let Some(s) = &sentinel_stdio {
        println!(
            "  sentinel-stdio: the sentinel's config, upstream `-- <this bench> {STDIO_UPSTREAM_ROLE}` \
             (the same answers over stdin/stdout, one thread), {}; one legacy session (so one \
             child) per connection, ended with DELETE after each run; CPU/req is the sentinel's \
             process tree's ({} processes after start-up)",
            stdio::SETTINGS,
            procs::tree(s.proc.pid()).len()
        );
    }
    if let Some(nginx) = &nginx {
        println!(
            "  nginx: {}, worker_processes {} ({} worker process{} running), keepalive to upstream, \
             proxy_buffering off, proxy_request_buffering off",
            nginx.version,
            settings.nginx_workers,
            nginx.pids().len() - 1,
            if nginx.pids().len() == 2 { "" } else { "es" }
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let run_for = Duration::from_secs_f64(settings.seconds);
    let mut plan: Vec<(&Workload, usize)> = Vec::new();
    for workload in &settings.workloads {
        for &conns in &settings.conns {
            plan.push((workload, conns));
        }
    }
    // The JWT bar's cell, when BENCH_CONNS leaves it out: one workload (json if measured) only,
    // which keeps the default run near five minutes.
    if sentinel_jwt.is_some() && !settings.conns.contains(&report::JWT_BAR_CONNS) {
        let workload = settings
            .workloads
            .iter()
            .find(|w| w.key == "json")
            .unwrap_or(&settings.workloads[0]);
        plan.push((workload, report::JWT_BAR_CONNS));
    }
    let mut cells: Vec<Cell> = Vec::new();
    for &(workload, conns) in &plan {
        if settings.warmup > 0.0 {
            for target in &targets {
                rt.block_on(loadgen::run(
                    target.addr,
                    workload,
                    conns,
                    Duration::from_secs_f64(settings.warmup),
                    target.header.as_ref(),
                    target.stdio,
                    &mut |_| {},
                ))
                .with_context(|| {
                    format!(
                        "warming up {} on {} with {conns} connections",
                        target.kind.name(),
                        workload.key
                    )
                })?;
            }
        }
        cells.push(Cell {
            workload: workload.title,
            workload_key: workload.key,
            conns,
            runs: targets
                .iter()
                .map(|_| Vec::with_capacity(settings.rounds))
                .collect(),
        });
    }

    for round in 0..settings.rounds {
        for (cell, &(workload, conns)) in cells.iter_mut().zip(&plan) {
            for step in 0..targets.len() {
                let t = (step + round) % targets.len();
                let measure =
                    measure(&rt, &targets[t], workload, conns, run_for).with_context(|| {
                        format!(
                            "round {}: {} on {} with {conns} connections",
                            round + 1,
                            targets[t].kind.name(),
                            workload.key
                        )
                    })?;
                cell.runs[t].push(measure);
            }
        }
        eprintln!("bench: round {}/{} done", round + 1, settings.rounds);
        if let Some((s, _)) = &audited {
            audit_rss.extend(procs::status_kib(s.proc.pid(), "VmRSS:"));
        }
    }

    let rss_of = |s: &procs::Sentinel| procs::peak_rss_kib(&[s.proc.pid()]);
    let rss = |s: &Option<procs::Sentinel>| s.as_ref().and_then(rss_of);
    let memory = Memory {
        sentinels: vec![
            ("sentinel", rss(&sentinel)),
            ("sentinel-jwt", rss(&sentinel_jwt)),
            ("sentinel-policy", rss(&sentinel_policy)),
        ]
        .into_iter()
        .chain(rate_limited.iter().map(|(name, s)| (*name, rss_of(s))))
        .chain(audited.iter().map(|(s, _)| ("sentinel-audit", rss_of(s))))
        .chain(sentinel_stdio.iter().map(|s| ("sentinel-stdio", rss_of(s))))
        .collect(),
        nginx_kib: nginx.as_ref().and_then(|n| procs::peak_rss_kib(&n.pids())),
    };
    let names: Vec<&str> = targets.iter().map(|t| t.kind.name()).collect();
    // Measured after the load, on the same (now quiet) machine.
    let redis_rtt = match redis {
        Some(addr) => Some((
            ratelimit::percentiles(ratelimit::round_trips(addr, 5000)?),
            ratelimit::percentiles(ratelimit::check_round_trips(addr, 5000)?),
        )),
        None => None,
    };
    let mut passed = report::print(&names, &cells, &memory, redis_rtt);
    if sentinel_policy.is_some() {
        passed &= print_decision_costs()?;
    }
    if let Some((s, pg)) = &audited {
        passed &= audit::print_rss(&audit_rss);
        // Let the last batches land before counting.
        std::thread::sleep(Duration::from_millis(500));
        for line in audit::audit_counters(s.admin) {
            println!("  {line}");
        }
        match audit::rows_and_drop(pg) {
            Ok(n) => println!("sentinel-audit delivered {n} records to PostgreSQL (table dropped)"),
            Err(e) => println!("sentinel-audit: could not count or drop the table: {e:#}"),
        }
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(passed || !settings.strict)
}

/// Starts a sentinel with `config` and adds it to `targets` as `kind`.
fn start_sentinel_target(
    kind: Kind,
    settings: &Settings,
    workdir: &std::path::Path,
    config: &std::path::Path,
    upstream: &procs::Upstream,
    header: Option<(HeaderName, HeaderValue)>,
    targets: &mut Vec<Target>,
) -> Result<procs::Sentinel> {
    let sentinel = procs::start_sentinel(
        kind.name(),
        workdir,
        &settings.sentinel_bin,
        config,
        upstream,
    )?;
    targets.push(Target {
        kind,
        addr: sentinel.addr,
        pids: vec![sentinel.proc.pid()],
        stdio: matches!(upstream, procs::Upstream::Command(_)),
        header,
    });
    Ok(sentinel)
}

fn measure(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    workload: &Workload,
    conns: usize,
    duration: Duration,
) -> Result<Measure> {
    // Read at the edges of the timed window: a stdio target's children live only while its
    // sessions do, which the load generator opens before the window and ends after it.
    let mut pids = target.pids.clone();
    let (mut proxy_before, mut gen_before) = (None, None);
    let (mut proxy_after, mut gen_after) = (None, None);
    let mut children = None;
    let sample = rt.block_on(loadgen::run(
        target.addr,
        workload,
        conns,
        duration,
        target.header.as_ref(),
        target.stdio,
        &mut |edge| match edge {
            loadgen::Edge::Open => {
                if target.stdio {
                    pids = procs::tree(target.pids[0]);
                }
                proxy_before = procs::cpu_ns(&pids);
                gen_before = procs::self_cpu_ns();
            }
            loadgen::Edge::Close => {
                proxy_after = procs::cpu_ns(&pids);
                gen_after = procs::self_cpu_ns();
                if target.stdio {
                    children = Some(procs::child_memory(target.pids[0]));
                }
            }
        },
    ))?;
    let proxy_cpu_per_req = match (target.pids.is_empty(), proxy_before, proxy_after) {
        (false, Some(before), Some(after)) => Some(Duration::from_nanos(
            after.saturating_sub(before) / sample.requests.max(1),
        )),
        _ => None,
    };
    let gen_cpu = match (gen_before, gen_after) {
        (Some(before), Some(after)) => {
            Some(after.saturating_sub(before) as f64 / sample.elapsed.as_nanos().max(1) as f64)
        }
        _ => None,
    };
    Ok(Measure {
        rps: sample.rps(),
        p50: sample.percentile(0.50),
        p99: sample.percentile(0.99),
        errors: sample.errors,
        first_error: sample.first_error.clone(),
        proxy_cpu_per_req,
        gen_cpu,
        children,
    })
}
