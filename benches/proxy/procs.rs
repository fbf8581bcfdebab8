//! The processes under test: the fast upstream (this binary, re-executed), the sentinel and nginx.
//! Each is stopped when its handle drops; CPU time and peak RSS are read from /proc. A sentinel
//! with a stdio upstream is a process tree (launchers, and their servers, under it): [`tree`].

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

/// The CPUs the proxies under test run on when the bench pins (BENCH_PIN=1), set once before
/// any process starts.
pub static PROXY_CPUS: OnceLock<String> = OnceLock::new();

/// Pins every thread of process `pid` to `cpus` (a `taskset` CPU list); threads it starts later
/// and the processes it spawns inherit it.
pub fn pin(pid: u32, cpus: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux) for BENCH_PIN=1")?;
    ensure!(status.success(), "taskset -a -p -c {cpus} {pid} failed");
    Ok(())
}

/// The command that starts a proxy under test: on the proxies' CPUs when the bench pins
/// (`taskset` executes it in its own process, so the child is the proxy).
fn proxy_command(bin: &Path) -> Command {
    match PROXY_CPUS.get() {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// A scratch directory for configs and logs, removed on drop.
pub struct Workdir(PathBuf);

impl Workdir {
    pub fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcp-sentinel-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process, stopped with SIGTERM (then SIGKILL after 3 s) when dropped.
pub struct Proc {
    child: Child,
    log: Option<PathBuf>,
    // Held open: the upstream exits when it sees EOF here.
    _stdin: Option<ChildStdin>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ensure_running(&mut self, what: &str) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{what} exited with {status}{}", self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let Some(text) = self.log.as_ref().and_then(|p| fs::read_to_string(p).ok()) else {
            return String::new();
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("; last log lines:\n{tail}")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets nginx's master take its workers down with it; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts this binary in its upstream role and learns the address it bound.
pub fn start_upstream(role_flag: &str) -> Result<(Proc, SocketAddr)> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut child = Command::new(exe)
        .arg(role_flag)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the bench upstream")?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("upstream stdout")?;
    let mut proc = Proc {
        child,
        log: None,
        _stdin: stdin,
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .parse()
        .map_err(|_| anyhow!("upstream printed {line:?} instead of its address"))?;
    proc.ensure_running("the bench upstream")?;
    Ok((proc, addr))
}

pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub version: String,
    workers: Vec<u32>,
}

impl Nginx {
    /// The master and its workers: their CPU and memory are nginx's.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.proc.pid()];
        pids.extend(&self.workers);
        pids
    }
}

pub fn nginx_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NGINX_BIN") {
        return bin.into();
    }
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    in_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// nginx as the plain reverse proxy everyone knows: keep-alive both sides, no buffering.
/// `connections` is its `worker_connections` (each proxied stream takes two).
pub fn start_nginx(
    workdir: &Path,
    name: &str,
    upstream: SocketAddr,
    workers: usize,
    connections: usize,
) -> Result<Nginx> {
    let bin = nginx_binary();
    let version = Command::new(&bin).arg("-v").output().with_context(|| {
        format!(
            "running {} -v (is nginx installed? `make bench` installs it)",
            bin.display()
        )
    })?;
    let version = String::from_utf8_lossy(&version.stderr)
        .trim()
        .trim_start_matches("nginx version: ")
        .to_owned();

    let dir = workdir.join(name);
    fs::create_dir_all(&dir)?;
    let addr = free_port()?;
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream mcp_upstream {{
        server {upstream};
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {addr};
        location / {{
            proxy_pass http://mcp_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    let log = dir.join("stderr.log");
    let mut proc = Proc {
        child: proxy_command(&bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
        log: Some(log),
        _stdin: None,
    };
    wait_until(&mut proc, "nginx", Duration::from_secs(10), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })?;
    // Workers are forked right after the listener is up; give them a moment to appear.
    let mut found = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while found.len() < workers && Instant::now() < until {
        found = children_of(proc.pid());
        sleep(Duration::from_millis(20));
    }
    Ok(Nginx {
        proc,
        addr,
        version,
        workers: found,
    })
}

/// What a sentinel forwards to.
pub enum Upstream {
    /// An HTTP MCP server (`--upstream http://ADDR/mcp`).
    Http(SocketAddr),
    /// A stdio MCP server the sentinel runs (`-- PROG ARGS...`).
    Command(Vec<std::ffi::OsString>),
}

/// Where a sentinel's stdout goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Its log file, with stderr.
    LogFile,
    /// A pipe, as a container's stdout is: a separate process (this bench binary, `--drain-stdout`)
    /// reads it and appends what it reads to `<name>.stdout` in the work dir (see drain.rs).
    Pipe,
}

pub struct Sentinel {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The reader of its stdout pipe ([`Stdout::Pipe`]); stopped after the sentinel.
    pub _drain: Option<Proc>,
}

/// The sentinel release binary, waited on until its admin `/readyz` answers 200 (with JWT auth
/// that is after the first JWKS fetch). `name` names its log file and its errors.
pub fn start_sentinel(
    name: &str,
    workdir: &Path,
    bin: &Path,
    config: &Path,
    upstream: &Upstream,
    stdout: Stdout,
) -> Result<Sentinel> {
    if !bin.is_file() {
        bail!(
            "sentinel binary {} not found (set SENTINEL_BIN)",
            bin.display()
        );
    }
    if !config.is_file() {
        bail!(
            "sentinel config {} not found (set BENCH_SENTINEL_CONFIG)",
            config.display()
        );
    }
    let addr = free_port()?;
    let admin = free_port()?;
    let log = workdir.join(format!("{name}.log"));
    let log_file = fs::File::create(&log)?;
    let mut cmd = proxy_command(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--admin-listen")
        .arg(admin.to_string());
    match upstream {
        Upstream::Http(upstream) => cmd.arg("--upstream").arg(format!("http://{upstream}/mcp")),
        Upstream::Command(argv) => cmd.arg("--").args(argv),
    };
    let (out, drain) = match stdout {
        Stdout::LogFile => (Stdio::from(log_file.try_clone()?), None),
        Stdout::Pipe => {
            let (drain, pipe) = start_drain(&workdir.join(format!("{name}.stdout")))?;
            (Stdio::from(pipe), Some(drain))
        }
    };
    let mut proc = Proc {
        child: cmd
            // Measure the configured defaults, not whatever the caller's shell asks for.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
        log: Some(log),
        _stdin: None,
    };
    wait_until(&mut proc, name, Duration::from_secs(30), || {
        http_status(admin, "/readyz") == Some(200)
    })
    .with_context(|| format!("waiting for {name}'s /readyz"))?;
    Ok(Sentinel {
        proc,
        addr,
        admin,
        _drain: drain,
    })
}

/// This binary in its drain role, appending its stdin to `file`; and the pipe's write end.
fn start_drain(file: &Path) -> Result<(Proc, ChildStdin)> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut child = Command::new(exe)
        .arg(crate::DRAIN_ROLE)
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the stdout drain")?;
    let pipe = child.stdin.take().context("the drain's stdin")?;
    Ok((
        Proc {
            child,
            log: None,
            _stdin: None,
        },
        pipe,
    ))
}

/// Raises this process's soft limit on open files to its hard limit (children inherit it: the
/// upstream, the sentinels, nginx). Returns the limit now in force.
pub fn raise_fd_limit() -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    }
    Ok(hard)
}

fn wait_until(
    proc: &mut Proc,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let until = Instant::now() + limit;
    loop {
        proc.ensure_running(what)?;
        if ready() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("{what} not ready after {limit:?}{}", proc.log_tail());
        }
        sleep(Duration::from_millis(50));
    }
}

/// An ephemeral port on 127.0.0.1 for a child to bind (the race with other binders is benign here).
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The status code of a plain GET, or None if there was no well-formed answer.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 32];
    let mut filled = 0;
    while filled < 12 {
        match stream.read(&mut head[filled..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => filled += n,
        }
    }
    let line = std::str::from_utf8(&head[..filled]).ok()?;
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name, which is in parentheses and may hold spaces.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// `root` and all its descendants (a snapshot: processes come and go).
pub fn tree(root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut next = 0;
    while next < out.len() {
        out.extend(children_of(out[next]));
        next += 1;
    }
    out
}

/// CPU time used so far by all threads of these processes, in nanoseconds. A process gone by now
/// counts nothing (its time went with it); None when none of them is left.
pub fn cpu_ns(pids: &[u32]) -> Option<u64> {
    let mut total = 0;
    let mut found = false;
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        found = true;
        // A thread that exits mid-run takes its time with it; the runtimes here keep theirs.
        for task in tasks.flatten() {
            let Ok(schedstat) = fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            total += schedstat.split(' ').next()?.parse::<u64>().ok()?;
        }
    }
    found.then_some(total)
}

