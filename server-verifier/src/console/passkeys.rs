//! The console's passkeys: which WebAuthn credential belongs to which directory user, kept in a
//! JSON file written atomically (or in memory), bounded in all and per user.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::ConsoleError;

/// Most passkeys kept.
pub(crate) const MAX_PASSKEYS: usize = 1024;
/// Most passkeys per user.
pub(crate) const MAX_PASSKEYS_PER_USER: usize = 16;

/// A registered console passkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Passkey {
    /// The credential id, base64url without padding.
    pub(crate) credential_id: String,
    /// The P-256 public key, SEC1 uncompressed, hex.
    pub(crate) public_key: String,
    /// The directory user name it signs in as.
    pub(crate) user_name: String,
    /// The authenticator's signature counter last seen.
    pub(crate) sign_count: u32,
    /// When it was registered, seconds since the epoch.
    pub(crate) created_unix: i64,
}

#[derive(Debug)]
pub(crate) struct PasskeyStore {
    path: Option<PathBuf>,
    keys: Mutex<Vec<Passkey>>,
}

impl PasskeyStore {
    /// The passkeys in `path` (none yet if it does not exist), or an empty store in memory.
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, ConsoleError> {
        let keys = match path {
            Some(path) if path.exists() => {
                let text = std::fs::read(path).map_err(|source| ConsoleError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                let keys: Vec<Passkey> = serde_json::from_slice(&text)
                    .map_err(|_| ConsoleError::Invalid("the passkeys file is not valid"))?;
                if keys.len() > MAX_PASSKEYS {
                    return Err(ConsoleError::Invalid("the passkeys file holds too many"));
                }
                keys
            }
            _ => Vec::new(),
        };
        Ok(Self {
            path: path.map(Path::to_owned),
            keys: Mutex::new(keys),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Passkey>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no passkey is registered (the bootstrap token works only then).
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The passkey with this credential id.
    pub(crate) fn find(&self, credential_id: &str) -> Option<Passkey> {
        self.lock()
            .iter()
            .find(|key| key.credential_id == credential_id)
            .cloned()
    }

    /// Passkeys of `user_name`.
    pub(crate) fn count_of(&self, user_name: &str) -> usize {
        self.lock()
            .iter()
            .filter(|key| key.user_name == user_name)
            .count()
    }

    /// Adds a passkey (refused past the bounds, for a known credential id, or with
    /// `only_if_empty` once any passkey exists) and saves.
    pub(crate) fn add(&self, passkey: Passkey, only_if_empty: bool) -> Result<(), ConsoleError> {
        let mut keys = self.lock();
        if only_if_empty && !keys.is_empty() {
            return Err(ConsoleError::Refused("the bootstrap token is spent"));
        }
        if keys.len() >= MAX_PASSKEYS
            || keys
                .iter()
                .filter(|key| key.user_name == passkey.user_name)
                .count()
                >= MAX_PASSKEYS_PER_USER
        {
            return Err(ConsoleError::Refused("too many passkeys"));
        }
        if keys
            .iter()
            .any(|key| key.credential_id == passkey.credential_id)
        {
            return Err(ConsoleError::Refused(
                "this credential is registered already",
            ));
        }
        keys.push(passkey);
        self.save(&keys)
    }

    /// Records the counter of a sign-in, once it checked.
    pub(crate) fn set_sign_count(
        &self,
        credential_id: &str,
        sign_count: u32,
    ) -> Result<(), ConsoleError> {
        let mut keys = self.lock();
        if let Some(key) = keys
            .iter_mut()
            .find(|key| key.credential_id == credential_id)
        {
            key.sign_count = sign_count;
        }
        self.save(&keys)
    }

    fn save(&self, keys: &[Passkey]) -> Result<(), ConsoleError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| ConsoleError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(keys)
            .map_err(|_| ConsoleError::Invalid("passkeys do not serialize"))?;
        let temporary = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }
}
