//! The memory scenarios, each on freshly started processes (so what one run left in the
//! allocator does not hide the next one's growth), after a short warm-up of JSON calls:
//!
//! - `streams`: BENCH_STREAMS (1,000) SSE answers held open at once — `tools/call` of the
//!   upstream's `hold` tool, one event and then silence, as a long call or a session's GET stream
//!   between events. RSS per open stream = (VmRSS with them open − VmRSS before) / streams; then
//!   every client closes and VmRSS must come back within [`BACK_MARGIN_KIB`] of before.
//! - `large`: eight concurrent `tools/call`s of the `large` tool (a 10 MiB result each) from
//!   clients that wait 1 s before reading (their receive buffers held at 64 KiB, so the proxy
//!   meets back-pressure instead of loopback's multi-megabyte socket buffers). Peak growth =
//!   VmHWM during (reset with `/proc/<pid>/clear_refs` just before) − VmRSS before.
//!
//! The clients are raw HTTP/1.1 over TCP: cheap enough to open a thousand, and able to not read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::procs::{self, Proc, Sentinel, Stdout, Upstream};
use crate::report::Bars;
use crate::settings::{Kind, Settings};
use crate::upstream::{HOLD_TOOL, LARGE_BYTES, LARGE_END, LARGE_TOOL};

/// RSS per open stream, KiB (as /proc counts: 1 KiB = 1024 bytes).
const STREAM_BAR_KIB: f64 = 16.0;
/// After the streams close, VmRSS within this much of before: 1 KiB per stream that was open
/// (allocator pages and runtime slabs a first burst may keep, not per-stream state).
const BACK_MARGIN_KIB: u64 = 1024;
/// Peak RSS growth while the eight large results pass.
const LARGE_BAR_KIB: u64 = 2048;
const LARGE_CLIENTS: usize = 8;
const READ_DELAY: Duration = Duration::from_secs(1);
/// The slow clients' receive buffer (SO_RCVBUF, set before connecting).
const CLIENT_RCVBUF: u32 = 64 << 10;
/// Connections being opened at once (nginx's listen backlog is 511).
const OPENING: usize = 64;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    Streams,
    Large,
}

impl Scenario {
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "streams" => Some(Self::Streams),
            "large" => Some(Self::Large),
            _ => None,
        }
    }
}

/// One process (or nginx's master and workers) under test, started for one scenario.
struct Subject {
    name: &'static str,
    addr: SocketAddr,
    pids: Vec<u32>,
    /// What keeps it running; dropped (stopped) after its scenario.
    _running: Running,
}

#[allow(dead_code)] // held for their Drop
enum Running {
    Upstream(Proc),
    Sentinel(Sentinel),
    Nginx(procs::Nginx),
}

/// Runs the selected scenarios against direct (a fresh upstream: its own numbers, for scale),
/// sentinel-shipped, sentinel (audit off: attributes audit's share) and nginx, the last three
/// when BENCH_TARGETS has them; prints the results, adds the bars of sentinel-shipped.
pub fn run(
    settings: &Settings,
    workdir: &std::path::Path,
    upstream: SocketAddr,
    rt: &tokio::runtime::Runtime,
    fd_limit: u64,
    bars: &mut Bars,
) -> Result<()> {
    let streams = settings.streams;
    if settings.memory.contains(&Scenario::Streams) {
        // Each proxied stream is two sockets in the proxy, one in the bench and one in the upstream.
        let needed = 2 * streams as u64 + 256;
        ensure!(
            fd_limit >= needed,
            "the streams scenario needs {needed} open files per process and the hard limit is \
             {fd_limit} (raise it with `ulimit -Hn`, or lower BENCH_STREAMS)"
        );
    }
    let kinds: Vec<Kind> = [Kind::SentinelShipped, Kind::Sentinel, Kind::Nginx]
        .into_iter()
        .filter(|k| settings.has(*k))
        .collect();
    let json = crate::settings::workload("json")?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "Memory scenarios: {} (sentinel-shipped: {}), each target started afresh per scenario \
         and warmed up with 0.3 s of JSON calls on 4 connections; open-files limit {fd_limit}; \
         load average {} now",
        settings.sentinel_bin.display(),
        settings.shipped_config.display(),
        load.split(' ').next().unwrap_or("?")
    );
    for &scenario in &settings.memory {
        let mut rows = Vec::new();
        for kind in std::iter::once(Kind::Direct).chain(kinds.iter().copied()) {
            let subject = start(kind, settings, workdir, upstream, streams, scenario)?;
            // Warm-up: the first calls set up what every call shares (pools, caches, metrics).
            rt.block_on(crate::loadgen::run(
                subject.addr,
                &json,
                4,
                Duration::from_millis(300),
                None,
                false,
                &mut |_| {},
            ))
            .with_context(|| format!("warming up {}", subject.name))?;
            std::thread::sleep(Duration::from_millis(300));
            let row = match scenario {
                Scenario::Streams => Row::Streams(
                    rt.block_on(hold_streams(&subject, streams))
                        .with_context(|| format!("{} streams through {}", streams, subject.name))?,
                ),
                Scenario::Large => Row::Large(
                    rt.block_on(large_results(&subject))
                        .with_context(|| format!("large results through {}", subject.name))?,
                ),
            };
            eprintln!(
                "bench: memory scenario {scenario:?} on {} done",
                subject.name
            );
            rows.push((subject.name, row));
        }
        match scenario {
            Scenario::Streams => print_streams(&rows, streams, bars),
            Scenario::Large => print_large(&rows, bars),
        }
    }
    Ok(())
}