/// Resident memory of one process, KiB: all of it (VmRSS), and its private part (RssAnon:
/// without the binary's pages, which every copy of the same program shares).
#[derive(Clone, Copy)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
}

/// Resident memory of a stdio sentinel's descendants, by role.
#[derive(Default, Clone)]
pub struct ChildMemory {
    /// The MCP servers (the programs the launchers run).
    pub servers: Vec<Rss>,
    /// The launchers: `mcp-sentinel launch-child`, one per server.
    pub launchers: Vec<Rss>,
}

/// The resident memory of every descendant of `root` now, each as a server or a launcher.
pub fn child_memory(root: u32) -> ChildMemory {
    let mut out = ChildMemory::default();
    for pid in tree(root).into_iter().skip(1) {
        let (Some(total), Some(anon)) = (status_kib(pid, "VmRSS:"), status_kib(pid, "RssAnon:"))
        else {
            continue;
        };
        let rss = Rss { total, anon };
        let launcher = fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|argv| argv.split(|b| *b == 0).nth(1) == Some(b"launch-child"));
        if launcher {
            out.launchers.push(rss);
        } else {
            out.servers.push(rss);
        }
    }
    out
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok()
}

pub fn thread_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

/// Our own CPU time (all threads), in nanoseconds.
pub fn self_cpu_ns() -> Option<u64> {
    cpu_ns(&[std::process::id()])
}

