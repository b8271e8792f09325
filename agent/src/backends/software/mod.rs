//! The software backend: P-256 keys generated and used by AWS-LC (`aws-lc-rs`, as the delegated
//! session keys are) and kept in files (0600, in a 0700 directory) under `<state_dir>/software/`. It needs no hardware and no
//! system package, so the quickstart works anywhere; its keys carry level `software` and
//! cannot be attested.
//!
//! Keys are loaded at start-up. A file that cannot be used (corrupt, wrong id, readable by
//! others) is reported in the log and skipped: one bad file must not take the other keys down.
//! A file in the format of the earlier `p256` backend is rewritten in the current format when it
//! is loaded (write a temporary file, fsync, rename over the old one, fsync the directory), so a
//! crash during the migration leaves either the old file or the new one, both usable.

mod keyfile;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use aws_lc_rs::digest::{Digest, SHA256};
use aws_lc_rs::signature::EcdsaKeyPair;

use hwsign_proto::api::KeyLevel;

use self::keyfile::{EXTENSION, KeyFile, MAX_KEY_FILE_LEN};
use super::{BackendError, BackendHealth, BackendKey, KeyBackend, check_label};
use crate::fsutil::{TEMP_MARKER, ensure_private_dir, is_exposed, write_atomic};

/// Subdirectory of the state directory holding the key files.
pub const SUBDIR: &str = "software";

/// A key in memory. AWS-LC clears the private key when this is dropped (`EVP_PKEY_free`).
struct LoadedKey {
    signing_key: EcdsaKeyPair,
    description: BackendKey,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("id", &self.description.id)
            .field("label", &self.description.label)
            .finish_non_exhaustive()
    }
}

/// A key file that was found but not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// The software key backend.
#[derive(Debug)]
pub struct SoftwareBackend {
    dir: PathBuf,
    keys: RwLock<BTreeMap<String, LoadedKey>>,
    skipped: Vec<SkippedFile>,
}

impl SoftwareBackend {
    /// Opens `<state_dir>/software/` (creating it 0700), removes temporary files a crash left
    /// behind and loads every key file.
    pub fn open(state_dir: &Path) -> Result<Self, BackendError> {
        let dir = state_dir.join(SUBDIR);
        ensure_private_dir(&dir)?;
        let mut keys = BTreeMap::new();
        let mut skipped = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') && name.contains(TEMP_MARKER) {
                tracing::info!(file = %path.display(), "removing interrupted key write");
                fs::remove_file(&path)?;
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            match load_file(&dir, &path) {
                Ok(key) => {
                    keys.insert(key.description.id.clone(), key);
                }
                Err(reason) => {
                    tracing::error!(file = %path.display(), %reason, "skipping software key file");
                    skipped.push(SkippedFile { path, reason });
                }
            }
        }
        tracing::info!(dir = %dir.display(), keys = keys.len(), skipped = skipped.len(), "software backend open");
        Ok(Self {
            dir,
            keys: RwLock::new(keys),
            skipped,
        })
    }

    /// Files found at start-up that were not loaded, with the reason.
    pub fn skipped_files(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// The directory holding the key files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn load_file(dir: &Path, path: &Path) -> Result<LoadedKey, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if is_exposed(&meta) {
        return Err("readable or writable by group or others (must be 0600)".into());
    }
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(format!("larger than {MAX_KEY_FILE_LEN} bytes"));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let decoded = keyfile::decode(&bytes).map_err(|e| e.to_string())?;
    check_label(&decoded.label).map_err(|e| e.to_string())?;
    let id = decoded.public_key.key_id();
    if path.file_stem().and_then(|s| s.to_str()) != Some(id.as_str()) {
        return Err("file name is not the key's id".into());
    }
    if keyfile::needs_migration(&decoded) {
        migrate(dir, &id, &decoded)?;
    }
    let KeyFile {
        signing_key,
        public_key,
        label,
        created_unix,
        format: _,
    } = decoded;
    Ok(LoadedKey {
        description: BackendKey {
            id,
            label,
            level: KeyLevel::Software,
            public_key,
            created_unix,
        },
        signing_key,
    })
}

/// Rewrites a key file of an earlier format in the current one, atomically (`write_atomic`:
/// temporary file, fsync, rename, fsync of the directory). The key is the same; only its
/// encoding changes. A failure is reported: the key stays usable from the old file.
fn migrate(dir: &Path, id: &str, file: &KeyFile) -> Result<(), String> {
    let bytes = keyfile::encode(file).map_err(|e| e.to_string())?;
    write_atomic(dir, &format!("{id}.{EXTENSION}"), &bytes)
        .map_err(|e| format!("migrating to {}: {e}", keyfile::FORMAT))?;
    tracing::info!(key_id = %id, from = file.format, to = keyfile::FORMAT, "software key file migrated");
    Ok(())
}

impl KeyBackend for SoftwareBackend {
    fn name(&self) -> &'static str {
        "software"
    }

    fn is_fast(&self) -> bool {
        true
    }

    fn health(&self) -> BackendHealth {
        BackendHealth {
            available: true,
            detail: None,
        }
    }

    fn list_keys(&self) -> Result<Vec<BackendKey>, BackendError> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        Ok(keys.values().map(|k| k.description.clone()).collect())
    }

    fn create_key(&self, label: &str) -> Result<BackendKey, BackendError> {
        check_label(label)?;
        let (signing_key, public_key) = keyfile::generate().map_err(BackendError::failed)?;
        let file = KeyFile {
            signing_key,
            public_key,
            label: label.to_owned(),
            created_unix: crate::unix_time::now(),
            format: keyfile::FORMAT,
        };
        let bytes = keyfile::encode(&file).map_err(BackendError::failed)?;
        let id = file.public_key.key_id();
        write_atomic(&self.dir, &format!("{id}.{EXTENSION}"), &bytes)?;
        drop(bytes);
        let KeyFile {
            signing_key,
            public_key,
            label,
            created_unix,
            format: _,
        } = file;
        let description = BackendKey {
            id: id.clone(),
            label,
            level: KeyLevel::Software,
            public_key,
            created_unix,
        };
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.insert(
            id,
            LoadedKey {
                signing_key,
                description: description.clone(),
            },
        );
        Ok(description)
    }

    fn sign_digest(&self, key_id: &str, digest: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let key = keys.get(key_id).ok_or(BackendError::UnknownKey)?;
        let digest = Digest::import_less_safe(digest, &SHA256).map_err(BackendError::failed)?;
        let signature = key
            .signing_key
            .sign_digest(&digest)
            .map_err(BackendError::failed)?;
        Ok(signature.as_ref().to_vec())
    }
}
