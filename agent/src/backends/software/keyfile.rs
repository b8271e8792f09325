//! The on-disk form of one software key: `<state_dir>/software/<key id>.key`, mode 0600, a small
//! JSON document holding the label, the creation time and the PKCS#8 DER private key (base64).
//! One file per key, so that writing it atomically is one rename.
//!
//! Two formats, told apart by the `format` field (docs/AGENT.md, "Software key files"):
//!
//! - `hwsign-software-key-v2` (written since the backend signs with AWS-LC): the PKCS#8 v1
//!   document AWS-LC writes (`EcdsaKeyPair::to_pkcs8v1`), read back with `EcdsaKeyPair::from_pkcs8`.
//! - `hwsign-software-key-v1` (written by the earlier `p256` backend): the PKCS#8 document of
//!   `p256`. It is still read — through `p256`, the code that wrote it — and the backend rewrites
//!   it as v2 when it loads it ([`needs_migration`]).
//!
//! Both carry the same JSON fields; the key id is checked against the key in either.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::pkcs8::DecodePrivateKey as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use hwsign_proto::PublicKey;

/// Value of the `format` field of the files this backend writes.
pub(super) const FORMAT: &str = "hwsign-software-key-v2";
/// Value of the `format` field of the files the `p256` backend wrote; migrated on load.
pub(super) const FORMAT_V1: &str = "hwsign-software-key-v1";
/// File name extension of key files.
pub(super) const EXTENSION: &str = "key";
/// Largest key file read; a real one is about 400 bytes.
pub(super) const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    format: String,
    key_id: String,
    label: String,
    created_unix: i64,
    private_key_pkcs8: Zeroizing<String>,
}

/// A decoded key file.
pub(super) struct KeyFile {
    /// The private key (AWS-LC frees it with `EVP_PKEY_free`, which clears the scalar).
    pub signing_key: EcdsaKeyPair,
    /// Its public key.
    pub public_key: PublicKey,
    /// The label.
    pub label: String,
    /// Creation time.
    pub created_unix: i64,
    /// The `format` the file was read in ([`FORMAT`] for a key made now).
    pub format: &'static str,
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeyFileError {
    /// Not JSON of the expected shape.
    #[error("not a software key file: {0}")]
    Format(String),
    /// The private key does not decode.
    #[error("private key does not decode")]
    PrivateKey,
    /// The stored key id is not the id of the stored key.
    #[error("stored key id does not match the key")]
    IdMismatch,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("key_id", &self.public_key.key_id())
            .field("label", &self.label)
            .field("created_unix", &self.created_unix)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Generates a P-256 key with AWS-LC.
pub(super) fn generate() -> Result<(EcdsaKeyPair, PublicKey), KeyFileError> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| KeyFileError::PrivateKey)?;
    let public_key = public_key_of(&key)?;
    Ok((key, public_key))
}

fn public_key_of(key: &EcdsaKeyPair) -> Result<PublicKey, KeyFileError> {
    PublicKey::from_sec1(key.public_key().as_ref()).map_err(|_| KeyFileError::PrivateKey)
}

/// Whether a decoded file must be rewritten in the current format.
pub(super) fn needs_migration(file: &KeyFile) -> bool {
    file.format != FORMAT
}

/// Serializes a key in the current format; the returned buffer holds the secret and is zeroized
/// on drop.
pub(super) fn encode(file: &KeyFile) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let der = file
        .signing_key
        .to_pkcs8v1()
        .map_err(|_| KeyFileError::PrivateKey)?;
    let json = KeyFileJson {
        format: FORMAT.to_owned(),
        key_id: file.public_key.key_id(),
        label: file.label.clone(),
        created_unix: file.created_unix,
        private_key_pkcs8: Zeroizing::new(STANDARD.encode(der.as_ref())),
    };
    // Room for the whole document up front, so serde_json never reallocates (a reallocation
    // would leave an unzeroized copy of the key behind).
    let mut out = Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer(&mut *out, &json).map_err(|e| KeyFileError::Format(e.to_string()))?;
    Ok(out)
}

/// Parses a key file (either format) and checks that its id matches its key.
pub(super) fn decode(bytes: &[u8]) -> Result<KeyFile, KeyFileError> {
    let json: KeyFileJson =
        serde_json::from_slice(bytes).map_err(|e| KeyFileError::Format(e.to_string()))?;
    let format = match json.format.as_str() {
        FORMAT => FORMAT,
        FORMAT_V1 => FORMAT_V1,
        other => {
            return Err(KeyFileError::Format(format!(
                "unknown format {:?}",
                other.chars().take(64).collect::<String>()
            )));
        }
    };
    let der = Zeroizing::new(
        STANDARD
            .decode(json.private_key_pkcs8.as_bytes())
            .map_err(|_| KeyFileError::PrivateKey)?,
    );
    let signing_key = if format == FORMAT {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der)
            .map_err(|_| KeyFileError::PrivateKey)?
    } else {
        from_v1_pkcs8(&der)?
    };
    let public_key = public_key_of(&signing_key)?;
    if public_key.key_id() != json.key_id {
        return Err(KeyFileError::IdMismatch);
    }
    Ok(KeyFile {
        signing_key,
        public_key,
        label: json.label,
        created_unix: json.created_unix,
        format,
    })
}

/// Reads a v1 private key with `p256` (the code that wrote it) and hands its scalar and public
/// point to AWS-LC, which checks that they belong together.
fn from_v1_pkcs8(der: &[u8]) -> Result<EcdsaKeyPair, KeyFileError> {
    let old = p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| KeyFileError::PrivateKey)?;
    let scalar = Zeroizing::new(old.to_bytes());
    let point = old.verifying_key().to_sec1_point(false);
    EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        scalar.as_slice(),
        point.as_bytes(),
    )
    .map_err(|_| KeyFileError::PrivateKey)
}
