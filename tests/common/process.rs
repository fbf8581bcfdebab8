//! Child processes: signals sent with kill(1) so that no test needs `unsafe`, and what a
//! finished one printed.

use std::process::{Command, Output};

/// The stdout of a child that must have succeeded; its stderr in the failure message.
pub fn stdout_of(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the child's stdout is UTF-8")
}

/// Sends SIGTERM to `pid`; true when kill(1) delivered it.
pub fn sigterm(pid: u32) -> bool {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}
