//! Key administration used by the `hwsign-verifier` command: until TPM enrollment exists, keys
//! enter the registry from a public key file.

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use thiserror::Error;

use crate::registry::{KeyRegistry, RegisteredKey, RegistryError};
use crate::unix_time;

/// Largest public key file read (a PEM P-256 SPKI is under 200 bytes).
pub const MAX_PUBLIC_KEY_FILE: u64 = 16 * 1024;

/// Why an administrative command failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The key file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is too large to be a public key.
    #[error("{0} is larger than {MAX_PUBLIC_KEY_FILE} bytes; expected a PEM public key")]
    TooLarge(String),
    /// Not a PEM `PUBLIC KEY` holding a P-256 key.
    #[error("{0} is not a PEM P-256 public key (-----BEGIN PUBLIC KEY-----)")]
    NotAPublicKey(String),
    /// The device has no recorded attestation whose PCRs could be approved.
    #[error("device {0} has no recorded attestation with PCR values to approve")]
    NoAttestation(String),
    /// The registry refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Approves a device's changed boot chain (docs/POLICY.md): the PCR values of its last
/// attestation become its baseline, and its `boot_state` is `unchanged` again. Returns how many
/// PCR values were approved.
pub fn approve_boot_baseline(
    registry: &dyn KeyRegistry,
    device_id: &str,
) -> Result<usize, AdminError> {
    let mut facts = registry
        .device_facts(device_id)?
        .ok_or_else(|| AdminError::NoAttestation(device_id.to_owned()))?;
    let attestation = facts
        .last_attestation
        .as_mut()
        .filter(|a| !a.quoted_pcrs.is_empty())
        .ok_or_else(|| AdminError::NoAttestation(device_id.to_owned()))?;
    registry.set_pcr_baseline(device_id, &attestation.quoted_pcrs)?;
    attestation.boot_state = crate::registry::BootState::Unchanged;
    let count = attestation.quoted_pcrs.len();
    registry.put_device_facts(device_id, &facts)?;
    tracing::info!(device_id, pcrs = count, "PCR baseline approved");
    Ok(count)
}

/// Reads a PEM SubjectPublicKeyInfo (P-256) from `path`.
pub fn read_public_key(path: &Path) -> Result<PublicKey, AdminError> {
    let read_error = |source| AdminError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_PUBLIC_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_PUBLIC_KEY_FILE {
        return Err(AdminError::TooLarge(path.display().to_string()));
    }
    PublicKey::from_spki_pem(&text)
        .map_err(|_| AdminError::NotAPublicKey(path.display().to_string()))
}

/// Registers the key in `path` under `label` at `level`; returns the new key's id.
pub fn add_key_file(
    registry: &dyn KeyRegistry,
    path: &Path,
    label: &str,
    level: KeyLevel,
) -> Result<String, AdminError> {
    let public_key = read_public_key(path)?;
    let now = unix_time::seconds_or_zero(SystemTime::now());
    let key = RegisteredKey::new(public_key, label, level, now);
    let key_id = key.key_id.clone();
    registry.add(key)?;
    Ok(key_id)
}
