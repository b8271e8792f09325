//! The registry's tables in PostgreSQL, created or migrated when a verifier starts.
//!
//! `hwsign_schema` holds the version; migrations run in one transaction under an advisory lock,
//! so replicas starting together migrate once. A database written by a newer release is refused.
//! Triggers on the key and device tables send a notification on [`CHANNEL`] at every change,
//! whoever makes it (a verifier, `hwsign-verifier keys revoke`, `psql`), so every replica's key
//! cache forgets what it held.

use postgres::Client;

use crate::registry::RegistryError;

/// The schema version this code writes and reads.
pub const PG_SCHEMA_VERSION: i32 = 2;

/// The notification channel the triggers signal on.
pub(super) const CHANNEL: &str = "hwsign_registry";

/// Serialises migrations between replicas (an arbitrary, fixed advisory lock key).
const MIGRATION_LOCK: i64 = 0x6877_7369_676e_0001;

const SCHEMA_V1: &str = "
CREATE TABLE hwsign_devices (
    id               TEXT PRIMARY KEY,
    ek_cert_sha256   TEXT NOT NULL,
    ak_public        BYTEA NOT NULL,
    reset_count      BIGINT NOT NULL,
    restart_count    BIGINT NOT NULL,
    clock            BIGINT NOT NULL,   -- u64 stored by bit pattern
    firmware_version BIGINT NOT NULL,   -- u64 stored by bit pattern
    pcr_baseline     BYTEA NOT NULL,    -- sha256 PCR values 0.., 32 bytes each
    enrolled_unix    BIGINT NOT NULL,
    revoked          BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE hwsign_keys (
    seq        BIGSERIAL PRIMARY KEY,
    key_id     TEXT NOT NULL UNIQUE,
    label      TEXT NOT NULL,
    spki       BYTEA NOT NULL,
    level      TEXT NOT NULL CHECK (level IN ('software', 'hardware-unattested', 'tpm')),
    device_id  TEXT REFERENCES hwsign_devices(id),
    revoked    BOOLEAN NOT NULL DEFAULT FALSE,
    added_unix BIGINT NOT NULL
);
CREATE INDEX hwsign_keys_device ON hwsign_keys(device_id);
CREATE TABLE hwsign_device_facts (
    device_id TEXT PRIMARY KEY REFERENCES hwsign_devices(id),
    facts     TEXT NOT NULL  -- JSON DeviceFacts
);
CREATE FUNCTION hwsign_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hwsign_registry', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER hwsign_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON hwsign_keys FOR EACH STATEMENT EXECUTE FUNCTION hwsign_registry_changed();
CREATE TRIGGER hwsign_devices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON hwsign_devices FOR EACH STATEMENT EXECUTE FUNCTION hwsign_registry_changed();
";

/// Version 2: FIDO2 credentials (docs/WEBAUTHN.md) beside their keys, and the FIDO2 levels in
/// the keys' level check.
const SCHEMA_V2: &str = "
ALTER TABLE hwsign_keys DROP CONSTRAINT hwsign_keys_level_check;
ALTER TABLE hwsign_keys ADD CONSTRAINT hwsign_keys_level_check CHECK (level IN
    ('software', 'fido2-unattested', 'fido2', 'hardware-unattested', 'tpm'));
CREATE TABLE hwsign_fido2_credentials (
    key_id          TEXT PRIMARY KEY REFERENCES hwsign_keys(key_id),
    credential_id   BYTEA NOT NULL UNIQUE,
    rp_id           TEXT NOT NULL,
    aaguid          BYTEA NOT NULL,
    sign_count      BIGINT NOT NULL,  -- u32
    backup_eligible BOOLEAN NOT NULL,
    backed_up       BOOLEAN NOT NULL,
    possibly_cloned BOOLEAN NOT NULL DEFAULT FALSE
);
";

/// Creates the tables, or migrates them to [`PG_SCHEMA_VERSION`].
pub(super) fn migrate(client: &mut Client) -> Result<(), RegistryError> {
    let unavailable = |e: postgres::Error| RegistryError::Unavailable(Box::new(e));
    let mut tx = client.transaction().map_err(unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(unavailable)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS hwsign_schema (version INTEGER NOT NULL)")
        .map_err(unavailable)?;
    let version: Option<i32> = tx
        .query_opt("SELECT max(version) FROM hwsign_schema", &[])
        .map_err(unavailable)?
        .map(|row| row.try_get::<_, Option<i32>>(0))
        .transpose()
        .map_err(unavailable)?
        .flatten();
    match version {
        None => {
            tx.batch_execute(SCHEMA_V1).map_err(unavailable)?;
            tx.batch_execute(SCHEMA_V2).map_err(unavailable)?;
            tx.execute(
                "INSERT INTO hwsign_schema (version) VALUES ($1)",
                &[&PG_SCHEMA_VERSION],
            )
            .map_err(unavailable)?;
        }
        Some(1) => {
            tx.batch_execute(SCHEMA_V2).map_err(unavailable)?;
            tx.execute(
                "INSERT INTO hwsign_schema (version) VALUES ($1)",
                &[&PG_SCHEMA_VERSION],
            )
            .map_err(unavailable)?;
        }
        Some(PG_SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(RegistryError::Corrupt(format!(
                "PostgreSQL schema version {other} is not this release's {PG_SCHEMA_VERSION}"
            )));
        }
    }
    tx.commit().map_err(unavailable)
}
