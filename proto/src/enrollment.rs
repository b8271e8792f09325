//! TPM enrollment ceremony (design brief §5) between a device and a verifier, over HTTP with JSON
//! bodies: `POST /enroll/start` → `POST /enroll/evidence` → `POST /enroll/activate`. Binary values
//! are base64; refusals are `{"error":{"code":"...","message":"..."}}` with the codes of
//! docs/ATTESTATION.md.

use serde::{Deserialize, Serialize};

use crate::api::KeyLevel;
use crate::attestation::{ActivateCredentialRequest, KeyAttestation};

/// Step 1: present a one-time token and name the key to enroll.
pub const START_PATH: &str = "/enroll/start";
/// Step 2: send the evidence made over the challenge's nonce.
pub const EVIDENCE_PATH: &str = "/enroll/evidence";
/// Step 3: return the secret the TPM released.
pub const ACTIVATE_PATH: &str = "/enroll/activate";

/// `POST /enroll/start` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The one-time enrollment token (`hwt1_…`) an administrator issued.
    pub token: String,
    /// The key to enroll (`hk1_…`).
    pub key_id: String,
}

impl std::fmt::Debug for StartRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartRequest")
            .field("token", &"<redacted>")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// `POST /enroll/start` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartResponse {
    /// Names this ceremony in the next two steps.
    pub challenge_id: String,
    /// The nonce the evidence must be made over, base64url without padding (as the agent's
    /// `?nonce=` takes it).
    pub nonce: String,
    /// When the challenge expires, seconds since the epoch.
    pub expires_unix: i64,
}

/// `POST /enroll/evidence` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRequest {
    /// From [`StartResponse`].
    pub challenge_id: String,
    /// What `GET /v1/keys/{id}/attestation?nonce=` returned.
    pub evidence: KeyAttestation,
}

/// `POST /enroll/evidence` answer: a credential only the TPM holding the certified EK and the AK
/// can open (TPM2_MakeCredential output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceResponse {
    /// TPM2B_ID_OBJECT contents, base64.
    pub credential_blob: String,
    /// TPM2B_ENCRYPTED_SECRET contents, base64.
    pub encrypted_secret: String,
}

impl EvidenceResponse {
    /// The agent request that opens this credential.
    pub fn to_activate_request(&self) -> ActivateCredentialRequest {
        ActivateCredentialRequest {
            credential_blob: self.credential_blob.clone(),
            encrypted_secret: self.encrypted_secret.clone(),
        }
    }
}

/// `POST /enroll/activate` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// From [`StartResponse`].
    pub challenge_id: String,
    /// The secret TPM2_ActivateCredential released, base64.
    pub secret: String,
}

impl std::fmt::Debug for ActivateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateRequest")
            .field("challenge_id", &self.challenge_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `POST /enroll/activate` answer: the key is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateResponse {
    /// The enrolled device.
    pub device_id: String,
    /// The registered key.
    pub key_id: String,
    /// Its level (`tpm`).
    pub level: KeyLevel,
}

/// A refusal body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollErrorResponse {
    /// The refusal.
    pub error: EnrollErrorDetail,
}

/// A refusal: a stable code (`invalid_token`, `evidence_invalid:<reason>`, …) and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollErrorDetail {
    /// Stable code (docs/ATTESTATION.md lists them).
    pub code: String,
    /// Human explanation; never contains secrets.
    pub message: String,
}
