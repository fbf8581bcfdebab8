//! Turns the interleaved rounds into one table per workload × concurrency: medians over rounds,
//! and ratios to direct taken within each round (so the machine's drift cancels) before the median.
//! Then the bars the sentinel is held to (issue 16's, for the configurations users run, and the
//! summary table: summary.rs).

use std::time::Duration;

/// Concurrency of the JWT latency bar: p99 added over direct by `sentinel-jwt`.
pub const JWT_BAR_CONNS: usize = 64;
const JWT_BAR_P99_US: f64 = 1000.0;

/// One target's numbers for one run.
pub struct Measure {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
    /// CPU time of the proxy process(es) per request; None for direct.
    pub proxy_cpu_per_req: Option<Duration>,
    /// The load generator's CPU use as a fraction of one core.
    pub gen_cpu: Option<f64>,
    /// A stdio target's children at the end of the run (`sentinel-stdio` only).
    pub children: Option<crate::procs::ChildMemory>,
}

/// All rounds of one workload × concurrency, per target (in `targets` order), per round.
pub struct Cell {
    pub workload: &'static str,
    pub workload_key: &'static str,
    pub conns: usize,
    pub runs: Vec<Vec<Measure>>,
}

/// Medians of one target in one cell.
pub struct Summary {
    pub rps: f64,
    spread: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub ratio: f64,
    added_p50_us: f64,
    added_p99_us: f64,
    pub proxy_cpu: Option<Duration>,
    gen_cpu: Option<f64>,
    pub errors: u64,
    first_error: Option<String>,
}

pub struct Memory {
    /// Each measured sentinel's name and peak RSS.
    pub sentinels: Vec<(&'static str, Option<u64>)>,
    pub nginx_kib: Option<u64>,
}

impl Memory {
    /// Peak RSS of a target by name, KiB (None for direct and for what was not read).
    pub fn peak_kib(&self, name: &str) -> Option<u64> {
        if name == "nginx" {
            return self.nginx_kib;
        }
        self.sentinels
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, kib)| *kib)
    }
}

/// The memory limiter's bar: p50 added over the passthrough sentinel at 1 connection.
const RL_MEMORY_BAR_US: f64 = 5.0;

/// p50 and p99 of Redis round trips measured by the bench: (PING, the limiter's check).
pub type RedisRtt = ((Duration, Duration), (Duration, Duration));

