//! Process resources a fault test bounds: resident memory of a process, and this process's
//! file-descriptor limit (a thousand client sockets exceed the common soft limit of 1024).

use anyhow::{Context, Result, bail};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Resident memory of process `pid` now and at its peak, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: u64,
    /// `VmHWM`, the peak resident set since the process started.
    pub peak_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let value = line[name.len()..]
            .trim()
            .strip_suffix("kB")
            .with_context(|| format!("{name} is not in kB: {line}"))?;
        Ok(value.trim().parse()?)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `wanted` (within the hard limit).
/// Children spawned afterwards inherit it. Returns the soft limit now in force.
pub fn raise_fd_limit(wanted: u64) -> Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= wanted {
        return Ok(soft);
    }
    if hard < wanted {
        bail!("RLIMIT_NOFILE hard limit {hard} is below the {wanted} descriptors this test needs");
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)?;
    Ok(wanted)
}
