//! The registry of a verifier fleet, in PostgreSQL (cargo feature `postgres`).
//!
//! Why the blocking `postgres` client on threads of its own, not `tokio-postgres` or `sqlx`
//! inside the caller's runtime: [`KeyRegistry`] is synchronous and is called from inside tokio
//! tasks. An async client would need a `block_on` there, which tokio forbids on its own worker
//! threads; the blocking client panics there for the same reason. Connections owned by plain
//! worker threads that take calls over a bounded channel ([`pool`]) work from any thread, keep
//! the trait as it is, and the hot path rarely reaches them: a [`CachedRegistry`] in front
//! answers repeated lookups from memory, invalidated by `LISTEN`/`NOTIFY` ([`listener`]).
//! `sqlx` would add a second SQL toolkit and its macros for the same blocking bridge.
//!
//! Every statement is parameterised. Connections are made without TLS: reach PostgreSQL over a
//! Unix socket, loopback, or a network you trust (see docs/OPERATIONS.md).
//!
//! [`CachedRegistry`]: super::CachedRegistry

mod listener;
pub(crate) mod pool;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hwsign_proto::api::KeyLevel;
use postgres::error::SqlState;
use postgres::{Config, Row};

use self::listener::ChangeWatch;
use self::pool::{Pool, Session};
use super::encoding::{facts_from_json, facts_to_json, pcrs_from_blob, pcrs_to_blob};
use super::parsed_keys::ParsedKeys;
use super::{
    DeviceClock, DeviceFacts, DeviceRecord, Fido2Credential, KeyRegistry, RegisteredKey,
    RegistryError,
};

pub use self::schema::PG_SCHEMA_VERSION;

/// Worker connections per registry.
const WORKERS: usize = 4;
/// Connect timeout when the URL sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a statement may run on the server (milliseconds), unless the URL's options set one.
const STATEMENT_TIMEOUT_MS: u32 = 2_000;

const KEY_COLUMNS: &str = "k.key_id, k.label, k.spki, k.level, k.device_id, \
     k.revoked OR COALESCE(d.revoked, FALSE), k.added_unix";
const LOOKUP: &str = "SELECT k.key_id, k.label, k.spki, k.level, k.device_id, \
     k.revoked OR COALESCE(d.revoked, FALSE), k.added_unix \
     FROM hwsign_keys k LEFT JOIN hwsign_devices d ON d.id = k.device_id WHERE k.key_id = $1";
const DEVICE: &str = "SELECT id, ek_cert_sha256, ak_public, reset_count, restart_count, clock, \
     firmware_version, pcr_baseline, enrolled_unix, revoked FROM hwsign_devices WHERE id = $1";

/// A [`KeyRegistry`] in PostgreSQL, shared by every verifier of a fleet.
#[derive(Debug)]
pub struct PostgresRegistry {
    pool: Pool,
    watch: Arc<ChangeWatch>,
    keys: Arc<ParsedKeys>,
}

fn unavailable(error: postgres::Error) -> RegistryError {
    RegistryError::Unavailable(Box::new(error))
}