/// Direct is always `targets[0]`. The bars go to `bars`, printed at the end of the bench.
pub fn print(
    targets: &[&str],
    cells: &[Cell],
    memory: &Memory,
    redis_rtt: Option<RedisRtt>,
    bars: &mut Bars,
) {
    let mut jwt_lines = Vec::new();
    let mut rl_lines = Vec::new();
    for cell in cells {
        let summaries: Vec<Summary> = (0..targets.len()).map(|t| summarize(cell, t)).collect();
        let plural = if cell.conns == 1 { "" } else { "s" };
        println!();
        println!("{} · {} connection{plural}", cell.workload, cell.conns);
        println!(
            "  {:<18} {:>9} {:>5} {:>9} {:>9} {:>8} {:>9} {:>9} {:>13} {:>8}",
            "target",
            "req/s",
            "±",
            "p50 µs",
            "p99 µs",
            "×direct",
            "+p50 µs",
            "+p99 µs",
            "proxy CPU/req",
            "gen CPU"
        );
        for (i, (name, s)) in targets.iter().zip(&summaries).enumerate() {
            let is_direct = i == 0;
            let added = |us: f64| {
                if is_direct {
                    "—".to_owned()
                } else {
                    format!("{us:+.1}")
                }
            };
            println!(
                "  {:<18} {:>9.0} {:>4.0}% {:>9.1} {:>9.1} {:>8.2} {:>9} {:>9} {:>13} {:>8}",
                name,
                s.rps,
                s.spread * 100.0,
                micros(s.p50),
                micros(s.p99),
                s.ratio,
                added(s.added_p50_us),
                added(s.added_p99_us),
                s.proxy_cpu
                    .map_or("—".to_owned(), |c| format!("{:.1} µs", micros(c))),
                s.gen_cpu
                    .map_or("—".to_owned(), |c| format!("{:.0}%", c * 100.0)),
            );
            if s.errors > 0 {
                println!(
                    "  !! {name}: {} failed requests (counted out of req/s), first: {}",
                    s.errors,
                    s.first_error.as_deref().unwrap_or("?")
                );
            }
        }
        let find = |wanted: &str| {
            targets
                .iter()
                .position(|t| *t == wanted)
                .map(|i| &summaries[i])
        };
        if let Some(sentinel) = find("sentinel") {
            if let Some(nginx) = find("nginx") {
                bars.check(
                    sentinel.ratio >= nginx.ratio,
                    format!(
                        "throughput ×direct, {} c={}: sentinel {:.2} >= nginx {:.2}",
                        cell.workload_key, cell.conns, sentinel.ratio, nginx.ratio
                    ),
                );
            }
            if cell.conns == 1 {
                bars.check(
                    sentinel.added_p50_us <= 100.0,
                    format!(
                        "added p50 at 1 connection, {}: {:+.1} µs <= 100 µs",
                        cell.workload_key, sentinel.added_p50_us
                    ),
                );
            }
            bars.check(
                sentinel.errors == 0,
                format!(
                    "no failed requests through the sentinel, {} c={}",
                    cell.workload_key, cell.conns
                ),
            );
        }
        if let Some(jwt_index) = targets.iter().position(|t| *t == "sentinel-jwt") {
            let jwt = &summaries[jwt_index];
            bars.check(
                jwt.errors == 0,
                format!(
                    "no failed requests through sentinel-jwt, {} c={}",
                    cell.workload_key, cell.conns
                ),
            );
            let mut line = format!(
                "  {} c={}: over direct {:+.1} µs p50, {:+.1} µs p99",
                cell.workload_key, cell.conns, jwt.added_p50_us, jwt.added_p99_us
            );
            if let Some(base) = targets.iter().position(|t| *t == "sentinel") {
                line += &format!(
                    "; over passthrough {:+.1} µs p50, {:+.1} µs p99",
                    added_us(cell, jwt_index, base, |m| m.p50),
                    added_us(cell, jwt_index, base, |m| m.p99),
                );
            }
            jwt_lines.push(line);
            if cell.conns == JWT_BAR_CONNS {
                let which = if cell.workload_key == "json" {
                    String::new()
                } else {
                    format!(" ({})", cell.workload_key)
                };
                let text = format!(
                    "JWT p99 added at {JWT_BAR_CONNS} connections{which}: {:.0} µs \
                     (bar < {JWT_BAR_P99_US:.0} µs)",
                    jwt.added_p99_us
                );
                jwt_lines.push(text.clone());
                bars.check(jwt.added_p99_us < JWT_BAR_P99_US, text);
            }
        }
    }

    let mut audit = Vec::new();
    let mut stdio = Vec::new();
    for cell in cells {
        rate_limit_lines(targets, cell, redis_rtt, &mut rl_lines, bars);
        audit_lines(targets, cell, &mut audit, bars);
        stdio_lines(targets, cell, &mut stdio, bars);
    }
    if !stdio.is_empty() {
        println!();
        println!(
            "Stdio upstream (sentinel-stdio: the same answers over stdin/stdout, a child per \
             session, a session per connection) — medians over rounds:"
        );
        for line in &stdio {
            println!("{line}");
        }
        if let Some(line) = child_memory_line(targets, cells) {
            println!("{line}");
        }
    }
    if !audit.is_empty() {
        println!();
        println!(
            "Audit (sentinel-audit: stdout + PostgreSQL sinks) — over the unaudited sentinel, \
             medians of per-round differences:"
        );
        for line in &audit {
            println!("{line}");
        }
    }
    if !rl_lines.is_empty() {
        println!();
        println!(
            "Rate limiting — added over the passthrough sentinel, medians of per-round \
             differences (CPU: proxy CPU per request):"
        );
        if let Some(((p50, p99), (c50, c99))) = redis_rtt {
            println!(
                "  Redis round trips from the bench, one connection: PING p50 {:.1} µs, p99 {:.1} µs; \
                 the limiter's check (EVALSHA) p50 {:.1} µs, p99 {:.1} µs",
                micros(p50),
                micros(p99),
                micros(c50),
                micros(c99)
            );
        }
        for line in &rl_lines {
            println!("{line}");
        }
    }

    if !jwt_lines.is_empty() {
        println!();
        println!(
            "JWT auth (sentinel-jwt, cached verification) — added latency, medians of per-round \
             differences:"
        );
        for line in &jwt_lines {
            println!("{line}");
        }
    }

    println!();
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    for (name, kib) in &memory.sentinels {
        let Some(kib) = *kib else { continue };
        println!(
            "{name} peak RSS (VmHWM over the whole run): {:.1} MB",
            mb(kib)
        );
        bars.check(
            mb(kib) < 30.0,
            format!("{name} peak RSS {:.1} MB < 30 MB", mb(kib)),
        );
    }
    if let Some(kib) = memory.nginx_kib {
        println!(
            "nginx peak RSS (VmHWM, master + workers):     {:.1} MB",
            mb(kib)
        );
    }
    println!(
        "columns: medians over rounds; ± = req/s spread (max-min)/median; ×direct, +p50 and +p99 \
         are taken per round, then the median; proxy CPU/req = the proxy's CPU time per request; gen CPU = the \
         load generator's share of one core"
    );
}

