//! A registry held in memory: tests, demos, and verifiers whose keys come from configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{
    DeviceClock, DeviceFacts, DeviceRecord, Fido2Credential, KeyRegistry, RegisteredKey,
    RegistryError,
};

#[derive(Debug, Default)]
struct State {
    /// Shared, so a lookup hands out the stored key without copying it.
    keys: HashMap<String, Arc<RegisteredKey>>,
    /// Insertion order, for `list`.
    order: Vec<String>,
    devices: HashMap<String, DeviceRecord>,
    facts: HashMap<String, DeviceFacts>,
    fido2: HashMap<String, Fido2Credential>,
}

/// An in-memory [`KeyRegistry`].
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    state: RwLock<State>,
    /// Bumped by every write (its change version).
    writes: AtomicU64,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, State>, RegistryError> {
        let state = self.state.write().map_err(|_| RegistryError::Poisoned)?;
        // Bumped before the change is made and seen after it: a reader that saw the old version
        // cannot store an answer under a version that outlives the change.
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(state)
    }
}

impl KeyRegistry for MemoryRegistry {
    fn lookup(&self, key_id: &str) -> Result<Option<RegisteredKey>, RegistryError> {
        Ok(self
            .lookup_shared(key_id)?
            .map(|key| RegisteredKey::clone(&key)))
    }

    fn lookup_shared(&self, key_id: &str) -> Result<Option<Arc<RegisteredKey>>, RegistryError> {
        let state = self.state.read().map_err(|_| RegistryError::Poisoned)?;
        let Some(key) = state.keys.get(key_id) else {
            return Ok(None);
        };
        let device_revoked = key
            .device_id
            .as_deref()
            .and_then(|id| state.devices.get(id))
            .is_some_and(|device| device.revoked);
        if device_revoked && !key.revoked {
            let mut key = RegisteredKey::clone(key);
            key.revoked = true;
            return Ok(Some(Arc::new(key)));
        }
        Ok(Some(Arc::clone(key)))
    }

    fn add(&self, key: RegisteredKey) -> Result<(), RegistryError> {
        key.validate()?;
        let mut state = self.write()?;
        if state.keys.contains_key(&key.key_id) {
            return Err(RegistryError::KeyExists(key.key_id));
        }
        if let Some(device) = &key.device_id
            && !state.devices.contains_key(device)
        {
            return Err(RegistryError::UnknownDevice(device.clone()));
        }
        state.order.push(key.key_id.clone());
        state.keys.insert(key.key_id.clone(), Arc::new(key));
        Ok(())
    }

    fn revoke(&self, key_id: &str) -> Result<(), RegistryError> {
        let mut state = self.write()?;
        let key = state
            .keys
            .get_mut(key_id)
            .ok_or_else(|| RegistryError::UnknownKey(key_id.to_owned()))?;
        Arc::make_mut(key).revoked = true;
        Ok(())
    }

    fn list(&self) -> Result<Vec<RegisteredKey>, RegistryError> {
        let state = self.state.read().map_err(|_| RegistryError::Poisoned)?;
        let keys = state
            .order
            .iter()
            .filter_map(|id| state.keys.get(id).map(|key| RegisteredKey::clone(key)))
            .collect();
        Ok(keys)
    }

