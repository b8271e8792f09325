//! `delegated_speedup` = delegated signs/s ÷ strict TPM signs/s, both through the agent on the
//! same swtpm. Delegated mode (issue 5, item 1) does not exist yet, so the figure is reported as
//! `n/a` and failing; it never shows a number that was not measured.
//!
//! To plug it in once the agent has delegated mode: in `tpm::run`, after the strict loop, set the
//! key to `delegated` (agent configuration), sign the same request `plan.tpm_signs` times through
//! the same `AgentClient`, and pass that rate here together with `strict_signs_per_sec`.

use crate::figure::{Figure, Goal};

/// The goal of the issue.
const GOAL: f64 = 100.0;

/// The figure from the two rates; `delegated` is `None` while delegation cannot be measured.
pub fn figure(strict_signs_per_sec: Option<f64>, delegated_signs_per_sec: Option<f64>) -> Figure {
    match (strict_signs_per_sec, delegated_signs_per_sec) {
        (Some(strict), Some(delegated)) if strict > 0.0 => Figure::measured(
            "delegated_speedup",
            delegated / strict,
            Goal::AtLeast(GOAL),
            format!("delegated {delegated:.0} signs/s vs strict TPM {strict:.0} signs/s"),
        ),
        (None, _) => Figure::unavailable(
            "delegated_speedup",
            Goal::AtLeast(GOAL),
            "the strict TPM rate was not measured (TPM phase failed or built without feature tpm)",
        ),
        _ => Figure::unavailable(
            "delegated_speedup",
            Goal::AtLeast(GOAL),
            "delegated mode is not implemented yet (issue 5 item 1)",
        ),
    }
}
