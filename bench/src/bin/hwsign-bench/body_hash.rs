//! `body_hash_rate_ratio`: the client library hashing a 64 MiB body as a stream
//! (`hwsign_client::body_sha256_from_reader`, what `Signer` does for a streamed body) ÷ `sha2`'s
//! SHA-256 over the same bytes in the same chunks, on this thread's CPU clock, alternating rounds.
//! The body is generated chunk by chunk and never held whole, so the detail line's RSS growth is
//! what hashing the stream costs in memory (`body_hash_rss_growth_mib`, goal: under 1 MiB).

use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Result, ensure};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::Plan;
use crate::figure::{Figure, Goal};
use crate::measure::{median, thread_cpu};

/// The body's size.
const BODY: usize = 64 * 1024 * 1024;
/// The generator's chunk (what a socket or file read typically hands over).
const CHUNK: usize = 64 * 1024;
/// The goal of the issue.
const GOAL: f64 = 0.9;
/// Largest RSS growth allowed while streaming.
const RSS_GOAL_MIB: f64 = 1.0;

/// An `AsyncRead` yielding `remaining` bytes of a fixed pattern, never more than `CHUNK` at once.
struct Generated {
    pattern: Vec<u8>,
    remaining: usize,
}

impl Generated {
    fn new() -> Self {
        Self {
            pattern: (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect(),
            remaining: BODY,
        }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.remaining.min(buf.remaining()).min(CHUNK);
        buf.put_slice(&self.pattern[..n]);
        self.remaining -= n;
        Poll::Ready(Ok(()))
    }
}

fn vm_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/self/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Measures the figure on a runtime of its own (current thread, so the thread CPU clock sees all
/// of the hashing).
pub(crate) fn figures(plan: &Plan) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let client = || -> Result<(f64, [u8; 32])> {
        let start = thread_cpu()?;
        let (digest, len) =
            runtime.block_on(hwsign_client::body_sha256_from_reader(Generated::new()))?;
        ensure!(len == BODY as u64, "hashed {len} bytes");
        Ok(((thread_cpu()? - start).as_secs_f64(), *digest.as_bytes()))
    };
    let floor = || -> Result<(f64, [u8; 32])> {
        let start = thread_cpu()?;
        let generated = Generated::new();
        let mut hasher = Sha256::new();
        let mut left = BODY;
        while left > 0 {
            let n = left.min(CHUNK);
            hasher.update(&generated.pattern[..n]);
            left -= n;
        }
        let digest: [u8; 32] = hasher.finalize().into();
        Ok(((thread_cpu()? - start).as_secs_f64(), digest))
    };
    // Reset the peak RSS (VmHWM) to the current RSS, so the peak below is the streaming's.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before_kib = vm_kib("VmRSS:")?;
    let (_, a) = client()?;
    let (_, b) = floor()?;
    ensure!(a == b, "the client library and sha2 disagree on the digest");
    let peak_kib = if reset {
        vm_kib("VmHWM:")?
    } else {
        vm_kib("VmRSS:")?
    };
    let growth_mib = peak_kib.saturating_sub(before_kib) as f64 / 1024.0;
    let rounds = plan.rounds.min(7);
    let (mut ratios, mut t_client, mut t_floor) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (c, f) = if round % 2 == 0 {
            let c = client()?.0;
            (c, floor()?.0)
        } else {
            let f = floor()?.0;
            (client()?.0, f)
        };
        // Rates: bytes per CPU second; the ratio is client rate ÷ sha2 rate.
        ratios.push(f / c);
        t_client.push(c);
        t_floor.push(f);
    }
    let mib = BODY as f64 / (1024.0 * 1024.0);
    Ok(vec![
        Figure::measured(
            "body_hash_rate_ratio",
            median(ratios),
            Goal::AtLeast(GOAL),
            format!(
                "client library {:.0} MiB/s vs sha2 {:.0} MiB/s over a 64 MiB streamed body (thread CPU)",
                mib / median(t_client),
                mib / median(t_floor),
            ),
        ),
        Figure::measured(
            "body_hash_rss_growth_mib",
            growth_mib,
            Goal::AtMost(RSS_GOAL_MIB),
            format!(
                "{} while the client library hashed the 64 MiB stream − VmRSS before",
                if reset {
                    "peak VmHWM (reset first)"
                } else {
                    "VmRSS"
                }
            ),
        ),
    ])
}
