//! Starting and stopping a child. Each child is started through the sentinel's own binary
//! (`mcp-sentinel launch-child`), which sets the rlimits, starts the server and stays beside
//! it as a small supervisor: the kernel tells it when the sentinel dies (`PR_SET_PDEATHSIG`),
//! and it then stops the whole group, so a crashed sentinel leaves no server behind. None of
//! this needs `unsafe`. The launcher leads a process group of its own, so what the server
//! starts (an `npx` wrapper's node) is stopped with it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::config::stdio::{ChildLimits, StdioSettings};

/// The hidden subcommand of the launcher.
pub const LAUNCH_SUBCOMMAND: &str = "launch-child";
/// mimalloc's switch for committing its first arena at start-up.
const LAUNCHER_ALLOCATOR_ENV: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// What a child is started from.
#[derive(Debug, Clone)]
pub struct Launch {
    pub launcher: PathBuf,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub limits: ChildLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "no launcher: stdio upstreams start their children through the mcp-sentinel binary \
         (set upstream.stdio launcher when embedding the library)"
    )]
    NoLauncher,
    #[error("the launcher {0} is not a file")]
    Launcher(PathBuf),
    #[error("{program}: not found on the child's PATH {path:?}")]
    NotFound { program: String, path: String },
    #[error("upstream.cwd {0}: not a directory")]
    Cwd(PathBuf),
}

impl Launch {
    /// Checks what can be checked before the first child starts: the launcher, the program
    /// (on the child's own PATH) and the working directory.
    pub fn new(argv: Vec<String>, st: &StdioSettings) -> Result<Self, LaunchError> {
        let launcher = st.launcher.clone().ok_or(LaunchError::NoLauncher)?;
        if !launcher.is_file() {
            return Err(LaunchError::Launcher(launcher));
        }
        let env = st.child_env(|k| std::env::var(k).ok());
        let path = env.get("PATH").cloned().unwrap_or_default();
        let program = &argv[0];
        let base = st.cwd.clone().unwrap_or_else(|| PathBuf::from("."));
        let found = if program.contains('/') {
            base.join(program).is_file()
        } else {
            std::env::split_paths(&path).any(|d| base.join(d).join(program).is_file())
        };
        if !found {
            return Err(LaunchError::NotFound {
                program: program.clone(),
                path,
            });
        }
        if let Some(cwd) = &st.cwd
            && !cwd.is_dir()
        {
            return Err(LaunchError::Cwd(cwd.clone()));
        }
        Ok(Self {
            launcher,
            argv,
            env,
            cwd: st.cwd.clone(),
            limits: st.limits.clone(),
        })
    }

    /// Starts a child with piped stdin, stdout and stderr, in a process group of its own.
    pub fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.launcher);
        cmd.arg(LAUNCH_SUBCOMMAND)
            .arg("--parent")
            .arg(std::process::id().to_string());
        if let Some(n) = self.limits.memory {
            cmd.arg("--memory").arg(n.to_string());
        }
        if let Some(n) = self.limits.cpu_seconds {
            cmd.arg("--cpu-seconds").arg(n.to_string());
        }
        if let Some(n) = self.limits.open_files {
            cmd.arg("--open-files").arg(n.to_string());
        }
        // The launcher is this binary: its allocator commits a 6 MiB arena up front unless told
        // not to, a cost per child for a process that only waits. The variable is the
        // launcher's, not the server's: it is dropped again before the server starts.
        let mut env = self.env.clone();
        if !env.contains_key(LAUNCHER_ALLOCATOR_ENV) {
            env.insert(LAUNCHER_ALLOCATOR_ENV.into(), "0".into());
            cmd.arg("--drop-env").arg(LAUNCHER_ALLOCATOR_ENV);
        }
        cmd.arg("--").args(&self.argv);
        cmd.env_clear()
            .envs(&env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.spawn()
    }
}

/// Signals the process group led by `pid`; a group already gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Stops a child in the order the MCP spec gives: its stdin is already closed (the caller
/// dropped it); wait, then SIGTERM, wait, then SIGKILL — to the whole group each time.
pub async fn stop(child: &mut tokio::process::Child, grace: Duration) {
    let pid = child.id();
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        if let Some(pid) = pid {
            signal_group(pid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            if let Some(pid) = pid {
                signal_group(pid, Signal::SIGKILL);
            }
            let _ = child.wait().await;
        }
    }
    // What the child started and left behind goes with it.
    if let Some(pid) = pid {
        signal_group(pid, Signal::SIGKILL);
    }
}

/// The launcher's side (`mcp-sentinel launch-child`): arguments after the subcommand.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LaunchArgs {
    /// The second stage: set the limits and become the program (see [`exec`]).
    pub exec_only: bool,
    pub parent: Option<i32>,
    pub limits: ChildLimits,
    /// Variables of the launcher's own, removed before the program starts.
    pub drop_env: Vec<OsString>,
    pub argv: Vec<OsString>,
}

impl LaunchArgs {
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut out = LaunchArgs::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let a = a.to_string_lossy().into_owned();
            if a == "--" {
                out.argv = it.collect();
                break;
            }
            if a == "--drop-env" {
                out.drop_env
                    .push(it.next().ok_or("--drop-env needs a name")?);
                continue;
            }
            let mut value = || -> Result<u64, String> {
                it.next()
                    .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| format!("{a} needs a number"))
            };
            match a.as_str() {
                "--exec" => out.exec_only = true,
                "--parent" => out.parent = Some(value()? as i32),
                "--memory" => out.limits.memory = Some(value()?),
                "--cpu-seconds" => out.limits.cpu_seconds = Some(value()?),
                "--open-files" => out.limits.open_files = Some(value()?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if out.argv.is_empty() {
            return Err("no program after --".into());
        }
        Ok(out)
    }
}