fn start(
    kind: Kind,
    settings: &Settings,
    workdir: &std::path::Path,
    upstream: SocketAddr,
    streams: usize,
    scenario: Scenario,
) -> Result<Subject> {
    let name = kind.name();
    let label = format!("{name}-{}", format!("{scenario:?}").to_lowercase());
    let (addr, pids, running) = match kind {
        Kind::Direct => {
            let (proc, addr) = procs::start_upstream(crate::UPSTREAM_ROLE)?;
            (addr, vec![proc.pid()], Running::Upstream(proc))
        }
        Kind::Nginx => {
            let connections = (2 * streams + 64).max(4096);
            let nginx = procs::start_nginx(
                workdir,
                &label,
                upstream,
                settings.nginx_workers,
                connections,
            )?;
            (nginx.addr, nginx.pids(), Running::Nginx(nginx))
        }
        Kind::SentinelShipped | Kind::Sentinel => {
            let (config, stdout) = if kind == Kind::SentinelShipped {
                (&settings.shipped_config, Stdout::Pipe)
            } else {
                (&settings.sentinel_config, Stdout::LogFile)
            };
            let s = procs::start_sentinel(
                &label,
                workdir,
                &settings.sentinel_bin,
                config,
                &Upstream::Http(upstream),
                stdout,
            )?;
            (s.addr, vec![s.proc.pid()], Running::Sentinel(s))
        }
        other => bail!("no memory scenario for {}", other.name()),
    };
    Ok(Subject {
        name,
        addr,
        pids,
        _running: running,
    })
}

enum Row {
    Streams(Streams),
    Large(Large),
}

struct Streams {
    opened: usize,
    failed: usize,
    first_error: Option<String>,
    open_time: Duration,
    before: u64,
    with: u64,
    after: u64,
    settle: Duration,
    /// Open file descriptors (summed over the pids) before, with the streams open, after.
    fds: [Option<usize>; 3],
}

struct Large {
    completed: usize,
    failed: usize,
    first_error: Option<String>,
    before: u64,
    /// VmHWM after the run (reset just before it), or None when the kernel refused the reset.
    peak: Option<u64>,
    /// The highest VmRSS seen by polling every 2 ms (a cross-check of the peak).
    sampled: u64,
    read_time: Duration,
}

fn request(addr: SocketAddr, body: &str, close: bool) -> Vec<u8> {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

fn rss(subject: &Subject) -> Result<u64> {
    procs::rss_kib(&subject.pids).with_context(|| format!("reading {}'s VmRSS", subject.name))
}

async fn hold_streams(subject: &Subject, streams: usize) -> Result<Streams> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"{HOLD_TOOL}","arguments":{{}},"_meta":{{"progressToken":"hold"}}}}}}"#
    );
    let request: Arc<[u8]> = request(subject.addr, &body, false).into();
    let before = rss(subject)?;
    let fds_before = procs::open_fds(&subject.pids);
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (gate, request, addr) = (gate.clone(), request.clone(), subject.addr);
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            tokio::time::timeout(CLIENT_TIMEOUT, open_stream(addr, &request))
                .await
                .map_err(|_| anyhow!("no first event within {CLIENT_TIMEOUT:?}"))?
        });
    }
    let mut open = Vec::with_capacity(streams);
    let (mut failed, mut first_error) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a client task panicked")? {
            Ok(stream) => open.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let open_time = started.elapsed();
    // Let the proxy finish what opening them started (its audit thread, its logs).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss(subject)?;
    let fds_with = procs::open_fds(&subject.pids);
    let opened = open.len();
    drop(open);
    let closed = Instant::now();
    let after = settled_rss(subject).await?;
    Ok(Streams {
        fds: [fds_before, fds_with, procs::open_fds(&subject.pids)],
        opened,
        failed,
        first_error,
        open_time,
        before,
        with,
        after,
        settle: closed.elapsed(),
    })
}

