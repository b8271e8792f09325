//! Clocks and the round structure every ratio uses: the subject and its floor are measured in
//! alternating batches, round after round, and the ratio reported is the median of the per-round
//! ratios. A burst of load from elsewhere on the machine then hits one round's pair, not one side
//! of the comparison.

use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::time::{ClockId, clock_gettime};

/// CPU time consumed by the calling thread: for single-threaded, in-process loops, where another
/// process's load must not count.
pub(crate) fn thread_cpu() -> Result<Duration> {
    let spec = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).context("thread CPU clock")?;
    let secs = u64::try_from(spec.tv_sec()).context("negative CPU time")?;
    let nanos = u32::try_from(spec.tv_nsec()).context("CPU time nanoseconds")?;
    Ok(Duration::new(secs, nanos))
}

/// CPU time consumed by every thread of this process: for work that another thread of ours
/// finishes (the decision log's writer).
pub(crate) fn process_cpu() -> Result<Duration> {
    let spec = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).context("process CPU clock")?;
    let secs = u64::try_from(spec.tv_sec()).context("negative CPU time")?;
    let nanos = u32::try_from(spec.tv_nsec()).context("CPU time nanoseconds")?;
    Ok(Duration::new(secs, nanos))
}

/// Seconds per iteration of `f`, run `count` times, on the thread CPU clock.
pub(crate) fn cpu_per_op(count: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let start = thread_cpu()?;
    for i in 0..count {
        f(i)?;
    }
    Ok((thread_cpu()? - start).as_secs_f64() / count.max(1) as f64)
}

/// The median (the upper one for an even count); NaN for none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Microseconds, for details.
pub(crate) fn us(seconds: f64) -> String {
    format!("{:.1}µs", seconds * 1e6)
}
