//! Step-up: a route that accepts only a fresh strict WebAuthn signature with user presence.
//!
//! Satisfied only by a non-delegated `HWS1-WEBAUTHN-ES256` request whose assertion has UP (and
//! UV when asked) and whose `X-Hws-Date` is within `max_age_secs` of the verifier's clock. TPM
//! and PKCS#11 signatures never satisfy it: neither proves that a person was present.

use serde::{Deserialize, Serialize};

use crate::rejection::Rejection;

use super::WebAuthnUse;

/// Longest `max_age_secs` accepted (one hour).
pub const MAX_STEP_UP_AGE_SECS: u64 = 3600;

/// `step_up = { max_age_secs = 60, user_verification = true }` on a route rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUp {
    /// How old (by its signed date, against the verifier's clock) the touch may be, 1–3600 s.
    pub max_age_secs: u64,
    /// Whether the assertion must also carry user verification (PIN, biometrics).
    #[serde(default)]
    pub user_verification: bool,
}

impl StepUp {
    /// Whether `max_age_secs` is within bounds.
    pub fn is_valid(self) -> bool {
        (1..=MAX_STEP_UP_AGE_SECS).contains(&self.max_age_secs)
    }
}

/// The `WWW-Authenticate` value of a `step_up_required` refusal.
pub fn step_up_challenge(user_verification: bool) -> &'static str {
    if user_verification {
        "HWS1 error=\"step_up_required\", user_verification=\"required\""
    } else {
        "HWS1 error=\"step_up_required\", user_verification=\"preferred\""
    }
}

/// Decides a step-up route: `used` is the request's assertion (None for ECDSA signatures),
/// `delegated` whether a session key signed, `date_unix` its signed date.
pub(crate) fn check_step_up(
    step_up: StepUp,
    used: Option<&WebAuthnUse>,
    delegated: bool,
    date_unix: i64,
    now_unix: i64,
) -> Result<(), Rejection> {
    let refuse = || Rejection::StepUpRequired {
        user_verification: step_up.user_verification,
    };
    let Some(used) = used else {
        return Err(refuse());
    };
    let max_age = i64::try_from(step_up.max_age_secs).unwrap_or(i64::MAX);
    let fresh = now_unix.saturating_sub(date_unix).abs() <= max_age;
    let verified = used.user_verified || !step_up.user_verification;
    if delegated || used.delegated || !used.user_present || !verified || !fresh {
        return Err(refuse());
    }
    Ok(())
}
