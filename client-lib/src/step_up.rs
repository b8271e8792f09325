//! Step-up (docs/WEBAUTHN.md "Step-up"): a route that needs a person's fresh presence answers
//! `401` with `WWW-Authenticate: HWS1 error="step_up_required", user_verification="…"`. The client
//! asks the agent for a strict FIDO2 signature — a touch of the security key, never a delegated
//! session key ([`crate::Signer::sign_headers_step_up`]) — and sends the request once more.
//! [`crate::middleware::SigningMiddleware`] does it for reqwest; other HTTP stacks use
//! [`step_up_challenge`].

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, StatusCode};

/// Longest `WWW-Authenticate` value looked at.
const MAX_CHALLENGE_HEADER: usize = 1024;

/// What a `step_up_required` refusal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUpChallenge {
    /// `user_verification="required"`: the key must verify the user (PIN, biometrics) too.
    pub user_verification: bool,
}

/// The challenge of a `401` answer whose `WWW-Authenticate: HWS1` names
/// `error="step_up_required"`; `None` for any other answer.
pub fn step_up_challenge(status: StatusCode, headers: &HeaderMap) -> Option<StepUpChallenge> {
    if status != StatusCode::UNAUTHORIZED {
        return None;
    }
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter(|value| value.len() <= MAX_CHALLENGE_HEADER)
        .find_map(parse_challenge)
}

/// `HWS1 error="step_up_required", user_verification="required|preferred"`.
fn parse_challenge(value: &str) -> Option<StepUpChallenge> {
    let rest = value.trim().strip_prefix("HWS1")?;
    if !rest.starts_with(' ') {
        return None;
    }
    let mut error = None;
    let mut user_verification = false;
    for param in rest.split(',') {
        let (name, quoted) = param.trim().split_once('=')?;
        let text = quoted.strip_prefix('"')?.strip_suffix('"')?;
        match name.trim() {
            "error" => error = Some(text),
            "user_verification" => user_verification = text == "required",
            _ => {}
        }
    }
    (error == Some("step_up_required")).then_some(StepUpChallenge { user_verification })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(WWW_AUTHENTICATE, value.parse().unwrap());
        map
    }

    #[test]
    fn reads_the_challenge() {
        let challenge = step_up_challenge(
            StatusCode::UNAUTHORIZED,
            &headers(r#"HWS1 error="step_up_required", user_verification="required""#),
        );
        assert_eq!(
            challenge,
            Some(StepUpChallenge {
                user_verification: true
            })
        );
        let preferred = step_up_challenge(
            StatusCode::UNAUTHORIZED,
            &headers(r#"HWS1 error="step_up_required", user_verification="preferred""#),
        );
        assert_eq!(
            preferred,
            Some(StepUpChallenge {
                user_verification: false
            })
        );
    }

    #[test]
    fn ignores_other_answers() {
        let value = r#"HWS1 error="step_up_required""#;
        assert_eq!(
            step_up_challenge(StatusCode::FORBIDDEN, &headers(value)),
            None
        );
        assert_eq!(
            step_up_challenge(
                StatusCode::UNAUTHORIZED,
                &headers(r#"HWS1 error="attestation_required", nonce="abc""#)
            ),
            None
        );
        assert_eq!(
            step_up_challenge(
                StatusCode::UNAUTHORIZED,
                &headers(r#"HWS1x error="step_up_required""#)
            ),
            None
        );
    }
}
