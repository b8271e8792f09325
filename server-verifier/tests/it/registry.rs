//! Key registries: the same behaviour from memory and SQLite, and SQLite's file: persistence
//! across reopen, mode 0600, WAL, schema version.

use crate::verify_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;
use hwsign_verifier::registry::{AttestationRecord, BootState, DeviceFacts, Fact, PostureReport};
use hwsign_verifier::{
    DeviceClock, DeviceRecord, KeyLevel, KeyRegistry, MemoryRegistry, RegistryError, SqliteRegistry,
};
use verify_support::{T0, TestKey};

pub(crate) fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        ek_cert_sha256: "0f".repeat(32),
        ak_public: vec![0x00, 0x23, 0x00, 0x0b, 1, 2, 3],
        clock: DeviceClock {
            reset_count: 3,
            restart_count: 1,
            clock: u64::MAX - 5,
        },
        firmware_version: u64::MAX,
        pcr_baseline: (0..8u8).map(|i| [i; 32]).collect(),
        enrolled_unix: T0,
        revoked: false,
    }
}

/// Behaviour every registry must have (memory, SQLite, PostgreSQL, each behind a cache too).
pub(crate) fn exercise(registry: &dyn KeyRegistry) -> Result<()> {
    let a = TestKey::from_seed("a")?;
    let b = TestKey::from_seed("b")?;
    let c = TestKey::from_seed("c")?;
    assert_eq!(registry.lookup(&a.id)?, None);
    assert!(registry.list()?.is_empty());

    registry.add(a.registered("first", KeyLevel::Software))?;
    registry.add(b.registered("second — ünïcode", KeyLevel::HardwareUnattested))?;
    let found = registry
        .lookup(&a.id)?
        .ok_or_else(|| anyhow::anyhow!("a missing"))?;
    assert_eq!(found, a.registered("first", KeyLevel::Software));

    assert!(matches!(
        registry.add(a.registered("again", KeyLevel::Tpm)),
        Err(RegistryError::KeyExists(id)) if id == a.id
    ));
    let mut wrong_id = c.registered("c", KeyLevel::Software);
    wrong_id.key_id = a.id.clone();
    assert!(matches!(
        registry.add(wrong_id),
        Err(RegistryError::KeyIdMismatch)
    ));
    for label in ["", "line\nbreak", &"x".repeat(65)] {
        assert!(matches!(
            registry.add(c.registered(label, KeyLevel::Software)),
            Err(RegistryError::Invalid(_))
        ));
    }

    registry.revoke(&a.id)?;
    registry.revoke(&a.id)?;
    assert!(registry.lookup(&a.id)?.is_some_and(|k| k.revoked));
    assert!(registry.lookup(&b.id)?.is_some_and(|k| !k.revoked));
    assert!(matches!(
        registry.revoke(&c.id),
        Err(RegistryError::UnknownKey(id)) if id == c.id
    ));

    // Devices: a key may point only at an enrolled device; revoking the device revokes the key.
    let mut on_device = c.registered("on device", KeyLevel::Tpm);
    on_device.device_id = Some("tpm-1".into());
    assert!(matches!(
        registry.add(on_device.clone()),
        Err(RegistryError::UnknownDevice(_))
    ));
    registry.add_device(device("tpm-1"))?;
    assert!(matches!(
        registry.add_device(device("tpm-1")),
        Err(RegistryError::DeviceExists(_))
    ));
    assert_eq!(registry.device("tpm-1")?, Some(device("tpm-1")));
    assert_eq!(registry.device("tpm-2")?, None);
    registry.add(on_device.clone())?;
    assert_eq!(registry.lookup(&c.id)?, Some(on_device));
    let later = DeviceClock {
        reset_count: 4,
        restart_count: 0,
        clock: 10,
    };
    registry.update_device_clock("tpm-1", later)?;
    assert_eq!(registry.device("tpm-1")?.map(|d| d.clock), Some(later));
    registry.revoke_device("tpm-1")?;
    assert!(registry.lookup(&c.id)?.is_some_and(|k| k.revoked));
    assert!(registry.device("tpm-1")?.is_some_and(|d| d.revoked));
    assert!(matches!(
        registry.revoke_device("tpm-9"),
        Err(RegistryError::UnknownDevice(_))
    ));

    let listed: Vec<String> = registry.list()?.into_iter().map(|k| k.key_id).collect();
    assert_eq!(listed, vec![a.id, b.id, c.id]);
    Ok(())
}

#[test]
fn memory_registry_behaves() -> Result<()> {
    exercise(&MemoryRegistry::new())
}

#[test]
fn sqlite_registry_behaves() -> Result<()> {
    let dir = tempfile::tempdir()?;
    exercise(&SqliteRegistry::open(&dir.path().join("keys.db"))?)
}

fn user_version(path: &Path) -> Result<i64> {
    let conn = rusqlite::Connection::open(path)?;
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

#[test]
fn sqlite_registry_persists_across_reopen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    let a = TestKey::from_seed("a")?;
    let b = TestKey::from_seed("b")?;
    {
        let registry = SqliteRegistry::open(&path)?;
        registry.add(a.registered("first", KeyLevel::Tpm))?;
        registry.add(b.registered("second", KeyLevel::Software))?;
        registry.add_device(device("tpm-1"))?;
        registry.revoke(&b.id)?;
    }
    let registry = SqliteRegistry::open(&path)?;
    assert_eq!(
        registry.lookup(&a.id)?,
        Some(a.registered("first", KeyLevel::Tpm))
    );
    assert!(registry.lookup(&b.id)?.is_some_and(|k| k.revoked));
    assert_eq!(registry.device("tpm-1")?, Some(device("tpm-1")));
    assert_eq!(registry.list()?.len(), 2);
    Ok(())
}

