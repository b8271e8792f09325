//! Signed checkpoints: a record of kind `checkpoint` in the chain, signed (ECDSA P-256, SHA-256,
//! DER signature in hex in `sig`) over its canonical JSON without `hash` and `sig`. It covers its
//! own `seq` and `prev`, the hash of the chain's head, so every record before it is fixed: a
//! rewritten chain needs the checkpoint key. A copy of each checkpoint kept apart from the chain
//! (the verifier's `checkpoints.jsonl`, or a SIEM) makes a truncated tail detectable.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_json;
use crate::{HASH, canonical::CanonicalError};

/// The `kind` of a checkpoint record.
pub const KIND: &str = "checkpoint";
/// The field naming the checkpoint key: hex SHA-256 of its SubjectPublicKeyInfo DER.
pub const KEY: &str = "key";
/// The field holding the signature: hex of the DER ECDSA signature.
pub const SIG: &str = "sig";

/// A checkpoint could not be signed or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The key file is not a PKCS#8 P-256 private key (PEM), or the public key not an SPKI PEM.
    #[error("not a P-256 key in PEM")]
    Key,
    /// The record holds a value with no canonical form.
    #[error("the checkpoint has no canonical form")]
    Canonical(#[source] CanonicalError),
    /// The checkpoint names another key than the one given to check it.
    #[error("the checkpoint is signed by another key")]
    OtherKey,
    /// The signature is missing, malformed or does not verify.
    #[error("the checkpoint signature does not verify")]
    BadSignature,
}

/// The key id of a public key: hex SHA-256 of its SubjectPublicKeyInfo DER.
pub fn key_id(key: &VerifyingKey) -> Result<String, CheckpointError> {
    let der = key.to_public_key_der().map_err(|_| CheckpointError::Key)?;
    Ok(hex::encode(Sha256::digest(der.as_bytes())))
}

/// Signs checkpoints.
#[derive(Debug)]
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl CheckpointSigner {
    /// The signer for a PKCS#8 PEM P-256 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, CheckpointError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|_| CheckpointError::Key)?;
        Self::new(key)
    }

    /// The signer for `key`.
    pub fn new(key: SigningKey) -> Result<Self, CheckpointError> {
        let key_id = key_id(key.verifying_key())?;
        Ok(Self { key, key_id })
    }

    /// A new random key: its PKCS#8 PEM (zeroized on drop) and its public key's SPKI PEM.
    pub fn generate_pem()
    -> Result<(p256::pkcs8::der::zeroize::Zeroizing<String>, String), CheckpointError> {
        use p256::elliptic_curve::Generate as _;
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        let key = SigningKey::try_generate().map_err(|_| CheckpointError::Key)?;
        let private = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| CheckpointError::Key)?;
        let public = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| CheckpointError::Key)?;
        Ok((private, public))
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.key.verifying_key()
    }

    /// Sets `key` and `sig` on a checkpoint record whose other fields are final.
    pub(crate) fn sign(&self, record: &mut Map<String, Value>) -> Result<(), CheckpointError> {
        record.insert(KEY.to_owned(), Value::from(self.key_id.clone()));
        let message = signed_bytes(record)?;
        let signature: Signature = self.key.sign(&message);
        record.insert(
            SIG.to_owned(),
            Value::from(hex::encode(signature.to_der().as_bytes())),
        );
        Ok(())
    }
}

/// Checks checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointKey {
    key: VerifyingKey,
    key_id: String,
}

impl CheckpointKey {
    /// The checker for an SPKI PEM P-256 public key.
    pub fn from_public_key_pem(pem: &str) -> Result<Self, CheckpointError> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|_| CheckpointError::Key)?;
        Self::new(key)
    }

    /// The checker for `key`.
    pub fn new(key: VerifyingKey) -> Result<Self, CheckpointError> {
        let key_id = key_id(&key)?;
        Ok(Self { key, key_id })
    }

    /// The key id (hex SHA-256 of the SPKI DER).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether `record` is a checkpoint signed by this key.
    pub fn verify(&self, record: &Map<String, Value>) -> Result<(), CheckpointError> {
        if record.get(KEY).and_then(Value::as_str) != Some(self.key_id.as_str()) {
            return Err(CheckpointError::OtherKey);
        }
        let der = record
            .get(SIG)
            .and_then(Value::as_str)
            .and_then(|sig| hex::decode(sig).ok())
            .ok_or(CheckpointError::BadSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| CheckpointError::BadSignature)?;
        let message = signed_bytes(record)?;
        self.key
            .verify(&message, &signature)
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// What a checkpoint signature covers: the canonical JSON without `hash` and `sig`.
fn signed_bytes(record: &Map<String, Value>) -> Result<Vec<u8>, CheckpointError> {
    let mut covered = record.clone();
    covered.remove(HASH);
    covered.remove(SIG);
    canonical_json(&Value::Object(covered)).map_err(CheckpointError::Canonical)
}
