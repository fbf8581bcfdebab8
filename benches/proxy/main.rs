//! `make bench`: the sentinel's throughput, latency and memory against a direct connection to a
//! fast upstream and against nginx as a plain reverse proxy. Targets are measured interleaved —
//! several rounds, target order rotated each round — so the machine's noise cancels in the ratios.
//!
//! As deployed (issue 16; deployed.rs, summary.rs): `sentinel-shipped` is examples/passthrough.yaml
//! exactly as shipped — its default audit writes a record per call to stdout, which is a pipe
//! drained by a separate process into a file, as a container's stdout is. `sentinel-full` is the
//! whole pipeline in one config: JWT (ES256), the 1,000-rule policy, a Redis rate limit on every
//! call, audit to stdout and PostgreSQL. `sentinel` is the passthrough config with audit off: the
//! reference that attributes audit's cost. The run ends with a summary table (×direct, p50, CPU
//! per request in every cell, peak RSS) and issue 16's bars: (16a) sentinel-shipped's throughput
//! ratio at least nginx's at 1 and 32 connections in every workload, audit's added CPU per
//! request (shipped − sentinel) at most 8 µs in every cell, its peak RSS at most 20 MB; (16b)
//! sentinel-full at least 0.25 × direct (geometric mean over the cells) and at most 120 µs of CPU
//! per request in every cell, and a tools/list filtered by 1,000 rules at most 40 µs of CPU over
//! passthrough (sentinel-policy − sentinel).
//!
//! Tool integrity's cost (integrity.rs), BENCH_WORKLOADS entry `integrity`: a 50-tool
//! tools/list and a 64 KiB result through the sentinel with integrity off and on, interleaved,
//! with what integrity adds to CPU per request and p50.
//!
//! Memory scenarios (memory.rs), BENCH_WORKLOADS entries `streams` and `large`, each on freshly
//! started direct (upstream), sentinel-shipped, sentinel and nginx: 1,000 SSE answers held open
//! at once (RSS per open stream at most 16 KiB; memory back within 1 MiB once they close), and
//! eight concurrent 10 MiB results to clients that wait 1 s before reading (peak RSS growth at
//! most 2 MiB). The bench raises its open-files limit to the hard limit; the processes it starts
//! inherit it.
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
//! (BENCH_PG_URL, default the `make services` database; see audit.rs); every sentinel but it,
//! sentinel-shipped and sentinel-full runs with audit off. Its bar: p99 under 10% over the
//! unaudited sentinel, and RSS level under load.
//!
//! `sentinel-stdio` is the sentinel with the same (unaudited) config in front of the same
//! upstream over stdio (`run -- <this binary> --serve-stdio-upstream`: the same answers, one
//! JSON-RPC message a line; see upstream.rs and stdio.rs). A stdio server answers only inside a
//! legacy session, so the load generator opens one per connection for this target: one child (and
//! its launcher) per connection. Its CPU per request is the whole process tree's (sentinel,
//! launchers, servers) and the report adds each child's RSS, read at the end of every timed run.
//!
//! `sentinel-otel-100` and `sentinel-otel-10` are the passthrough config plus tracing (issue 18)
//! sampling every new trace or one in ten, exporting OTLP/HTTP to a receiver in the bench that
//! decodes and discards (see otel.rs): their CPU per request over `sentinel` is tracing's cost.
//! `sentinel-shipped-otel-10` is sentinel-shipped's config (audit on) with the same tracing at
//! one in ten: its CPU per request over `sentinel-shipped` is the cost in what users run.
//!
//! Settings (environment): BENCH_SECONDS (per run, default 2), BENCH_ROUNDS (5),
//! BENCH_WARMUP_SECONDS (0.5), BENCH_CONNS ("1,32"), BENCH_WORKLOADS ("json,sse,list,streams,
//! large,integrity"; without json, sse or list the throughput rounds are skipped), BENCH_STREAMS (1000),
//! BENCH_TARGETS ("direct,sentinel,sentinel-shipped,sentinel-full,sentinel-jwt,sentinel-policy,
//! sentinel-rl-memory,sentinel-rl-redis,sentinel-audit,sentinel-stdio,sentinel-otel-100,
//! sentinel-otel-10,sentinel-shipped-otel-10,nginx"; direct is always measured; `sentinel-again`, the same sentinel a
//! second time for an A/A reading of the run's noise, only when named), BENCH_NGINX_WORKERS
//! (1), SENTINEL_BIN, BENCH_SENTINEL_CONFIG (examples/passthrough.yaml: what sentinel-shipped
//! runs, and the base of every other sentinel's config), BENCH_REDIS_ADDR, BENCH_PG_URL,
//! NGINX_BIN, BENCH_STRICT=1 (exit 1 when a bar fails), BENCH_PIN=1 (every proxy under test on
//! the last CPU, alone, and everything else on the others: differences of a few percent in CPU
//! per request between targets become readable — see `sentinel-again` — at the price of a
//! cross-CPU wake-up per request, which makes ×direct and p50 at one connection meaningless).

