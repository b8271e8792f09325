//! The on-disk form of one software key: `<state_dir>/software/<key id>.key`, mode 0600, a small
//! JSON document holding the label, the creation time and the PKCS#8 DER private key (base64).
//! One file per key, so that writing it atomically is one rename.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use hwsign_proto::PublicKey;

/// Value of the `format` field.
pub(super) const FORMAT: &str = "hwsign-software-key-v1";
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
    /// The private key (zeroized on drop by `p256`).
    pub signing_key: SigningKey,
    /// Its public key.
    pub public_key: PublicKey,
    /// The label.
    pub label: String,
    /// Creation time.
    pub created_unix: i64,
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
            .finish_non_exhaustive()
    }
}

/// Serializes a key; the returned buffer holds the secret and is zeroized on drop.
pub(super) fn encode(file: &KeyFile) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let der = file
        .signing_key
        .to_pkcs8_der()
        .map_err(|_| KeyFileError::PrivateKey)?;
    let json = KeyFileJson {
        format: FORMAT.to_owned(),
        key_id: file.public_key.key_id(),
        label: file.label.clone(),
        created_unix: file.created_unix,
        private_key_pkcs8: Zeroizing::new(STANDARD.encode(der.as_bytes())),
    };
    // Room for the whole document up front, so serde_json never reallocates (a reallocation
    // would leave an unzeroized copy of the key behind).
    let mut out = Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer(&mut *out, &json).map_err(|e| KeyFileError::Format(e.to_string()))?;
    Ok(out)
}

/// Parses a key file and checks that its id matches its key.
pub(super) fn decode(bytes: &[u8]) -> Result<KeyFile, KeyFileError> {
    let json: KeyFileJson =
        serde_json::from_slice(bytes).map_err(|e| KeyFileError::Format(e.to_string()))?;
    if json.format != FORMAT {
        return Err(KeyFileError::Format(format!(
            "unknown format {:?}",
            json.format.chars().take(64).collect::<String>()
        )));
    }
    let der = Zeroizing::new(
        STANDARD
            .decode(json.private_key_pkcs8.as_bytes())
            .map_err(|_| KeyFileError::PrivateKey)?,
    );
    let signing_key = SigningKey::from_pkcs8_der(&der).map_err(|_| KeyFileError::PrivateKey)?;
    let public_key = PublicKey::from_verifying_key(*signing_key.verifying_key())
        .map_err(|_| KeyFileError::PrivateKey)?;
    if public_key.key_id() != json.key_id {
        return Err(KeyFileError::IdMismatch);
    }
    Ok(KeyFile {
        signing_key,
        public_key,
        label: json.label,
        created_unix: json.created_unix,
    })
}
