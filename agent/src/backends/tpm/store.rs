//! Key blobs on disk: `<state_dir>/tpm/key-<id>.json` for signing keys and `ak.json` for the
//! attestation key. The private blob is sealed by the TPM (encrypted under its parent), so the
//! file is useless without this TPM; it is still written 0600 in a 0700 directory. Every write
//! is atomic: temp file, fsync, rename, fsync of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the blob file format.
const FILE_VERSION: u32 = 1;
/// Largest blob file read back (a P-256 key file is well under 1 KiB).
const MAX_FILE_LEN: u64 = 16 * 1024;
const KEY_PREFIX: &str = "key-";
const AK_FILE: &str = "ak.json";
const TMP_PREFIX: &str = ".tmp-";

/// A signing key's blobs and metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub version: u32,
    pub id: String,
    pub label: String,
    pub created_unix: i64,
    /// Marshalled TPMT_PUBLIC, hex.
    pub public: String,
    /// TPM2B_PRIVATE contents, hex (encrypted by the TPM under the storage root key).
    pub private: String,
}

/// The attestation key's blobs, with the EK it was created under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AkFile {
    pub version: u32,
    /// NV index of the EK certificate whose EK template is the AK's parent.
    pub ek_nv_index: u32,
    pub created_unix: i64,
    /// Marshalled TPMT_PUBLIC, hex.
    pub public: String,
    /// TPM2B_PRIVATE contents, hex (encrypted by the TPM under the EK).
    pub private: String,
}

/// The backend's directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating, 0700) `<state_dir>/tpm`.
    pub(super) fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("tpm");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let meta = fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        // An existing directory keeps whatever mode it had; tighten it.
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self { dir })
    }

    /// The directory.
    #[cfg(test)]
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every readable key file. Unreadable or malformed files are logged and skipped so one
    /// damaged file does not take the other keys down; leftovers of interrupted writes are removed.
    pub(super) fn load_keys(&self) -> io::Result<Vec<KeyFile>> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if !(name.starts_with(KEY_PREFIX) && name.ends_with(".json")) {
                continue;
            }
            match read_json::<KeyFile>(&entry.path()) {
                Ok(key) if key.version == FILE_VERSION => keys.push(key),
                Ok(key) => {
                    tracing::warn!(
                        file = name,
                        version = key.version,
                        "unknown key file version"
                    )
                }
                Err(err) => {
                    tracing::warn!(file = name, error = %err, "skipping unreadable key file")
                }
            }
        }
        keys.sort_by(|a, b| (a.created_unix, &a.id).cmp(&(b.created_unix, &b.id)));
        Ok(keys)
    }

    /// Writes a key file atomically.
    pub(super) fn save_key(&self, key: &KeyFile) -> io::Result<()> {
        let name = format!("{KEY_PREFIX}{}.json", key.id);
        self.write_atomic(&name, &to_json(key)?)
    }

    /// The attestation key, if one was created.
    pub(super) fn load_ak(&self) -> io::Result<Option<AkFile>> {
        let path = self.dir.join(AK_FILE);
        match read_json::<AkFile>(&path) {
            Ok(ak) if ak.version == FILE_VERSION => Ok(Some(ak)),
            Ok(ak) => Err(io::Error::other(format!(
                "unknown AK file version {}",
                ak.version
            ))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Writes the attestation key file atomically.
    pub(super) fn save_ak(&self, ak: &AkFile) -> io::Result<()> {
        self.write_atomic(AK_FILE, &to_json(ak)?)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}-{name}", hex::encode(suffix)));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join(name))?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Builds a fresh key file record.
pub(crate) fn key_file(
    id: String,
    label: String,
    created_unix: i64,
    public: &[u8],
    private: &[u8],
) -> KeyFile {
    KeyFile {
        version: FILE_VERSION,
        id,
        label,
        created_unix,
        public: hex::encode(public),
        private: hex::encode(private),
    }
}

/// Builds a fresh AK file record.
pub(crate) fn ak_file(
    ek_nv_index: u32,
    created_unix: i64,
    public: &[u8],
    private: &[u8],
) -> AkFile {
    AkFile {
        version: FILE_VERSION,
        ek_nv_index,
        created_unix,
        public: hex::encode(public),
        private: hex::encode(private),
    }
}

fn to_json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(io::Error::other("file too large"));
    }
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_modes() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let store = Store::open(tmp.path())?;
        let mode = fs::metadata(store.dir())?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let key = key_file("hk1_x".into(), "laptop".into(), 42, b"pub", b"priv");
        store.save_key(&key)?;
        let file_mode = fs::metadata(store.dir().join("key-hk1_x.json"))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(store.load_keys()?, vec![key]);

        assert_eq!(store.load_ak()?, None);
        let ak = ak_file(0x01c0_0002, 7, b"akpub", b"akpriv");
        store.save_ak(&ak)?;
        assert_eq!(store.load_ak()?, Some(ak));
        Ok(())
    }

    #[test]
    fn damaged_files_are_skipped_and_temp_files_removed() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let store = Store::open(tmp.path())?;
        fs::write(store.dir().join("key-broken.json"), b"{not json")?;
        fs::write(store.dir().join(".tmp-0000-key-x.json"), b"partial")?;
        assert!(store.load_keys()?.is_empty());
        assert!(!store.dir().join(".tmp-0000-key-x.json").exists());
        Ok(())
    }
}
