//! The embedded registry: one SQLite file (WAL mode, created 0600), its schema versioned through
//! `PRAGMA user_version` so later releases can migrate it in place.
//!
//! Lookups are answered from a key cache (the one [`CachedRegistry`](super::CachedRegistry)
//! keeps) while the registry's change version stands: a write through this registry moves it at
//! once, a commit by another connection or process (`hwsign-verifier keys revoke`) within
//! [`CHANGE_CHECK_INTERVAL`]. So a key revoked through this registry is refused on the very next
//! lookup, and one revoked elsewhere within that interval, without a SQLite read per request.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hwsign_proto::api::KeyLevel;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::cache::KeyCache;
use super::encoding::{facts_from_json, facts_to_json, pcrs_from_blob, pcrs_to_blob};
use super::parsed_keys::ParsedKeys;
use super::{
    DeviceClock, DeviceFacts, DeviceRecord, Fido2Credential, KeyRegistry, RegisteredKey,
    RegistryError,
};

/// How long one reading of `PRAGMA data_version` vouches for the key cache: a commit by another
/// connection (another process, `hwsign-verifier keys revoke`) is seen by this registry's
/// [`change_version`](KeyRegistry::change_version) at most this long after it. Writes through this
/// registry are seen at once.
pub const CHANGE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE devices (
    id               TEXT PRIMARY KEY NOT NULL,
    ek_cert_sha256   TEXT NOT NULL,
    ak_public        BLOB NOT NULL,
    reset_count      INTEGER NOT NULL,
    restart_count    INTEGER NOT NULL,
    clock            INTEGER NOT NULL,
    firmware_version INTEGER NOT NULL,
    pcr_baseline     BLOB NOT NULL,  -- sha256 PCR values 0.., 32 bytes each
    enrolled_unix    INTEGER NOT NULL,
    revoked          INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE keys (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id     TEXT NOT NULL UNIQUE,
    label      TEXT NOT NULL,
    spki       BLOB NOT NULL,
    level      TEXT NOT NULL CHECK (level IN ('software', 'hardware-unattested', 'tpm')),
    device_id  TEXT REFERENCES devices(id),
    revoked    INTEGER NOT NULL DEFAULT 0,
    added_unix INTEGER NOT NULL
) STRICT;
CREATE INDEX keys_device ON keys(device_id);
";

/// Version 2: facts about enrolled devices (docs/POLICY.md), one JSON document per device.
const SCHEMA_V2: &str = "
CREATE TABLE device_facts (
    device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices(id),
    facts     TEXT NOT NULL  -- JSON DeviceFacts
) STRICT;
";

/// Version 3: FIDO2 credentials (docs/WEBAUTHN.md) beside their keys, and the FIDO2 levels in
/// the keys table's level check (SQLite cannot alter a CHECK: the table is rebuilt, rows and
/// their order kept).
const SCHEMA_V3: &str = "
CREATE TABLE keys_v3 (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id     TEXT NOT NULL UNIQUE,
    label      TEXT NOT NULL,
    spki       BLOB NOT NULL,
    level      TEXT NOT NULL CHECK (level IN
                   ('software', 'fido2-unattested', 'fido2', 'hardware-unattested', 'tpm')),
    device_id  TEXT REFERENCES devices(id),
    revoked    INTEGER NOT NULL DEFAULT 0,
    added_unix INTEGER NOT NULL
) STRICT;
INSERT INTO keys_v3 (seq, key_id, label, spki, level, device_id, revoked, added_unix)
    SELECT seq, key_id, label, spki, level, device_id, revoked, added_unix FROM keys ORDER BY seq;
DROP TABLE keys;
ALTER TABLE keys_v3 RENAME TO keys;
CREATE INDEX keys_device ON keys(device_id);
CREATE TABLE fido2_credentials (
    key_id          TEXT PRIMARY KEY NOT NULL REFERENCES keys(key_id),
    credential_id   BLOB NOT NULL UNIQUE,
    rp_id           TEXT NOT NULL,
    aaguid          BLOB NOT NULL,
    sign_count      INTEGER NOT NULL,
    backup_eligible INTEGER NOT NULL,
    backed_up       INTEGER NOT NULL,
    possibly_cloned INTEGER NOT NULL DEFAULT 0
) STRICT;
";

const KEY_COLUMNS: &str = "k.key_id, k.label, k.spki, k.level, k.device_id, \
     k.revoked OR COALESCE(d.revoked, 0), k.added_unix";

/// A [`KeyRegistry`] in a SQLite file.
#[derive(Debug)]
pub struct SqliteRegistry {
    conn: Mutex<Connection>,
    keys: ParsedKeys,
    /// Lookup answers, each valid while the change version it was read under stands.
    cache: KeyCache,
    /// Changes seen: writes through this connection (which `PRAGMA data_version` does not
    /// report) and changes of `data_version` (commits by other connections).
    changes: AtomicU64,
    /// The `data_version` last read.
    data_version: AtomicI64,
    /// When this registry was opened: the origin of `checked_at`.
    opened: Instant,
    /// Microseconds after `opened` (plus one; 0: never) at which the last `data_version` check
    /// started.
    checked_at: AtomicU64,
}

/// Creates the SQLite file at `path` with mode 0600 if it does not exist yet, so SQLite's -wal and
/// -shm files (which take the database file's permissions) are private from the first byte. Only
/// creates: opening and closing an existing database with std::fs would drop the POSIX locks
/// another SQLite connection in this process holds on it. Shared by every store kept in the file.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteRegistry {
    /// Opens the registry at `path`, creating the file (mode 0600) and its schema when absent.
    /// A file written by a newer release (higher schema version) is refused, not downgraded.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        // Create the file ourselves so its mode is 0600 from the first byte; SQLite gives the
        // -wal and -shm files the database file's permissions. Only create: opening and closing
        // an existing database with std::fs would drop the POSIX locks another SQLite connection
        // in this process holds on it, and another process could then delete the live WAL.
        create_private_file(path).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(RegistryError::Corrupt(format!(
                "cannot switch to WAL mode (journal_mode is {mode})"
            )));
        }
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            keys: ParsedKeys::default(),
            cache: KeyCache::default(),
            changes: AtomicU64::new(0),
            data_version: AtomicI64::new(0),
            opened: Instant::now(),
            checked_at: AtomicU64::new(0),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, RegistryError> {
        self.conn.lock().map_err(|_| RegistryError::Poisoned)
    }

    /// The connection, for a write: counted while the lock is held, so no reader can see the
    /// new count without the write it counts.
    fn write_conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, RegistryError> {
        let conn = self.conn()?;
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(conn)
    }

    fn key_from_row(&self, row: &Row<'_>) -> Result<RegisteredKey, RegistryError> {
        let key_id: String = row.get(0)?;
        let spki: Vec<u8> = row.get(2)?;
        let level: String = row.get(3)?;
        Ok(RegisteredKey {
            public_key: self.keys.get(&key_id, &spki)?,
            label: row.get(1)?,
            level: KeyLevel::from_str(&level).map_err(RegistryError::Corrupt)?,
            device_id: row.get(4)?,
            revoked: row.get(5)?,
            added_unix: row.get(6)?,
            key_id,
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), RegistryError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA_V1)?;
            tx.execute_batch(SCHEMA_V2)?;
            tx.execute_batch(SCHEMA_V3)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        1 => {
            tx.execute_batch(SCHEMA_V2)?;
            tx.execute_batch(SCHEMA_V3)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        2 => {
            tx.execute_batch(SCHEMA_V3)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => {}
        newer => {
            return Err(RegistryError::Corrupt(format!(
                "schema version {newer} is newer than this release's {SCHEMA_VERSION}"
            )));
        }
    }
    tx.commit()?;
    Ok(())
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn device_from_row(row: &Row<'_>) -> Result<DeviceRecord, RegistryError> {
    let blob: Vec<u8> = row.get(7)?;
    let firmware: i64 = row.get(6)?;
    Ok(DeviceRecord {
        id: row.get(0)?,
        ek_cert_sha256: row.get(1)?,
        ak_public: row.get(2)?,
        clock: DeviceClock {
            reset_count: row.get(3)?,
            restart_count: row.get(4)?,
            clock: row.get::<_, i64>(5)? as u64,
        },
        // SQLite integers are signed; u64 values round-trip through their bit pattern.
        firmware_version: firmware as u64,
        pcr_baseline: pcrs_from_blob(&blob)?,
        enrolled_unix: row.get(8)?,
        revoked: row.get(9)?,
    })
}

impl SqliteRegistry {
    /// Reads a key from the file (no cache).
    fn read_key(&self, key_id: &str) -> Result<Option<RegisteredKey>, RegistryError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k LEFT JOIN devices d ON d.id = k.device_id \
             WHERE k.key_id = ?1"
        ))?;
        let mut rows = statement.query(params![key_id])?;
        match rows.next()? {
            Some(row) => Ok(Some(self.key_from_row(row)?)),
            None => Ok(None),
        }
    }
}

