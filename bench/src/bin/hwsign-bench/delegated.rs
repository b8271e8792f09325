//! The delegated figures, from the TPM phase (`tpm::run`): `delegated_rtt_ratio` = a delegated
//! sign round trip ÷ a software-key sign round trip, same agent, alternating batches (a hardware
//! key out of the request path should cost nothing per request), and `info.delegated_speedup` =
//! delegated signs/s ÷ strict TPM signs/s, both through the agent, same key, same swtpm.
//!
//! swtpm signs in a few milliseconds; real TPM chips take tens to hundreds of milliseconds, so the
//! same delegated rate is a larger multiple there. The speedup is therefore reported for
//! information, with the TPM signing time at which it would reach 100 — arithmetic on measured
//! numbers, not a measurement.

use crate::figure::{Figure, Goal};
use crate::measure::us;

/// The goal of `delegated_rtt_ratio`.
const RTT_GOAL: f64 = 1.1;
/// The speedup the design aims at with a real TPM.
const SPEEDUP: f64 = 100.0;

/// Result of the delegated phase, as the TPM phase measured it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    /// Delegated signs per second.
    pub signs_per_sec: f64,
    /// Median per-round delegated ÷ software-key round trip.
    pub rtt_ratio: f64,
    /// Median delegated round trip, seconds.
    pub delegated_rtt: f64,
    /// Median software-key round trip, seconds.
    pub software_rtt: f64,
}

/// The two figures; `delegated` carries why it was not measured.
pub(crate) fn figures(
    strict_signs_per_sec: Option<f64>,
    delegated: Result<Measured, String>,
) -> Vec<Figure> {
    let rtt_name = "delegated_rtt_ratio";
    let speedup_name = "info.delegated_speedup";
    match (strict_signs_per_sec, delegated) {
        (Some(strict), Ok(d)) if strict > 0.0 && d.signs_per_sec > 0.0 => vec![
            Figure::measured(
                rtt_name,
                d.rtt_ratio,
                Goal::AtMost(RTT_GOAL),
                format!(
                    "delegated (TPM key, session key signs) {} vs software key {} per sign round trip, same agent, AgentClient, alternating batches",
                    us(d.delegated_rtt),
                    us(d.software_rtt)
                ),
            ),
            Figure::measured(
                speedup_name,
                d.signs_per_sec / strict,
                Goal::AtLeast(SPEEDUP),
                format!(
                    "delegated {:.0} signs/s vs strict TPM (swtpm) {strict:.0} signs/s; bounded by the agent round trip on one side and swtpm on the other; {SPEEDUP}× holds for a TPM whose sign round trip is at least {:.1} ms (real TPM chips: tens to hundreds of ms)",
                    d.signs_per_sec,
                    SPEEDUP / d.signs_per_sec * 1e3
                ),
            ),
        ],
        (strict, result) => {
            let reason = match (strict, result) {
                (None, _) => "the TPM phase failed or was built without feature tpm".to_owned(),
                (Some(_), Err(reason)) => reason,
                (Some(_), Ok(_)) => "a rate was zero".to_owned(),
            };
            vec![
                Figure::unavailable(rtt_name, Goal::AtMost(RTT_GOAL), reason.clone()),
                Figure::unavailable(speedup_name, Goal::AtLeast(SPEEDUP), reason),
            ]
        }
    }
}
