//! Enrollment state in PostgreSQL (cargo feature `postgres`): the same tokens and ceremonies as
//! the SQLite store, in `hwsign_enrollment_tokens` and `hwsign_enrollment_challenges`, so a
//! ceremony whose steps reach different replicas of a fleet still sees one state.
//!
//! Calls run on the registry's kind of worker pool (connections on threads of their own, see
//! `registry::postgres::pool`). Each step that reads and then writes runs in one transaction
//! under an advisory lock, which serialises ceremonies across replicas as SQLite's `IMMEDIATE`
//! transactions do within one file. Every statement is parameterised.

use postgres::{Row, Transaction};

use super::error::EnrollmentError;
use super::store::{Challenge, ChallengeState, NONCE_LEN, TokenInfo};
use super::token::{IssuedToken, PresentedToken, random};
use crate::registry::RegistryError;
use crate::registry::postgres::config_for;
use crate::registry::postgres::pool::{self, Pool, Session};

/// Worker connections of an enrollment store (enrollment is rare).
const WORKERS: usize = 2;
/// Serialises enrollment steps between replicas (an arbitrary, fixed advisory lock key).
const ENROLLMENT_LOCK: i64 = 0x6877_7369_676e_0002;
/// The schema version of the enrollment tables.
const SCHEMA_VERSION: i32 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE hwsign_enrollment_tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 BYTEA NOT NULL,
    label         TEXT NOT NULL,
    created_unix  BIGINT NOT NULL,
    expires_unix  BIGINT NOT NULL,
    used_unix     BIGINT,
    revoked       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE hwsign_enrollment_challenges (
    seq           BIGSERIAL NOT NULL,
    id            TEXT PRIMARY KEY,
    token_id      TEXT NOT NULL REFERENCES hwsign_enrollment_tokens(id),
    key_id        TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('started', 'verifying', 'credential_issued')),
    secret_sha256 BYTEA,
    ak_name       BYTEA,
    pending       TEXT,
    expires_unix  BIGINT NOT NULL
);
CREATE INDEX hwsign_enrollment_challenges_expiry ON hwsign_enrollment_challenges(expires_unix);
";

const CHALLENGE_COLUMNS: &str = "id, token_id, key_id, nonce, state, secret_sha256, ak_name, \
     pending, expires_unix";

/// A database error inside a call: the pool drops the connection and the step fails closed.
fn db(error: postgres::Error) -> RegistryError {
    RegistryError::Unavailable(Box::new(error))
}

fn store_error(error: RegistryError) -> EnrollmentError {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    EnrollmentError::Store(text)
}

fn challenge_from_row(row: &Row) -> Result<Challenge, EnrollmentError> {
    let get = |e: postgres::Error| store_error(db(e));
    let state: String = row.try_get(4).map_err(get)?;
    Ok(Challenge {
        id: row.try_get(0).map_err(get)?,
        token_id: row.try_get(1).map_err(get)?,
        key_id: row.try_get(2).map_err(get)?,
        nonce: row.try_get(3).map_err(get)?,
        state: ChallengeState::parse(&state)?,
        secret_sha256: row.try_get(5).map_err(get)?,
        ak_name: row.try_get(6).map_err(get)?,
        pending: row.try_get(7).map_err(get)?,
        expires_unix: row.try_get(8).map_err(get)?,
    })
}

fn load(tx: &mut Transaction<'_>, id: &str) -> Result<Option<Challenge>, RegistryError> {
    let row = tx
        .query_opt(
            &format!("SELECT {CHALLENGE_COLUMNS} FROM hwsign_enrollment_challenges WHERE id = $1"),
            &[&id],
        )
        .map_err(db)?;
    // A row that does not decode is a store failure too.
    row.map(|row| challenge_from_row(&row))
        .transpose()
        .map_err(|e| RegistryError::Unavailable(e.to_string().into()))
}

/// A transaction holding the enrollment lock.
fn locked(session: &mut Session) -> Result<Transaction<'_>, RegistryError> {
    let mut tx = session.client.transaction().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ENROLLMENT_LOCK])
        .map_err(db)?;
    Ok(tx)
}

/// The enrollment tables in PostgreSQL.
#[derive(Debug)]
pub(super) struct PostgresEnrollment {
    pool: Pool,
}