/// Peak resident set size (VmHWM) summed over these processes, in KiB.
pub fn peak_rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|pid| status_kib(*pid, "VmHWM:")).sum()
}

/// Resident set size now (VmRSS) summed over these processes, in KiB.
pub fn rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|pid| status_kib(*pid, "VmRSS:")).sum()
}

/// Open file descriptors summed over these processes (sockets, pipes, files).
pub fn open_fds(pids: &[u32]) -> Option<usize> {
    pids.iter()
        .map(|pid| Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count()))
        .sum()
}

/// Resets the peak (VmHWM) of these processes to their RSS now (`5` to `/proc/<pid>/clear_refs`,
/// Linux 4.0+). False when the kernel refused for any of them.
pub fn reset_peak_rss(pids: &[u32]) -> bool {
    pids.iter()
        .all(|pid| fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
}

/// `base` with its top-level `key` set to `section`, written to the work dir as `<name>.yaml`.
pub fn config_with(
    base: &Path,
    workdir: &Path,
    name: &str,
    key: &str,
    section: serde_json::Value,
) -> Result<PathBuf> {
    config_edited(base, workdir, name, |map| {
        map.insert(key.into(), serde_yaml_ng::to_value(section)?);
        Ok(())
    })
}

/// `base` as `edit` changes its top-level mapping, written to the work dir as `<name>.yaml`.
pub fn config_edited(
    base: &Path,
    workdir: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_yaml_ng::Mapping) -> Result<()>,
) -> Result<PathBuf> {
    let text = fs::read_to_string(base).with_context(|| format!("reading {}", base.display()))?;
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", base.display()))?;
    let map = config
        .as_mapping_mut()
        .with_context(|| format!("{} is not a YAML mapping", base.display()))?;
    edit(map).with_context(|| format!("editing {}", base.display()))?;
    let path = workdir.join(format!("{name}.yaml"));
    fs::write(&path, serde_yaml_ng::to_string(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