mod audit;
mod deployed;
mod idp;
mod integrity;
mod loadgen;
mod memory;
mod otel;
mod policy;
mod procs;
mod ratelimit;
mod report;
mod settings;
mod stdio;
mod summary;
mod throughput;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use settings::Settings;

/// Re-executing this binary with this flag runs the fast upstream instead of the bench.
const UPSTREAM_ROLE: &str = "--serve-upstream";
/// ... and this one, the same upstream over stdio (run by `sentinel-stdio`).
const STDIO_UPSTREAM_ROLE: &str = "--serve-stdio-upstream";
/// ... and this one (with a file after it), the reader of a sentinel's stdout pipe.
const DRAIN_ROLE: &str = "--drain-stdout";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let role = if args.iter().any(|a| a == UPSTREAM_ROLE) {
        Some(upstream::main())
    } else if args.iter().any(|a| a == STDIO_UPSTREAM_ROLE) {
        Some(upstream::main_stdio())
    } else {
        args.iter()
            .position(|a| a == DRAIN_ROLE)
            .map(|at| match args.get(at + 1) {
                Some(file) => deployed::drain_main(&PathBuf::from(file)),
                None => Err(anyhow::anyhow!("{DRAIN_ROLE} needs a file")),
            })
    };
    if let Some(served) = role {
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench helper: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo bench` passes `--bench`. Anything else is a test runner (`cargo test --all-targets`,
    // nextest listing with `--list`): the bench takes minutes, so it offers no tests there.
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
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

fn bench() -> Result<bool> {
    let started = std::time::Instant::now();
    let mut settings = Settings::from_env()?;
    if let Some(pin) = &settings.pin {
        // Before any thread or process starts: they inherit this one's CPUs.
        procs::pin(std::process::id(), &pin.rest)?;
        let _ = procs::PROXY_CPUS.set(pin.proxy.clone());
    }
    // Before any process starts: they inherit it (a thousand streams are two thousand sockets in
    // a proxy).
    let fd_limit = procs::raise_fd_limit()?;
    let workdir = procs::Workdir::create()?;
    // Audit is measured on its own targets: `sentinel` and its variants run without it.
    settings.sentinel_config = audit::unaudited(&settings.shipped_config, workdir.path())?;
    let (_upstream, upstream_addr) = procs::start_upstream(UPSTREAM_ROLE)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bars = report::Bars::default();
    if !settings.workloads.is_empty() {
        throughput::run(&settings, workdir.path(), upstream_addr, &rt, &mut bars)?;
    }
    if settings.integrity {
        integrity::run(&settings, workdir.path(), upstream_addr, &rt)
            .context("tool integrity's cost")?;
    }
    if !settings.memory.is_empty() {
        memory::run(
            &settings,
            workdir.path(),
            upstream_addr,
            &rt,
            fd_limit,
            &mut bars,
        )
        .context("memory scenarios")?;
    }
    let passed = bars.print();
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(passed || !settings.strict)
}
