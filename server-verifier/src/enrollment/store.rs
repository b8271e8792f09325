//! Enrollment state in SQLite: tokens (`enrollment_tokens`) and pending ceremonies
//! (`enrollment_challenges`). It uses its own connection, and may share the key registry's file
//! (WAL mode lets both write); the tables are created if absent and versioned in
//! `enrollment_schema`, apart from the registry's `PRAGMA user_version`.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::error::EnrollmentError;
use super::token::{IssuedToken, PresentedToken, random};

/// The schema version of the enrollment tables.
pub(super) const ENROLLMENT_SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    secret_sha256 BLOB NOT NULL,
    label         TEXT NOT NULL,
    created_unix  INTEGER NOT NULL,
    expires_unix  INTEGER NOT NULL,
    used_unix     INTEGER,
    revoked       INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE enrollment_challenges (
    id            TEXT PRIMARY KEY NOT NULL,
    token_id      TEXT NOT NULL REFERENCES enrollment_tokens(id),
    key_id        TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('started', 'verifying', 'credential_issued')),
    secret_sha256 BLOB,   -- SHA-256 of the activation secret; the secret itself is not kept
    ak_name       BLOB,
    pending       TEXT,   -- JSON: what activation stores once the secret matches
    expires_unix  INTEGER NOT NULL
) STRICT;
CREATE INDEX enrollment_challenges_expiry ON enrollment_challenges(expires_unix);
";

/// Length of a challenge nonce (TPM2B_DATA takes up to 64; 32 is a SHA-256's worth).
pub const NONCE_LEN: usize = 32;

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Row id, the part of the token before the `.`.
    pub id: String,
    /// Label given at creation; enrolled keys carry it.
    pub label: String,
    /// Creation time, seconds since the epoch.
    pub created_unix: i64,
    /// Expiry, seconds since the epoch.
    pub expires_unix: i64,
    /// When a ceremony spent it.
    pub used_unix: Option<i64>,
    /// Revoked by an administrator.
    pub revoked: bool,
}

/// Where a ceremony stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeState {
    /// Nonce issued, waiting for evidence.
    Started,
    /// Evidence being checked (the token is spent).
    Verifying,
    /// Credential issued, waiting for the secret.
    CredentialIssued,
}

impl ChallengeState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Verifying => "verifying",
            Self::CredentialIssued => "credential_issued",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, EnrollmentError> {
        match text {
            "started" => Ok(Self::Started),
            "verifying" => Ok(Self::Verifying),
            "credential_issued" => Ok(Self::CredentialIssued),
            other => Err(EnrollmentError::Store(format!(
                "unknown challenge state {other:?}"
            ))),
        }
    }
}

/// A pending ceremony.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `ch_…`.
    pub id: String,
    /// The token it was started with.
    pub token_id: String,
    /// The key being enrolled.
    pub key_id: String,
    /// The nonce the evidence must be made over.
    pub nonce: Vec<u8>,
    /// Its step.
    pub state: ChallengeState,
    /// SHA-256 of the activation secret, once the credential is issued.
    pub secret_sha256: Option<Vec<u8>>,
    /// The AK name the credential is bound to.
    pub ak_name: Option<Vec<u8>>,
    /// What activation will store (JSON), once the credential is issued.
    pub pending: Option<String>,
    /// Expiry, seconds since the epoch.
    pub expires_unix: i64,
}

/// The enrollment tables: in SQLite ([`EnrollmentStore::open`]) or, for a fleet whose replicas
/// must all see every ceremony, in PostgreSQL ([`EnrollmentStore::connect`], cargo feature
/// `postgres`).
#[derive(Debug)]
pub struct EnrollmentStore {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Sqlite(Mutex<Connection>),
    #[cfg(feature = "postgres")]
    Postgres(super::postgres_store::PostgresEnrollment),
}

