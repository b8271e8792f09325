//! How the stores that keep records as columns (SQLite, PostgreSQL) encode the fields that have
//! no column type of their own: PCR baselines as concatenated bytes, device facts as JSON.

use super::{DeviceFacts, RegistryError};

/// Largest stored facts document written or read back.
const MAX_FACTS_JSON: usize = 64 * 1024;

/// PCR values, 32 bytes each, concatenated.
pub(super) fn pcrs_to_blob(pcrs: &[[u8; 32]]) -> Vec<u8> {
    pcrs.concat()
}

/// The PCR values of a stored baseline.
pub(super) fn pcrs_from_blob(blob: &[u8]) -> Result<Vec<[u8; 32]>, RegistryError> {
    let chunks = blob.chunks_exact(32);
    if !chunks.remainder().is_empty() {
        return Err(RegistryError::Corrupt(
            "PCR baseline is not a multiple of 32 bytes".into(),
        ));
    }
    Ok(chunks
        .map(|chunk| {
            let mut pcr = [0u8; 32];
            pcr.copy_from_slice(chunk);
            pcr
        })
        .collect())
}

/// Validates and encodes device facts for storing.
pub(super) fn facts_to_json(facts: &DeviceFacts) -> Result<String, RegistryError> {
    facts.validate()?;
    let text = serde_json::to_string(facts)
        .map_err(|e| RegistryError::Corrupt(format!("encoding device facts: {e}")))?;
    if text.len() > MAX_FACTS_JSON {
        return Err(RegistryError::Invalid("device facts are too large"));
    }
    Ok(text)
}

/// Decodes the stored facts of `device_id`.
pub(super) fn facts_from_json(device_id: &str, text: &str) -> Result<DeviceFacts, RegistryError> {
    if text.len() > MAX_FACTS_JSON {
        return Err(RegistryError::Corrupt(format!(
            "facts of device {device_id} are too large"
        )));
    }
    serde_json::from_str(text)
        .map_err(|e| RegistryError::Corrupt(format!("facts of device {device_id}: {e}")))
}
