//! Why an enrollment step was refused, and how each refusal is spelled on the wire.

use thiserror::Error;

use crate::attestation::credential::CredentialError;
use crate::attestation::{AttestationError, AttributeProblem, Structure};
use crate::registry::RegistryError;

/// An enrollment step refused or failed. [`EnrollmentError::code`] is the stable wire code,
/// [`EnrollmentError::http_status`] the answer's status; the `Display` text is for logs and the
/// error message and never holds a token or a secret.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrollmentError {
    /// The body is not the expected JSON, or a field is out of bounds.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body exceeds the step's bound.
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// No such token, or the presented secret does not match it, or it was revoked.
    #[error("invalid enrollment token")]
    InvalidToken,
    /// The token is past its expiry.
    #[error("enrollment token expired")]
    TokenExpired,
    /// The token was already spent by an earlier ceremony.
    #[error("enrollment token already used")]
    TokenUsed,
    /// No pending challenge with this id (never issued, finished, or abandoned).
    #[error("unknown challenge")]
    ChallengeUnknown,
    /// The challenge outlived its lifetime.
    #[error("challenge expired")]
    ChallengeExpired,
    /// The step does not follow the previous one (evidence twice, activation before evidence).
    #[error("challenge is not awaiting this step")]
    ChallengeState,
    /// Too many ceremonies are pending; retry later.
    #[error("too many pending enrollments")]
    TooManyChallenges,
    /// The evidence is not for the challenged key, not TPM evidence, or of another version.
    #[error("evidence refused: {0}")]
    EvidenceMismatch(&'static str),
    /// The attestation checks refused the evidence.
    #[error("evidence refused")]
    Evidence(#[from] AttestationError),
    /// The device's TPM reports a clock state from before one already recorded for it: its state
    /// was restored from a copy, or an old attestation was replayed.
    #[error("evidence refused: TPM clock went backwards ({0})")]
    ClockRollback(String),
    /// The secret returned is not the one the credential carried: the AK does not live in the TPM
    /// that holds the certified EK.
    #[error("credential activation failed")]
    ActivationFailed,
    /// The device (or the key) is revoked.
    #[error("device revoked")]
    DeviceRevoked,
    /// The key is registered already, outside this device.
    #[error("key {0} is already registered")]
    KeyExists(String),
    /// No credential could be made for this EK.
    #[error("cannot make a credential for this EK")]
    Credential(#[from] CredentialError),
    /// The enrollment store or the key registry failed; the step fails closed.
    #[error("enrollment store unavailable: {0}")]
    Store(String),
    /// The registry refused or failed.
    #[error("key registry")]
    Registry(#[from] RegistryError),
    /// A recovery token (docs/ADMIN.md "Recovery") cannot enroll this device: already used,
    /// expired, its user deprovisioned, or the device belongs to another user.
    #[error("recovery refused: {0}")]
    RecoveryRefused(&'static str),
}

impl From<rusqlite::Error> for EnrollmentError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.to_string())
    }
}

impl EnrollmentError {
    /// The stable wire code.
    pub fn code(&self) -> String {
        match self {
            Self::Malformed(_) => "malformed_request".into(),
            Self::TooLarge(_) => "too_large".into(),
            Self::InvalidToken => "invalid_token".into(),
            Self::TokenExpired => "token_expired".into(),
            Self::TokenUsed => "token_used".into(),
            Self::ChallengeUnknown => "challenge_unknown".into(),
            Self::ChallengeExpired => "challenge_expired".into(),
            Self::ChallengeState => "challenge_state".into(),
            Self::TooManyChallenges => "too_many_challenges".into(),
            Self::EvidenceMismatch(reason) => format!("evidence_invalid:{reason}"),
            // The registered-EK directory could not be read: nothing was decided (fail closed).
            Self::Evidence(AttestationError::RegisteredEks(_)) => "unavailable".into(),
            Self::Evidence(error) => format!("evidence_invalid:{}", evidence_reason(error)),
            Self::ClockRollback(_) => "evidence_invalid:clock_rollback".into(),
            Self::Credential(_) => "evidence_invalid:ek_unusable".into(),
            Self::ActivationFailed => "activation_failed".into(),
            Self::DeviceRevoked => "device_revoked".into(),
            Self::KeyExists(_) => "key_exists".into(),
            Self::Store(_) | Self::Registry(_) => "unavailable".into(),
            Self::RecoveryRefused(reason) => format!("recovery_refused:{reason}"),
        }
    }

    /// The HTTP status of the refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::TooLarge(_) => 413,
            Self::ChallengeUnknown => 404,
            Self::ChallengeExpired => 410,
            Self::ChallengeState | Self::KeyExists(_) => 409,
            Self::TooManyChallenges => 429,
            Self::Store(_) | Self::Registry(_) => 503,
            Self::Evidence(AttestationError::RegisteredEks(_)) => 503,
            _ => 403,
        }
    }
}

