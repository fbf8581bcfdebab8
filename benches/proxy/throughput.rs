//! The throughput rounds: every target started once, then each workload × concurrency measured
//! on every target, interleaved (target order rotated each round), and the report printed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use http::{HeaderName, HeaderValue};

use crate::loadgen::{self, Workload};
use crate::procs::{self, Stdout};
use crate::report::{self, Bars, Cell, Measure, Memory};
use crate::settings::{Kind, Settings};
use crate::{STDIO_UPSTREAM_ROLE, audit, deployed, idp, otel, policy, ratelimit, stdio, summary};

pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Processes whose CPU is the proxy's (empty for direct).
    pids: Vec<u32>,
    /// A stdio upstream behind the sentinel: the proxy's CPU is its whole process tree's (taken
    /// when each timed run starts), and the load generator opens a session per connection.
    stdio: bool,
    /// Sent on every request (sentinel-jwt, sentinel-full: `Authorization: Bearer ...`).
    header: Option<(HeaderName, HeaderValue)>,
}

impl Target {
    /// A sentinel over HTTP, without a header of its own.
    pub fn new(kind: Kind, addr: SocketAddr, pid: u32) -> Self {
        Self {
            kind,
            addr,
            pids: vec![pid],
            stdio: false,
            header: None,
        }
    }
}

