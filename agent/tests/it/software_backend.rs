//! The software backend through the `KeyBackend` trait: signatures verify, nothing secret shows
//! in Debug output, attestation is refused, and concurrent creation and signing are safe.
#![cfg(feature = "software")]

use std::os::unix::fs::PermissionsExt as _;
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

/// Writes a key file as the earlier `p256` backend wrote it (format v1) for a fixed scalar, and
/// returns the key's id and public key.
fn write_v1_key_file(state_dir: &std::path::Path) -> Result<(String, hwsign_proto::PublicKey)> {
    use base64::Engine as _;
    use p256::pkcs8::EncodePrivateKey as _;
    let mut scalar = [0u8; 32];
    scalar[31] = 7;
    scalar[0] = 0x42;
    let old = p256::ecdsa::SigningKey::from_slice(&scalar)?;
    let public_key = hwsign_proto::PublicKey::from_verifying_key(*old.verifying_key())?;
    let id = public_key.key_id();
    let der = old.to_pkcs8_der()?;
    let json = serde_json::json!({
        "format": "hwsign-software-key-v1",
        "key_id": id,
        "label": "made by p256",
        "created_unix": 1_700_000_000_i64,
        "private_key_pkcs8": base64::engine::general_purpose::STANDARD.encode(der.as_bytes()),
    });
    let dir = state_dir.join("software");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(format!("{id}.key"));
    std::fs::write(&path, serde_json::to_vec(&json)?)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((id, public_key))
}

fn file_format(state_dir: &std::path::Path, id: &str) -> Result<String> {
    let text = std::fs::read_to_string(state_dir.join(format!("software/{id}.key")))?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    Ok(value["format"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn an_old_format_key_file_is_migrated_and_signs_with_the_same_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (id, public_key) = write_v1_key_file(dir.path())?;
    let backend = SoftwareBackend::open(dir.path())?;
    ensure!(
        backend.skipped_files().is_empty(),
        "{:?}",
        backend.skipped_files()
    );
    let keys = backend.list_keys()?;
    ensure!(keys.len() == 1 && keys[0].id == id, "{keys:?}");
    ensure!(keys[0].public_key == public_key);
    ensure!(keys[0].label == "made by p256" && keys[0].created_unix == 1_700_000_000);
    let digest: [u8; 32] = Sha256::digest(b"after migration").into();
    let signature = backend.sign_digest(&id, &digest)?;
    ensure!(public_key.verify_digest(&digest, &signature));
    ensure!(file_format(dir.path(), &id)? == "hwsign-software-key-v2");
    let mode = std::fs::metadata(dir.path().join(format!("software/{id}.key")))?
        .permissions()
        .mode()
        & 0o777;
    ensure!(mode == 0o600, "{mode:o}");
    drop(backend);

    // The migrated file loads as it is (no second migration) and holds the same key.
    let reopened = SoftwareBackend::open(dir.path())?;
    ensure!(reopened.skipped_files().is_empty());
    let signature = reopened.sign_digest(&id, &digest)?;
    ensure!(public_key.verify_digest(&digest, &signature));
    let again = reopened.list_keys()?;
    ensure!(
        again.len() == 1
            && again[0].id == id
            && again[0].public_key == public_key
            && again[0].label == keys[0].label
            && again[0].created_unix == keys[0].created_unix,
        "{again:?}"
    );
    Ok(())
}

#[test]
fn a_crash_during_migration_leaves_a_usable_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (id, public_key) = write_v1_key_file(dir.path())?;
    // A crash after the temporary file was created and before the rename: the old file is in
    // place, next to a half-written temporary one (the name `write_atomic` gives it).
    let soft = dir.path().join("software");
    let temp = soft.join(format!(".{id}.key.tmp-00112233aabbccdd"));
    std::fs::write(&temp, br#"{"format":"hwsign-software-key-v2","key_id":"#)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    let backend = SoftwareBackend::open(dir.path())?;
    ensure!(!temp.exists(), "the interrupted write is removed");
    ensure!(
        backend.skipped_files().is_empty(),
        "{:?}",
        backend.skipped_files()
    );
    let digest: [u8; 32] = Sha256::digest(b"after a crash").into();
    ensure!(public_key.verify_digest(&digest, &backend.sign_digest(&id, &digest)?));
    ensure!(file_format(dir.path(), &id)? == "hwsign-software-key-v2");
    let names: Vec<_> = std::fs::read_dir(&soft)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    ensure!(names == vec![format!("{id}.key")], "{names:?}");
    Ok(())
}