/// VmRSS once it has stopped moving after the clients closed: at least a second later, then
/// two readings 250 ms apart within 64 KiB of each other (at most 5 s).
async fn settled_rss(subject: &Subject) -> Result<u64> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let until = Instant::now() + Duration::from_secs(4);
    let mut last = rss(subject)?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss(subject)?;
        if now.abs_diff(last) <= 64 || Instant::now() >= until {
            return Ok(now);
        }
        last = now;
    }
}

/// Connects, asks for a held stream, and returns the connection once its first event arrived.
async fn open_stream(addr: SocketAddr, request: &[u8]) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        ensure!(n > 0, "closed before the first event");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            ensure!(
                head.starts_with("http/1.1 200"),
                "answer {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(300)])
            );
            ensure!(
                head.contains("content-type: text/event-stream"),
                "not an SSE answer: {head:?}"
            );
            let body = &buf[end + 4..];
            if find(body, b"data:").is_some_and(|at| find(&body[at..], b"\n\n").is_some()) {
                return Ok(stream);
            }
        }
        ensure!(buf.len() < 64 << 10, "no complete first event in 64 KiB");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn large_results(subject: &Subject) -> Result<Large> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{{"name":"{LARGE_TOOL}","arguments":{{}}}}}}"#
    );
    let request = request(subject.addr, &body, true);
    let before = rss(subject)?;
    let reset = procs::reset_peak_rss(&subject.pids);
    let stop = Arc::new(AtomicBool::new(false));
    let sampled = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, sampled, pids) = (stop.clone(), sampled.clone(), subject.pids.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = procs::rss_kib(&pids) {
                    sampled.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let outcome = async {
        let mut clients = Vec::with_capacity(LARGE_CLIENTS);
        for _ in 0..LARGE_CLIENTS {
            let socket = TcpSocket::new_v4()?;
            socket.set_recv_buffer_size(CLIENT_RCVBUF)?;
            let mut stream = socket.connect(subject.addr).await?;
            stream.write_all(&request).await?;
            clients.push(stream);
        }
        // Nobody reads for a second: the answers pile up wherever the proxy lets them.
        tokio::time::sleep(READ_DELAY).await;
        let started = Instant::now();
        let reads: Vec<_> = clients
            .into_iter()
            .map(|s| tokio::spawn(tokio::time::timeout(CLIENT_TIMEOUT, read_large(s))))
            .collect();
        let mut results = Vec::new();
        for read in reads {
            results.push(match read.await.context("a client task panicked")? {
                Ok(r) => r,
                Err(_) => Err(anyhow!("not read to the end within {CLIENT_TIMEOUT:?}")),
            });
        }
        Ok::<_, anyhow::Error>((results, started.elapsed()))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (results, read_time) = outcome?;
    let peak = if reset {
        procs::peak_rss_kib(&subject.pids)
    } else {
        None
    };
    let (mut completed, mut failed, mut first_error) = (0, 0, None);
    for r in results {
        match r {
            Ok(()) => completed += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(Large {
        completed,
        failed,
        first_error,
        before,
        peak,
        sampled: sampled.load(Ordering::Relaxed),
        read_time,
    })
}

/// Reads one large answer to its end (the server closes: `Connection: close`) and checks it.
async fn read_large(mut stream: TcpStream) -> Result<()> {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut total = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        if head.len() < 512 {
            head.extend_from_slice(&chunk[..n.min(512)]);
        }
        total += n;
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > 256 {
            tail.drain(..tail.len() - 256);
        }
    }
    ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "answer {:?}",
        String::from_utf8_lossy(&head[..head.len().min(300)])
    );
    ensure!(
        total >= LARGE_BYTES && find(&tail, LARGE_END.as_bytes()).is_some(),
        "{total} bytes, without the result's end"
    );
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn delta(to: u64, from: u64) -> i64 {
    to as i64 - from as i64
}

fn print_streams(rows: &[(&'static str, Row)], streams: usize, bars: &mut Bars) {
    println!();
    println!(
        "Memory: {streams} SSE answers held open at once (tools/call of `{HOLD_TOOL}`: one event, \
         then open) — fresh processes, VmRSS in KiB (nginx: master + workers; direct: the \
         upstream itself, for scale)"
    );
    println!(
        "  {:<18} {:>7} {:>9} {:>9} {:>9} {:>13} {:>15} {:>9}   open files before/open/closed",
        "target", "opened", "before", "open", "closed", "per stream", "closed−before", "open in",
    );
    for (name, row) in rows {
        let Row::Streams(s) = row else { continue };
        let per = delta(s.with, s.before) as f64 / s.opened.max(1) as f64;
        println!(
            "  {name:<18} {:>7} {:>9} {:>9} {:>9} {:>9.1} KiB {:>11} KiB {:>7.2} s   {}",
            s.opened,
            s.before,
            s.with,
            s.after,
            per,
            format!("{:+}", delta(s.after, s.before)),
            s.open_time.as_secs_f64(),
            s.fds
                .map(|n| n.map_or("?".to_owned(), |n| n.to_string()))
                .join("/")
        );
        if s.failed > 0 {
            println!(
                "  !! {name}: {} streams failed to open, first: {}",
                s.failed,
                s.first_error.as_deref().unwrap_or("?")
            );
        }
        if *name != Kind::SentinelShipped.name() {
            continue;
        }
        bars.check(
            s.failed == 0,
            format!("(16c) {name}: all {streams} SSE streams open at once"),
        );
        bars.check(
            per <= STREAM_BAR_KIB,
            format!(
                "(16c) {name} RSS per open SSE stream: {per:.1} KiB <= {STREAM_BAR_KIB:.0} KiB \
                 (({} − {}) KiB / {})",
                s.with, s.before, s.opened
            ),
        );
        bars.check(
            delta(s.after, s.before) <= BACK_MARGIN_KIB as i64,
            format!(
                "(16c) {name} memory back after the streams close: {:+} KiB over before <= \
                 {BACK_MARGIN_KIB} KiB (settled after {:.1} s)",
                delta(s.after, s.before),
                s.settle.as_secs_f64()
            ),
        );
    }
}

fn print_large(rows: &[(&'static str, Row)], bars: &mut Bars) {
    println!();
    println!(
        "Memory: {LARGE_CLIENTS} concurrent {} MiB tool results (JSON), clients that wait {} s \
         before reading (SO_RCVBUF {} KiB) — fresh processes, KiB",
        LARGE_BYTES >> 20,
        READ_DELAY.as_secs(),
        CLIENT_RCVBUF >> 10
    );
    println!(
        "  {:<18} {:>9} {:>9} {:>12} {:>14} {:>16} {:>9}",
        "target", "complete", "before", "peak VmHWM", "peak growth", "sampled growth", "read in"
    );
    for (name, row) in rows {
        let Row::Large(l) = row else { continue };
        let growth = l.peak.map(|p| delta(p, l.before));
        println!(
            "  {name:<18} {:>9} {:>9} {:>12} {:>14} {:>16} {:>7.2} s",
            format!("{}/{LARGE_CLIENTS}", l.completed),
            l.before,
            l.peak.map_or("?".to_owned(), |p| p.to_string()),
            growth.map_or("?".to_owned(), |g| format!(
                "{g:+} ({:+.2} MiB)",
                g as f64 / 1024.0
            )),
            format!("{:+}", delta(l.sampled, l.before)),
            l.read_time.as_secs_f64()
        );
        if l.failed > 0 {
            println!(
                "  !! {name}: {} results failed, first: {}",
                l.failed,
                l.first_error.as_deref().unwrap_or("?")
            );
        }
        if *name != Kind::SentinelShipped.name() {
            continue;
        }
        bars.check(
            l.failed == 0,
            format!("(16d) {name}: all {LARGE_CLIENTS} large results delivered whole"),
        );
        // Without the reset (an old kernel), the sampled maximum stands in for VmHWM.
        let (growth, how) = match growth {
            Some(g) => (g, "VmHWM"),
            None => (
                delta(l.sampled, l.before),
                "sampled VmRSS, VmHWM could not be reset",
            ),
        };
        bars.check(
            growth <= LARGE_BAR_KIB as i64,
            format!(
                "(16d) {name} peak RSS growth with {LARGE_CLIENTS} slow readers of {} MiB: {growth:+} KiB \
                 ({how}) <= {LARGE_BAR_KIB} KiB ({:.0} MiB)",
                LARGE_BYTES >> 20,
                mib(LARGE_BAR_KIB)
            ),
        );
    }
}
