//! TPMT_SIGNATURE, and checking one over attestation bytes with a key's public area.

use thiserror::Error;

use super::alg::{HashAlg, TPM_ALG_ECDSA, TPM_ALG_RSASSA};
use super::crypto::VerifyKey;
use super::public::{PublicKeyArea, TpmPublic};
use super::reader::{ParseError, ParseFailure, Reader};

/// Bound for an ECC signature component (P-521 would be 66).
const MAX_ECC_COMPONENT: usize = 66;
/// Bound for an RSA signature (4096-bit keys).
const MAX_RSA_SIGNATURE: usize = 512;

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSignature {
    /// TPM_ALG_ECDSA: r and s as the TPM wrote them (possibly shorter than the curve size).
    Ecdsa {
        /// Hash the TPM signed with.
        hash: HashAlg,
        /// r, big-endian.
        r: Vec<u8>,
        /// s, big-endian.
        s: Vec<u8>,
    },
    /// TPM_ALG_RSASSA (PKCS#1 v1.5).
    RsaSsa {
        /// Hash the TPM signed with.
        hash: HashAlg,
        /// The signature.
        signature: Vec<u8>,
    },
}

impl TpmSignature {
    /// Parses a marshalled TPMT_SIGNATURE; the whole buffer must be that one structure.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseFailure> {
        let mut reader = Reader::new(bytes);
        Self::read(&mut reader).map_err(|error| reader.locate(error))
    }

    fn read(reader: &mut Reader<'_>) -> Result<Self, ParseError> {
        let algorithm = reader.u16("TPMT_SIGNATURE.sigAlg")?;
        let signature = match algorithm {
            TPM_ALG_ECDSA => Self::Ecdsa {
                hash: HashAlg::from_tpm(reader.u16("TPMS_SIGNATURE_ECC.hash")?, "signature hash")?,
                r: reader.tpm2b(MAX_ECC_COMPONENT, "signatureR")?.to_vec(),
                s: reader.tpm2b(MAX_ECC_COMPONENT, "signatureS")?.to_vec(),
            },
            TPM_ALG_RSASSA => Self::RsaSsa {
                hash: HashAlg::from_tpm(reader.u16("TPMS_SIGNATURE_RSA.hash")?, "signature hash")?,
                signature: reader
                    .tpm2b(MAX_RSA_SIGNATURE, "TPMS_SIGNATURE_RSA.sig")?
                    .to_vec(),
            },
            other => {
                return Err(ParseError::Unsupported {
                    what: "TPMT_SIGNATURE.sigAlg",
                    value: u32::from(other),
                });
            }
        };
        reader.finish("TPMT_SIGNATURE")?;
        Ok(signature)
    }

    /// The hash the signature was made over.
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::Ecdsa { hash, .. } | Self::RsaSsa { hash, .. } => *hash,
        }
    }

    fn algorithm(&self) -> u16 {
        match self {
            Self::Ecdsa { .. } => TPM_ALG_ECDSA,
            Self::RsaSsa { .. } => TPM_ALG_RSASSA,
        }
    }
}

/// Why a TPM signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature's algorithm or hash is not the one the key's scheme fixes.
    #[error("signature scheme 0x{found:04x} does not match the key's scheme 0x{expected:04x}")]
    SchemeMismatch {
        /// The key's scheme (algorithm or hash).
        expected: u16,
        /// What the signature carries.
        found: u16,
    },
    /// The key cannot verify this kind of signature (RSA key, ECDSA signature or the reverse).
    #[error("signature type does not match the key type")]
    KeyTypeMismatch,
    /// The public area does not hold a usable public key.
    #[error("the signer's public key is invalid")]
    InvalidKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    Invalid,
}

/// Verifies `signature` over `message` (the exact TPMS_ATTEST bytes) with `signer`'s key.
pub fn verify_tpm_signature(
    signer: &TpmPublic,
    message: &[u8],
    signature: &TpmSignature,
) -> Result<(), SignatureError> {
    // A restricted signing key has its scheme fixed; a signature under another scheme or hash
    // did not come from this key's normal use.
    if let Some(scheme) = signer.scheme {
        if scheme.algorithm != signature.algorithm() {
            return Err(SignatureError::SchemeMismatch {
                expected: scheme.algorithm,
                found: signature.algorithm(),
            });
        }
        if scheme.hash != signature.hash().tpm_id() {
            return Err(SignatureError::SchemeMismatch {
                expected: scheme.hash,
                found: signature.hash().tpm_id(),
            });
        }
    }
    let digest = signature.hash().digest(&[message]);
    let valid = match (&signer.key, signature) {
        (PublicKeyArea::Ecc { curve, x, y, .. }, TpmSignature::Ecdsa { r, s, .. }) => {
            let key = VerifyKey::ecc(*curve, x, y).map_err(|_| SignatureError::InvalidKey)?;
            key.verify_ecdsa(&digest, r, s)
        }
        (
            PublicKeyArea::Rsa { modulus, .. },
            TpmSignature::RsaSsa {
                hash, signature, ..
            },
        ) => {
            let exponent = signer.rsa_exponent().ok_or(SignatureError::InvalidKey)?;
            let key = VerifyKey::rsa(modulus, exponent).map_err(|_| SignatureError::InvalidKey)?;
            key.verify_pkcs1(*hash, &digest, signature)
        }
        _ => return Err(SignatureError::KeyTypeMismatch),
    };
    if valid {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}
