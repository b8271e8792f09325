//! TPMT_PUBLIC: the public area of a TPM object, and its Name.

use super::alg::{
    EccCurve, HashAlg, MAX_DIGEST_SIZE, TPM_ALG_AES, TPM_ALG_ECC, TPM_ALG_ECDAA, TPM_ALG_NULL,
    TPM_ALG_RSA,
};
use super::reader::{ParseError, ParseFailure, Reader};

/// Largest RSA modulus accepted (4096 bits).
const MAX_RSA_KEY_BYTES: usize = 512;
/// Largest ECC coordinate a TPM2B_ECC_PARAMETER may hold (P-521).
const MAX_ECC_KEY_BYTES: usize = 66;
/// Largest marshalled TPMT_PUBLIC accepted (TPM2B_PUBLIC's own bound is well under this).
pub const MAX_PUBLIC_SIZE: usize = 1024;

/// TPMA_OBJECT bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    /// The object cannot be duplicated to another TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The object's parent cannot change.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the sensitive part.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// The user role may be satisfied with the auth value.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// Signs or decrypts only TPM-formatted data.
    pub const RESTRICTED: u32 = 1 << 16;
    /// A decryption (or storage) key.
    pub const DECRYPT: u32 = 1 << 17;
    /// A signing key.
    pub const SIGN: u32 = 1 << 18;

    /// True when every bit of `mask` is set.
    pub fn contains(self, mask: u32) -> bool {
        self.0 & mask == mask
    }
}

/// TPMT_SYM_DEF_OBJECT when not NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricDef {
    /// Block cipher (TPM_ALG_ID).
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// Mode (TPM_ALG_ID), CFB for EKs and storage keys.
    pub mode: u16,
}

/// A signing, encryption or key-derivation scheme with its hash (TPMT_*_SCHEME when not NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// Scheme (TPM_ALG_ID).
    pub algorithm: u16,
    /// Hash (TPM_ALG_ID); TPM_ALG_NULL for schemes without details (RSAES).
    pub hash: u16,
}

/// The public key and its type-specific parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyArea {
    /// TPM_ALG_RSA.
    Rsa {
        /// Modulus size in bits.
        key_bits: u16,
        /// Public exponent (a stored 0 means 65537, as the TPM defines).
        exponent: u32,
        /// Modulus, big-endian.
        modulus: Vec<u8>,
    },
    /// TPM_ALG_ECC.
    Ecc {
        /// Curve.
        curve: EccCurve,
        /// Key derivation scheme, if not NULL.
        kdf: Option<Scheme>,
        /// X coordinate as the TPM stored it (may be shorter than the curve size).
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
}

/// A parsed TPMT_PUBLIC that keeps the exact bytes it came from, so its Name is the TPM's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    raw: Vec<u8>,
    /// Hash algorithm of the Name.
    pub name_alg: HashAlg,
    /// TPMA_OBJECT.
    pub attributes: ObjectAttributes,
    /// Policy digest (empty when none).
    pub auth_policy: Vec<u8>,
    /// Symmetric definition for storage keys and EKs; `None` when NULL.
    pub symmetric: Option<SymmetricDef>,
    /// Signing or encryption scheme; `None` when NULL.
    pub scheme: Option<Scheme>,
    /// Key and type-specific parameters.
    pub key: PublicKeyArea,
}