/// Runs the child and stays as its supervisor, so the child's whole process group goes when
/// the sentinel does: the kernel sends this process SIGTERM when the sentinel dies
/// (`PR_SET_PDEATHSIG`), and it passes it to the group, then SIGKILL after a grace. The
/// program gets the limits (set here, inherited) and this process's stdin/stdout/stderr; its
/// exit status becomes this process's. Returns only on failure, with what went wrong.
pub fn exec(args: LaunchArgs) -> String {
    if args.exec_only {
        return become_program(&args);
    }
    // Signals are taken with sigwait, not handlers (no `unsafe`): block them first. A mask is
    // inherited: the second stage unblocks them again before it becomes the program.
    let signals = supervised();
    if let Err(e) = signals.thread_block() {
        return format!("cannot block signals: {e}");
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        return format!("cannot tie the child to the sentinel: {e}");
    }
    // The parent may have died before the line above: then nobody would stop this child.
    if let Some(parent) = args.parent
        && nix::unistd::getppid().as_raw() != parent
    {
        return "the sentinel is gone".into();
    }
    // The limits are set in a second stage that becomes the program by exec: set here, they
    // would bind this process too, whose own address space may already be over them.
    let mut stage = match std::env::current_exe() {
        Ok(me) => std::process::Command::new(me),
        Err(e) => return format!("cannot find the launcher itself: {e}"),
    };
    stage.arg(LAUNCH_SUBCOMMAND).arg("--exec");
    for name in &args.drop_env {
        stage.arg("--drop-env").arg(name);
    }
    for (flag, value) in [
        ("--memory", args.limits.memory),
        ("--cpu-seconds", args.limits.cpu_seconds),
        ("--open-files", args.limits.open_files),
    ] {
        if let Some(n) = value {
            stage.arg(flag).arg(n.to_string());
        }
    }
    let mut child = match stage.arg("--").args(&args.argv).spawn() {
        Ok(c) => c,
        Err(e) => return format!("cannot start the launcher's second stage: {e}"),
    };
    let group = nix::unistd::getpgrp();
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Ok(Some(status)) = child.try_wait() {
                    std::process::exit(exit_code(status));
                }
            }
            Ok(_) => {
                // The sentinel died or stops the child: the group gets SIGTERM (this process
                // has it blocked), then, after a grace, SIGKILL (this process included).
                let _ = killpg(group, Signal::SIGTERM);
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while std::time::Instant::now() < deadline {
                    if let Ok(Some(status)) = child.try_wait() {
                        let _ = killpg(group, Signal::SIGKILL);
                        std::process::exit(exit_code(status));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = killpg(group, Signal::SIGKILL);
            }
            Err(e) => return format!("cannot wait for signals: {e}"),
        }
    }
}

/// The second stage: sets the limits on itself, then becomes the program (exec keeps them).
fn become_program(args: &LaunchArgs) -> String {
    use nix::sys::resource::{Resource, setrlimit};
    use std::os::unix::process::CommandExt;
    if let Err(e) = supervised().thread_unblock() {
        return format!("cannot unblock signals: {e}");
    }
    let limits = [
        (Resource::RLIMIT_AS, args.limits.memory, 0),
        // SIGXCPU at the soft limit (servers may log), SIGKILL a little later.
        (Resource::RLIMIT_CPU, args.limits.cpu_seconds, 5),
        (Resource::RLIMIT_NOFILE, args.limits.open_files, 0),
    ];
    for (resource, limit, slack) in limits {
        if let Some(n) = limit
            && let Err(e) = setrlimit(resource, n, n.saturating_add(slack))
        {
            return format!("cannot set {resource:?} to {n}: {e}");
        }
    }
    let program = Path::new(&args.argv[0]);
    let mut cmd = std::process::Command::new(program);
    for name in &args.drop_env {
        cmd.env_remove(name);
    }
    let err = cmd.args(&args.argv[1..]).exec();
    format!("cannot start {}: {err}", program.display())
}

/// The signals the supervisor waits for.
fn supervised() -> nix::sys::signal::SigSet {
    let mut signals = nix::sys::signal::SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        signals.add(s);
    }
    signals
}

/// A shell's exit code for a status: the code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_arguments() {
        let a = LaunchArgs::parse(
            [
                "--parent",
                "12",
                "--memory",
                "1048576",
                "--open-files",
                "64",
                "--",
                "python3",
                "--memory",
            ]
            .map(OsString::from),
        )
        .unwrap();
        assert_eq!(a.parent, Some(12));
        assert_eq!(a.limits.memory, Some(1048576));
        assert_eq!(a.limits.open_files, Some(64));
        assert_eq!(a.limits.cpu_seconds, None);
        assert_eq!(a.argv, ["python3", "--memory"].map(OsString::from));
        assert!(LaunchArgs::parse(["--memory", "x", "--", "p"].map(OsString::from)).is_err());
        assert!(LaunchArgs::parse(["--",].map(OsString::from)).is_err());
        assert!(LaunchArgs::parse(["--bogus", "--", "p"].map(OsString::from)).is_err());
    }
}
