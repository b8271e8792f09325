//! A [`Directory`] in PostgreSQL (cargo feature `postgres`): `hwsign_dir_*` tables beside the
//! registry's in the same database, so every replica of a fleet, on any host, sees a force
//! logout, a deprovisioned user or a group change at its next request.
//!
//! Calls run on worker threads owning their connections (`registry::postgres::pool`: the
//! blocking client must not run on a tokio thread), each bounded by its timeout; a database that
//! goes away makes calls fail ([`DirectoryError::Unavailable`]), and the request path then fails
//! closed. Steps that read and then write run in one transaction.

use postgres::Transaction;
use postgres::error::SqlState;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    Directory, DirectoryError, Group, MAX_GROUPS, MAX_SESSION_ENDS, MAX_USERS, RecoveryGrant,
    Session, SessionEnd, SessionLimits, SessionRef, User,
};
use crate::registry::RegistryError;
use crate::registry::postgres::config_for;
use crate::registry::postgres::pool::{self, Pool};

/// Worker connections.
const WORKERS: usize = 4;
/// The advisory lock serializing the tables' creation by replicas starting together.
const MIGRATION_LOCK: i64 = 0x6877_7369_676e_6472; // "hwsigndr"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hwsign_dir_users (
    seq       BIGSERIAL PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    doc       TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS hwsign_dir_users_name ON hwsign_dir_users (lower(user_name));