impl KeyRegistry for SqliteRegistry {
    fn lookup(&self, key_id: &str) -> Result<Option<RegisteredKey>, RegistryError> {
        Ok(self
            .lookup_shared(key_id)?
            .map(|key| RegisteredKey::clone(&key)))
    }

    /// From the key cache while the change version read first still stands; otherwise from the
    /// file, kept under that version (read before the lookup, so an answer read before a change
    /// is never kept past the moment the change is reported).
    fn lookup_shared(&self, key_id: &str) -> Result<Option<Arc<RegisteredKey>>, RegistryError> {
        let version = self.change_version()?;
        if let Some(version) = version
            && let Some(key) = self.cache.get(key_id, version)?
        {
            return Ok(Some(key));
        }
        let found = self.read_key(key_id)?.map(Arc::new);
        if let (Some(version), Some(key)) = (version, &found) {
            self.cache.put(key_id, version, key)?;
        }
        Ok(found)
    }

    fn add(&self, key: RegisteredKey) -> Result<(), RegistryError> {
        key.validate()?;
        let conn = self.write_conn()?;
        if let Some(device) = &key.device_id {
            let known: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM devices WHERE id = ?1",
                    params![device],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_none() {
                return Err(RegistryError::UnknownDevice(device.clone()));
            }
        }
        let result = conn.execute(
            "INSERT INTO keys (key_id, label, spki, level, device_id, revoked, added_unix) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key.key_id,
                key.label,
                key.public_key.spki_der(),
                key.level.as_str(),
                key.device_id,
                key.revoked,
                key.added_unix
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(RegistryError::KeyExists(key.key_id)),
            Err(e) => Err(e.into()),
        }
    }

