//! TPM 2.0 algorithm identifiers (TPM_ALG_ID, TPM_ECC_CURVE) and the hash functions behind them.

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::reader::ParseError;

/// TPM_ALG_RSA.
pub const TPM_ALG_RSA: u16 = 0x0001;
/// TPM_ALG_AES.
pub const TPM_ALG_AES: u16 = 0x0006;
/// TPM_ALG_SHA256.
pub const TPM_ALG_SHA256: u16 = 0x000b;
/// TPM_ALG_SHA384.
pub const TPM_ALG_SHA384: u16 = 0x000c;
/// TPM_ALG_SHA512.
pub const TPM_ALG_SHA512: u16 = 0x000d;
/// TPM_ALG_NULL.
pub const TPM_ALG_NULL: u16 = 0x0010;
/// TPM_ALG_RSASSA.
pub const TPM_ALG_RSASSA: u16 = 0x0014;
/// TPM_ALG_RSAES.
pub const TPM_ALG_RSAES: u16 = 0x0015;
/// TPM_ALG_RSAPSS.
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
/// TPM_ALG_OAEP.
pub const TPM_ALG_OAEP: u16 = 0x0017;
/// TPM_ALG_ECDSA.
pub const TPM_ALG_ECDSA: u16 = 0x0018;
/// TPM_ALG_ECDH.
pub const TPM_ALG_ECDH: u16 = 0x0019;
/// TPM_ALG_ECDAA (its scheme details carry a count as well as a hash).
pub const TPM_ALG_ECDAA: u16 = 0x001a;
/// TPM_ALG_SM2.
pub const TPM_ALG_SM2: u16 = 0x001b;
/// TPM_ALG_ECSCHNORR.
pub const TPM_ALG_ECSCHNORR: u16 = 0x001c;
/// TPM_ALG_ECMQV.
pub const TPM_ALG_ECMQV: u16 = 0x001d;
/// TPM_ALG_ECC.
pub const TPM_ALG_ECC: u16 = 0x0023;
/// TPM_ALG_CFB.
pub const TPM_ALG_CFB: u16 = 0x0043;

/// A hash algorithm accepted for names, digests and KDFs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// TPM_ALG_SHA1.
const TPM_ALG_SHA1: u16 = 0x0004;

impl HashAlg {
    /// From a TPM_ALG_ID; SHA-1 and anything else is refused.
    pub fn from_tpm(id: u16, what: &'static str) -> Result<Self, ParseError> {
        match id {
            TPM_ALG_SHA256 => Ok(Self::Sha256),
            TPM_ALG_SHA384 => Ok(Self::Sha384),
            TPM_ALG_SHA512 => Ok(Self::Sha512),
            TPM_ALG_SHA1 => Err(ParseError::Sha1 { what }),
            other => Err(ParseError::Unsupported {
                what,
                value: u32::from(other),
            }),
        }
    }

    /// The TPM_ALG_ID.
    pub fn tpm_id(self) -> u16 {
        match self {
            Self::Sha256 => TPM_ALG_SHA256,
            Self::Sha384 => TPM_ALG_SHA384,
            Self::Sha512 => TPM_ALG_SHA512,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            Self::Sha256 => run::<Sha256>(parts),
            Self::Sha384 => run::<Sha384>(parts),
            Self::Sha512 => run::<Sha512>(parts),
        }
    }
}

/// The largest digest any accepted hash produces (bounds TPM2B_DIGEST and TPM2B_NAME).
pub const MAX_DIGEST_SIZE: usize = 64;

/// An elliptic curve (TPM_ECC_CURVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EccCurve {
    /// TPM_ECC_NIST_P256.
    NistP256,
    /// TPM_ECC_NIST_P384.
    NistP384,
}

impl EccCurve {
    /// From a TPM_ECC_CURVE.
    pub fn from_tpm(id: u16) -> Result<Self, ParseError> {
        match id {
            0x0003 => Ok(Self::NistP256),
            0x0004 => Ok(Self::NistP384),
            other => Err(ParseError::Unsupported {
                what: "ECC curve",
                value: u32::from(other),
            }),
        }
    }

    /// Coordinate size in bytes.
    pub fn coordinate_size(self) -> usize {
        match self {
            Self::NistP256 => 32,
            Self::NistP384 => 48,
        }
    }
}