CREATE TABLE IF NOT EXISTS hwsign_dir_groups (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL UNIQUE,
    doc          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hwsign_dir_members (
    group_id TEXT NOT NULL REFERENCES hwsign_dir_groups(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES hwsign_dir_users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS hwsign_dir_members_user ON hwsign_dir_members (user_id);
CREATE TABLE IF NOT EXISTS hwsign_dir_device_owners (
    device  TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES hwsign_dir_users(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS hwsign_dir_device_owners_user ON hwsign_dir_device_owners (user_id);
CREATE TABLE IF NOT EXISTS hwsign_dir_sessions (
    id             TEXT PRIMARY KEY,
    device         TEXT NOT NULL,
    user_id        TEXT,
    issued_unix    BIGINT NOT NULL,
    expires_unix   BIGINT NOT NULL,
    last_seen_unix BIGINT NOT NULL,
    doc            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hwsign_dir_sessions_device ON hwsign_dir_sessions (device);
CREATE INDEX IF NOT EXISTS hwsign_dir_sessions_seen ON hwsign_dir_sessions (last_seen_unix);
CREATE TABLE IF NOT EXISTS hwsign_dir_session_ends (
    kind            TEXT NOT NULL CHECK (kind IN ('session', 'device', 'user', 'all')),
    value           TEXT NOT NULL,
    ended_unix      BIGINT NOT NULL,
    keep_until_unix BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS hwsign_dir_session_ends_value ON hwsign_dir_session_ends (kind, value);
CREATE TABLE IF NOT EXISTS hwsign_dir_recoveries (
    token_id     TEXT PRIMARY KEY,
    expires_unix BIGINT NOT NULL,
    used         BOOLEAN NOT NULL DEFAULT FALSE,
    doc          TEXT NOT NULL
);
";

/// A [`Directory`] in PostgreSQL, shared by every verifier of a fleet.
#[derive(Debug)]
pub struct PostgresDirectory {
    pool: Pool,
}

/// What a call returns: the database's failure (the pool may reconnect and retry), or the
/// directory's answer.
type Answer<T> = Result<Result<T, DirectoryError>, RegistryError>;

fn db(error: postgres::Error) -> RegistryError {
    RegistryError::Unavailable(Box::new(error))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, DirectoryError> {
    serde_json::to_string(value).map_err(|e| DirectoryError::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, DirectoryError> {
    serde_json::from_str(text).map_err(|e| DirectoryError::Corrupt(e.to_string()))
}

/// A uniqueness violation is a conflict on `name`; a foreign-key violation names a missing
/// user; anything else is the database's failure.
fn refused(error: postgres::Error, name: &str) -> Answer<u64> {
    match error.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
            Ok(Err(DirectoryError::Conflict(name.to_owned())))
        }
        Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => {
            Ok(Err(DirectoryError::NotFound(format!("user {name}"))))
        }
        _ => Err(db(error)),
    }
}

fn count(tx: &mut Transaction<'_>, table: &str) -> Result<usize, RegistryError> {
    let n: i64 = tx
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .map_err(db)?
        .get(0);
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn group_doc(group: &Group) -> Result<String, DirectoryError> {
    let mut bare = group.clone();
    bare.members = Vec::new();
    to_json(&bare)
}

fn write_members(tx: &mut Transaction<'_>, group: &Group) -> Answer<()> {
    tx.execute(
        "DELETE FROM hwsign_dir_members WHERE group_id = $1",
        &[&group.id],
    )
    .map_err(db)?;
    for member in &group.members {
        if let Err(error) = tx.execute(
            "INSERT INTO hwsign_dir_members (group_id, user_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
            &[&group.id, member],
        ) {
            return refused(error, member).map(|answer| answer.map(|_| ()));
        }
    }
    Ok(Ok(()))
}

fn load_group(tx: &mut Transaction<'_>, doc: &str) -> Answer<Group> {
    let mut group: Group = match from_json(doc) {
        Ok(group) => group,
        Err(error) => return Ok(Err(error)),
    };
    group.members = tx
        .query(
            "SELECT user_id FROM hwsign_dir_members WHERE group_id = $1 ORDER BY user_id",
            &[&group.id],
        )
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(Ok(group))
}

impl PostgresDirectory {
    /// Connects to the database at `url` (the registry's `postgres://` URL), creates the
    /// directory's tables when absent, and starts the worker connections.
    pub fn connect(url: &str) -> Result<Self, DirectoryError> {
        let unavailable = |e: RegistryError| DirectoryError::Unavailable(Box::new(e));
        let config = config_for(url).map_err(unavailable)?;
        let mut client = pool::connect(&config).map_err(|e| unavailable(db(e)))?;
        let mut tx = client.transaction().map_err(|e| unavailable(db(e)))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| unavailable(db(e)))?;
        tx.batch_execute(SCHEMA).map_err(|e| unavailable(db(e)))?;
        tx.commit().map_err(|e| unavailable(db(e)))?;
        drop(client);
        Ok(Self {
            pool: Pool::start(&config, WORKERS).map_err(unavailable)?,
        })
    }

    /// Runs `work` in a transaction on a worker's connection.
    fn run<T: Send + 'static>(
        &self,
        work: impl Fn(&mut Transaction<'_>) -> Answer<T> + Send + 'static,
    ) -> Result<T, DirectoryError> {
        let answer = self.pool.run(move |session| {
            let mut tx = session.client.transaction().map_err(db)?;
            let answer = work(&mut tx)?;
            if answer.is_ok() {
                tx.commit().map_err(db)?;
            }
            Ok(answer)
        });
        match answer {
            Ok(answer) => answer,
            Err(error) => Err(DirectoryError::Unavailable(Box::new(error))),
        }
    }

    /// One `doc` column by `sql` taking `param`, parsed.
    fn doc<T: DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        param: &str,
    ) -> Result<Option<T>, DirectoryError> {
        let param = param.to_owned();
        self.run(move |tx| {
            let row = tx.query_opt(sql, &[&param]).map_err(db)?;
            Ok(row
                .map(|row| from_json::<T>(&row.get::<_, String>(0)))
                .transpose())
        })
    }

    /// Every `doc` of `sql` (one parameter), parsed.
    fn docs<T: DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        param: Option<i64>,
    ) -> Result<Vec<T>, DirectoryError> {
        self.run(move |tx| {
            let rows = match param {
                Some(param) => tx.query(sql, &[&param]),
                None => tx.query(sql, &[]),
            }
            .map_err(db)?;
            Ok(rows
                .iter()
                .map(|row| from_json::<T>(&row.get::<_, String>(0)))
                .collect())
        })
    }

    /// The strings of `sql`'s first column (one text parameter).
    fn strings(&self, sql: &'static str, param: &str) -> Result<Vec<String>, DirectoryError> {
        let param = param.to_owned();
        self.run(move |tx| {
            Ok(Ok(tx
                .query(sql, &[&param])
                .map_err(db)?
                .iter()
                .map(|row| row.get(0))
                .collect()))
        })
    }

    /// Rows `sql` (one text parameter) changed.
    fn execute(&self, sql: &'static str, param: &str) -> Result<u64, DirectoryError> {
        let param = param.to_owned();
        self.run(move |tx| Ok(Ok(tx.execute(sql, &[&param]).map_err(db)?)))
    }
}

impl Directory for PostgresDirectory {
    fn create_user(&self, user: &User) -> Result<(), DirectoryError> {
        user.validate()?;
        let user = user.clone();
        let doc = to_json(&user)?;
        self.run(move |tx| {
            if count(tx, "hwsign_dir_users")? >= MAX_USERS {
                return Ok(Err(DirectoryError::Full("users")));
            }
            match tx.execute(
                "INSERT INTO hwsign_dir_users (id, user_name, doc) VALUES ($1, $2, $3)",
                &[&user.id, &user.user_name, &doc],
            ) {
                Ok(_) => Ok(Ok(())),
                Err(error) => refused(error, &user.user_name).map(|a| a.map(|_| ())),
            }
        })
    }

    fn replace_user(&self, user: &User) -> Result<(), DirectoryError> {
        user.validate()?;
        let user = user.clone();
        let doc = to_json(&user)?;
        self.run(move |tx| {
            match tx.execute(
                "UPDATE hwsign_dir_users SET user_name = $2, doc = $3 WHERE id = $1",
                &[&user.id, &user.user_name, &doc],
            ) {
                Ok(0) => Ok(Err(DirectoryError::NotFound(format!("user {}", user.id)))),
                Ok(_) => Ok(Ok(())),
                Err(error) => refused(error, &user.user_name).map(|a| a.map(|_| ())),
            }
        })
    }

    fn user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        self.doc("SELECT doc FROM hwsign_dir_users WHERE id = $1", id)
    }

    fn user_by_name(&self, user_name: &str) -> Result<Option<User>, DirectoryError> {
        self.doc(
            "SELECT doc FROM hwsign_dir_users WHERE lower(user_name) = lower($1)",
            user_name,
        )
    }

    fn list_users(&self) -> Result<Vec<User>, DirectoryError> {
        self.docs("SELECT doc FROM hwsign_dir_users ORDER BY seq", None)
    }

    fn delete_user(&self, id: &str) -> Result<bool, DirectoryError> {
        Ok(self.execute("DELETE FROM hwsign_dir_users WHERE id = $1", id)? > 0)
    }

    fn create_group(&self, group: &Group) -> Result<(), DirectoryError> {
        group.validate()?;
        let group = group.clone();
        let doc = group_doc(&group)?;
        self.run(move |tx| {
            if count(tx, "hwsign_dir_groups")? >= MAX_GROUPS {
                return Ok(Err(DirectoryError::Full("groups")));
            }
            if let Err(error) = tx.execute(
                "INSERT INTO hwsign_dir_groups (id, display_name, doc) VALUES ($1, $2, $3)",
                &[&group.id, &group.display_name, &doc],
            ) {
                return refused(error, &group.display_name).map(|a| a.map(|_| ()));
            }
            write_members(tx, &group)
        })
    }

    fn replace_group(&self, group: &Group) -> Result<(), DirectoryError> {
        group.validate()?;
        let group = group.clone();
        let doc = group_doc(&group)?;
        self.run(move |tx| {
            match tx.execute(
                "UPDATE hwsign_dir_groups SET display_name = $2, doc = $3 WHERE id = $1",
                &[&group.id, &group.display_name, &doc],
            ) {
                Ok(0) => return Ok(Err(DirectoryError::NotFound(format!("group {}", group.id)))),
                Ok(_) => {}
                Err(error) => {
                    return refused(error, &group.display_name).map(|a| a.map(|_| ()));
                }
            }
            write_members(tx, &group)
        })
    }

    fn group(&self, id: &str) -> Result<Option<Group>, DirectoryError> {
        let id = id.to_owned();
        self.run(move |tx| {
            let row = tx
                .query_opt("SELECT doc FROM hwsign_dir_groups WHERE id = $1", &[&id])
                .map_err(db)?;
            match row {
                Some(row) => Ok(load_group(tx, &row.get::<_, String>(0))?.map(Some)),
                None => Ok(Ok(None)),
            }
        })
    }

    fn list_groups(&self) -> Result<Vec<Group>, DirectoryError> {
        self.run(move |tx| {
            let docs: Vec<String> = tx
                .query("SELECT doc FROM hwsign_dir_groups ORDER BY seq", &[])
                .map_err(db)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let mut groups = Vec::with_capacity(docs.len());
            for doc in &docs {
                match load_group(tx, doc)? {
                    Ok(group) => groups.push(group),
                    Err(error) => return Ok(Err(error)),
                }
            }
            Ok(Ok(groups))
        })
    }

    fn delete_group(&self, id: &str) -> Result<bool, DirectoryError> {
        Ok(self.execute("DELETE FROM hwsign_dir_groups WHERE id = $1", id)? > 0)
    }

    fn groups_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError> {
        self.strings(
            "SELECT g.display_name FROM hwsign_dir_members m \
             JOIN hwsign_dir_groups g ON g.id = m.group_id \
             WHERE m.user_id = $1 ORDER BY g.display_name",
            user_id,
        )
    }

    fn assign_device(&self, device: &str, user_id: &str) -> Result<(), DirectoryError> {
        let (device, user_id) = (device.to_owned(), user_id.to_owned());
        self.run(move |tx| {
            match tx.execute(
                "INSERT INTO hwsign_dir_device_owners (device, user_id) VALUES ($1, $2) \
                 ON CONFLICT (device) DO UPDATE SET user_id = excluded.user_id",
                &[&device, &user_id],
            ) {
                Ok(_) => Ok(Ok(())),
                Err(error) => refused(error, &user_id).map(|a| a.map(|_| ())),
            }
        })
    }

    fn device_owner(&self, device: &str) -> Result<Option<String>, DirectoryError> {
        Ok(self
            .strings(
                "SELECT user_id FROM hwsign_dir_device_owners WHERE device = $1",
                device,
            )?
            .into_iter()
            .next())
    }

    fn devices_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError> {
        self.strings(
            "SELECT device FROM hwsign_dir_device_owners WHERE user_id = $1 ORDER BY device",
            user_id,
        )
    }

    fn touch_session(
        &self,
        session: &Session,
        limits: &SessionLimits,
    ) -> Result<(), DirectoryError> {
        let session = session.clone();
        let limits = *limits;
        let doc = to_json(&session)?;
        self.run(move |tx| {
            // One writer of the session table at a time: the bounds are checked, then kept.
            tx.execute("LOCK TABLE hwsign_dir_sessions IN EXCLUSIVE MODE", &[])
                .map_err(db)?;
            let known = tx
                .query_opt(
                    "SELECT 1 FROM hwsign_dir_sessions WHERE id = $1",
                    &[&session.id],
                )
                .map_err(db)?
                .is_some();
            if !known {
                let of_device: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM hwsign_dir_sessions WHERE device = $1",
                        &[&session.device],
                    )
                    .map_err(db)?
                    .get(0);
                if usize::try_from(of_device).unwrap_or(usize::MAX) >= limits.max_per_device {
                    tx.execute(
                        "DELETE FROM hwsign_dir_sessions WHERE id = (SELECT id FROM \
                         hwsign_dir_sessions WHERE device = $1 ORDER BY last_seen_unix LIMIT 1)",
                        &[&session.device],
                    )
                    .map_err(db)?;
                }
                if count(tx, "hwsign_dir_sessions")? >= limits.max_sessions {
                    tx.execute(
                        "DELETE FROM hwsign_dir_sessions WHERE expires_unix < $1",
                        &[&session.last_seen_unix],
                    )
                    .map_err(db)?;
                }
                if count(tx, "hwsign_dir_sessions")? >= limits.max_sessions {
                    tx.execute(
                        "DELETE FROM hwsign_dir_sessions WHERE id = (SELECT id FROM \
                         hwsign_dir_sessions ORDER BY last_seen_unix LIMIT 1)",
                        &[],
                    )
                    .map_err(db)?;
                }
            }
            tx.execute(
                "INSERT INTO hwsign_dir_sessions \
                 (id, device, user_id, issued_unix, expires_unix, last_seen_unix, doc) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                 expires_unix = excluded.expires_unix, \
                 last_seen_unix = excluded.last_seen_unix, doc = excluded.doc",
                &[
                    &session.id,
                    &session.device,
                    &session.user_id,
                    &session.issued_unix,
                    &session.expires_unix,
                    &session.last_seen_unix,
                    &doc,
                ],
            )
            .map_err(db)?;
            Ok(Ok(()))
        })
    }

    fn sessions(&self, now_unix: i64) -> Result<Vec<Session>, DirectoryError> {
        self.docs(
            "SELECT doc FROM hwsign_dir_sessions WHERE expires_unix >= $1 \
             ORDER BY last_seen_unix DESC, id",
            Some(now_unix),
        )
    }

    fn end_sessions(&self, end: &SessionEnd, now_unix: i64) -> Result<u64, DirectoryError> {
        let kind = end.scope.kind();
        let value = end.scope.value().to_owned();
        let (ended, keep) = (end.ended_unix, end.keep_until_unix);
        self.run(move |tx| {
            tx.execute(
                "DELETE FROM hwsign_dir_session_ends WHERE keep_until_unix < $1",
                &[&now_unix],
            )
            .map_err(db)?;
            if count(tx, "hwsign_dir_session_ends")? >= MAX_SESSION_ENDS {
                return Ok(Err(DirectoryError::Full("force-logout records")));
            }
            tx.execute(
                "INSERT INTO hwsign_dir_session_ends (kind, value, ended_unix, keep_until_unix) \
                 VALUES ($1, $2, $3, $4)",
                &[&kind, &value, &ended, &keep],
            )
            .map_err(db)?;
            let removed = match kind {
                "session" => tx.execute(
                    "DELETE FROM hwsign_dir_sessions WHERE id = $1 AND issued_unix <= $2",
                    &[&value, &ended],
                ),
                "device" => tx.execute(
                    "DELETE FROM hwsign_dir_sessions WHERE device = $1 AND issued_unix <= $2",
                    &[&value, &ended],
                ),
                "user" => tx.execute(
                    "DELETE FROM hwsign_dir_sessions WHERE user_id = $1 AND issued_unix <= $2",
                    &[&value, &ended],
                ),
                _ => tx.execute(
                    "DELETE FROM hwsign_dir_sessions WHERE issued_unix <= $1",
                    &[&ended],
                ),
            }
            .map_err(db)?;
            Ok(Ok(removed))
        })
    }

    fn session_ended(&self, session: &SessionRef<'_>) -> Result<bool, DirectoryError> {
        let issued = session.issued_unix;
        let id = session.id.to_owned();
        let device = session.device.to_owned();
        let user = session.user_id.unwrap_or("").to_owned();
        self.run(move |tx| {
            let row = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM hwsign_dir_session_ends WHERE ended_unix >= $1 \
                     AND ((kind = 'session' AND value = $2) OR (kind = 'device' AND value = $3) \
                     OR (kind = 'user' AND value = $4) OR kind = 'all'))",
                    &[&issued, &id, &device, &user],
                )
                .map_err(db)?;
            Ok(Ok(row.get(0)))
        })
    }

    fn put_recovery(&self, grant: &RecoveryGrant) -> Result<(), DirectoryError> {
        let grant = grant.clone();
        let doc = to_json(&grant)?;
        self.run(move |tx| {
            tx.execute(
                "DELETE FROM hwsign_dir_recoveries WHERE expires_unix < $1 AND NOT used",
                &[&grant.issued_unix],
            )
            .map_err(db)?;
            if count(tx, "hwsign_dir_recoveries")? >= MAX_USERS {
                return Ok(Err(DirectoryError::Full("recovery grants")));
            }
            match tx.execute(
                "INSERT INTO hwsign_dir_recoveries (token_id, expires_unix, used, doc) \
                 VALUES ($1, $2, FALSE, $3)",
                &[&grant.token_id, &grant.expires_unix, &doc],
            ) {
                Ok(_) => Ok(Ok(())),
                Err(error) => refused(error, &grant.token_id).map(|a| a.map(|_| ())),
            }
        })
    }

    fn recovery(&self, token_id: &str) -> Result<Option<RecoveryGrant>, DirectoryError> {
        self.doc(
            "SELECT doc FROM hwsign_dir_recoveries WHERE token_id = $1",
            token_id,
        )
    }

    fn use_recovery(&self, token_id: &str, device: &str) -> Result<bool, DirectoryError> {
        let (token_id, device) = (token_id.to_owned(), device.to_owned());
        self.run(move |tx| {
            let row = tx
                .query_opt(
                    "SELECT used, doc FROM hwsign_dir_recoveries WHERE token_id = $1 FOR UPDATE",
                    &[&token_id],
                )
                .map_err(db)?;
            let Some(row) = row else {
                return Ok(Err(DirectoryError::NotFound(format!(
                    "recovery {token_id}"
                ))));
            };
            if row.get::<_, bool>(0) {
                return Ok(Ok(false));
            }
            let mut grant: RecoveryGrant = match from_json(&row.get::<_, String>(1)) {
                Ok(grant) => grant,
                Err(error) => return Ok(Err(error)),
            };
            grant.used_by_device = Some(device.clone());
            let doc = match to_json(&grant) {
                Ok(doc) => doc,
                Err(error) => return Ok(Err(error)),
            };
            tx.execute(
                "UPDATE hwsign_dir_recoveries SET used = TRUE, doc = $2 WHERE token_id = $1",
                &[&token_id, &doc],
            )
            .map_err(db)?;
            Ok(Ok(true))
        })
    }
}