#[test]
fn sqlite_file_is_private_wal_and_versioned() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    let registry = SqliteRegistry::open(&path)?;
    registry.add(TestKey::from_seed("a")?.registered("a", KeyLevel::Software))?;
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let wal = dir.path().join("keys.db-wal");
    assert!(wal.exists(), "no WAL file");
    assert_eq!(std::fs::metadata(&wal)?.permissions().mode() & 0o077, 0);
    assert_eq!(
        user_version(&path)?,
        hwsign_verifier::registry::SCHEMA_VERSION
    );
    Ok(())
}

#[test]
fn sqlite_refuses_a_newer_schema() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    drop(SqliteRegistry::open(&path)?);
    rusqlite::Connection::open(&path)?.pragma_update(None, "user_version", 99)?;
    let error = SqliteRegistry::open(&path).err();
    assert!(
        matches!(&error, Some(RegistryError::Corrupt(text)) if text.contains("99")),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn sqlite_detects_a_tampered_key_row() -> Result<()> {
    // A row whose public key does not hash to its id is refused, not served.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    let a = TestKey::from_seed("a")?;
    let b = TestKey::from_seed("b")?;
    let registry = SqliteRegistry::open(&path)?;
    registry.add(a.registered("a", KeyLevel::Software))?;
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute(
        "UPDATE keys SET spki = ?1 WHERE key_id = ?2",
        rusqlite::params![b.public.spki_der(), a.id],
    )?;
    let reopened = SqliteRegistry::open(&path)?;
    assert!(matches!(
        reopened.lookup(&a.id),
        Err(RegistryError::Corrupt(_))
    ));
    Ok(())
}

/// Device facts (docs/POLICY.md) round-trip in both registries, survive a reopen, need an
/// enrolled device, refuse out-of-bound strings; a version-1 file (before device facts) is
/// migrated in place, its keys and devices kept.
#[test]
fn policy_device_facts_persist_and_version_1_files_migrate() -> Result<()> {
    let facts = sample_facts();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    let memory = MemoryRegistry::new();
    let sqlite = SqliteRegistry::open(&path)?;
    for registry in [&memory as &dyn KeyRegistry, &sqlite] {
        exercise_facts(registry, &facts)?;
    }
    drop(sqlite);
    assert_eq!(
        SqliteRegistry::open(&path)?.device_facts("tpm-1")?,
        Some(facts)
    );

    // A version-1 file: the facts table appears, nothing else changes.
    let old = dir.path().join("v1.db");
    let a = TestKey::from_seed("a")?;
    {
        let registry = SqliteRegistry::open(&old)?;
        registry.add_device(device("tpm-1"))?;
        registry.add(a.registered("first", KeyLevel::Tpm))?;
    }
    {
        let conn = rusqlite::Connection::open(&old)?;
        conn.execute_batch(
            "DROP TABLE fido2_credentials; DROP TABLE device_facts; PRAGMA user_version = 1;",
        )?;
    }
    let registry = SqliteRegistry::open(&old)?;
    assert_eq!(
        user_version(&old)?,
        hwsign_verifier::registry::SCHEMA_VERSION
    );
    assert_eq!(registry.device("tpm-1")?, Some(device("tpm-1")));
    assert!(registry.lookup(&a.id)?.is_some());
    assert_eq!(registry.device_facts("tpm-1")?, None);
    registry.put_device_facts("tpm-1", &DeviceFacts::default())?;
    Ok(())
}

/// Facts with every kind of field set.
pub(crate) fn sample_facts() -> DeviceFacts {
    DeviceFacts {
        tpm_manufacturer: Some("id:00001014".into()),
        tpm_model: Some("swtpm".into()),
        last_attestation: Some(AttestationRecord {
            at_unix: T0,
            boot_state: BootState::Changed,
            quoted_pcrs: vec![[9u8; 32]; 8],
        }),
        posture: Some(PostureReport {
            received_unix: T0 + 1,
            disk_encrypted: Some(Fact::attested(true)),
            screen_lock: Some(Fact::claimed(false)),
            firmware_hsi: Some(Fact::claimed(2)),
            os_name: Some(Fact::claimed("Debian GNU/Linux".into())),
            ..PostureReport::default()
        }),
    }
}

/// Device facts and baselines, in any registry that keeps them (device `tpm-1` not yet enrolled).
pub(crate) fn exercise_facts(registry: &dyn KeyRegistry, facts: &DeviceFacts) -> Result<()> {
    assert!(matches!(
        registry.put_device_facts("tpm-1", facts),
        Err(RegistryError::UnknownDevice(_))
    ));
    registry.add_device(device("tpm-1"))?;
    assert_eq!(registry.device_facts("tpm-1")?, None);
    registry.put_device_facts("tpm-1", facts)?;
    assert_eq!(registry.device_facts("tpm-1")?, Some(facts.clone()));
    let mut bad = facts.clone();
    bad.tpm_model = Some("x\u{7}".into());
    assert!(matches!(
        registry.put_device_facts("tpm-1", &bad),
        Err(RegistryError::Invalid(_))
    ));
    // A baseline can be replaced (an approved boot chain), for a known device only.
    registry.set_pcr_baseline("tpm-1", &[[9u8; 32]; 8])?;
    assert_eq!(
        registry.device("tpm-1")?.map(|d| d.pcr_baseline),
        Some(vec![[9u8; 32]; 8])
    );
    assert!(matches!(
        registry.set_pcr_baseline("tpm-2", &[]),
        Err(RegistryError::UnknownDevice(_))
    ));
    registry.set_pcr_baseline("tpm-1", &device("tpm-1").pcr_baseline)?;
    Ok(())
}
