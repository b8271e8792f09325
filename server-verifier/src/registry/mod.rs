//! Which keys (and, after TPM enrollment, which devices) the verifier accepts.
//!
//! [`KeyRegistry`] is synchronous: lookups are local (SQLite file, memory) and short, and the
//! verifier calls it once per request. A fleet's registry lives in PostgreSQL
//! ([`PostgresRegistry`], cargo feature `postgres`) behind the same trait. Every error is
//! reported, never papered over: the verifier turns any registry error into
//! `verifier_unavailable` (fail closed).
//!
//! [`open_registry`] opens a registry from a URL (`memory:`, `sqlite:PATH`, `postgres://…`),
//! behind a [`CachedRegistry`] that answers repeated lookups from memory for as long as the
//! registry's change signal ([`KeyRegistry::change_version`]) says nothing changed. The SQLite
//! registry keeps the same cache itself ([`SqliteRegistry`]), so a verifier built on
//! `SqliteRegistry::open` gets what `open_registry("sqlite:…")` gives.

mod cache;
mod encoding;
mod facts;
mod fido2;
mod memory;
mod open;
mod parsed_keys;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::sync::Arc;

use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use thiserror::Error;

pub use cache::{CacheStats, CachedRegistry, KEY_CACHE_CAPACITY};
pub use facts::{
    AttestationRecord, BootState, DeviceFacts, Fact, MAX_FACT_STRING_LEN, PostureReport,
};
pub use fido2::{Fido2Credential, MAX_RP_ID_LEN};
pub use memory::MemoryRegistry;
pub use open::open_registry;
#[cfg(feature = "postgres")]
pub use postgres::{PG_SCHEMA_VERSION, PostgresRegistry};
pub use sqlite::{CHANGE_CHECK_INTERVAL, SCHEMA_VERSION, SqliteRegistry};

/// Longest key label.
pub const MAX_LABEL_CHARS: usize = 64;
/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 128;
/// Most PCR values in a device baseline.
pub const MAX_BASELINE_PCRS: usize = 24;

/// A key the verifier knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredKey {
    /// `hk1_…`, derived from the public key.
    pub key_id: String,
    /// Human label.
    pub label: String,
    /// The public key.
    pub public_key: PublicKey,
    /// How much the verifier trusts where the key lives.
    pub level: KeyLevel,
    /// The enrolled device the key belongs to, if any.
    pub device_id: Option<String>,
    /// Revoked keys are refused with `device_revoked`. On lookup this is also true when the key's
    /// device is revoked.
    pub revoked: bool,
    /// When the key was added, seconds since the epoch.
    pub added_unix: i64,
}

impl RegisteredKey {
    /// A new, unrevoked key with no device; the key id is derived from `public_key`.
    pub fn new(
        public_key: PublicKey,
        label: impl Into<String>,
        level: KeyLevel,
        added_unix: i64,
    ) -> Self {
        Self {
            key_id: public_key.key_id(),
            label: label.into(),
            public_key,
            level,
            device_id: None,
            revoked: false,
            added_unix,
        }
    }

    /// Checks what every registry checks before storing a key.
    pub fn validate(&self) -> Result<(), RegistryError> {
        if self.key_id != self.public_key.key_id() {
            return Err(RegistryError::KeyIdMismatch);
        }
        check_label(&self.label)?;
        if let Some(device) = &self.device_id {
            check_device_id(device)?;
        }
        Ok(())
    }
}

/// An enrolled device (a TPM). Written by enrollment (design brief §5) once it exists; the
/// registry stores it now so keys can point at their device and be revoked with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Device id (chosen by enrollment).
    pub id: String,
    /// Lower-case hex SHA-256 of the EK certificate DER.
    pub ek_cert_sha256: String,
    /// The attestation key's public area (marshalled TPMT_PUBLIC), to check later quotes.
    pub ak_public: Vec<u8>,
    /// The last TPM clock state seen; a later attestation must not go back from it.
    pub clock: DeviceClock,
    /// TPM firmware version from the last quote.
    pub firmware_version: u64,
    /// sha256 PCR values 0.. at enrollment.
    pub pcr_baseline: Vec<[u8; 32]>,
    /// When the device was enrolled, seconds since the epoch.
    pub enrolled_unix: i64,
    /// Revoking a device revokes every key that points at it.
    pub revoked: bool,
}

