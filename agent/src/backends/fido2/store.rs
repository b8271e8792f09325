//! The FIDO2 backend's key metadata: for each credential the key made, its id on the key and its
//! public key — never a secret (the private key never leaves the security key). One JSON file,
//! `<state_dir>/fido2/credentials.json`, written atomically.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_proto::PublicKey;
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// File name in the backend's directory.
const FILE: &str = "credentials.json";
/// Largest metadata file read (thousands of credentials).
const MAX_FILE_LEN: u64 = 4 << 20;

/// One credential, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredCredential {
    /// hwsign key id of the public key.
    pub(crate) key_id: String,
    /// Label given at creation.
    pub(crate) label: String,
    /// The credential id, base64url without padding.
    pub(crate) credential_id: String,
    /// The public key, SPKI DER in base64url without padding.
    pub(crate) public_key: String,
    /// The relying party id the credential is scoped to.
    pub(crate) rp_id: String,
    /// Attestation format the key answered with.
    pub(crate) attestation_format: String,
    /// Creation time, seconds since the epoch.
    pub(crate) created_unix: i64,
}

impl StoredCredential {
    /// The credential id bytes.
    pub(crate) fn credential_id_bytes(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(&self.credential_id).ok()
    }

    /// The public key.
    pub(crate) fn public_key(&self) -> Option<PublicKey> {
        let der = URL_SAFE_NO_PAD.decode(&self.public_key).ok()?;
        PublicKey::from_spki_der(&der).ok()
    }

    /// Builds the stored form.
    pub(crate) fn new(
        label: &str,
        credential_id: &[u8],
        public_key: &PublicKey,
        rp_id: &str,
        attestation_format: &str,
        created_unix: i64,
    ) -> Self {
        Self {
            key_id: public_key.key_id(),
            label: label.to_owned(),
            credential_id: URL_SAFE_NO_PAD.encode(credential_id),
            public_key: URL_SAFE_NO_PAD.encode(public_key.spki_der()),
            rp_id: rp_id.to_owned(),
            attestation_format: attestation_format.to_owned(),
            created_unix,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    credentials: Vec<StoredCredential>,
}

/// The metadata directory.
#[derive(Debug)]
pub(crate) struct CredentialStore {
    dir: PathBuf,
}

impl CredentialStore {
    /// Opens (creating) `<state_dir>/fido2`.
    pub(crate) fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("fido2");
        fsutil::ensure_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Every stored credential.
    pub(crate) fn load(&self) -> io::Result<Vec<StoredCredential>> {
        let path = self.dir.join(FILE);
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if meta.len() > MAX_FILE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "credentials.json is too large",
            ));
        }
        let bytes = fs::read(&path)?;
        let file: File = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(file.credentials)
    }

    /// Adds `credential`.
    pub(crate) fn add(&self, credential: StoredCredential) -> io::Result<()> {
        let mut credentials = self.load()?;
        credentials.push(credential);
        let bytes = serde_json::to_vec_pretty(&File { credentials })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        fsutil::write_atomic(&self.dir, FILE, &bytes)
    }
}
