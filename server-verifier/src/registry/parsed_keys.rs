//! Parsed public keys kept in memory by the stores that hold keys as SPKI bytes (SQLite,
//! PostgreSQL). A key id is a hash of its key, so an entry never goes stale (it is still checked
//! against the stored bytes). Cleared when full rather than grown.

use std::collections::HashMap;
use std::sync::Mutex;

use hwsign_proto::PublicKey;

use super::RegistryError;

/// Most parsed keys kept.
const CAPACITY: usize = 65_536;

/// Stored SPKI bytes → parsed keys, checked against their ids.
#[derive(Debug, Default)]
pub(super) struct ParsedKeys {
    keys: Mutex<HashMap<String, PublicKey>>,
}

impl ParsedKeys {
    /// The key stored as `spki` under `key_id`; a key that does not parse or does not hash to its
    /// id is [`RegistryError::Corrupt`].
    pub(super) fn get(&self, key_id: &str, spki: &[u8]) -> Result<PublicKey, RegistryError> {
        let mut cache = self.keys.lock().map_err(|_| RegistryError::Poisoned)?;
        if let Some(key) = cache.get(key_id)
            && key.spki_der() == spki
        {
            return Ok(key.clone());
        }
        let key = PublicKey::from_spki_der(spki)
            .map_err(|_| RegistryError::Corrupt(format!("stored key {key_id} does not parse")))?;
        if key.key_id() != key_id {
            return Err(RegistryError::Corrupt(format!(
                "stored key {key_id} does not match its id"
            )));
        }
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(key_id.to_owned(), key.clone());
        Ok(key)
    }
}