impl EnrollmentStore {
    /// Opens (creating, mode 0600) the SQLite file at `path`, usually the key registry's.
    ///
    /// An existing file is left to SQLite alone: opening and closing it with `std::fs` would
    /// drop the POSIX locks every SQLite connection of this process holds on it (the registry's,
    /// say), and another process could then delete the WAL under them.
    pub fn open(path: &Path) -> Result<Self, EnrollmentError> {
        if !path.exists() {
            // Created here, before any connection, so its mode is 0600 from the first byte;
            // SQLite gives the -wal and -shm files the database file's permissions.
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| EnrollmentError::Store(format!("{}: {e}", path.display())))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(EnrollmentError::Store(format!(
                "cannot switch to WAL mode (journal_mode is {mode})"
            )));
        }
        Self::init(conn)
    }

    /// A store in memory (tests, single-process demos).
    pub fn open_in_memory() -> Result<Self, EnrollmentError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, EnrollmentError> {
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS enrollment_schema (version INTEGER NOT NULL) STRICT;",
        )?;
        let version: Option<i64> = tx
            .query_row("SELECT version FROM enrollment_schema", [], |r| r.get(0))
            .optional()?;
        match version {
            None => {
                tx.execute_batch(SCHEMA_V1)?;
                tx.execute(
                    "INSERT INTO enrollment_schema (version) VALUES (?1)",
                    params![ENROLLMENT_SCHEMA_VERSION],
                )?;
            }
            Some(ENROLLMENT_SCHEMA_VERSION) => {}
            Some(newer) => {
                return Err(EnrollmentError::Store(format!(
                    "enrollment schema version {newer} is newer than this release's \
                     {ENROLLMENT_SCHEMA_VERSION}"
                )));
            }
        }
        tx.commit()?;
        Ok(Self {
            backend: Backend::Sqlite(Mutex::new(conn)),
        })
    }

    /// Opens the enrollment tables in the PostgreSQL database at `url` (a libpq URL), creating
    /// or migrating them; every replica of a fleet then sees every ceremony, whichever replica
    /// each step reaches.
    #[cfg(feature = "postgres")]
    pub fn connect(url: &str) -> Result<Self, EnrollmentError> {
        Ok(Self {
            backend: Backend::Postgres(super::postgres_store::PostgresEnrollment::connect(url)?),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, EnrollmentError> {
        match &self.backend {
            Backend::Sqlite(conn) => conn
                .lock()
                .map_err(|_| EnrollmentError::Store("lock poisoned".into())),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Err(EnrollmentError::Store(
                "not an SQLite enrollment store".into(),
            )),
        }
    }

    /// Stores a newly issued token.
    pub fn add_token(
        &self,
        token: &IssuedToken,
        label: &str,
        created_unix: i64,
        expires_unix: i64,
    ) -> Result<(), EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.add_token(token, label, created_unix, expires_unix);
        }
        self.conn()?.execute(
            "INSERT INTO enrollment_tokens (id, secret_sha256, label, created_unix, expires_unix) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                token.id,
                token.secret_sha256.as_slice(),
                label,
                created_unix,
                expires_unix
            ],
        )?;
        Ok(())
    }

    /// Every token, oldest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.list_tokens();
        }
        let conn = self.conn()?;
        let mut statement = conn.prepare(
            "SELECT id, label, created_unix, expires_unix, used_unix, revoked \
             FROM enrollment_tokens ORDER BY created_unix, id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(TokenInfo {
                id: row.get(0)?,
                label: row.get(1)?,
                created_unix: row.get(2)?,
                expires_unix: row.get(3)?,
                used_unix: row.get(4)?,
                revoked: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The label of token `id`.
    pub fn token_label(&self, id: &str) -> Result<String, EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.token_label(id);
        }
        self.conn()?
            .query_row(
                "SELECT label FROM enrollment_tokens WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(EnrollmentError::InvalidToken)
    }

    /// Revokes an unused token. Unknown ids are [`EnrollmentError::InvalidToken`].
    pub fn revoke_token(&self, id: &str) -> Result<(), EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.revoke_token(id);
        }
        let changed = self.conn()?.execute(
            "UPDATE enrollment_tokens SET revoked = 1 WHERE id = ?1",
            params![id],
        )?;
        if changed == 0 {
            return Err(EnrollmentError::InvalidToken);
        }
        Ok(())
    }

    /// Step 1: checks `token` (secret first, so its state is told only to its holder), bounds the
    /// pending ceremonies, and stores a new challenge for `key_id`.
    ///
    /// Bounds: a token holds at most `max_per_token` pending challenges — a new start replaces
    /// its oldest, so one token cannot hold the table against other devices; past that, at most
    /// `max_pending` challenges are pending in all ([`EnrollmentError::TooManyChallenges`]).
    pub fn create_challenge(
        &self,
        token: &PresentedToken,
        key_id: &str,
        now: i64,
        ttl_secs: i64,
        max_pending: usize,
        max_per_token: usize,
    ) -> Result<Challenge, EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.create_challenge(token, key_id, now, ttl_secs, max_pending, max_per_token);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM enrollment_challenges WHERE expires_unix <= ?1",
            params![now],
        )?;
        let row: Option<(Vec<u8>, i64, Option<i64>, bool)> = tx
            .query_row(
                "SELECT secret_sha256, expires_unix, used_unix, revoked \
                 FROM enrollment_tokens WHERE id = ?1",
                params![token.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((secret_sha256, expires_unix, used_unix, revoked)) = row else {
            return Err(EnrollmentError::InvalidToken);
        };
        if !token.matches(&secret_sha256) || revoked {
            return Err(EnrollmentError::InvalidToken);
        }
        if used_unix.is_some() {
            return Err(EnrollmentError::TokenUsed);
        }
        if expires_unix <= now {
            return Err(EnrollmentError::TokenExpired);
        }
        // The token's own oldest challenges make room for this one (rowids grow with inserts).
        let keep = i64::try_from(max_per_token.max(1).saturating_sub(1)).unwrap_or(i64::MAX);
        let replaced = tx.execute(
            "DELETE FROM enrollment_challenges WHERE rowid IN (\
                 SELECT rowid FROM enrollment_challenges \
                 WHERE token_id = ?1 AND state = 'started' \
                 ORDER BY rowid DESC LIMIT -1 OFFSET ?2)",
            params![token.id, keep],
        )?;
        if replaced > 0 {
            tracing::info!(
                token = %token.id,
                replaced,
                "enrollment challenges replaced by a newer start with the same token"
            );
        }
        let pending: i64 = tx.query_row("SELECT COUNT(*) FROM enrollment_challenges", [], |r| {
            r.get(0)
        })?;
        if usize::try_from(pending).unwrap_or(usize::MAX) >= max_pending {
            tx.commit()?;
            return Err(EnrollmentError::TooManyChallenges);
        }
        let mut id = [0u8; 16];
        random(&mut id)?;
        let mut nonce = vec![0u8; NONCE_LEN];
        random(&mut nonce)?;
        let challenge = Challenge {
            id: format!("ch_{}", hex::encode(id)),
            token_id: token.id.clone(),
            key_id: key_id.to_owned(),
            nonce,
            state: ChallengeState::Started,
            secret_sha256: None,
            ak_name: None,
            pending: None,
            // The challenge does not outlive its token.
            expires_unix: now.saturating_add(ttl_secs).min(expires_unix),
        };
        tx.execute(
            "INSERT INTO enrollment_challenges (id, token_id, key_id, nonce, state, expires_unix) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                challenge.id,
                challenge.token_id,
                challenge.key_id,
                challenge.nonce,
                challenge.state.as_str(),
                challenge.expires_unix
            ],
        )?;
        tx.commit()?;
        Ok(challenge)
    }

    /// Step 2 begins: the challenge must be `started` and unexpired; its token is spent now,
    /// whatever the evidence turns out to be, so one token buys one look at the verifier's
    /// checks. The challenge moves to `verifying`.
    pub fn begin_evidence(&self, id: &str, now: i64) -> Result<Challenge, EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.begin_evidence(id, now);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut challenge = load(&tx, id)?.ok_or(EnrollmentError::ChallengeUnknown)?;
        if challenge.expires_unix <= now {
            tx.execute(
                "DELETE FROM enrollment_challenges WHERE id = ?1",
                params![id],
            )?;
            tx.commit()?;
            return Err(EnrollmentError::ChallengeExpired);
        }
        if challenge.state != ChallengeState::Started {
            return Err(EnrollmentError::ChallengeState);
        }
        let spent = tx.execute(
            "UPDATE enrollment_tokens SET used_unix = ?2 \
             WHERE id = ?1 AND used_unix IS NULL AND revoked = 0 AND expires_unix > ?2",
            params![challenge.token_id, now],
        )?;
        if spent == 0 {
            // Used by a parallel ceremony, revoked or expired since step 1.
            let state: Option<(Option<i64>, bool)> = tx
                .query_row(
                    "SELECT used_unix, revoked FROM enrollment_tokens WHERE id = ?1",
                    params![challenge.token_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            tx.execute(
                "DELETE FROM enrollment_challenges WHERE id = ?1",
                params![id],
            )?;
            tx.commit()?;
            return Err(match state {
                Some((Some(_), _)) => EnrollmentError::TokenUsed,
                Some((None, false)) => EnrollmentError::TokenExpired,
                _ => EnrollmentError::InvalidToken,
            });
        }
        tx.execute(
            "UPDATE enrollment_challenges SET state = 'verifying' WHERE id = ?1",
            params![id],
        )?;
        tx.commit()?;
        challenge.state = ChallengeState::Verifying;
        Ok(challenge)
    }

    /// Step 2 ends well: remembers the secret's hash, the AK name and what to store on
    /// activation.
    pub fn credential_issued(
        &self,
        id: &str,
        secret_sha256: &[u8; 32],
        ak_name: &[u8],
        pending: &str,
    ) -> Result<(), EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.credential_issued(id, secret_sha256, ak_name, pending);
        }
        let changed = self.conn()?.execute(
            "UPDATE enrollment_challenges \
             SET state = 'credential_issued', secret_sha256 = ?2, ak_name = ?3, pending = ?4 \
             WHERE id = ?1 AND state = 'verifying'",
            params![id, secret_sha256.as_slice(), ak_name, pending],
        )?;
        if changed == 0 {
            return Err(EnrollmentError::ChallengeUnknown);
        }
        Ok(())
    }

    /// Forgets a challenge (refused evidence).
    pub fn delete_challenge(&self, id: &str) -> Result<(), EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.delete_challenge(id);
        }
        self.conn()?.execute(
            "DELETE FROM enrollment_challenges WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Step 3: removes and returns a challenge whose credential was issued. One try only: a wrong
    /// secret ends the ceremony.
    pub fn take_for_activation(&self, id: &str, now: i64) -> Result<Challenge, EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.take_for_activation(id, now);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let challenge = load(&tx, id)?.ok_or(EnrollmentError::ChallengeUnknown)?;
        if challenge.expires_unix <= now {
            tx.execute(
                "DELETE FROM enrollment_challenges WHERE id = ?1",
                params![id],
            )?;
            tx.commit()?;
            return Err(EnrollmentError::ChallengeExpired);
        }
        if challenge.state != ChallengeState::CredentialIssued {
            return Err(EnrollmentError::ChallengeState);
        }
        tx.execute(
            "DELETE FROM enrollment_challenges WHERE id = ?1",
            params![id],
        )?;
        tx.commit()?;
        Ok(challenge)
    }

    /// Pending ceremonies (for tests and monitoring).
    pub fn pending_challenges(&self) -> Result<usize, EnrollmentError> {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            return pg.pending_challenges();
        }
        let count: i64 =
            self.conn()?
                .query_row("SELECT COUNT(*) FROM enrollment_challenges", [], |r| {
                    r.get(0)
                })?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }
}

fn load(conn: &Connection, id: &str) -> Result<Option<Challenge>, EnrollmentError> {
    let row = conn
        .query_row(
            "SELECT id, token_id, key_id, nonce, state, secret_sha256, ak_name, pending, \
             expires_unix FROM enrollment_challenges WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<Vec<u8>>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            },
        )
        .optional()?;
    let Some((id, token_id, key_id, nonce, state, secret_sha256, ak_name, pending, expires)) = row
    else {
        return Ok(None);
    };
    Ok(Some(Challenge {
        id,
        token_id,
        key_id,
        nonce,
        state: ChallengeState::parse(&state)?,
        secret_sha256,
        ak_name,
        pending,
        expires_unix: expires,
    }))
}