    fn add_device(&self, device: DeviceRecord) -> Result<(), RegistryError> {
        device.validate()?;
        let mut state = self.write()?;
        if state.devices.contains_key(&device.id) {
            return Err(RegistryError::DeviceExists(device.id));
        }
        state.devices.insert(device.id.clone(), device);
        Ok(())
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, RegistryError> {
        let state = self.state.read().map_err(|_| RegistryError::Poisoned)?;
        Ok(state.devices.get(device_id).cloned())
    }

    fn update_device_clock(
        &self,
        device_id: &str,
        clock: DeviceClock,
    ) -> Result<(), RegistryError> {
        let mut state = self.write()?;
        let device = state
            .devices
            .get_mut(device_id)
            .ok_or_else(|| RegistryError::UnknownDevice(device_id.to_owned()))?;
        device.clock = clock;
        Ok(())
    }

    fn revoke_device(&self, device_id: &str) -> Result<(), RegistryError> {
        let mut state = self.write()?;
        let device = state
            .devices
            .get_mut(device_id)
            .ok_or_else(|| RegistryError::UnknownDevice(device_id.to_owned()))?;
        device.revoked = true;
        Ok(())
    }

    fn set_pcr_baseline(
        &self,
        device_id: &str,
        baseline: &[[u8; 32]],
    ) -> Result<(), RegistryError> {
        if baseline.len() > super::MAX_BASELINE_PCRS {
            return Err(RegistryError::Invalid("too many PCR values"));
        }
        let mut state = self.write()?;
        let device = state
            .devices
            .get_mut(device_id)
            .ok_or_else(|| RegistryError::UnknownDevice(device_id.to_owned()))?;
        device.pcr_baseline = baseline.to_vec();
        Ok(())
    }

    fn change_version(&self) -> Result<Option<u64>, RegistryError> {
        Ok(Some(self.writes.load(Ordering::SeqCst)))
    }

    fn device_facts(&self, device_id: &str) -> Result<Option<DeviceFacts>, RegistryError> {
        let state = self.state.read().map_err(|_| RegistryError::Poisoned)?;
        Ok(state.facts.get(device_id).cloned())
    }

    fn put_device_facts(&self, device_id: &str, facts: &DeviceFacts) -> Result<(), RegistryError> {
        facts.validate()?;
        let mut state = self.write()?;
        if !state.devices.contains_key(device_id) {
            return Err(RegistryError::UnknownDevice(device_id.to_owned()));
        }
        state.facts.insert(device_id.to_owned(), facts.clone());
        Ok(())
    }

    fn add_fido2_credential(
        &self,
        key: RegisteredKey,
        credential: Fido2Credential,
    ) -> Result<(), RegistryError> {
        credential.validate_with(&key)?;
        let mut state = self.write()?;
        if state.keys.contains_key(&key.key_id) {
            return Err(RegistryError::KeyExists(key.key_id));
        }
        if state
            .fido2
            .values()
            .any(|other| other.credential_id == credential.credential_id)
        {
            return Err(RegistryError::Invalid("credential id already registered"));
        }
        state.order.push(key.key_id.clone());
        state.fido2.insert(key.key_id.clone(), credential);
        state.keys.insert(key.key_id.clone(), Arc::new(key));
        Ok(())
    }

    fn fido2_credential(&self, key_id: &str) -> Result<Option<Fido2Credential>, RegistryError> {
        let state = self.state.read().map_err(|_| RegistryError::Poisoned)?;
        Ok(state.fido2.get(key_id).cloned())
    }

    fn advance_sign_count(&self, key_id: &str, new: u32) -> Result<bool, RegistryError> {
        // The counter is not part of `lookup`'s answer: no change-version bump.
        let mut state = self.state.write().map_err(|_| RegistryError::Poisoned)?;
        let Some(credential) = state.fido2.get_mut(key_id) else {
            return Ok(false);
        };
        let advances = credential.sign_count < new || (credential.sign_count == 0 && new == 0);
        if advances && !credential.possibly_cloned {
            credential.sign_count = new;
            return Ok(true);
        }
        credential.possibly_cloned = true;
        Ok(false)
    }

    fn clear_possibly_cloned(&self, key_id: &str) -> Result<(), RegistryError> {
        let mut state = self.state.write().map_err(|_| RegistryError::Poisoned)?;
        let credential = state
            .fido2
            .get_mut(key_id)
            .ok_or_else(|| RegistryError::UnknownKey(key_id.to_owned()))?;
        credential.possibly_cloned = false;
        Ok(())
    }
}