/// The rate-limited targets against `sentinel` in one cell; bars at 1 connection.
fn rate_limit_lines(
    targets: &[&str],
    cell: &Cell,
    redis_rtt: Option<RedisRtt>,
    lines: &mut Vec<String>,
    bars: &mut Bars,
) {
    let Some(base) = targets.iter().position(|t| *t == "sentinel") else {
        return;
    };
    for (name, bar) in [
        ("sentinel-rl-memory", None),
        ("sentinel-rl-redis", redis_rtt.map(|(_, check)| check)),
    ] {
        let Some(t) = targets.iter().position(|x| *x == name) else {
            continue;
        };
        let p50 = added_us(cell, t, base, |m| m.p50);
        let p99 = added_us(cell, t, base, |m| m.p99);
        let cpu = added_cpu_us(cell, t, base);
        lines.push(format!(
            "  {name:<18} {} c={}: {p50:+.1} µs p50, {p99:+.1} µs p99, CPU {}",
            cell.workload_key,
            cell.conns,
            cpu.map_or("?".to_owned(), |c| format!("{c:+.1} µs"))
        ));
        let errors: u64 = cell.runs[t].iter().map(|m| m.errors).sum();
        bars.check(
            errors == 0,
            format!(
                "no failed requests through {name}, {} c={}",
                cell.workload_key, cell.conns
            ),
        );
        if cell.conns != 1 {
            continue;
        }
        match bar {
            None => bars.check(
                p50 < RL_MEMORY_BAR_US,
                format!(
                    "memory limiter adds under {RL_MEMORY_BAR_US} µs p50, {} c=1: {p50:+.1} µs",
                    cell.workload_key
                ),
            ),
            Some((rtt50, _)) => bars.check(
                p50 <= micros(rtt50),
                format!(
                    "Redis limiter within one round trip, {} c=1: {p50:+.1} µs p50 <= check \
                     round trip {:.1} µs",
                    cell.workload_key,
                    micros(rtt50)
                ),
            ),
        }
    }
}

