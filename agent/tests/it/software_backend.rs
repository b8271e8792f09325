//! The software backend through the `KeyBackend` trait: signatures verify, nothing secret shows
//! in Debug output, attestation is refused, and concurrent creation and signing are safe.
#![cfg(feature = "software")]

use std::sync::Arc;

use anyhow::{Result, ensure};
use sha2::{Digest, Sha256};

use hwsign_agent::backends::software::SoftwareBackend;
use hwsign_agent::backends::{BackendError, KeyBackend};
use hwsign_proto::api::KeyLevel;

#[test]
fn signatures_verify_with_the_listed_public_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = SoftwareBackend::open(dir.path())?;
    ensure!(backend.is_fast());
    ensure!(backend.health().available);
    let key = backend.create_key("test")?;
    ensure!(key.level == KeyLevel::Software);
    let digest: [u8; 32] = Sha256::digest(b"string to sign").into();
    let signature = backend.sign_digest(&key.id, &digest)?;
    ensure!(key.public_key.verify_digest(&digest, &signature));
    let other: [u8; 32] = Sha256::digest(b"something else").into();
    ensure!(!key.public_key.verify_digest(&other, &signature));
    ensure!(matches!(
        backend.sign_digest("hk1_00000000000000000000000000000000", &digest),
        Err(BackendError::UnknownKey)
    ));
    ensure!(matches!(
        backend.attest(&key.id, &[0u8; 16]),
        Err(BackendError::Unsupported("software"))
    ));
    ensure!(matches!(
        backend.activate_credential(b"x", b"y"),
        Err(BackendError::Unsupported("software"))
    ));
    Ok(())
}

#[test]
fn debug_output_holds_no_key_material() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = SoftwareBackend::open(dir.path())?;
    let key = backend.create_key("visible label")?;
    let file = std::fs::read_to_string(dir.path().join(format!("software/{}.key", key.id)))?;
    let value: serde_json::Value = serde_json::from_str(&file)?;
    let secret = value["private_key_pkcs8"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no private key field"))?
        .to_owned();
    let debug = format!("{backend:?}");
    ensure!(
        debug.contains(&key.id) && debug.contains("visible label"),
        "{debug}"
    );
    ensure!(!debug.contains(&secret[secret.len() - 40..]), "{debug}");
    ensure!(!debug.to_lowercase().contains("scalar"), "{debug}");
    Ok(())
}

#[test]
fn concurrent_creation_and_signing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = Arc::new(SoftwareBackend::open(dir.path())?);
    let first = backend.create_key("first")?;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let backend = Arc::clone(&backend);
            let id = first.id.clone();
            std::thread::spawn(move || -> Result<()> {
                let digest: [u8; 32] = Sha256::digest(format!("{i}")).into();
                for _ in 0..20 {
                    backend.sign_digest(&id, &digest)?;
                }
                backend.create_key(&format!("key {i}"))?;
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    ensure!(backend.list_keys()?.len() == 9);
    let reopened = SoftwareBackend::open(dir.path())?;
    ensure!(reopened.list_keys()?.len() == 9);
    ensure!(reopened.skipped_files().is_empty());
    Ok(())
}