    fn revoke(&self, key_id: &str) -> Result<(), RegistryError> {
        let conn = self.write_conn()?;
        let changed = conn.execute(
            "UPDATE keys SET revoked = 1 WHERE key_id = ?1",
            params![key_id],
        )?;
        if changed == 0 {
            return Err(RegistryError::UnknownKey(key_id.to_owned()));
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<RegisteredKey>, RegistryError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k LEFT JOIN devices d ON d.id = k.device_id \
             ORDER BY k.seq"
        ))?;
        let mut rows = statement.query([])?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next()? {
            keys.push(self.key_from_row(row)?);
        }
        Ok(keys)
    }

    fn add_device(&self, device: DeviceRecord) -> Result<(), RegistryError> {
        device.validate()?;
        let conn = self.write_conn()?;
        let result = conn.execute(
            "INSERT INTO devices (id, ek_cert_sha256, ak_public, reset_count, restart_count, \
             clock, firmware_version, pcr_baseline, enrolled_unix, revoked) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                device.id,
                device.ek_cert_sha256,
                device.ak_public,
                device.clock.reset_count,
                device.clock.restart_count,
                device.clock.clock as i64,
                device.firmware_version as i64,
                pcrs_to_blob(&device.pcr_baseline),
                device.enrolled_unix,
                device.revoked
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(RegistryError::DeviceExists(device.id)),
            Err(e) => Err(e.into()),
        }
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, RegistryError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(
            "SELECT id, ek_cert_sha256, ak_public, reset_count, restart_count, clock, \
             firmware_version, pcr_baseline, enrolled_unix, revoked FROM devices WHERE id = ?1",
        )?;
        let mut rows = statement.query(params![device_id])?;
        match rows.next()? {
            Some(row) => Ok(Some(device_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn update_device_clock(
        &self,
        device_id: &str,
        clock: DeviceClock,
    ) -> Result<(), RegistryError> {
        let conn = self.write_conn()?;
        let changed = conn.execute(
            "UPDATE devices SET reset_count = ?2, restart_count = ?3, clock = ?4 WHERE id = ?1",
            params![
                device_id,
                clock.reset_count,
                clock.restart_count,
                clock.clock as i64
            ],
        )?;
        if changed == 0 {
            return Err(RegistryError::UnknownDevice(device_id.to_owned()));
        }
        Ok(())
    }

    fn revoke_device(&self, device_id: &str) -> Result<(), RegistryError> {
        let conn = self.write_conn()?;
        let changed = conn.execute(
            "UPDATE devices SET revoked = 1 WHERE id = ?1",
            params![device_id],
        )?;
        if changed == 0 {
            return Err(RegistryError::UnknownDevice(device_id.to_owned()));
        }
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
        let conn = self.write_conn()?;
        let changed = conn.execute(
            "UPDATE devices SET pcr_baseline = ?2 WHERE id = ?1",
            params![device_id, pcrs_to_blob(baseline)],
        )?;
        if changed == 0 {
            return Err(RegistryError::UnknownDevice(device_id.to_owned()));
        }
        Ok(())
    }

    /// Commits by other connections (other processes, `hwsign-verifier keys revoke`) change
    /// `PRAGMA data_version`; this connection's own writes are counted apart. `data_version` is
    /// read at most once per [`CHANGE_CHECK_INTERVAL`]: in between, the count stands, so a
    /// commit elsewhere is reported at most that long after it (the time is taken before the
    /// read, so the interval counts from a moment every earlier commit was visible).
    fn change_version(&self) -> Result<Option<u64>, RegistryError> {
        // Plus one, so that 0 keeps meaning "never checked".
        let now = u64::try_from(self.opened.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.checked_at.load(Ordering::Acquire);
        let interval = CHANGE_CHECK_INTERVAL.as_micros() as u64;
        if last != 0 && now.saturating_sub(last) < interval {
            return Ok(Some(self.changes.load(Ordering::SeqCst)));
        }
        let conn = self.conn()?;
        let data_version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?;
        if self.data_version.swap(data_version, Ordering::SeqCst) != data_version {
            self.changes.fetch_add(1, Ordering::SeqCst);
        }
        // Kept at the latest start: a slower, older check must not move the window forward.
        self.checked_at.fetch_max(now, Ordering::AcqRel);
        Ok(Some(self.changes.load(Ordering::SeqCst)))
    }

    fn device_facts(&self, device_id: &str) -> Result<Option<DeviceFacts>, RegistryError> {
        let conn = self.conn()?;
        let text: Option<String> = conn
            .prepare_cached("SELECT facts FROM device_facts WHERE device_id = ?1")?
            .query_row(params![device_id], |row| row.get(0))
            .optional()?;
        let Some(text) = text else {
            return Ok(None);
        };
        facts_from_json(device_id, &text).map(Some)
    }

    fn put_device_facts(&self, device_id: &str, facts: &DeviceFacts) -> Result<(), RegistryError> {
        let text = facts_to_json(facts)?;
        let conn = self.conn()?;
        let known: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM devices WHERE id = ?1",
                params![device_id],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_none() {
            return Err(RegistryError::UnknownDevice(device_id.to_owned()));
        }
        conn.execute(
            "INSERT INTO device_facts (device_id, facts) VALUES (?1, ?2) \
             ON CONFLICT(device_id) DO UPDATE SET facts = excluded.facts",
            params![device_id, text],
        )?;
        Ok(())
    }

    fn add_fido2_credential(
        &self,
        key: RegisteredKey,
        credential: Fido2Credential,
    ) -> Result<(), RegistryError> {
        credential.validate_with(&key)?;
        let mut conn = self.write_conn()?;
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO keys (key_id, label, spki, level, device_id, revoked, added_unix) \
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6)",
            params![
                key.key_id,
                key.label,
                key.public_key.spki_der(),
                key.level.as_str(),
                key.revoked,
                key.added_unix
            ],
        );
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(RegistryError::KeyExists(key.key_id)),
            Err(e) => return Err(e.into()),
        }
        let stored = tx.execute(
            "INSERT INTO fido2_credentials (key_id, credential_id, rp_id, aaguid, sign_count, \
             backup_eligible, backed_up, possibly_cloned) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                credential.key_id,
                credential.credential_id,
                credential.rp_id,
                credential.aaguid.as_slice(),
                credential.sign_count,
                credential.backup_eligible,
                credential.backed_up,
                credential.possibly_cloned
            ],
        );
        match stored {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(RegistryError::Invalid("credential id already registered"));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit()?;
        Ok(())
    }

    fn fido2_credential(&self, key_id: &str) -> Result<Option<Fido2Credential>, RegistryError> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "SELECT credential_id, rp_id, aaguid, sign_count, backup_eligible, backed_up, \
                 possibly_cloned FROM fido2_credentials WHERE key_id = ?1",
                params![key_id],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, bool>(4)?,
                        row.get::<_, bool>(5)?,
                        row.get::<_, bool>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((credential_id, rp_id, aaguid, sign_count, backup_eligible, backed_up, cloned)) =
            row
        else {
            return Ok(None);
        };
        Ok(Some(Fido2Credential {
            key_id: key_id.to_owned(),
            credential_id,
            rp_id,
            aaguid: aaguid
                .try_into()
                .map_err(|_| RegistryError::Corrupt("AAGUID is not 16 bytes".to_owned()))?,
            sign_count,
            backup_eligible,
            backed_up,
            possibly_cloned: cloned,
        }))
    }

    fn advance_sign_count(&self, key_id: &str, new: u32) -> Result<bool, RegistryError> {
        // Not a change of `lookup`'s answer: the plain connection, no change count.
        let conn = self.conn()?;
        let advanced = conn.execute(
            "UPDATE fido2_credentials SET sign_count = ?2 WHERE key_id = ?1 \
             AND possibly_cloned = 0 AND (sign_count < ?2 OR (sign_count = 0 AND ?2 = 0))",
            params![key_id, new],
        )?;
        if advanced == 1 {
            return Ok(true);
        }
        conn.execute(
            "UPDATE fido2_credentials SET possibly_cloned = 1 WHERE key_id = ?1",
            params![key_id],
        )?;
        Ok(false)
    }

    fn clear_possibly_cloned(&self, key_id: &str) -> Result<(), RegistryError> {
        // Not a change of `lookup`'s answer (the flag is read with the credential).
        let changed = self.conn()?.execute(
            "UPDATE fido2_credentials SET possibly_cloned = 0 WHERE key_id = ?1",
            params![key_id],
        )?;
        if changed == 0 {
            return Err(RegistryError::UnknownKey(key_id.to_owned()));
        }
        Ok(())
    }
}