/// `sentinel-stdio` in one cell: calls/s, latency added over direct and over the HTTP sentinel,
/// the CPU of the whole process tree per call.
fn stdio_lines(targets: &[&str], cell: &Cell, lines: &mut Vec<String>, bars: &mut Bars) {
    let Some(t) = targets.iter().position(|x| *x == "sentinel-stdio") else {
        return;
    };
    let s = summarize(cell, t);
    let over_http = targets
        .iter()
        .position(|x| *x == "sentinel")
        .map_or(String::new(), |base| {
            format!(
                "; over the HTTP sentinel {:+.1} µs p50",
                added_us(cell, t, base, |m| m.p50)
            )
        });
    let children = cell.runs[t]
        .iter()
        .filter_map(|m| m.children.as_ref().map(|c| c.servers.len()))
        .max();
    lines.push(format!(
        "  {:<4} c={:<3} {:>7.0} calls/s ({:.2}× direct), p50 {:.1} µs, p99 {:.1} µs; added p50 \
         per call over direct {:+.1} µs{over_http}; CPU/call (sentinel + launchers + servers) {}; \
         {} server processes",
        cell.workload_key,
        cell.conns,
        s.rps,
        s.ratio,
        micros(s.p50),
        micros(s.p99),
        s.added_p50_us,
        s.proxy_cpu
            .map_or("?".to_owned(), |c| format!("{:.1} µs", micros(c))),
        children.map_or("?".to_owned(), |n| n.to_string()),
    ));
    bars.check(
        s.errors == 0,
        format!(
            "no failed requests through sentinel-stdio, {} c={}",
            cell.workload_key, cell.conns
        ),
    );
}

/// RSS per child of `sentinel-stdio`, over every sample (each child at the end of each run).
fn child_memory_line(targets: &[&str], cells: &[Cell]) -> Option<String> {
    let t = targets.iter().position(|x| *x == "sentinel-stdio")?;
    let samples = cells
        .iter()
        .flat_map(|c| &c.runs[t])
        .filter_map(|m| m.children.as_ref());
    let (mut servers, mut launchers) = (Vec::new(), Vec::new());
    for c in samples {
        servers.extend(&c.servers);
        launchers.extend(&c.launchers);
    }
    let mb = |kib: f64| kib * 1024.0 / 1e6;
    let stats = |v: &[crate::procs::Rss]| {
        if v.is_empty() {
            return "none seen".to_owned();
        }
        let avg = |pick: fn(&crate::procs::Rss) -> u64| {
            v.iter().map(pick).sum::<u64>() as f64 / v.len() as f64
        };
        let max = |pick: fn(&crate::procs::Rss) -> u64| v.iter().map(pick).max().unwrap_or(0);
        format!(
            "avg {:.2} MB, max {:.2} MB (private: avg {:.2} MB, max {:.2} MB; {} samples)",
            mb(avg(|r| r.total)),
            mb(max(|r| r.total) as f64),
            mb(avg(|r| r.anon)),
            mb(max(|r| r.anon) as f64),
            v.len()
        )
    };
    Some(format!(
        "  RSS per child (VmRSS, private = RssAnon, at the end of each run): server {}; \
         launcher (mcp-sentinel launch-child) {}",
        stats(&servers),
        stats(&launchers)
    ))
}

/// Audit's bar: p99 under 10% over the unaudited sentinel, in every cell.
const AUDIT_BAR_P99: f64 = 0.10;

fn audit_lines(targets: &[&str], cell: &Cell, lines: &mut Vec<String>, bars: &mut Bars) {
    let (Some(base), Some(t)) = (
        targets.iter().position(|x| *x == "sentinel"),
        targets.iter().position(|x| *x == "sentinel-audit"),
    ) else {
        return;
    };
    let p50 = added_us(cell, t, base, |m| m.p50);
    let p99 = added_us(cell, t, base, |m| m.p99);
    let rel = median(
        cell.runs[t]
            .iter()
            .zip(&cell.runs[base])
            .map(|(m, b)| micros(m.p99) / micros(b.p99).max(1.0) - 1.0)
            .collect(),
    );
    let cpu = added_cpu_us(cell, t, base);
    lines.push(format!(
        "  sentinel-audit     {} c={}: {p50:+.1} µs p50, {p99:+.1} µs p99 ({:+.1}%), CPU {}",
        cell.workload_key,
        cell.conns,
        rel * 100.0,
        cpu.map_or("?".to_owned(), |c| format!("{c:+.1} µs"))
    ));
    let errors: u64 = cell.runs[t].iter().map(|m| m.errors).sum();
    bars.check(
        errors == 0,
        format!(
            "no failed requests through sentinel-audit, {} c={}",
            cell.workload_key, cell.conns
        ),
    );
    bars.check(
        rel < AUDIT_BAR_P99,
        format!(
            "audit adds under {:.0}% to p99, {} c={}: {:+.1}%",
            AUDIT_BAR_P99 * 100.0,
            cell.workload_key,
            cell.conns,
            rel * 100.0
        ),
    );
}