/// The `<reason>` of `evidence_invalid:<reason>`: which defence refused the evidence.
pub fn evidence_reason(error: &AttestationError) -> &'static str {
    let by_structure =
        |structure: &Structure, certify: &'static str, quote: &'static str| match structure {
            Structure::Quote | Structure::QuoteSignature => quote,
            _ => certify,
        };
    match error {
        AttestationError::Encoding { .. } | AttestationError::Parse { .. } => "malformed",
        AttestationError::EkCertificate(_) => "ek_certificate",
        AttestationError::EkNotRegistered { .. } => "ek_unregistered",
        AttestationError::RegisteredEks(_) => "unavailable",
        AttestationError::Chain(_) => "ek_untrusted",
        AttestationError::AkAttributes(problem) => ak_reason(*problem),
        AttestationError::AkNotUnderEk => "ak_not_under_ek",
        AttestationError::KeyAttributes(problem) => key_reason(*problem),
        AttestationError::KeyAlgorithm => "key_algorithm",
        AttestationError::BadMagic { structure, .. } => by_structure(
            structure,
            "certify_not_tpm_generated",
            "quote_not_tpm_generated",
        ),
        AttestationError::WrongType { structure, .. } => {
            by_structure(structure, "certify_wrong_type", "quote_wrong_type")
        }
        AttestationError::NonceMismatch { structure } => {
            by_structure(structure, "certify_nonce_mismatch", "quote_nonce_mismatch")
        }
        AttestationError::CertifiedNameMismatch => "certified_name_mismatch",
        AttestationError::Signature { structure, .. } => {
            by_structure(structure, "certify_signature", "quote_signature")
        }
        AttestationError::PcrSelection => "pcr_selection",
        AttestationError::PcrDigestMismatch => "pcr_digest_mismatch",
        AttestationError::ClockNotSafe => "clock_not_safe",
        AttestationError::Clock(_) => "clock_rollback",
    }
}

fn ak_reason(problem: AttributeProblem) -> &'static str {
    match problem {
        AttributeProblem::NotFixedTpm => "ak_not_fixed_tpm",
        AttributeProblem::NotFixedParent => "ak_not_fixed_parent",
        AttributeProblem::NotSensitiveDataOrigin => "ak_not_sensitive_data_origin",
        AttributeProblem::NotSigning => "ak_not_signing",
        AttributeProblem::NotRestricted => "ak_not_restricted",
        AttributeProblem::Restricted => "ak_restricted",
        AttributeProblem::Decrypt => "ak_decrypt",
    }
}

fn key_reason(problem: AttributeProblem) -> &'static str {
    match problem {
        AttributeProblem::NotFixedTpm => "key_not_fixed_tpm",
        AttributeProblem::NotFixedParent => "key_not_fixed_parent",
        AttributeProblem::NotSensitiveDataOrigin => "key_not_sensitive_data_origin",
        AttributeProblem::NotSigning => "key_not_signing",
        AttributeProblem::NotRestricted => "key_not_restricted",
        AttributeProblem::Restricted => "key_restricted",
        AttributeProblem::Decrypt => "key_decrypt",
    }
}
