//! The attestation module's error: one variant per refused check, so callers (and tests) can tell
//! exactly which defence fired. Mapping to wire codes happens at the API layer.

use thiserror::Error;

use super::chain::ChainError;
use super::clock::ClockError;
use super::ek_cert::EkCertificateError;
use super::reader::ParseFailure;
use super::signature::SignatureError;

/// Which attestation structure an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// The EK public area.
    EkPublic,
    /// The AK public area.
    AkPublic,
    /// The attested key's public area.
    KeyPublic,
    /// TPM2_Certify's TPMS_ATTEST.
    Certify,
    /// TPM2_Certify's signature.
    CertifySignature,
    /// TPM2_Quote's TPMS_ATTEST.
    Quote,
    /// TPM2_Quote's signature.
    QuoteSignature,
}

impl std::fmt::Display for Structure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EkPublic => "EK public area",
            Self::AkPublic => "AK public area",
            Self::KeyPublic => "key public area",
            Self::Certify => "certify attestation",
            Self::CertifySignature => "certify signature",
            Self::Quote => "quote attestation",
            Self::QuoteSignature => "quote signature",
        })
    }
}

/// An object attribute requirement that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeProblem {
    /// fixedTPM missing: the key could be duplicated to another TPM.
    NotFixedTpm,
    /// fixedParent missing: the key could be duplicated under another parent.
    NotFixedParent,
    /// sensitiveDataOrigin missing: the private key may have been imported.
    NotSensitiveDataOrigin,
    /// sign missing.
    NotSigning,
    /// restricted missing (AK): the key would sign outside data that could pass for TPM output.
    NotRestricted,
    /// restricted set on a key that must sign arbitrary digests.
    Restricted,
    /// decrypt set where only signing is allowed.
    Decrypt,
}

/// Why attestation evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// An evidence field is not valid base64 / hex, or has the wrong length.
    #[error("evidence field {field} is malformed")]
    Encoding {
        /// The field.
        field: &'static str,
    },
    /// A TPM structure did not parse.
    #[error("cannot parse {structure}")]
    Parse {
        /// Which structure.
        structure: Structure,
        /// Where and why.
        source: ParseFailure,
    },
    /// The EK certificate is unusable or does not certify the EK.
    #[error(transparent)]
    EkCertificate(#[from] EkCertificateError),
    /// The evidence carries no EK certificate and its EK is not registered
    /// (`hwsign-verifier ek add`), or no registered-EK directory is configured.
    #[error("no EK certificate, and EK {fingerprint} is not registered")]
    EkNotRegistered {
        /// The EK's fingerprint, what `hwsign-verifier ek list` shows once it is registered.
        fingerprint: String,
    },
    /// The registered-EK directory could not be read.
    #[error("registered EKs unavailable")]
    RegisteredEks(#[source] super::registered_ek::LookupFailed),
    /// The EK certificate does not chain to a trusted manufacturer root.
    #[error("EK certificate chain")]
    Chain(#[from] ChainError),
    /// The AK's attributes are not those of a TPM-resident restricted signing key.
    #[error("AK attributes refused: {0:?}")]
    AkAttributes(AttributeProblem),
    /// The attestations were not signed by a child of the certified EK (their qualifiedSigner is
    /// not the AK's qualified name under the EK), so the AK is not in the endorsement hierarchy
    /// and its clock values would be obfuscated.
    #[error("the AK is not a child of the certified EK")]
    AkNotUnderEk,
    /// The attested key's attributes are not those of a non-exportable signing key.
    #[error("key attributes refused: {0:?}")]
    KeyAttributes(AttributeProblem),
    /// The attested key is not an ECC P-256 key (the only request-signing key type).
    #[error("attested key is not ECC P-256")]
    KeyAlgorithm,
    /// The attestation does not start with TPM_GENERATED_VALUE, so the TPM did not make it.
    #[error("{structure} magic 0x{found:08x} is not TPM_GENERATED_VALUE")]
    BadMagic {
        /// Which attestation.
        structure: Structure,
        /// The value found.
        found: u32,
    },
    /// The attestation is of another type.
    #[error("{structure} has type 0x{found:04x}, expected 0x{expected:04x}")]
    WrongType {
        /// Which attestation.
        structure: Structure,
        /// Expected TPM_ST_ATTEST_*.
        expected: u16,
        /// Found.
        found: u16,
    },
    /// extraData is not this verifier's nonce: stale or replayed evidence.
    #[error("{structure} was not made over this nonce")]
    NonceMismatch {
        /// Which attestation.
        structure: Structure,
    },
    /// TPM2_Certify certified some other object than the presented key.
    #[error("certified name does not match the presented key")]
    CertifiedNameMismatch,
    /// An AK signature does not verify.
    #[error("{structure} refused")]
    Signature {
        /// Which signature.
        structure: Structure,
        /// Why.
        source: SignatureError,
    },
    /// The quote does not select exactly sha256 PCRs 0–7.
    #[error("quote PCR selection is not sha256:0-7")]
    PcrSelection,
    /// The presented PCR values do not hash to the quoted digest.
    #[error("PCR values do not match the quoted digest")]
    PcrDigestMismatch,
    /// The TPM clock is not marked safe (it may have been rolled back).
    #[error("TPM clock is not marked safe")]
    ClockNotSafe,
    /// The TPM clock state goes backwards relative to what was recorded for the device.
    #[error(transparent)]
    Clock(#[from] ClockError),
}

impl AttestationError {
    pub(crate) fn parse(structure: Structure) -> impl FnOnce(ParseFailure) -> Self {
        move |source| Self::Parse { structure, source }
    }

    pub(crate) fn signature(structure: Structure) -> impl FnOnce(SignatureError) -> Self {
        move |source| Self::Signature { structure, source }
    }
}