impl TpmPublic {
    /// Parses a marshalled TPMT_PUBLIC; the whole buffer must be that one structure.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseFailure> {
        if bytes.len() > MAX_PUBLIC_SIZE {
            return Err(ParseFailure::at(
                0,
                ParseError::SizeTooLarge {
                    what: "TPMT_PUBLIC",
                    size: bytes.len(),
                    max: MAX_PUBLIC_SIZE,
                },
            ));
        }
        let mut reader = Reader::new(bytes);
        Self::read(&mut reader)
            .and_then(|public| reader.finish("TPMT_PUBLIC").map(|()| public))
            .map_err(|error| reader.locate(error))
    }

    /// Parses a TPM2B_PUBLIC (the form `tpm2_create -u` writes): size prefix, then TPMT_PUBLIC.
    /// Offsets in errors count from the size prefix.
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, ParseFailure> {
        let mut reader = Reader::new(bytes);
        let inner = reader
            .tpm2b(MAX_PUBLIC_SIZE, "TPM2B_PUBLIC")
            .and_then(|inner| reader.finish("TPM2B_PUBLIC").map(|()| inner))
            .map_err(|error| reader.locate(error))?;
        Self::parse(inner).map_err(|failure| failure.shifted(2))
    }

    fn read(reader: &mut Reader<'_>) -> Result<Self, ParseError> {
        let start = reader.position();
        let object_type = reader.u16("TPMT_PUBLIC.type")?;
        let name_alg = HashAlg::from_tpm(reader.u16("TPMT_PUBLIC.nameAlg")?, "nameAlg")?;
        let attributes = ObjectAttributes(reader.u32("TPMT_PUBLIC.objectAttributes")?);
        let auth_policy = reader
            .tpm2b(MAX_DIGEST_SIZE, "TPMT_PUBLIC.authPolicy")?
            .to_vec();
        let symmetric = read_symmetric(reader)?;
        let (scheme, key) = match object_type {
            TPM_ALG_RSA => {
                let scheme = read_scheme(reader, "RSA scheme")?;
                let key_bits = reader.u16("TPMS_RSA_PARMS.keyBits")?;
                let exponent = reader.u32("TPMS_RSA_PARMS.exponent")?;
                let modulus = reader
                    .tpm2b(MAX_RSA_KEY_BYTES, "TPM2B_PUBLIC_KEY_RSA")?
                    .to_vec();
                (
                    scheme,
                    PublicKeyArea::Rsa {
                        key_bits,
                        exponent,
                        modulus,
                    },
                )
            }
            TPM_ALG_ECC => {
                let scheme = read_scheme(reader, "ECC scheme")?;
                let curve = EccCurve::from_tpm(reader.u16("TPMS_ECC_PARMS.curveID")?)?;
                let kdf = read_scheme(reader, "KDF scheme")?;
                let x = reader
                    .tpm2b(MAX_ECC_KEY_BYTES, "TPMS_ECC_POINT.x")?
                    .to_vec();
                let y = reader
                    .tpm2b(MAX_ECC_KEY_BYTES, "TPMS_ECC_POINT.y")?
                    .to_vec();
                if x.len() > curve.coordinate_size() || y.len() > curve.coordinate_size() {
                    return Err(ParseError::Invalid {
                        what: "ECC coordinate length",
                        value: x.len().max(y.len()) as u64,
                    });
                }
                (scheme, PublicKeyArea::Ecc { curve, kdf, x, y })
            }
            other => {
                return Err(ParseError::Unsupported {
                    what: "TPMT_PUBLIC.type",
                    value: u32::from(other),
                });
            }
        };
        Ok(Self {
            raw: reader.consumed_since(start).to_vec(),
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            scheme,
            key,
        })
    }

    /// The exact marshalled bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The object's Name: nameAlg (big-endian u16) followed by H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.tpm_id().to_be_bytes().to_vec();
        name.extend_from_slice(&self.name_alg.digest(&[&self.raw]));
        name
    }

    /// The Qualified Name of this object when it is a child of `parent_qualified_name`:
    /// nameAlg ‖ H_nameAlg(parent QN ‖ Name).
    pub fn qualified_name(&self, parent_qualified_name: &[u8]) -> Vec<u8> {
        let mut qualified = self.name_alg.tpm_id().to_be_bytes().to_vec();
        qualified.extend_from_slice(&self.name_alg.digest(&[parent_qualified_name, &self.name()]));
        qualified
    }

    /// The RSA public exponent with the TPM's "0 means 65537" applied; `None` for ECC keys.
    pub fn rsa_exponent(&self) -> Option<u32> {
        match self.key {
            PublicKeyArea::Rsa { exponent: 0, .. } => Some(65_537),
            PublicKeyArea::Rsa { exponent, .. } => Some(exponent),
            PublicKeyArea::Ecc { .. } => None,
        }
    }
}

fn read_symmetric(reader: &mut Reader<'_>) -> Result<Option<SymmetricDef>, ParseError> {
    let algorithm = reader.u16("TPMT_SYM_DEF_OBJECT.algorithm")?;
    match algorithm {
        TPM_ALG_NULL => Ok(None),
        TPM_ALG_AES | 0x0013 | 0x0026 => {
            let key_bits = reader.u16("TPMT_SYM_DEF_OBJECT.keyBits")?;
            let mode = reader.u16("TPMT_SYM_DEF_OBJECT.mode")?;
            Ok(Some(SymmetricDef {
                algorithm,
                key_bits,
                mode,
            }))
        }
        other => Err(ParseError::Unsupported {
            what: "symmetric algorithm",
            value: u32::from(other),
        }),
    }
}

/// Reads a TPMT_{RSA,ECC,KDF}_SCHEME: a selector, then (unless NULL or RSAES) a hash, and for
/// ECDAA a count as well.
fn read_scheme(reader: &mut Reader<'_>, what: &'static str) -> Result<Option<Scheme>, ParseError> {
    let algorithm = reader.u16(what)?;
    match algorithm {
        TPM_ALG_NULL => Ok(None),
        super::alg::TPM_ALG_RSAES => Ok(Some(Scheme {
            algorithm,
            hash: TPM_ALG_NULL,
        })),
        // RSASSA, RSAPSS, OAEP, ECDSA, ECDH, ECDAA, SM2, ECSCHNORR, ECMQV; MGF1 and the KDFs.
        0x0014 | 0x0016..=0x001d | 0x0007 | 0x0020..=0x0022 => {
            let hash = reader.u16(what)?;
            if algorithm == TPM_ALG_ECDAA {
                reader.u16("ECDAA count")?;
            }
            Ok(Some(Scheme { algorithm, hash }))
        }
        other => Err(ParseError::Unsupported {
            what,
            value: u32::from(other),
        }),
    }
}