impl PostgresEnrollment {
    pub(super) fn connect(url: &str) -> Result<Self, EnrollmentError> {
        let config = config_for(url).map_err(store_error)?;
        let mut client = pool::connect(&config).map_err(|e| store_error(db(e)))?;
        migrate(&mut client).map_err(store_error)?;
        drop(client);
        Ok(Self {
            pool: Pool::start(&config, WORKERS).map_err(store_error)?,
        })
    }

    /// Runs one step: `Err` from `work` is the store failing, `Ok(Err)` a refusal.
    fn run<T: Send + 'static>(
        &self,
        work: impl Fn(&mut Session) -> Result<Result<T, EnrollmentError>, RegistryError>
        + Send
        + 'static,
    ) -> Result<T, EnrollmentError> {
        self.pool.run(work).map_err(store_error)?
    }

    pub(super) fn add_token(
        &self,
        token: &IssuedToken,
        label: &str,
        created_unix: i64,
        expires_unix: i64,
    ) -> Result<(), EnrollmentError> {
        let (id, secret, label) = (
            token.id.clone(),
            token.secret_sha256.to_vec(),
            label.to_owned(),
        );
        self.run(move |session| {
            session
                .client
                .execute(
                    "INSERT INTO hwsign_enrollment_tokens \
                     (id, secret_sha256, label, created_unix, expires_unix) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&id, &secret, &label, &created_unix, &expires_unix],
                )
                .map_err(db)?;
            Ok(Ok(()))
        })
    }

    pub(super) fn list_tokens(&self) -> Result<Vec<TokenInfo>, EnrollmentError> {
        self.run(|session| {
            let rows = session
                .client
                .query(
                    "SELECT id, label, created_unix, expires_unix, used_unix, revoked \
                     FROM hwsign_enrollment_tokens ORDER BY created_unix, id",
                    &[],
                )
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    Ok(TokenInfo {
                        id: row.try_get(0).map_err(db)?,
                        label: row.try_get(1).map_err(db)?,
                        created_unix: row.try_get(2).map_err(db)?,
                        expires_unix: row.try_get(3).map_err(db)?,
                        used_unix: row.try_get(4).map_err(db)?,
                        revoked: row.try_get(5).map_err(db)?,
                    })
                })
                .collect::<Result<Vec<_>, RegistryError>>()
                .map(Ok)
        })
    }

    pub(super) fn token_label(&self, id: &str) -> Result<String, EnrollmentError> {
        let id = id.to_owned();
        self.run(move |session| {
            let row = session
                .client
                .query_opt(
                    "SELECT label FROM hwsign_enrollment_tokens WHERE id = $1",
                    &[&id],
                )
                .map_err(db)?;
            Ok(match row {
                Some(row) => Ok(row.try_get(0).map_err(db)?),
                None => Err(EnrollmentError::InvalidToken),
            })
        })
    }

    pub(super) fn revoke_token(&self, id: &str) -> Result<(), EnrollmentError> {
        let id = id.to_owned();
        self.run(move |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE hwsign_enrollment_tokens SET revoked = TRUE WHERE id = $1",
                    &[&id],
                )
                .map_err(db)?;
            Ok(if changed == 0 {
                Err(EnrollmentError::InvalidToken)
            } else {
                Ok(())
            })
        })
    }

    /// See [`super::EnrollmentStore::create_challenge`].
    pub(super) fn create_challenge(
        &self,
        token: &PresentedToken,
        key_id: &str,
        now: i64,
        ttl_secs: i64,
        max_pending: usize,
        max_per_token: usize,
    ) -> Result<Challenge, EnrollmentError> {
        let token = token.clone();
        let key_id = key_id.to_owned();
        // Fresh randomness per call; a retried call reuses it, which is harmless (nothing was
        // stored by the failed attempt).
        let mut id = [0u8; 16];
        random(&mut id)?;
        let mut nonce = vec![0u8; NONCE_LEN];
        random(&mut nonce)?;
        let id = format!("ch_{}", hex::encode(id));
        self.run(move |session| {
            let mut tx = locked(session)?;
            tx.execute(
                "DELETE FROM hwsign_enrollment_challenges WHERE expires_unix <= $1",
                &[&now],
            )
            .map_err(db)?;
            let row = tx
                .query_opt(
                    "SELECT secret_sha256, expires_unix, used_unix, revoked \
                     FROM hwsign_enrollment_tokens WHERE id = $1",
                    &[&token.id],
                )
                .map_err(db)?;
            let Some(row) = row else {
                return Ok(Err(EnrollmentError::InvalidToken));
            };
            let secret: Vec<u8> = row.try_get(0).map_err(db)?;
            let expires_unix: i64 = row.try_get(1).map_err(db)?;
            let used_unix: Option<i64> = row.try_get(2).map_err(db)?;
            let revoked: bool = row.try_get(3).map_err(db)?;
            if !token.matches(&secret) || revoked {
                return Ok(Err(EnrollmentError::InvalidToken));
            }
            if used_unix.is_some() {
                return Ok(Err(EnrollmentError::TokenUsed));
            }
            if expires_unix <= now {
                return Ok(Err(EnrollmentError::TokenExpired));
            }
            // The token's own oldest challenges make room for this one.
            let keep = i64::try_from(max_per_token.max(1).saturating_sub(1)).unwrap_or(i64::MAX);
            let replaced = tx
                .execute(
                    "DELETE FROM hwsign_enrollment_challenges WHERE id IN (\
                         SELECT id FROM hwsign_enrollment_challenges \
                         WHERE token_id = $1 AND state = 'started' \
                         ORDER BY seq DESC OFFSET $2)",
                    &[&token.id, &keep],
                )
                .map_err(db)?;
            if replaced > 0 {
                tracing::info!(
                    token = %token.id,
                    replaced,
                    "enrollment challenges replaced by a newer start with the same token"
                );
            }
            let pending: i64 = tx
                .query_one("SELECT COUNT(*) FROM hwsign_enrollment_challenges", &[])
                .and_then(|row| row.try_get(0))
                .map_err(db)?;
            if usize::try_from(pending).unwrap_or(usize::MAX) >= max_pending {
                tx.commit().map_err(db)?;
                return Ok(Err(EnrollmentError::TooManyChallenges));
            }
            let challenge = Challenge {
                id: id.clone(),
                token_id: token.id.clone(),
                key_id: key_id.clone(),
                nonce: nonce.clone(),
                state: ChallengeState::Started,
                secret_sha256: None,
                ak_name: None,
                pending: None,
                // The challenge does not outlive its token.
                expires_unix: now.saturating_add(ttl_secs).min(expires_unix),
            };
            tx.execute(
                "INSERT INTO hwsign_enrollment_challenges \
                 (id, token_id, key_id, nonce, state, expires_unix) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &challenge.id,
                    &challenge.token_id,
                    &challenge.key_id,
                    &challenge.nonce,
                    &challenge.state.as_str(),
                    &challenge.expires_unix,
                ],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(Ok(challenge))
        })
    }

    /// See [`super::EnrollmentStore::begin_evidence`].
    pub(super) fn begin_evidence(&self, id: &str, now: i64) -> Result<Challenge, EnrollmentError> {
        let id = id.to_owned();
        self.run(move |session| {
            let mut tx = locked(session)?;
            let Some(mut challenge) = load(&mut tx, &id)? else {
                return Ok(Err(EnrollmentError::ChallengeUnknown));
            };
            let delete = "DELETE FROM hwsign_enrollment_challenges WHERE id = $1";
            if challenge.expires_unix <= now {
                tx.execute(delete, &[&id]).map_err(db)?;
                tx.commit().map_err(db)?;
                return Ok(Err(EnrollmentError::ChallengeExpired));
            }
            if challenge.state != ChallengeState::Started {
                return Ok(Err(EnrollmentError::ChallengeState));
            }
            let spent = tx
                .execute(
                    "UPDATE hwsign_enrollment_tokens SET used_unix = $2 \
                     WHERE id = $1 AND used_unix IS NULL AND NOT revoked AND expires_unix > $2",
                    &[&challenge.token_id, &now],
                )
                .map_err(db)?;
            if spent == 0 {
                // Used by a parallel ceremony, revoked or expired since step 1.
                let state = tx
                    .query_opt(
                        "SELECT used_unix, revoked FROM hwsign_enrollment_tokens WHERE id = $1",
                        &[&challenge.token_id],
                    )
                    .map_err(db)?
                    .map(|row| {
                        Ok::<_, postgres::Error>((
                            row.try_get::<_, Option<i64>>(0)?,
                            row.try_get::<_, bool>(1)?,
                        ))
                    })
                    .transpose()
                    .map_err(db)?;
                tx.execute(delete, &[&id]).map_err(db)?;
                tx.commit().map_err(db)?;
                return Ok(Err(match state {
                    Some((Some(_), _)) => EnrollmentError::TokenUsed,
                    Some((None, false)) => EnrollmentError::TokenExpired,
                    _ => EnrollmentError::InvalidToken,
                }));
            }
            tx.execute(
                "UPDATE hwsign_enrollment_challenges SET state = 'verifying' WHERE id = $1",
                &[&id],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            challenge.state = ChallengeState::Verifying;
            Ok(Ok(challenge))
        })
    }

    pub(super) fn credential_issued(
        &self,
        id: &str,
        secret_sha256: &[u8; 32],
        ak_name: &[u8],
        pending: &str,
    ) -> Result<(), EnrollmentError> {
        let (id, secret, ak_name, pending) = (
            id.to_owned(),
            secret_sha256.to_vec(),
            ak_name.to_vec(),
            pending.to_owned(),
        );
        self.run(move |session| {
            let changed = session
                .client
                .execute(
                    "UPDATE hwsign_enrollment_challenges \
                     SET state = 'credential_issued', secret_sha256 = $2, ak_name = $3, \
                     pending = $4 WHERE id = $1 AND state = 'verifying'",
                    &[&id, &secret, &ak_name, &pending],
                )
                .map_err(db)?;
            Ok(if changed == 0 {
                Err(EnrollmentError::ChallengeUnknown)
            } else {
                Ok(())
            })
        })
    }

    pub(super) fn delete_challenge(&self, id: &str) -> Result<(), EnrollmentError> {
        let id = id.to_owned();
        self.run(move |session| {
            session
                .client
                .execute(
                    "DELETE FROM hwsign_enrollment_challenges WHERE id = $1",
                    &[&id],
                )
                .map_err(db)?;
            Ok(Ok(()))
        })
    }

    /// See [`super::EnrollmentStore::take_for_activation`].
    pub(super) fn take_for_activation(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Challenge, EnrollmentError> {
        let id = id.to_owned();
        self.run(move |session| {
            let mut tx = locked(session)?;
            let Some(challenge) = load(&mut tx, &id)? else {
                return Ok(Err(EnrollmentError::ChallengeUnknown));
            };
            let delete = "DELETE FROM hwsign_enrollment_challenges WHERE id = $1";
            if challenge.expires_unix <= now {
                tx.execute(delete, &[&id]).map_err(db)?;
                tx.commit().map_err(db)?;
                return Ok(Err(EnrollmentError::ChallengeExpired));
            }
            if challenge.state != ChallengeState::CredentialIssued {
                return Ok(Err(EnrollmentError::ChallengeState));
            }
            tx.execute(delete, &[&id]).map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(Ok(challenge))
        })
    }

    pub(super) fn pending_challenges(&self) -> Result<usize, EnrollmentError> {
        self.run(|session| {
            let count: i64 = session
                .client
                .query_one("SELECT COUNT(*) FROM hwsign_enrollment_challenges", &[])
                .and_then(|row| row.try_get(0))
                .map_err(db)?;
            Ok(Ok(usize::try_from(count).unwrap_or(usize::MAX)))
        })
    }
}

/// Creates the enrollment tables, or checks their version.
fn migrate(client: &mut postgres::Client) -> Result<(), RegistryError> {
    let mut tx = client.transaction().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ENROLLMENT_LOCK])
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hwsign_enrollment_schema (version INTEGER NOT NULL)",
    )
    .map_err(db)?;
    let version: Option<i32> = tx
        .query_opt("SELECT max(version) FROM hwsign_enrollment_schema", &[])
        .map_err(db)?
        .map(|row| row.try_get::<_, Option<i32>>(0))
        .transpose()
        .map_err(db)?
        .flatten();
    match version {
        None => {
            tx.batch_execute(SCHEMA_V1).map_err(db)?;
            tx.execute(
                "INSERT INTO hwsign_enrollment_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .map_err(db)?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(RegistryError::Corrupt(format!(
                "enrollment schema version {other} is not this release's {SCHEMA_VERSION}"
            )));
        }
    }
    tx.commit().map_err(db)
}
