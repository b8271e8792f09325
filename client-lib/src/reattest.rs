//! Re-attestation on demand (docs/POLICY.md "Re-attestation"): a verifier whose device policy
//! needs fresher TPM evidence answers `401` with
//! `WWW-Authenticate: HWS1 error="attestation_required", nonce="…"`. The client asks the agent
//! for evidence over that nonce ([`Signer::attest_request`](crate::Signer::attest_request)),
//! posts it to the verifier's attest endpoint ([`ATTEST_PATH`]) and signs the request again.
//! [`crate::middleware::SigningMiddleware::with_reattestation`] does all of it; other HTTP
//! stacks use [`attestation_challenge`] and [`crate::Signer::attest_request`].

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, StatusCode};
use hwsign_proto::reattestation::NONCE_PARAM;
pub use hwsign_proto::reattestation::{ATTEST_PATH, AttestRequest, AttestResponse};

/// Longest `WWW-Authenticate` value looked at.
const MAX_CHALLENGE_HEADER: usize = 1024;
/// Longest nonce accepted (64 bytes as base64url).
const MAX_NONCE_CHARS: usize = 86;

/// The nonce of an `attestation_required` refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationChallenge {
    /// base64url without padding, as the agent's `?nonce=` takes it.
    pub nonce: String,
}

/// The challenge of a `401` answer whose `WWW-Authenticate: HWS1` names
/// `error="attestation_required"` and carries a nonce; `None` for any other answer.
pub fn attestation_challenge(
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<AttestationChallenge> {
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

/// `HWS1 error="attestation_required", nonce="…"` → the nonce.
fn parse_challenge(value: &str) -> Option<AttestationChallenge> {
    let rest = value.trim().strip_prefix("HWS1")?;
    if !rest.starts_with(' ') {
        return None;
    }
    let mut error = None;
    let mut nonce = None;
    for param in rest.split(',') {
        let (name, quoted) = param.trim().split_once('=')?;
        let text = quoted.strip_prefix('"')?.strip_suffix('"')?;
        match name.trim() {
            "error" => error = Some(text),
            name if name == NONCE_PARAM => nonce = Some(text),
            _ => {}
        }
    }
    let nonce = nonce?;
    let well_formed = !nonce.is_empty()
        && nonce.len() <= MAX_NONCE_CHARS
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (error == Some("attestation_required") && well_formed).then(|| AttestationChallenge {
        nonce: nonce.to_owned(),
    })
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
    fn only_attestation_required_with_a_nonce_is_a_challenge() {
        let ok = headers(r#"HWS1 error="attestation_required", nonce="AbC-_09""#);
        assert_eq!(
            attestation_challenge(StatusCode::UNAUTHORIZED, &ok),
            Some(AttestationChallenge {
                nonce: "AbC-_09".to_owned()
            })
        );
        assert_eq!(attestation_challenge(StatusCode::FORBIDDEN, &ok), None);
        for refused in [
            r#"HWS1 error="policy_denied""#,
            r#"HWS1 error="attestation_required""#,
            r#"HWS1 error="attestation_required", nonce="a/b""#,
            r#"HWS1 error="attestation_required", nonce="""#,
            r#"Bearer error="attestation_required", nonce="abc""#,
            r#"HWS1error="attestation_required", nonce="abc""#,
        ] {
            assert_eq!(
                attestation_challenge(StatusCode::UNAUTHORIZED, &headers(refused)),
                None,
                "{refused}"
            );
        }
    }
}