/// Starts the targets, runs the rounds and prints the tables; the bars go to `bars`. Every
/// process it started is stopped when it returns.
pub fn run(
    settings: &Settings,
    workdir: &Path,
    upstream_addr: SocketAddr,
    rt: &tokio::runtime::Runtime,
    bars: &mut Bars,
) -> Result<()> {
    let http = procs::Upstream::Http(upstream_addr);
    let mut targets = vec![Target {
        kind: Kind::Direct,
        addr: upstream_addr,
        pids: Vec::new(),
        stdio: false,
        header: None,
    }];
    let mut start = |kind: Kind,
                     config: &Path,
                     upstream: &procs::Upstream,
                     stdout: Stdout,
                     header: Option<(HeaderName, HeaderValue)>|
     -> Result<procs::Sentinel> {
        let sentinel = procs::start_sentinel(
            kind.name(),
            workdir,
            &settings.sentinel_bin,
            config,
            upstream,
            stdout,
        )?;
        targets.push(Target {
            kind,
            addr: sentinel.addr,
            pids: vec![sentinel.proc.pid()],
            stdio: matches!(upstream, procs::Upstream::Command(_)),
            header,
        });
        Ok(sentinel)
    };
    let base = &settings.sentinel_config;
    let sentinel = settings
        .has(Kind::Sentinel)
        .then(|| start(Kind::Sentinel, base, &http, Stdout::LogFile, None))
        .transpose()?;
    let again = settings
        .has(Kind::SentinelAgain)
        .then(|| start(Kind::SentinelAgain, base, &http, Stdout::LogFile, None))
        .transpose()?;
    let shipped = settings
        .has(Kind::SentinelShipped)
        .then(|| {
            start(
                Kind::SentinelShipped,
                &settings.shipped_config,
                &http,
                Stdout::Pipe,
                None,
            )
        })
        .transpose()?;
    // Services and the IdP, for the targets that need them. The IdP outlives the sentinels that
    // fetch from it (declared first, dropped last).
    let idp = if settings.has(Kind::SentinelJwt) || settings.has(Kind::SentinelFull) {
        Some(idp::Idp::start(workdir).context("starting the bench IdP")?)
    } else {
        None
    };
    let redis = if settings.has(Kind::SentinelRlRedis) || settings.has(Kind::SentinelFull) {
        Some(ratelimit::redis_addr()?)
    } else {
        None
    };
    let pg = if settings.has(Kind::SentinelAudit) || settings.has(Kind::SentinelFull) {
        Some(audit::pg_url()?)
    } else {
        None
    };
    let bearer = idp
        .as_ref()
        .map(|idp| (http::header::AUTHORIZATION, idp.authorization.clone()));
    let full = match (&idp, redis, &pg) {
        (Some(idp), Some(redis), Some(pg)) if settings.has(Kind::SentinelFull) => {
            let config = deployed::full_config(&settings.shipped_config, workdir, idp, redis, pg)?;
            Some(start(
                Kind::SentinelFull,
                &config,
                &http,
                Stdout::Pipe,
                bearer.clone(),
            )?)
        }
        _ => None,
    };
    let sentinel_jwt = match &idp {
        Some(idp) if settings.has(Kind::SentinelJwt) => {
            let config = idp.sentinel_config(base, workdir)?;
            Some(start(
                Kind::SentinelJwt,
                &config,
                &http,
                Stdout::LogFile,
                bearer.clone(),
            )?)
        }
        _ => None,
    };
    let sentinel_policy = if settings.has(Kind::SentinelPolicy) {
        let config = policy::sentinel_config(base, workdir)?;
        Some(start(
            Kind::SentinelPolicy,
            &config,
            &http,
            Stdout::LogFile,
            None,
        )?)
    } else {
        None
    };
    // Rate-limited sentinels: memory, then Redis (whose round trip is measured for the bar).
    let mut rate_limited = Vec::new();
    for (kind, redis) in [
        (Kind::SentinelRlMemory, None),
        (Kind::SentinelRlRedis, redis),
    ] {
        if !settings.has(kind) {
            continue;
        }
        let config = ratelimit::sentinel_config(base, workdir, kind.name(), redis)?;
        let started = start(kind, &config, &http, Stdout::LogFile, None)?;
        rate_limited.push((kind.name(), started));
    }
    // Traced sentinels: every new trace sampled, then one in ten, exporting to a receiver here;
    // and the shipped config (audit on, to stdout) traced at one in ten.
    let traced_kinds = [
        (Kind::SentinelOtel100, 1.0, base),
        (Kind::SentinelOtel10, 0.1, base),
        (Kind::SentinelShippedOtel10, 0.1, &settings.shipped_config),
    ];
    let receiver = if traced_kinds.iter().any(|(k, _, _)| settings.has(*k)) {
        Some(otel::Receiver::start()?)
    } else {
        None
    };
    let mut traced = Vec::new();
    for (kind, ratio, from) in traced_kinds {
        let Some(r) = receiver.as_ref().filter(|_| settings.has(kind)) else {
            continue;
        };
        let config = otel::sentinel_config(from, workdir, kind.name(), &r.endpoint, ratio)?;
        let stdout = if kind == Kind::SentinelShippedOtel10 {
            Stdout::Pipe
        } else {
            Stdout::LogFile
        };
        let started = start(kind, &config, &http, stdout, None)?;
        traced.push((kind.name(), started));
    }
    let audited = match &pg {
        Some(pg) if settings.has(Kind::SentinelAudit) => {
            let config = audit::sentinel_config(base, workdir, pg)?;
            Some(start(
                Kind::SentinelAudit,
                &config,
                &http,
                Stdout::LogFile,
                None,
            )?)
        }
        _ => None,
    };
    let sentinel_stdio = if settings.has(Kind::SentinelStdio) {
        let config = stdio::sentinel_config(base, workdir)?;
        let command = stdio::command(STDIO_UPSTREAM_ROLE)?;
        Some(start(
            Kind::SentinelStdio,
            &config,
            &command,
            Stdout::LogFile,
            None,
        )?)
    } else {
        None
    };
    let nginx = if settings.has(Kind::Nginx) {
        let nginx = procs::start_nginx(
            workdir,
            "nginx",
            upstream_addr,
            settings.nginx_workers,
            4096,
        )?;
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

    describe(
        settings,
        sentinel.as_ref(),
        idp.as_ref().zip(sentinel_jwt.as_ref()),
        nginx.as_ref(),
    );
    if again.is_some() {
        println!(
            "  sentinel-again: sentinel a second time (same binary, same config, its own \
             process): what it measures over sentinel is the run's noise (the A/A line below)"
        );
    }
    if shipped.is_some() {
        println!(
            "  sentinel-shipped: {} exactly as given (its default audit: a record per call to \
             stdout); {}",
            settings.shipped_config.display(),
            deployed::STDOUT
        );
    }
    if let (Some(_), Some(redis), Some(pg)) = (&full, redis, &pg) {
        println!(
            "  sentinel-full: the same config with the whole pipeline on — auth.jwt (as \
             sentinel-jwt), the {}-rule policy file (as sentinel-policy, its last rule naming \
             the token's subject), a Redis rate-limit rule on every call (as sentinel-rl-redis, \
             Redis {redis}), audit to stdout and PostgreSQL ({pg}, table {}); {}",
            policy::RULES,
            audit::table(Kind::SentinelFull.name()),
            deployed::STDOUT
        );
    }
    if sentinel_policy.is_some() {
        println!(
            "  sentinel-policy: the sentinel's config with a {}-rule policy file instead of \
             `default: allow` (every call decided, every tools/list filtered item by item)",
            policy::RULES
        );
    }
    if !rate_limited.is_empty() {
        println!(
            "  sentinel-rl-memory / sentinel-rl-redis: the sentinel's config plus one rate-limit \
             rule on every request (key subject+tool, 1000000/second: checked, never refused){}",
            redis.map_or(String::new(), |a| format!("; Redis {a}"))
        );
    }
    if let Some(r) = &receiver {
        println!(
            "  sentinel-otel-100 / sentinel-otel-10: the sentinel's config plus `tracing` \
             (parent-based ratio 1 / 0.1; 5 s batches of up to 512) exporting OTLP/HTTP protobuf \
             to a receiver in the bench ({}) that answers at once, then decodes (at nice 19), counts and discards",
            r.endpoint
        );
        if settings.has(Kind::SentinelShippedOtel10) {
            println!(
                "  sentinel-shipped-otel-10: sentinel-shipped's config (audit on, to stdout \
                 through a pipe) plus the same `tracing` at ratio 0.1: tracing's cost in the \
                 configuration users run, measured against sentinel-shipped"
            );
        }
    }
    if let (Some(_), Some(pg)) = (&audited, &pg) {
        println!(
            "  sentinel-audit: the sentinel's config with audit on: stdout (to its log file) and \
             PostgreSQL ({}, table {}), batches of up to 512, a spool in the work dir",
            pg,
            audit::table(Kind::SentinelAudit.name())
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

    let cells = rounds(settings, rt, &targets, audited.as_ref())?;
    let audit_rss = cells.1;
    let cells = cells.0;

    let rss_of = |s: &procs::Sentinel| procs::peak_rss_kib(&[s.proc.pid()]);
    let rss = |s: &Option<procs::Sentinel>| s.as_ref().and_then(rss_of);
    let memory = Memory {
        sentinels: vec![
            ("sentinel", rss(&sentinel)),
            ("sentinel-again", rss(&again)),
            ("sentinel-shipped", rss(&shipped)),
            ("sentinel-full", rss(&full)),
            ("sentinel-jwt", rss(&sentinel_jwt)),
            ("sentinel-policy", rss(&sentinel_policy)),
        ]
        .into_iter()
        .chain(rate_limited.iter().map(|(name, s)| (*name, rss_of(s))))
        .chain(traced.iter().map(|(name, s)| (*name, rss_of(s))))
        .chain(audited.iter().map(|s| ("sentinel-audit", rss_of(s))))
        .chain(sentinel_stdio.iter().map(|s| ("sentinel-stdio", rss_of(s))))
        .collect(),
        nginx_kib: nginx.as_ref().and_then(|n| procs::peak_rss_kib(&n.pids())),
    };
    let names: Vec<&str> = targets.iter().map(|t| t.kind.name()).collect();
    // Measured after the load, on the same (now quiet) machine.
    let redis_rtt = match redis.filter(|_| settings.has(Kind::SentinelRlRedis)) {
        Some(addr) => Some((
            ratelimit::percentiles(ratelimit::round_trips(addr, 5000)?),
            ratelimit::percentiles(ratelimit::check_round_trips(addr, 5000)?),
        )),
        None => None,
    };
    report::print(&names, &cells, &memory, redis_rtt, bars);
    if sentinel_policy.is_some() {
        bars.check(
            print_decision_costs()?,
            format!(
                "one policy decision against {} rules under 10 µs (above)",
                policy::RULES
            ),
        );
    }
    if audited.is_some() {
        bars.check(
            audit::print_rss(&audit_rss),
            "sentinel-audit RSS stays bounded under sustained load (above)".to_owned(),
        );
    }
    // Let the last batches land before counting.
    std::thread::sleep(Duration::from_millis(500));
    for (kind, s) in [
        (Kind::SentinelShipped, &shipped),
        (Kind::SentinelFull, &full),
        (Kind::SentinelAudit, &audited),
    ] {
        let Some(s) = s else { continue };
        for line in audit::audit_counters(s.admin) {
            println!("  {}: {line}", kind.name());
        }
        if kind == Kind::SentinelShipped {
            continue;
        }
        let Some(pg) = &pg else { continue };
        match audit::rows_and_drop(pg, kind.name()) {
            Ok(n) => println!(
                "{} delivered {n} records to PostgreSQL (table dropped)",
                kind.name()
            ),
            Err(e) => println!("{}: could not count or drop the table: {e:#}", kind.name()),
        }
    }
    if let Some(r) = &receiver {
        let (spans, exports) = r.counts();
        println!("  OTLP receiver: {spans} spans in {exports} exports");
        for (name, s) in &traced {
            for line in audit::metric_lines(s.admin, "mcp_sentinel_trace_spans_") {
                println!("  {name}: {line}");
            }
        }
    }
    summary::print(&names, &cells, &memory, bars);
    Ok(())
}

/// The run's setting lines: the machine, the load generator, the sentinel, sentinel-jwt, nginx.
fn describe(
    settings: &Settings,
    sentinel: Option<&procs::Sentinel>,
    jwt: Option<(&idp::Idp, &procs::Sentinel)>,
    nginx: Option<&procs::Nginx>,
) {
    let cpus = settings.cpus;
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
    if let Some(pin) = &settings.pin {
        println!(
            "  pinned (BENCH_PIN=1): each proxy under test alone on CPU {}, everything else on CPU {} \
             — compare CPU per request; at 1 connection every request wakes the idle CPU, so \
             ×direct and p50 there say little",
            pin.proxy, pin.rest
        );
    }
    match sentinel {
        Some(sentinel) => println!(
            "  sentinel: {} with {} (audit off: the reference for what audit adds; {} threads \
             after start-up)",
            settings.sentinel_bin.display(),
            settings.sentinel_config.display(),
            procs::thread_count(sentinel.proc.pid()).map_or("?".to_owned(), |n| n.to_string()),
        ),
        None => println!("  sentinel: NOT MEASURED (BENCH_TARGETS leaves it out)"),
    }
    if std::env::var_os("SENTINEL_BIN").is_none() {
        println!(
            "  note: this is the binary `cargo bench` built, with dev-dependency features \
             unified in; `make bench` measures the release build"
        );
    }
    if let Some((idp, sentinel)) = jwt {
        println!(
            "  sentinel-jwt: the same binary and config with auth.jwt instead (one ES256 issuer, \
             JWKS over HTTPS from the bench's own IdP, fetched {}× before ready; {} threads); \
             every request carries the same valid Bearer token, so verification after the \
             first is a cache hit",
            idp.jwks_fetches(),
            procs::thread_count(sentinel.proc.pid()).map_or("?".to_owned(), |n| n.to_string()),
        );
    }
    if let Some(nginx) = nginx {
        println!(
            "  nginx: {}, worker_processes {} ({} worker process{} running), keepalive to upstream, \
             proxy_buffering off, proxy_request_buffering off",
            nginx.version,
            settings.nginx_workers,
            nginx.pids().len() - 1,
            if nginx.pids().len() == 2 { "" } else { "es" }
        );
    }
}

/// Warm-up, then the interleaved rounds. Returns the cells and, with sentinel-audit, its RSS
/// after each round.
fn rounds(
    settings: &Settings,
    rt: &tokio::runtime::Runtime,
    targets: &[Target],
    audited: Option<&procs::Sentinel>,
) -> Result<(Vec<Cell>, Vec<u64>)> {
    let run_for = Duration::from_secs_f64(settings.seconds);
    let mut plan: Vec<(&Workload, usize)> = Vec::new();
    for workload in &settings.workloads {
        for &conns in &settings.conns {
            plan.push((workload, conns));
        }
    }
    // The JWT bar's cell, when BENCH_CONNS leaves it out: one workload (json if measured) only,
    // which keeps the default run shorter.
    if settings.has(Kind::SentinelJwt) && !settings.conns.contains(&report::JWT_BAR_CONNS) {
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
            for target in targets {
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

    let mut audit_rss = Vec::new();
    for round in 0..settings.rounds {
        for (cell, &(workload, conns)) in cells.iter_mut().zip(&plan) {
            for step in 0..targets.len() {
                let t = (step + round) % targets.len();
                let measure =
                    measure(rt, &targets[t], workload, conns, run_for).with_context(|| {
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
        if let Some(s) = audited {
            audit_rss.extend(procs::status_kib(s.proc.pid(), "VmRSS:"));
        }
    }
    Ok((cells, audit_rss))
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

pub fn measure(
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
                crate::otel::quiet(true);
                proxy_before = procs::cpu_ns(&pids);
                gen_before = procs::self_cpu_ns();
            }
            loadgen::Edge::Close => {
                proxy_after = procs::cpu_ns(&pids);
                gen_after = procs::self_cpu_ns();
                crate::otel::quiet(false);
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
