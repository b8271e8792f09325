//! Re-attestation (design brief §8, docs/POLICY.md): an enrolled device proves its current boot
//! state with a fresh TPM2_Quote by the attestation key it enrolled with, over a nonce the
//! verifier issued. Two JSON calls, outside HWS1 signing (the evidence authenticates itself):
//! `POST /hws/v1/attest/challenge` → `POST /hws/v1/attest`. A verifier that refuses a request
//! with `attestation_required` hands out the nonce in its `WWW-Authenticate` header instead of
//! the first call. Refusals are `{"error":{"code","message"}}` with the codes of
//! docs/ATTESTATION.md §1.

use serde::{Deserialize, Serialize};

use crate::attestation::KeyAttestation;

/// Asks for a nonce to attest over.
pub const CHALLENGE_PATH: &str = "/hws/v1/attest/challenge";
/// Sends evidence made over an issued nonce.
pub const ATTEST_PATH: &str = "/hws/v1/attest";
/// The `WWW-Authenticate` parameter of an `attestation_required` refusal that carries the nonce.
pub const NONCE_PARAM: &str = "nonce";

/// `POST /hws/v1/attest/challenge` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestChallengeRequest {
    /// An enrolled key of the device (`hk1_…`); the evidence must certify this key.
    pub key_id: String,
}

/// `POST /hws/v1/attest/challenge` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestChallengeResponse {
    /// The nonce, base64url without padding (the agent's `?nonce=` form). Single use.
    pub nonce: String,
    /// When the nonce expires, seconds since the epoch.
    pub expires_unix: i64,
}

/// `POST /hws/v1/attest` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The nonce the evidence was made over, as issued.
    pub nonce: String,
    /// What the agent's `GET /v1/keys/{id}/attestation?nonce=` returned: over the nonce, or,
    /// with `posture`, over [`crate::posture::bound_nonce`] of the nonce and this exact text.
    pub evidence: KeyAttestation,
    /// The agent's posture report ([`crate::posture::Posture`] as JSON), bound into the quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<String>,
}

/// `POST /hws/v1/attest` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestResponse {
    /// The device that attested.
    pub device_id: String,
    /// `unchanged` or `changed`: the quoted PCRs 0–7 against the device's baseline (or the
    /// verifier's golden values).
    pub boot_state: String,
    /// When the verifier accepted the evidence, seconds since the epoch.
    pub attested_unix: i64,
}