/// TPM clock values remembered per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceClock {
    /// TPM resets since the last TPM2_Clear.
    pub reset_count: u32,
    /// Restarts since the last reset.
    pub restart_count: u32,
    /// Milliseconds of TPM powered time.
    pub clock: u64,
}

impl DeviceRecord {
    /// Checks bounds before storing.
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_device_id(&self.id)?;
        if self.ek_cert_sha256.len() != 64
            || !self
                .ek_cert_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(RegistryError::Invalid(
                "EK certificate fingerprint must be 64 lower-case hex digits",
            ));
        }
        if self.ak_public.is_empty() || self.ak_public.len() > 4096 {
            return Err(RegistryError::Invalid(
                "AK public area must be 1-4096 bytes",
            ));
        }
        if self.pcr_baseline.len() > MAX_BASELINE_PCRS {
            return Err(RegistryError::Invalid("too many PCR values"));
        }
        Ok(())
    }
}

fn check_label(label: &str) -> Result<(), RegistryError> {
    let count = label.chars().count();
    if count == 0 || count > MAX_LABEL_CHARS || label.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(
            "label must be 1-64 characters without control characters",
        ));
    }
    Ok(())
}

fn check_device_id(id: &str) -> Result<(), RegistryError> {
    if id.is_empty()
        || id.len() > MAX_DEVICE_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(RegistryError::Invalid(
            "device id must be 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
        ));
    }
    Ok(())
}

