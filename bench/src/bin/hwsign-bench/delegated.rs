//! `delegated_speedup` = delegated signs/s ÷ strict TPM signs/s, both through the agent, same
//! key, same swtpm, sequential calls on one connection (measured in `tpm::run`).
//!
//! swtpm signs in about 3 ms; real TPM chips take tens to hundreds of milliseconds, so the same
//! delegated rate is a larger multiple there. The figure reports what was measured here; the
//! detail line adds the TPM signing time at which the measured delegated rate would reach the
//! goal, which is arithmetic on measured numbers, not a measurement.

use crate::figure::{Figure, Goal};

/// The goal of the issue.
const GOAL: f64 = 100.0;

/// The figure from the two rates; `delegated` carries why it was not measured.
pub(crate) fn figure(strict_signs_per_sec: Option<f64>, delegated: Result<f64, String>) -> Figure {
    let name = "delegated_speedup";
    match (strict_signs_per_sec, delegated) {
        (Some(strict), Ok(delegated)) if strict > 0.0 && delegated > 0.0 => Figure::measured(
            name,
            delegated / strict,
            Goal::AtLeast(GOAL),
            format!(
                "delegated {delegated:.0} signs/s vs strict TPM (swtpm) {strict:.0} signs/s; \
                 the goal holds for a TPM whose sign round trip is at least {:.1} ms",
                GOAL / delegated * 1e3
            ),
        ),
        (None, _) => Figure::unavailable(
            name,
            Goal::AtLeast(GOAL),
            "the strict TPM rate was not measured (TPM phase failed or built without feature tpm)",
        ),
        (Some(_), Err(reason)) => Figure::unavailable(name, Goal::AtLeast(GOAL), reason),
        (Some(_), Ok(_)) => Figure::unavailable(name, Goal::AtLeast(GOAL), "a rate was zero"),
    }
}
