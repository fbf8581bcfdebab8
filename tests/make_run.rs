//! `make run`'s startup (scripts/run-demo.sh) with the debug binaries: a taken port makes it fail
//! plainly instead of fronting another program; the demo serves through the sentinel with audit
//! records in the file it names; the upstream dying ends the run with a non-zero exit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::sigterm;

const SENTINEL: &str = env!("CARGO_BIN_EXE_mcp-sentinel");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run-demo.sh");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/passthrough.yaml");

fn demo_upstream() -> PathBuf {
    common::stdio::example("demo_upstream")
}

/// A loopback port nothing listens on (bound and released: the script takes addresses, not
/// sockets).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The script running; SIGTERM on drop so its EXIT trap stops the processes it started.
struct Run {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    run_dir: PathBuf,
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    rx
}

fn start(name: &str, upstream: u16, listen: u16, admin: u16) -> Run {
    let run_dir = std::env::temp_dir().join(format!(
        "mcp-sentinel-make-run-{name}-{}",
        std::process::id()
    ));
    let mut child = Command::new(SCRIPT)
        .env("SENTINEL_BIN", SENTINEL)
        .env("DEMO_UPSTREAM_BIN", demo_upstream())
        .env("CONFIG", CONFIG)
        .env("UPSTREAM_LISTEN", format!("127.0.0.1:{upstream}"))
        .env("LISTEN", format!("127.0.0.1:{listen}"))
        .env("ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("RUN_DIR", &run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    Run {
        child,
        stdout,
        stderr,
        run_dir,
    }
}

impl Run {
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "run-demo.sh did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the script wrote to stderr (after it exited).
    fn stderr(&self) -> String {
        let mut all = String::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            all.push_str(&line);
            all.push('\n');
        }
        all
    }

    /// Stdout lines up to and including the one containing `needle`.
    fn stdout_until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stdout
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {needle:?} on stdout; got {seen:#?}"));
            let done = line.contains(needle);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            sigterm(self.child.id());
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

#[test]
fn taken_upstream_port_fails_plainly_instead_of_fronting_another_program() {
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let (listen, admin) = (free_port(), free_port());
    let mut run = start("upstream-taken", taken, listen, admin);
    let status = run.wait();
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "make run: the demo upstream could not start on 127.0.0.1:{taken}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "Is another program using that port? Pick a free one: make run UPSTREAM_LISTEN="
        ),
        "{stderr}"
    );
    // The sentinel was never started in front of the squatter.
    assert!(can_bind(listen) && can_bind(admin));
}

#[test]
fn taken_admin_port_fails_plainly_and_stops_the_upstream() {
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let (upstream, listen) = (free_port(), free_port());
    let mut run = start("admin-taken", upstream, listen, taken);
    let status = run.wait();
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("make run: the sentinel exited (status 1) before it was ready"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "If 127.0.0.1:{listen} or 127.0.0.1:{taken} is taken"
        )),
        "{stderr}"
    );
    assert!(can_bind(upstream), "the demo upstream was stopped");
}

/// POST one legacy `initialize` through the sentinel; the status line and headers.
fn initialize(port: u16) -> String {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"make-run-test","version":"0"}}}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = String::new();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

#[test]
fn serves_through_the_sentinel_audits_to_a_file_and_stops_when_the_upstream_dies() {
    let (upstream, listen, admin) = (free_port(), free_port(), free_port());
    let mut run = start("serves", upstream, listen, admin);
    let banner = run.stdout_until("Ctrl-C stops both.").join("\n");
    let audit_file = run.run_dir.join("audit.jsonl");
    assert!(
        banner.contains(&format!("audit records: tail -f {}", audit_file.display())),
        "{banner}"
    );
    assert!(
        banner.contains(&format!(
            "demo upstream: http://127.0.0.1:{upstream}/mcp (pid "
        )),
        "{banner}"
    );

    let head = initialize(listen);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("mcp-session-id:"),
        "{head}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = std::fs::read_to_string(&audit_file).unwrap_or_default();
        if records.contains("\"initialize\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record in {audit_file:?}: {records}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let pid = banner
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .parse()
        .expect("a pid");
    assert!(sigterm(pid));
    let status = run.wait();
    let stderr = run.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("make run: the demo upstream exited (status 143); stopping the sentinel"),
        "{stderr}"
    );
    assert!(
        can_bind(listen) && can_bind(admin),
        "the sentinel was stopped"
    );
}
