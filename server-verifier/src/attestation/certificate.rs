//! One X.509 certificate as the attestation code needs it: the exact DER (so the signed
//! TBSCertificate bytes are the ones that were signed, never a re-encoding), its decoded form, and
//! verification of a child's signature with its key.
//!
//! Certificates are never re-encoded. A PEM block is base64-decoded to the bytes the issuer
//! signed and those bytes are kept; decoding and re-encoding would re-sort multi-valued names and
//! turn GeneralizedTime into UTCTime, and then real vendor roots (Nuvoton's, for one) no longer
//! verify their own signature.

use std::time::SystemTime;

use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::der::asn1::{ObjectIdentifier, UintRef};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use super::alg::{EccCurve, HashAlg};
use super::crypto::{VerifyKey, strip_leading_zeros};

/// Largest certificate accepted (TPM NV certificate indices are a few KiB at most).
pub const MAX_CERTIFICATE_SIZE: usize = 8 * 1024;

/// rsaEncryption.
pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-RSAES-OAEP: some TPM vendors label the RSA EK key with it.
pub(crate) const OID_RSAES_OAEP: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const OID_SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
/// id-ecPublicKey.
pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Why a certificate could not be parsed or used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// Not a DER X.509 certificate (or larger than [`MAX_CERTIFICATE_SIZE`]).
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// A PEM file held no certificate or was not PEM.
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    /// The certificate's key is of a type or curve not supported here.
    #[error("unsupported public key algorithm {0}")]
    UnsupportedKey(String),
    /// The signature algorithm is not supported (RSA-PSS and ECDSA with SHA-1 are not).
    #[error("unsupported signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(String),
    /// The certificate is signed with SHA-1 and the verifier does not accept SHA-1 links
    /// ([`SignatureAlgorithms::sha1_links`]).
    #[error("signed with SHA-1 (sha1WithRSAEncryption), which this verifier does not accept")]
    Sha1NotAccepted,
}

/// Which certificate signature algorithms a check accepts beyond the SHA-2 family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureAlgorithms {
    /// Accept `sha1WithRSAEncryption`. Many real EK chains (Infineon's older intermediates, some
    /// Nuvoton roots) are signed with it; a collision attack on such a link needs the vendor CA
    /// to sign a certificate the attacker prepared, which an EK CA signing TPM-made keys in a
    /// factory does not do. Off by default; the enrollment setting is `ek_sha1_links`.
    pub sha1_links: bool,
}

/// A parsed certificate with its original DER.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    der: Vec<u8>,
    certificate: Certificate,
}

/// The public key a certificate carries, in the form the TPM checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertifiedKey {
    /// RSA: big-endian modulus without leading zeros, and exponent.
    Rsa {
        /// Modulus.
        modulus: Vec<u8>,
        /// Public exponent.
        exponent: u32,
    },
    /// EC: curve and uncompressed SEC1 point.
    Ecc {
        /// Curve.
        curve: EccCurve,
        /// `04 ‖ x ‖ y`.
        point: Vec<u8>,
    },
}

