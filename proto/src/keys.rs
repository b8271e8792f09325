//! Public keys, key ids, signatures and payload hashes.

use std::fmt;

use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{DerSignature, Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

use crate::error::ProtoError;
use crate::limits::MAX_SIGNATURE_LEN;

/// Prefix of every key id, so a key id is recognisable in logs and configs.
pub const KEY_ID_PREFIX: &str = "hk1_";

/// A P-256 public key as hwsign identifies it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    spki_der: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.key_id()).finish()
    }
}

impl PublicKey {
    /// From a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, ProtoError> {
        let key =
            VerifyingKey::from_public_key_der(der).map_err(|_| ProtoError::MalformedPublicKey)?;
        Self::from_verifying_key(key)
    }

    /// From a PEM `PUBLIC KEY` block.
    pub fn from_spki_pem(pem: &str) -> Result<Self, ProtoError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|_| ProtoError::MalformedPublicKey)?;
        Self::from_verifying_key(key)
    }

    /// From a SEC1 point (`04‖x‖y` or compressed).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, ProtoError> {
        let key =
            VerifyingKey::from_sec1_bytes(bytes).map_err(|_| ProtoError::MalformedPublicKey)?;
        Self::from_verifying_key(key)
    }

    /// From affine coordinates, left-padded to 32 bytes (TPMs and PKCS#11 may drop leading zeros).
    pub fn from_affine(x: &[u8], y: &[u8]) -> Result<Self, ProtoError> {
        if x.len() > 32 || y.len() > 32 {
            return Err(ProtoError::MalformedPublicKey);
        }
        let mut point = [0u8; 65];
        point[0] = 4;
        point[33 - x.len()..33].copy_from_slice(x);
        point[65 - y.len()..65].copy_from_slice(y);
        Self::from_sec1(&point)
    }

    /// From the RustCrypto verifying key.
    pub fn from_verifying_key(key: VerifyingKey) -> Result<Self, ProtoError> {
        let spki_der = key
            .to_public_key_der()
            .map_err(|_| ProtoError::MalformedPublicKey)?
            .as_bytes()
            .to_vec();
        Ok(Self { key, spki_der })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The SPKI as PEM.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki_der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The uncompressed SEC1 point `04‖x‖y`.
    pub fn sec1_uncompressed(&self) -> Vec<u8> {
        self.key.to_sec1_point(false).as_bytes().to_vec()
    }

    /// The RustCrypto verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key id: `hk1_` followed by the first 16 bytes of SHA-256(SPKI DER) in lower-case hex.
    pub fn key_id(&self) -> String {
        key_id_from_spki(&self.spki_der)
    }

    /// Verifies a DER ECDSA signature over a SHA-256 `digest` with the pure-Rust backend.
    /// High-S signatures are accepted: TPMs produce them and ECDSA does not forbid them.
    pub fn verify_digest(&self, digest: &[u8; 32], der_signature: &[u8]) -> bool {
        let Ok(signature) = parse_der_signature(der_signature) else {
            return false;
        };
        self.key.verify_prehash(digest, &signature).is_ok()
    }
}

/// The key id of a DER SubjectPublicKeyInfo.
pub fn key_id_from_spki(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    format!("{KEY_ID_PREFIX}{}", hex::encode(&digest[..16]))
}

/// Checks that `text` has the form of a key id.
pub fn check_key_id(text: &str) -> Result<(), ProtoError> {
    let hex_part = text
        .strip_prefix(KEY_ID_PREFIX)
        .ok_or(ProtoError::InvalidKeyId)?;
    if hex_part.len() != 32
        || !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ProtoError::InvalidKeyId);
    }
    Ok(())
}

/// Parses a strict DER ECDSA signature.
pub fn parse_der_signature(der: &[u8]) -> Result<Signature, ProtoError> {
    if der.len() > MAX_SIGNATURE_LEN {
        return Err(ProtoError::MalformedSignature);
    }
    let der = DerSignature::try_from(der).map_err(|_| ProtoError::MalformedSignature)?;
    Signature::try_from(der).map_err(|_| ProtoError::MalformedSignature)
}

/// Converts a fixed-size `r‖s` signature (PKCS#11 CKM_ECDSA output, or a TPM's r and s after
/// left-padding) to DER.
pub fn raw_signature_to_der(r: &[u8], s: &[u8]) -> Result<Vec<u8>, ProtoError> {
    if r.len() > 32 || s.len() > 32 {
        return Err(ProtoError::MalformedSignature);
    }
    let mut raw = [0u8; 64];
    raw[32 - r.len()..32].copy_from_slice(r);
    raw[64 - s.len()..64].copy_from_slice(s);
    let signature = Signature::from_slice(&raw).map_err(|_| ProtoError::MalformedSignature)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

/// Checks a payload hash: 64 lower-case hex digits.
pub fn check_payload_hash(text: &str) -> Result<(), ProtoError> {
    if text.len() != 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ProtoError::InvalidPayloadHash);
    }
    Ok(())
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex SHA-256 of the empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