pub fn summarize(cell: &Cell, target: usize) -> Summary {
    let runs = &cell.runs[target];
    let direct = &cell.runs[0];
    let rps: Vec<f64> = runs.iter().map(|m| m.rps).collect();
    let median_rps = median(rps.clone());
    let (min, max) = rps
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    Summary {
        rps: median_rps,
        spread: if median_rps > 0.0 {
            (max - min) / median_rps
        } else {
            0.0
        },
        p50: Duration::from_secs_f64(median(runs.iter().map(|m| m.p50.as_secs_f64()).collect())),
        p99: Duration::from_secs_f64(median(runs.iter().map(|m| m.p99.as_secs_f64()).collect())),
        ratio: median(
            runs.iter()
                .zip(direct)
                .map(|(m, d)| m.rps / d.rps)
                .collect(),
        ),
        added_p50_us: added_us(cell, target, 0, |m| m.p50),
        added_p99_us: added_us(cell, target, 0, |m| m.p99),
        proxy_cpu: optional_median(
            runs.iter()
                .map(|m| m.proxy_cpu_per_req.map(|c| c.as_secs_f64())),
        )
        .map(Duration::from_secs_f64),
        gen_cpu: optional_median(runs.iter().map(|m| m.gen_cpu)),
        errors: runs.iter().map(|m| m.errors).sum(),
        first_error: runs.iter().find_map(|m| m.first_error.clone()),
    }
}

/// Median over rounds of `target`'s latency minus `base`'s in the same round, in µs.
fn added_us(cell: &Cell, target: usize, base: usize, pick: fn(&Measure) -> Duration) -> f64 {
    median(
        cell.runs[target]
            .iter()
            .zip(&cell.runs[base])
            .map(|(m, b)| micros(pick(m)) - micros(pick(b)))
            .collect(),
    )
}

/// Median of the per-round differences in proxy CPU per request.
pub fn added_cpu_us(cell: &Cell, target: usize, base: usize) -> Option<f64> {
    cpu_differences_us(cell, target, base)
        .filter(|v| !v.is_empty())
        .map(median)
}

/// `target`'s proxy CPU per request minus `base`'s, round by round, in µs.
pub fn cpu_differences_us(cell: &Cell, target: usize, base: usize) -> Option<Vec<f64>> {
    cell.runs[target]
        .iter()
        .zip(&cell.runs[base])
        .map(|(m, b)| Some(micros(m.proxy_cpu_per_req?) - micros(b.proxy_cpu_per_req?)))
        .collect()
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn optional_median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.collect();
    values.filter(|v| !v.is_empty()).map(median)
}

/// The bars of a run, printed together at its end.
#[derive(Default)]
pub struct Bars {
    lines: Vec<(bool, String)>,
}

impl Bars {
    pub fn check(&mut self, ok: bool, what: String) {
        self.lines.push((ok, what));
    }

    /// Prints every bar; true when all pass (or there was nothing to check).
    pub fn print(&self) -> bool {
        if self.lines.is_empty() {
            println!("bars: not checked (the sentinel was not among the targets)");
            return true;
        }
        println!();
        println!("bars:");
        for (ok, what) in &self.lines {
            println!("  [{}] {what}", if *ok { "PASS" } else { "FAIL" });
        }
        self.lines.iter().all(|(ok, _)| *ok)
    }
}
