//! The run in one table — each target's throughput (×direct), p50, CPU per request in every
//! cell, and its peak RSS — and issue 16's bars, which hold the configurations users run
//! (`sentinel-shipped`, `sentinel-full`) to account against nginx and direct in the same run.

use crate::report::{
    Bars, Cell, Memory, Summary, added_cpu_us, cpu_differences_us, micros, summarize,
};
use crate::settings::Kind;

/// (a) The shipped config: throughput ratio at least nginx's at these concurrencies.
const SHIPPED_CONNS: [usize; 2] = [1, 32];
/// (a) Audit's added CPU per request: sentinel-shipped − sentinel, µs.
const AUDIT_CPU_US: f64 = 8.0;
/// (a) sentinel-shipped's peak RSS over the timed runs, MB (10^6 bytes, as the other RSS lines).
const SHIPPED_RSS_MB: f64 = 20.0;
/// (b) sentinel-full's throughput over direct, geometric mean over the measured cells.
const FULL_RATIO: f64 = 0.25;
/// (b) sentinel-full's CPU per request, µs, in every cell.
const FULL_CPU_US: f64 = 120.0;
/// (b) A filtered tools/list under 1,000 rules: sentinel-policy − sentinel, CPU µs per request.
const LIST_CPU_US: f64 = 40.0;
/// Issue 18: tracing at 10% sampling adds at most this share of the untraced CPU per request.
const TRACE_10_SHARE: f64 = 0.05;

pub fn print(targets: &[&str], cells: &[Cell], memory: &Memory, bars: &mut Bars) {
    if cells.is_empty() {
        return;
    }
    let summaries: Vec<Vec<Summary>> = cells
        .iter()
        .map(|c| (0..targets.len()).map(|t| summarize(c, t)).collect())
        .collect();
    print_table(targets, cells, &summaries, memory);
    let index = |kind: Kind| targets.iter().position(|t| *t == kind.name());
    let sentinel = index(Kind::Sentinel);
    let nginx = index(Kind::Nginx);

    let what = |cell: &Cell| format!("{} c={}", cell.workload_key, cell.conns);
    if let Some(shipped) = index(Kind::SentinelShipped) {
        let name = Kind::SentinelShipped.name();
        if let Some(nginx) = nginx {
            for (cell, s) in cells.iter().zip(&summaries) {
                if SHIPPED_CONNS.contains(&cell.conns) {
                    bars.check(
                        s[shipped].ratio >= s[nginx].ratio,
                        format!(
                            "(16a) throughput ×direct, {}: {name} {:.2} >= nginx {:.2}",
                            what(cell),
                            s[shipped].ratio,
                            s[nginx].ratio
                        ),
                    );
                }
            }
        }
        if let Some(base) = sentinel {
            for cell in cells {
                let added = added_cpu_us(cell, shipped, base);
                bars.check(
                    added.is_some_and(|a| a <= AUDIT_CPU_US),
                    format!(
                        "(16a) audit's added CPU per request ({name} − sentinel), {}: {} <= \
                         {AUDIT_CPU_US:.0} µs",
                        what(cell),
                        added.map_or("?".to_owned(), |a| format!("{a:+.1} µs"))
                    ),
                );
            }
        }
        let mb = memory.peak_kib(name).map(|kib| kib as f64 * 1024.0 / 1e6);
        bars.check(
            mb.is_some_and(|mb| mb <= SHIPPED_RSS_MB),
            format!(
                "(16a) {name} peak RSS over the timed runs: {} <= {SHIPPED_RSS_MB:.0} MB",
                mb.map_or("?".to_owned(), |mb| format!("{mb:.1} MB"))
            ),
        );
        for (cell, s) in cells.iter().zip(&summaries) {
            bars.check(
                s[shipped].errors == 0,
                format!("(16) no failed requests through {name}, {}", what(cell)),
            );
        }
    }

    if let Some(full) = index(Kind::SentinelFull) {
        let name = Kind::SentinelFull.name();
        let ratios: Vec<f64> = summaries.iter().map(|s| s[full].ratio).collect();
        let mean = geomean(&ratios);
        bars.check(
            mean >= FULL_RATIO,
            format!(
                "(16b) {name} throughput ×direct, geometric mean over the {} measured cells: \
                 {mean:.2} >= {FULL_RATIO}",
                ratios.len()
            ),
        );
        for (cell, s) in cells.iter().zip(&summaries) {
            let cpu = s[full].proxy_cpu.map(micros);
            bars.check(
                cpu.is_some_and(|c| c <= FULL_CPU_US),
                format!(
                    "(16b) {name} CPU per request, {}: {} <= {FULL_CPU_US:.0} µs",
                    what(cell),
                    cpu.map_or("?".to_owned(), |c| format!("{c:.1} µs"))
                ),
            );
        }
        for (cell, s) in cells.iter().zip(&summaries) {
            bars.check(
                s[full].errors == 0,
                format!("(16) no failed requests through {name}, {}", what(cell)),
            );
        }
    }

    if let Some(base) = sentinel
        && let Some(again) = index(Kind::SentinelAgain)
    {
        same_twice(cells, &summaries, base, again);
    }
    tracing_cost(cells, &summaries, &index, bars);

    if let (Some(policy), Some(base)) = (index(Kind::SentinelPolicy), sentinel) {
        for cell in cells.iter().filter(|c| c.workload_key == "list") {
            let added = added_cpu_us(cell, policy, base);
            bars.check(
                added.is_some_and(|a| a <= LIST_CPU_US),
                format!(
                    "(16b) a tools/list filtered by {} rules, c={}: CPU over passthrough \
                     (sentinel-policy − sentinel) {} <= {LIST_CPU_US:.0} µs",
                    crate::policy::RULES,
                    cell.conns,
                    added.map_or("?".to_owned(), |a| format!("{a:+.1} µs"))
                ),
            );
        }
    }
}

