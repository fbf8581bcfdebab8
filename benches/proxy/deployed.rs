//! The configurations users run. `sentinel-shipped` is the config as shipped
//! (examples/passthrough.yaml, or BENCH_SENTINEL_CONFIG, unchanged): its default audit writes a
//! record per call to stdout. `sentinel-full` is the whole pipeline at once: JWT (ES256, the
//! bench's IdP), the 1,000-rule policy, a Redis rate limit on every call, and audit to stdout and
//! PostgreSQL. Both write their stdout into a pipe, as a container's stdout is, which a separate
//! process drains into a file: [`drain_main`].

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The drain rotates its file at this size (the previous one kept as `<file>.1`), as kubelet
/// rotates container logs (there at 10 MiB by default): the disk stays bounded on long runs.
const ROTATE_BYTES: u64 = 64 << 20;
/// Bytes per read from the pipe (containerd's shim copies with 32 KiB buffers; a larger read
/// only takes more per wake-up).
const READ_BYTES: usize = 64 << 10;

/// How the report describes where these targets' stdout goes.
pub const STDOUT: &str = "stdout a pipe, drained by a separate process (this bench, \
     --drain-stdout) that appends it to a file in the work dir, as a container runtime drains a \
     container's stdout into its log file; that reader's CPU is not the sentinel's";

/// The drain: copies stdin to `file` until EOF (the sentinel gone), rotating at
/// [`ROTATE_BYTES`]. Its own process, so its CPU is neither the sentinel's nor the load
/// generator's.
pub fn drain_main(file: &Path) -> Result<()> {
    let open = || File::create(file).with_context(|| format!("creating {}", file.display()));
    let mut out = open()?;
    let mut written = 0u64;
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the sentinel's stdout"),
        };
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", file.display()))?;
        written += n as u64;
        if written >= ROTATE_BYTES {
            let mut old = file.as_os_str().to_owned();
            old.push(".1");
            fs::rename(file, &old).with_context(|| format!("rotating {}", file.display()))?;
            out = open()?;
            written = 0;
        }
    }
}

/// `sentinel-full`'s config: `base` (the config as shipped) with `auth` the IdP's JWT issuer,
/// `policy` the 1,000-rule file (its last rule allowing the token's subject), `rate_limits` the
/// one rule on Redis, and `audit` to stdout and PostgreSQL.
pub fn full_config(
    base: &Path,
    workdir: &Path,
    idp: &crate::idp::Idp,
    redis: SocketAddr,
    pg: &str,
) -> Result<PathBuf> {
    let name = crate::settings::Kind::SentinelFull.name();
    let policy = crate::policy::section(workdir, crate::idp::SUBJECT)?;
    let sections = [
        ("auth", idp.auth_section()),
        ("policy", policy),
        ("rate_limits", crate::ratelimit::section(Some(redis))),
        ("audit", crate::audit::section(workdir, pg, name)),
    ];
    crate::procs::config_edited(base, workdir, name, |map| {
        for (key, section) in sections {
            map.insert(key.into(), serde_yaml_ng::to_value(section)?);
        }
        Ok(())
    })
}