/// Why a registry operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A key with this id is already registered.
    #[error("key {0} is already registered")]
    KeyExists(String),
    /// No key with this id.
    #[error("no key {0}")]
    UnknownKey(String),
    /// A device with this id is already enrolled.
    #[error("device {0} is already enrolled")]
    DeviceExists(String),
    /// No device with this id.
    #[error("no device {0}")]
    UnknownDevice(String),
    /// The key id is not the one derived from the public key.
    #[error("key id does not match the public key")]
    KeyIdMismatch,
    /// A field is out of bounds.
    #[error("invalid registry entry: {0}")]
    Invalid(&'static str),
    /// The store holds something this code cannot read (corruption, or a newer schema).
    #[error("registry store is corrupt or incompatible: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("registry store failed")]
    Store(#[from] rusqlite::Error),
    /// The registry file cannot be created or opened.
    #[error("cannot open registry file {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A lock was poisoned by a panic in another thread; the registry refuses to guess its state.
    #[error("registry lock poisoned")]
    Poisoned,
    /// This registry does not implement the operation.
    #[error("this registry does not support {0}")]
    Unsupported(&'static str),
    /// The store could not be reached or did not answer in time (PostgreSQL down, restarting,
    /// overloaded); a later call may succeed.
    #[error("registry store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The registry URL is not one this build can open.
    #[error("invalid registry URL: {0}")]
    InvalidUrl(&'static str),
}

/// Keys and devices the verifier accepts.
pub trait KeyRegistry: Send + Sync + std::fmt::Debug {
    /// The key with this id. `revoked` is true when the key or its device is revoked.
    fn lookup(&self, key_id: &str) -> Result<Option<RegisteredKey>, RegistryError>;

    /// [`KeyRegistry::lookup`], answered as a shared value: a registry that keeps its answers
    /// (a key cache) hands out the kept one without copying it. The verifier calls this twice per
    /// request. The default wraps [`KeyRegistry::lookup`].
    fn lookup_shared(&self, key_id: &str) -> Result<Option<Arc<RegisteredKey>>, RegistryError> {
        Ok(self.lookup(key_id)?.map(Arc::new))
    }

    /// Adds a key; its device, if named, must be enrolled.
    fn add(&self, key: RegisteredKey) -> Result<(), RegistryError>;

    /// Revokes a key. Revoking a revoked key succeeds; an unknown key is an error.
    fn revoke(&self, key_id: &str) -> Result<(), RegistryError>;

    /// Every key, revoked ones included, in the order they were added.
    fn list(&self) -> Result<Vec<RegisteredKey>, RegistryError>;

    /// Stores a newly enrolled device.
    fn add_device(&self, device: DeviceRecord) -> Result<(), RegistryError>;

    /// The device with this id.
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, RegistryError>;

    /// Records a later clock state after a successful re-attestation. The caller checks that it
    /// does not go backwards.
    fn update_device_clock(&self, device_id: &str, clock: DeviceClock)
    -> Result<(), RegistryError>;

    /// Revokes a device and with it every key that points at it.
    fn revoke_device(&self, device_id: &str) -> Result<(), RegistryError>;

    /// The facts kept about an enrolled device (docs/POLICY.md); `None` when none were recorded.
    /// Registries that keep none answer `None`.
    fn device_facts(&self, device_id: &str) -> Result<Option<DeviceFacts>, RegistryError> {
        let _ = device_id;
        Ok(None)
    }

    /// Replaces a device's PCR baseline (an administrator approved a changed boot chain).
    fn set_pcr_baseline(
        &self,
        device_id: &str,
        baseline: &[[u8; 32]],
    ) -> Result<(), RegistryError> {
        let _ = (device_id, baseline);
        Err(RegistryError::Unsupported("changing a PCR baseline"))
    }

    /// A value that changes whenever the answer of [`KeyRegistry::lookup`] may have changed, in
    /// this process or any other sharing the store: a cache in front of the registry
    /// ([`CachedRegistry`]) may reuse an answer for as long as this value stays the same.
    /// `None` when the registry cannot tell right now (no change signal, or its notification
    /// channel is down): the cache is then bypassed, never trusted. The default is `None`.
    fn change_version(&self) -> Result<Option<u64>, RegistryError> {
        Ok(None)
    }

    /// Replaces the facts kept about an enrolled device. The device must exist.
    fn put_device_facts(&self, device_id: &str, facts: &DeviceFacts) -> Result<(), RegistryError> {
        let _ = (device_id, facts);
        Err(RegistryError::Unsupported("device facts"))
    }

    /// Stores a FIDO2 credential and its key together (the key's level is `fido2` or
    /// `fido2-unattested`); fails like [`KeyRegistry::add`] when the key exists.
    fn add_fido2_credential(
        &self,
        key: RegisteredKey,
        credential: Fido2Credential,
    ) -> Result<(), RegistryError> {
        let _ = (key, credential);
        Err(RegistryError::Unsupported("FIDO2 credentials"))
    }

    /// The FIDO2 credential of a key; `None` for keys that are not FIDO2 credentials.
    fn fido2_credential(&self, key_id: &str) -> Result<Option<Fido2Credential>, RegistryError> {
        let _ = key_id;
        Ok(None)
    }

    /// Compare-and-set of the sign counter, atomic in the store: stores `new` and answers
    /// `true` when the stored counter is lower than `new` (or both are 0: an authenticator
    /// without a counter) and the credential is not flagged; otherwise stores nothing, flags the
    /// credential possibly cloned (unless it is only unknown) and answers `false`.
    fn advance_sign_count(&self, key_id: &str, new: u32) -> Result<bool, RegistryError> {
        let _ = (key_id, new);
        Err(RegistryError::Unsupported("FIDO2 sign counters"))
    }

    /// Clears a FIDO2 credential's possibly-cloned flag (an administrator checked the key);
    /// the stored counter stays, so a clone still behind it is flagged again at its next use.
    /// An unknown credential is [`RegistryError::UnknownKey`].
    fn clear_possibly_cloned(&self, key_id: &str) -> Result<(), RegistryError> {
        let _ = key_id;
        Err(RegistryError::Unsupported(
            "clearing a possibly-cloned flag",
        ))
    }
}
