//! A per-process cache of key lookups in front of any registry, that never outlives a change.
//!
//! Each answer is stored with the registry's [`change_version`](KeyRegistry::change_version) read
//! *before* the lookup, and reused only while the registry still reports that same version. A
//! change committed after the version was read moves the version on (PostgreSQL: a notification;
//! SQLite: `PRAGMA data_version`, read at most every
//! [`CHANGE_CHECK_INTERVAL`](super::CHANGE_CHECK_INTERVAL)), so an answer read before the change
//! is never reused after the registry reports it. When the registry cannot tell (`None`: no change signal, or its
//! notification channel is down), every lookup goes to the registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{
    DeviceClock, DeviceFacts, DeviceRecord, Fido2Credential, KeyRegistry, RegisteredKey,
    RegistryError,
};

/// Most keys a [`CachedRegistry`] holds; when full it is cleared rather than grown.
pub const KEY_CACHE_CAPACITY: usize = 65_536;

/// Lookup counts of a [`CachedRegistry`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the registry (not cached, or changed since).
    pub misses: u64,
    /// Lookups that went to the registry because it could not vouch for the cache.
    pub bypassed: u64,
}

/// Answers of `lookup`, each kept with the change version read before it was looked up, at most
/// [`KEY_CACHE_CAPACITY`] of them (cleared when full rather than grown). Shared by
/// [`CachedRegistry`] and the SQLite registry, which keeps one itself.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<String, (u64, Arc<RegisteredKey>)>>,
}

impl KeyCache {
    /// The answer kept for `key_id`, if it was read under `version`.
    pub(crate) fn get(
        &self,
        key_id: &str,
        version: u64,
    ) -> Result<Option<Arc<RegisteredKey>>, RegistryError> {
        let entries = self.entries.read().map_err(|_| RegistryError::Poisoned)?;
        Ok(entries
            .get(key_id)
            .filter(|(seen, _)| *seen == version)
            .map(|(_, key)| Arc::clone(key)))
    }

    /// Keeps `key`, read under `version` (the version read *before* the lookup). Only keys that
    /// exist are kept: ids nobody registered must not push real keys out.
    pub(crate) fn put(
        &self,
        key_id: &str,
        version: u64,
        key: &Arc<RegisteredKey>,
    ) -> Result<(), RegistryError> {
        let mut entries = self.entries.write().map_err(|_| RegistryError::Poisoned)?;
        if entries.len() >= KEY_CACHE_CAPACITY && !entries.contains_key(key_id) {
            entries.clear();
        }
        match entries.get_mut(key_id) {
            Some(entry) => *entry = (version, Arc::clone(key)),
            None => {
                entries.insert(key_id.to_owned(), (version, Arc::clone(key)));
            }
        }
        Ok(())
    }

    /// Forgets every answer.
    pub(crate) fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    /// How many answers are kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.read().map_or(0, |entries| entries.len())
    }
}

/// A [`KeyRegistry`] answering repeated lookups from memory while the registry behind it reports
/// no change. Writes go through to the registry and clear the cache.
#[derive(Debug)]
pub struct CachedRegistry {
    inner: Arc<dyn KeyRegistry>,
    cache: KeyCache,
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed: AtomicU64,
}

impl CachedRegistry {
    /// A cache in front of `inner`.
    pub fn new(inner: Arc<dyn KeyRegistry>) -> Self {
        Self {
            inner,
            cache: KeyCache::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    /// The registry behind the cache.
    pub fn inner(&self) -> &Arc<dyn KeyRegistry> {
        &self.inner
    }

    /// How lookups were answered so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
        }
    }

    /// How many keys the cache holds now (at most [`KEY_CACHE_CAPACITY`]).
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// Runs a write on the registry, then forgets every cached answer (this process sees its own
    /// write at once, before the change signal comes round).
    fn write<T>(&self, op: impl FnOnce(&dyn KeyRegistry) -> T) -> T {
        let result = op(self.inner.as_ref());
        self.cache.clear();
        result
    }
}

impl KeyRegistry for CachedRegistry {
    fn lookup(&self, key_id: &str) -> Result<Option<RegisteredKey>, RegistryError> {
        Ok(self
            .lookup_shared(key_id)?
            .map(|key| RegisteredKey::clone(&key)))
    }

    fn lookup_shared(&self, key_id: &str) -> Result<Option<Arc<RegisteredKey>>, RegistryError> {
        let Some(version) = self.inner.change_version()? else {
            self.bypassed.fetch_add(1, Ordering::Relaxed);
            return self.inner.lookup_shared(key_id);
        };
        if let Some(key) = self.cache.get(key_id, version)? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(key));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let found = self.inner.lookup_shared(key_id)?;
        if let Some(key) = &found {
            self.cache.put(key_id, version, key)?;
        }
        Ok(found)
    }

    fn add(&self, key: RegisteredKey) -> Result<(), RegistryError> {
        self.write(|r| r.add(key))
    }

    fn revoke(&self, key_id: &str) -> Result<(), RegistryError> {
        self.write(|r| r.revoke(key_id))
    }

    fn list(&self) -> Result<Vec<RegisteredKey>, RegistryError> {
        self.inner.list()
    }

    fn add_device(&self, device: DeviceRecord) -> Result<(), RegistryError> {
        self.write(|r| r.add_device(device))
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, RegistryError> {
        self.inner.device(device_id)
    }

    fn update_device_clock(
        &self,
        device_id: &str,
        clock: DeviceClock,
    ) -> Result<(), RegistryError> {
        self.write(|r| r.update_device_clock(device_id, clock))
    }

    fn revoke_device(&self, device_id: &str) -> Result<(), RegistryError> {
        self.write(|r| r.revoke_device(device_id))
    }

    fn device_facts(&self, device_id: &str) -> Result<Option<DeviceFacts>, RegistryError> {
        self.inner.device_facts(device_id)
    }

    fn set_pcr_baseline(
        &self,
        device_id: &str,
        baseline: &[[u8; 32]],
    ) -> Result<(), RegistryError> {
        self.write(|r| r.set_pcr_baseline(device_id, baseline))
    }

    fn put_device_facts(&self, device_id: &str, facts: &DeviceFacts) -> Result<(), RegistryError> {
        self.write(|r| r.put_device_facts(device_id, facts))
    }

    fn change_version(&self) -> Result<Option<u64>, RegistryError> {
        self.inner.change_version()
    }

    fn add_fido2_credential(
        &self,
        key: RegisteredKey,
        credential: Fido2Credential,
    ) -> Result<(), RegistryError> {
        self.write(|r| r.add_fido2_credential(key, credential))
    }

    fn fido2_credential(&self, key_id: &str) -> Result<Option<Fido2Credential>, RegistryError> {
        // Never cached: the counter and the cloned flag change with every assertion.
        self.inner.fido2_credential(key_id)
    }

    fn advance_sign_count(&self, key_id: &str, new: u32) -> Result<bool, RegistryError> {
        self.inner.advance_sign_count(key_id, new)
    }

    fn clear_possibly_cloned(&self, key_id: &str) -> Result<(), RegistryError> {
        self.inner.clear_possibly_cloned(key_id)
    }
}