/// The A/A test: `sentinel-again` is `sentinel` itself, so what one measures over the other in
/// the same rounds is the run's noise, the resolution of every CPU comparison above and below.
fn same_twice(cells: &[Cell], summaries: &[Vec<Summary>], base: usize, again: usize) {
    for (cell, s) in cells.iter().zip(summaries) {
        let added = added_cpu_us(cell, again, base);
        let share = added.zip(s[base].proxy_cpu.map(micros)).map(|(a, o)| a / o);
        println!(
            "  (A/A) sentinel-again over sentinel (the same binary and config), {} c={}: CPU \
             per request {} ({}){}",
            cell.workload_key,
            cell.conns,
            added.map_or("?".to_owned(), |a| format!("{a:+.2} µs")),
            share.map_or("?".to_owned(), |x| format!("{:+.1}%", x * 100.0)),
            spread(cell, again, base),
        );
    }
}

/// ` [rounds lo to hi µs]`: how far single rounds of `target` over `base` strayed.
fn spread(cell: &Cell, target: usize, base: usize) -> String {
    cpu_differences_us(cell, target, base)
        .filter(|d| d.len() > 1)
        .map_or(String::new(), |d| {
            let lo = d.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(" [rounds {lo:+.1} to {hi:+.1} µs]")
        })
}

/// Issue 18: what tracing adds over the same config untraced, per cell: CPU per request
/// (median of the per-round differences) and p50. The bar (10% sampling) is read twice: in the
/// configuration users run, `sentinel-shipped-otel-10` over `sentinel-shipped` (audit on, whose
/// records then carry the trace and span ids), and with nothing else on, `sentinel-otel-10`
/// over `sentinel`.
fn tracing_cost(
    cells: &[Cell],
    summaries: &[Vec<Summary>],
    index: &dyn Fn(Kind) -> Option<usize>,
    bars: &mut Bars,
) {
    let pairs = [
        (Kind::SentinelOtel100, Kind::Sentinel, false),
        (Kind::SentinelOtel10, Kind::Sentinel, true),
        (Kind::SentinelShippedOtel10, Kind::SentinelShipped, true),
    ];
    for (kind, base_kind, bar) in pairs {
        let (Some(t), Some(base)) = (index(kind), index(base_kind)) else {
            continue;
        };
        for (cell, s) in cells.iter().zip(summaries) {
            let added = added_cpu_us(cell, t, base);
            let off = s[base].proxy_cpu.map(micros);
            let share = added.zip(off).map(|(a, o)| a / o);
            // How far single rounds stray from the median: the noise the bar is read through.
            let spread = spread(cell, t, base);
            let line = format!(
                "(18) {} over {}, {} c={}: CPU per request {} ({}){spread}, p50 {:+.1} µs",
                kind.name(),
                base_kind.name(),
                cell.workload_key,
                cell.conns,
                added.map_or("?".to_owned(), |a| format!("{a:+.2} µs")),
                share.map_or("?".to_owned(), |x| format!("{:+.1}%", x * 100.0)),
                micros(s[t].p50) - micros(s[base].p50),
            );
            if bar {
                bars.check(
                    share.is_some_and(|x| x <= TRACE_10_SHARE),
                    format!("{line} <= {:.0}%", TRACE_10_SHARE * 100.0),
                );
            } else {
                println!("  {line}");
            }
        }
    }
}

fn print_table(targets: &[&str], cells: &[Cell], summaries: &[Vec<Summary>], memory: &Memory) {
    println!();
    println!(
        "Summary — in each cell ×direct (throughput over direct), p50 µs, proxy CPU µs per \
         request (medians over rounds); geomean ×direct over the cells; peak RSS (VmHWM) over \
         the timed runs"
    );
    let mut head = format!("  {:<18}", "");
    let mut columns = format!("  {:<18}", "target");
    for cell in cells {
        head += &format!(
            "  {:^18}",
            format!("{} c={}", cell.workload_key, cell.conns)
        );
        columns += &format!("  {:>5} {:>6} {:>5}", "×dir", "p50", "CPU");
    }
    println!("{head}");
    println!("{columns}  {:>8} {:>9}", "geomean", "peak RSS");
    for (t, name) in targets.iter().enumerate() {
        let mut line = format!("  {name:<18}");
        for s in summaries {
            let s = &s[t];
            line += &format!(
                "  {:>5.2} {:>6.0} {:>6}",
                s.ratio,
                micros(s.p50),
                s.proxy_cpu
                    .map_or("—".to_owned(), |c| format!("{:.1}", micros(c)))
            );
        }
        let ratios: Vec<f64> = summaries.iter().map(|s| s[t].ratio).collect();
        let rss = memory.peak_kib(name).map_or("—".to_owned(), |kib| {
            format!("{:.1} MB", kib as f64 * 1024.0 / 1e6)
        });
        println!("{line}  {:>8.2} {rss:>9}", geomean(&ratios));
    }
}

fn geomean(values: &[f64]) -> f64 {
    if values.is_empty() || values.iter().any(|v| *v <= 0.0) {
        return 0.0;
    }
    (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp()
}