impl ParsedCertificate {
    /// Parses DER.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        if der.len() > MAX_CERTIFICATE_SIZE {
            return Err(CertificateError::Malformed(format!(
                "{} bytes, at most {MAX_CERTIFICATE_SIZE}",
                der.len()
            )));
        }
        let certificate =
            Certificate::from_der(der).map_err(|e| CertificateError::Malformed(e.to_string()))?;
        Ok(Self {
            der: der.to_vec(),
            certificate,
        })
    }

    /// Parses every certificate in a PEM bundle, keeping each one's bytes exactly as the
    /// base64 encodes them. Text between blocks (comments, `openssl x509 -text` output) is
    /// ignored; a block of another type, a broken block or an empty bundle is an error that names
    /// the block.
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Vec<Self>, CertificateError> {
        let text = std::str::from_utf8(pem).map_err(|e| {
            CertificateError::MalformedPem(format!("not UTF-8 at byte {}", e.valid_up_to()))
        })?;
        let mut certificates = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN ") {
            let block = &rest[start..];
            let number = certificates.len() + 1;
            let Some(end_marker) = block.find("-----END ") else {
                return Err(CertificateError::MalformedPem(format!(
                    "block {number} has no END line"
                )));
            };
            let end = block[end_marker..]
                .find('\n')
                .map_or(block.len(), |newline| end_marker + newline + 1);
            let (label, der) = x509_cert::der::pem::decode_vec(&block.as_bytes()[..end])
                .map_err(|e| CertificateError::MalformedPem(format!("block {number}: {e}")))?;
            if label != "CERTIFICATE" {
                return Err(CertificateError::MalformedPem(format!(
                    "block {number} is a {label}, not a CERTIFICATE"
                )));
            }
            certificates.push(Self::from_der(&der).map_err(|e| match e {
                CertificateError::Malformed(why) => {
                    CertificateError::Malformed(format!("PEM block {number}: {why}"))
                }
                other => other,
            })?);
            rest = &block[end..];
        }
        if certificates.is_empty() {
            return Err(CertificateError::MalformedPem("no certificate".into()));
        }
        Ok(certificates)
    }

    /// The certificates in a file's contents: a PEM bundle, or one DER certificate.
    pub fn from_file_contents(contents: &[u8]) -> Result<Vec<Self>, CertificateError> {
        if contents.first() == Some(&0x30) {
            return Ok(vec![Self::from_der(contents)?]);
        }
        Self::from_pem_bundle(contents)
    }

    /// The original DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The decoded certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Lower-case hex SHA-256 of the DER.
    pub fn fingerprint_sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// True when `now` is within notBefore..=notAfter.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        let validity = self.certificate.tbs_certificate().validity();
        validity.not_before.to_system_time() <= now && now <= validity.not_after.to_system_time()
    }

    /// The subject public key.
    pub fn certified_key(&self) -> Result<CertifiedKey, CertificateError> {
        certified_key(self.certificate.tbs_certificate().subject_public_key_info())
    }

    /// True when `child`'s signature verifies with this certificate's key; SHA-1 is accepted
    /// only when `accepted` says so.
    pub fn verifies(
        &self,
        child: &ParsedCertificate,
        accepted: SignatureAlgorithms,
    ) -> Result<bool, CertificateError> {
        let algorithm = child.certificate.signature_algorithm().oid;
        let Some(tbs) = first_inner_tlv(&child.der) else {
            return Err(CertificateError::Malformed("no TBSCertificate".into()));
        };
        let signature = child.certificate.signature().raw_bytes();
        let key = match self.certified_key()? {
            CertifiedKey::Rsa { modulus, exponent } => VerifyKey::rsa(&modulus, exponent),
            CertifiedKey::Ecc { curve, point } => VerifyKey::ecc_sec1(curve, &point),
        }
        .map_err(|_| CertificateError::UnsupportedKey("invalid issuer key".into()))?;
        if algorithm == OID_SHA1_WITH_RSA {
            if !accepted.sha1_links {
                return Err(CertificateError::Sha1NotAccepted);
            }
            let digest = sha1::Sha1::digest(tbs);
            return Ok(key.verify_pkcs1_sha1(&digest, signature));
        }
        let (hash, rsa) = match algorithm {
            OID_SHA256_WITH_RSA => (HashAlg::Sha256, true),
            OID_SHA384_WITH_RSA => (HashAlg::Sha384, true),
            OID_SHA512_WITH_RSA => (HashAlg::Sha512, true),
            OID_ECDSA_SHA256 => (HashAlg::Sha256, false),
            OID_ECDSA_SHA384 => (HashAlg::Sha384, false),
            OID_ECDSA_SHA512 => (HashAlg::Sha512, false),
            other => {
                return Err(CertificateError::UnsupportedSignatureAlgorithm(
                    other.to_string(),
                ));
            }
        };
        let digest = hash.digest(&[tbs]);
        Ok(if rsa {
            key.verify_pkcs1(hash, &digest, signature)
        } else {
            key.verify_ecdsa_der(&digest, signature)
        })
    }
}

/// The key in a DER SubjectPublicKeyInfo (a PEM `PUBLIC KEY` block's content).
pub fn certified_key_of_spki(der: &[u8]) -> Result<CertifiedKey, CertificateError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(der)
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    certified_key(&spki)
}

fn certified_key(spki: &SubjectPublicKeyInfoOwned) -> Result<CertifiedKey, CertificateError> {
    let key_bytes = spki.subject_public_key.raw_bytes();
    match spki.algorithm.oid {
        OID_RSA_ENCRYPTION | OID_RSAES_OAEP => {
            let key = rsa::pkcs1::RsaPublicKey::<UintRef<'_>>::from_der(key_bytes)
                .map_err(|e| CertificateError::UnsupportedKey(format!("RSA key: {e}")))?;
            let exponent_bytes = strip_leading_zeros(key.public_exponent.as_bytes());
            if exponent_bytes.len() > 4 {
                return Err(CertificateError::UnsupportedKey(
                    "RSA exponent too large".into(),
                ));
            }
            let mut exponent = [0u8; 4];
            exponent[4 - exponent_bytes.len()..].copy_from_slice(exponent_bytes);
            Ok(CertifiedKey::Rsa {
                modulus: strip_leading_zeros(key.modulus.as_bytes()).to_vec(),
                exponent: u32::from_be_bytes(exponent),
            })
        }
        OID_EC_PUBLIC_KEY => {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|parameters| parameters.decode_as::<ObjectIdentifier>().ok());
            let curve = match curve_oid {
                Some(OID_P256) => EccCurve::NistP256,
                Some(OID_P384) => EccCurve::NistP384,
                Some(other) => return Err(CertificateError::UnsupportedKey(other.to_string())),
                None => return Err(CertificateError::UnsupportedKey("no named curve".into())),
            };
            Ok(CertifiedKey::Ecc {
                curve,
                point: key_bytes.to_vec(),
            })
        }
        other => Err(CertificateError::UnsupportedKey(other.to_string())),
    }
}

/// The complete first TLV inside the outer SEQUENCE: for a Certificate, the TBSCertificate bytes
/// exactly as signed.
fn first_inner_tlv(der: &[u8]) -> Option<&[u8]> {
    let (outer_header, _) = tlv_header(der)?;
    let inner = der.get(outer_header..)?;
    let (inner_header, inner_len) = tlv_header(inner)?;
    inner.get(..inner_header.checked_add(inner_len)?)
}

/// (header length, content length) of a DER TLV with a one-byte tag.
fn tlv_header(der: &[u8]) -> Option<(usize, usize)> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some((2, usize::from(first)));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return None;
    }
    let mut len = 0usize;
    for byte in der.get(2..2 + count)? {
        len = (len << 8) | usize::from(*byte);
    }
    Some((2 + count, len))
}