fn is_unique_violation(error: &postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The connection settings of `url`, with the verifier's bounds added where the URL sets none.
pub(crate) fn config_for(url: &str) -> Result<Config, RegistryError> {
    let mut config = Config::from_str(url)
        .map_err(|_| RegistryError::InvalidUrl("not a valid postgres:// URL"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let options = config.get_options().unwrap_or_default().to_owned();
    if !options.contains("statement_timeout") {
        config.options(&format!(
            "{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        ));
    }
    if config.get_application_name().is_none() {
        config.application_name("hwsign-verifier");
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    Ok(config)
}

fn key_from_row(keys: &ParsedKeys, row: &Row) -> Result<RegisteredKey, RegistryError> {
    let key_id: String = row.try_get(0).map_err(unavailable)?;
    let spki: Vec<u8> = row.try_get(2).map_err(unavailable)?;
    let level: String = row.try_get(3).map_err(unavailable)?;
    Ok(RegisteredKey {
        public_key: keys.get(&key_id, &spki)?,
        label: row.try_get(1).map_err(unavailable)?,
        level: KeyLevel::from_str(&level).map_err(RegistryError::Corrupt)?,
        device_id: row.try_get(4).map_err(unavailable)?,
        revoked: row.try_get(5).map_err(unavailable)?,
        added_unix: row.try_get(6).map_err(unavailable)?,
        key_id,
    })
}

fn device_from_row(row: &Row) -> Result<DeviceRecord, RegistryError> {
    let get_i64 = |i: usize| row.try_get::<_, i64>(i).map_err(unavailable);
    let blob: Vec<u8> = row.try_get(7).map_err(unavailable)?;
    let count = |i: usize| {
        get_i64(i).and_then(|v| {
            u32::try_from(v).map_err(|_| RegistryError::Corrupt("TPM counter out of range".into()))
        })
    };
    Ok(DeviceRecord {
        id: row.try_get(0).map_err(unavailable)?,
        ek_cert_sha256: row.try_get(1).map_err(unavailable)?,
        ak_public: row.try_get(2).map_err(unavailable)?,
        clock: DeviceClock {
            reset_count: count(3)?,
            restart_count: count(4)?,
            // u64 values round-trip through their bit pattern.
            clock: get_i64(5)? as u64,
        },
        firmware_version: get_i64(6)? as u64,
        pcr_baseline: pcrs_from_blob(&blob)?,
        enrolled_unix: get_i64(8)?,
        revoked: row.try_get(9).map_err(unavailable)?,
    })
}

/// Whether device `id` exists, inside a call.
fn device_known(session: &mut Session, id: &str) -> Result<bool, RegistryError> {
    let statement = session
        .statement("SELECT 1 FROM hwsign_devices WHERE id = $1")
        .map_err(unavailable)?;
    Ok(session
        .client
        .query_opt(&statement, &[&id])
        .map_err(unavailable)?
        .is_some())
}

impl PostgresRegistry {
    /// Connects to the database at `url` (a libpq URL, `postgres://user@host:port/db`), creates
    /// or migrates the registry's tables, and starts the worker connections and the change
    /// listener. Fails when the database cannot be reached now; once running, a database that
    /// goes away makes calls fail ([`RegistryError::Unavailable`]) until it is back.
    pub fn connect(url: &str) -> Result<Self, RegistryError> {
        let config = config_for(url)?;
        let mut client = pool::connect(&config).map_err(unavailable)?;
        schema::migrate(&mut client)?;
        drop(client);
        let watch = Arc::new(ChangeWatch::new());
        listener::spawn(config.clone(), Arc::clone(&watch))
            .map_err(|e| RegistryError::Unavailable(Box::new(e)))?;
        Ok(Self {
            pool: Pool::start(&config, WORKERS)?,
            watch,
            keys: Arc::new(ParsedKeys::default()),
        })
    }

    /// Whether the change listener is connected and current (the key cache is trusted).
    pub fn is_listening(&self) -> bool {
        self.watch.is_listening()
    }

    /// Runs an `UPDATE … WHERE <id> = $1` taking `params` after the id; `missing` when no row
    /// matched.
    fn update(
        &self,
        sql: &'static str,
        id: &str,
        values: Vec<i64>,
        missing: fn(String) -> RegistryError,
    ) -> Result<(), RegistryError> {
        let id = id.to_owned();
        self.pool.run(move |session| {
            let statement = session.statement(sql).map_err(unavailable)?;
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&id];
            params.extend(
                values
                    .iter()
                    .map(|v| v as &(dyn postgres::types::ToSql + Sync)),
            );
            let changed = session
                .client
                .execute(&statement, &params)
                .map_err(unavailable)?;
            if changed == 0 {
                return Err(missing(id.clone()));
            }
            Ok(())
        })
    }
}

impl Drop for PostgresRegistry {
    fn drop(&mut self) {
        self.watch.stop();
    }
}

impl KeyRegistry for PostgresRegistry {
    fn lookup(&self, key_id: &str) -> Result<Option<RegisteredKey>, RegistryError> {
        let key_id = key_id.to_owned();
        let keys = Arc::clone(&self.keys);
        self.pool.run(move |session| {
            let statement = session.statement(LOOKUP).map_err(unavailable)?;
            let row = session
                .client
                .query_opt(&statement, &[&key_id])
                .map_err(unavailable)?;
            row.map(|row| key_from_row(&keys, &row)).transpose()
        })
    }

    fn add(&self, key: RegisteredKey) -> Result<(), RegistryError> {
        key.validate()?;
        self.pool.run(move |session| {
            if let Some(device) = &key.device_id
                && !device_known(session, device)?
            {
                return Err(RegistryError::UnknownDevice(device.clone()));
            }
            let result = session.client.execute(
                "INSERT INTO hwsign_keys (key_id, label, spki, level, device_id, revoked, \
                 added_unix) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &key.key_id,
                    &key.label,
                    &key.public_key.spki_der(),
                    &key.level.as_str(),
                    &key.device_id,
                    &key.revoked,
                    &key.added_unix,
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => {
                    Err(RegistryError::KeyExists(key.key_id.clone()))
                }
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn revoke(&self, key_id: &str) -> Result<(), RegistryError> {
        self.update(
            "UPDATE hwsign_keys SET revoked = TRUE WHERE key_id = $1",
            key_id,
            Vec::new(),
            RegistryError::UnknownKey,
        )
    }

    fn list(&self) -> Result<Vec<RegisteredKey>, RegistryError> {
        let keys = Arc::clone(&self.keys);
        self.pool.run(move |session| {
            let rows = session
                .client
                .query(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM hwsign_keys k \
                         LEFT JOIN hwsign_devices d ON d.id = k.device_id ORDER BY k.seq"
                    ),
                    &[],
                )
                .map_err(unavailable)?;
            rows.iter().map(|row| key_from_row(&keys, row)).collect()
        })
    }

    fn add_device(&self, device: DeviceRecord) -> Result<(), RegistryError> {
        device.validate()?;
        self.pool.run(move |session| {
            let result = session.client.execute(
                "INSERT INTO hwsign_devices (id, ek_cert_sha256, ak_public, reset_count, \
                 restart_count, clock, firmware_version, pcr_baseline, enrolled_unix, revoked) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &device.id,
                    &device.ek_cert_sha256,
                    &device.ak_public,
                    &i64::from(device.clock.reset_count),
                    &i64::from(device.clock.restart_count),
                    &(device.clock.clock as i64),
                    &(device.firmware_version as i64),
                    &pcrs_to_blob(&device.pcr_baseline),
                    &device.enrolled_unix,
                    &device.revoked,
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => {
                    Err(RegistryError::DeviceExists(device.id.clone()))
                }
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, RegistryError> {
        let device_id = device_id.to_owned();
        self.pool.run(move |session| {
            let statement = session.statement(DEVICE).map_err(unavailable)?;
            let row = session
                .client
                .query_opt(&statement, &[&device_id])
                .map_err(unavailable)?;
            row.map(|row| device_from_row(&row)).transpose()
        })
    }

    fn update_device_clock(
        &self,
        device_id: &str,
        clock: DeviceClock,
    ) -> Result<(), RegistryError> {
        self.update(
            "UPDATE hwsign_devices SET reset_count = $2, restart_count = $3, clock = $4 \
             WHERE id = $1",
            device_id,
            vec![
                i64::from(clock.reset_count),
                i64::from(clock.restart_count),
                clock.clock as i64,
            ],
            RegistryError::UnknownDevice,
        )
    }

    fn revoke_device(&self, device_id: &str) -> Result<(), RegistryError> {
        self.update(
            "UPDATE hwsign_devices SET revoked = TRUE WHERE id = $1",
            device_id,
            Vec::new(),
            RegistryError::UnknownDevice,
        )
    }

    fn set_pcr_baseline(
        &self,
        device_id: &str,
        baseline: &[[u8; 32]],
    ) -> Result<(), RegistryError> {
        if baseline.len() > super::MAX_BASELINE_PCRS {
            return Err(RegistryError::Invalid("too many PCR values"));
        }
        let device_id = device_id.to_owned();
        let blob = pcrs_to_blob(baseline);
        self.pool.run(move |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE hwsign_devices SET pcr_baseline = $2 WHERE id = $1",
                    &[&device_id, &blob],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                return Err(RegistryError::UnknownDevice(device_id.clone()));
            }
            Ok(())
        })
    }

    fn device_facts(&self, device_id: &str) -> Result<Option<DeviceFacts>, RegistryError> {
        let device_id = device_id.to_owned();
        self.pool.run(move |session| {
            let row = session
                .client
                .query_opt(
                    "SELECT facts FROM hwsign_device_facts WHERE device_id = $1",
                    &[&device_id],
                )
                .map_err(unavailable)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let text: String = row.try_get(0).map_err(unavailable)?;
            facts_from_json(&device_id, &text).map(Some)
        })
    }

    fn put_device_facts(&self, device_id: &str, facts: &DeviceFacts) -> Result<(), RegistryError> {
        let text = facts_to_json(facts)?;
        let device_id = device_id.to_owned();
        self.pool.run(move |session| {
            if !device_known(session, &device_id)? {
                return Err(RegistryError::UnknownDevice(device_id.clone()));
            }
            session
                .client
                .execute(
                    "INSERT INTO hwsign_device_facts (device_id, facts) VALUES ($1, $2) \
                     ON CONFLICT (device_id) DO UPDATE SET facts = excluded.facts",
                    &[&device_id, &text],
                )
                .map_err(unavailable)?;
            Ok(())
        })
    }

    /// Moves on with every notification on the registry's channel; `None` while the listener
    /// is not connected and current.
    fn change_version(&self) -> Result<Option<u64>, RegistryError> {
        Ok(self.watch.current())
    }

    fn add_fido2_credential(
        &self,
        key: RegisteredKey,
        credential: Fido2Credential,
    ) -> Result<(), RegistryError> {
        credential.validate_with(&key)?;
        self.pool.run(move |session| {
            let mut tx = session.client.transaction().map_err(unavailable)?;
            let inserted = tx.execute(
                "INSERT INTO hwsign_keys (key_id, label, spki, level, device_id, revoked, \
                 added_unix) VALUES ($1, $2, $3, $4, NULL, $5, $6)",
                &[
                    &key.key_id,
                    &key.label,
                    &key.public_key.spki_der(),
                    &key.level.as_str(),
                    &key.revoked,
                    &key.added_unix,
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(RegistryError::KeyExists(key.key_id.clone()));
                }
                Err(e) => return Err(unavailable(e)),
            }
            let stored = tx.execute(
                "INSERT INTO hwsign_fido2_credentials (key_id, credential_id, rp_id, aaguid, \
                 sign_count, backup_eligible, backed_up, possibly_cloned) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &credential.key_id,
                    &credential.credential_id,
                    &credential.rp_id,
                    &credential.aaguid.as_slice(),
                    &i64::from(credential.sign_count),
                    &credential.backup_eligible,
                    &credential.backed_up,
                    &credential.possibly_cloned,
                ],
            );
            match stored {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(RegistryError::Invalid("credential id already registered"));
                }
                Err(e) => return Err(unavailable(e)),
            }
            tx.commit().map_err(unavailable)
        })
    }

    fn fido2_credential(&self, key_id: &str) -> Result<Option<Fido2Credential>, RegistryError> {
        let key_id = key_id.to_owned();
        self.pool.run(move |session| {
            let row = session
                .client
                .query_opt(
                    "SELECT credential_id, rp_id, aaguid, sign_count, backup_eligible, \
                     backed_up, possibly_cloned FROM hwsign_fido2_credentials WHERE key_id = $1",
                    &[&key_id],
                )
                .map_err(unavailable)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let corrupt = |what: &str| RegistryError::Corrupt(format!("FIDO2 credential: {what}"));
            let aaguid: Vec<u8> = row.try_get(2).map_err(unavailable)?;
            let sign_count: i64 = row.try_get(3).map_err(unavailable)?;
            Ok(Some(Fido2Credential {
                key_id: key_id.clone(),
                credential_id: row.try_get(0).map_err(unavailable)?,
                rp_id: row.try_get(1).map_err(unavailable)?,
                aaguid: aaguid.try_into().map_err(|_| corrupt("AAGUID"))?,
                sign_count: u32::try_from(sign_count).map_err(|_| corrupt("sign count"))?,
                backup_eligible: row.try_get(4).map_err(unavailable)?,
                backed_up: row.try_get(5).map_err(unavailable)?,
                possibly_cloned: row.try_get(6).map_err(unavailable)?,
            }))
        })
    }

    fn advance_sign_count(&self, key_id: &str, new: u32) -> Result<bool, RegistryError> {
        let key_id = key_id.to_owned();
        let new = i64::from(new);
        self.pool.run(move |session| {
            // The compare-and-set is this one conditional UPDATE: replicas racing with the same
            // counter cannot both advance it.
            let advanced = session
                .client
                .execute(
                    "UPDATE hwsign_fido2_credentials SET sign_count = $2 WHERE key_id = $1 \
                     AND NOT possibly_cloned AND (sign_count < $2 OR (sign_count = 0 AND $2 = 0))",
                    &[&key_id, &new],
                )
                .map_err(unavailable)?;
            if advanced == 1 {
                return Ok(true);
            }
            session
                .client
                .execute(
                    "UPDATE hwsign_fido2_credentials SET possibly_cloned = TRUE WHERE key_id = $1",
                    &[&key_id],
                )
                .map_err(unavailable)?;
            Ok(false)
        })
    }

    fn clear_possibly_cloned(&self, key_id: &str) -> Result<(), RegistryError> {
        let key_id = key_id.to_owned();
        self.pool.run(move |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE hwsign_fido2_credentials SET possibly_cloned = FALSE WHERE key_id = $1",
                    &[&key_id],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                return Err(RegistryError::UnknownKey(key_id.clone()));
            }
            Ok(())
        })
    }
}
