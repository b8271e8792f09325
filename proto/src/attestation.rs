//! Attestation evidence, as `GET /v1/keys/{id}/attestation?nonce=` returns it and as enrollment
//! sends it to a verifier. Versioned; binary TPM structures travel as standard base64 of their
//! TPM 2.0 marshalled form, so the verifier parses exactly the bytes the TPM signed.

use serde::{Deserialize, Serialize};

use crate::api::KeyLevel;

/// Current evidence format version.
pub const EVIDENCE_VERSION: u32 = 1;

/// Evidence for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAttestation {
    /// Format version ([`EVIDENCE_VERSION`]).
    pub version: u32,
    /// Key id.
    pub key_id: String,
    /// Level the agent claims; a verifier derives its own from the evidence.
    pub level: KeyLevel,
    /// The evidence.
    pub evidence: Evidence,
}

/// What a backend can show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Evidence {
    /// TPM 2.0: EK certificate, AK, certified key, quote.
    Tpm(TpmEvidence),
    /// PKCS#11 token: attribute claims, not proof.
    Pkcs11Claims(TokenClaims),
}

/// TPM evidence. All binary fields are standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvidence {
    /// DER EK certificate as read from NV; empty when the TPM has none (the verifier then needs
    /// the EK registered by an administrator).
    pub ek_certificate: String,
    /// The NV index it was read from (0x01c00002 RSA-2048, 0x01c0000a ECC P-256, 0x01c00016 P-384);
    /// without a certificate, the index of the EK template used (0x01c00002: RSA-2048).
    pub ek_certificate_nv_index: u32,
    /// Intermediate certificates (DER) the agent knows of; may be empty.
    #[serde(default)]
    pub ek_chain: Vec<String>,
    /// Marshalled TPMT_PUBLIC of the EK (its public key must equal the certificate's).
    pub ek_public: String,
    /// Marshalled TPMT_PUBLIC of the attestation key.
    pub ak_public: String,
    /// Marshalled TPMT_PUBLIC of the signing key.
    pub key_public: String,
    /// Marshalled TPMS_ATTEST from TPM2_Certify(key, AK, qualifying data = nonce).
    pub certify_info: String,
    /// Marshalled TPMT_SIGNATURE over `certify_info` by the AK.
    pub certify_signature: String,
    /// Marshalled TPMS_ATTEST from TPM2_Quote(sha256 PCRs 0–7, qualifying data = nonce).
    pub quote_info: String,
    /// Marshalled TPMT_SIGNATURE over `quote_info` by the AK.
    pub quote_signature: String,
    /// SHA-256 PCR values 0–7, lower-case hex, index order.
    pub pcrs_sha256: Vec<String>,
}

/// PKCS#11 token claims. These are what the token says about itself and the key; nothing proves
/// them, so the level stays `hardware-unattested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    /// Always true: a marker for readers that these are claims, not proof.
    pub claims_not_proof: bool,
    /// CKA_LOCAL: generated on the token.
    pub local: Option<bool>,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: Option<bool>,
    /// CKA_ALWAYS_SENSITIVE.
    pub always_sensitive: Option<bool>,
    /// Token manufacturer id.
    pub manufacturer: String,
    /// Token model.
    pub model: String,
    /// Token serial number.
    pub serial: String,
    /// Token label.
    pub token_label: String,
}

/// `POST /v1/keys/{id}/activate-credential` body (enrollment step 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateCredentialRequest {
    /// TPM2B_ID_OBJECT contents (integrity HMAC ‖ encrypted identity), base64.
    pub credential_blob: String,
    /// TPM2B_ENCRYPTED_SECRET contents, base64.
    pub encrypted_secret: String,
}

/// Response to [`ActivateCredentialRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateCredentialResponse {
    /// The recovered secret, base64.
    pub secret: String,
}
