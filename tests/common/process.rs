//! Signals to child processes, sent with kill(1) so that no test needs `unsafe`.

use std::process::Command;

/// Sends SIGTERM to `pid`; true when kill(1) delivered it.
pub fn sigterm(pid: u32) -> bool {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}
