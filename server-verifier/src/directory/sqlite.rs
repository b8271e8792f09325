//! A [`Directory`] in SQLite: `dir_*` tables beside the registry's in the same file (WAL), so
//! every replica on a host sharing the file sees a force logout at its next request.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    Directory, DirectoryError, Group, MAX_GROUPS, MAX_SESSION_ENDS, MAX_USERS, RecoveryGrant,
    Session, SessionEnd, SessionLimits, SessionRef, User,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dir_users (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    doc       TEXT NOT NULL  -- JSON User
) STRICT;
CREATE TABLE IF NOT EXISTS dir_groups (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL UNIQUE,
    doc          TEXT NOT NULL  -- JSON Group without members
) STRICT;
CREATE TABLE IF NOT EXISTS dir_members (
    group_id TEXT NOT NULL REFERENCES dir_groups(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES dir_users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
) STRICT;
CREATE INDEX IF NOT EXISTS dir_members_user ON dir_members(user_id);
CREATE TABLE IF NOT EXISTS dir_device_owners (
    device  TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES dir_users(id) ON DELETE CASCADE
) STRICT;
CREATE INDEX IF NOT EXISTS dir_device_owners_user ON dir_device_owners(user_id);
CREATE TABLE IF NOT EXISTS dir_sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    device         TEXT NOT NULL,
    user_id        TEXT,
    issued_unix    INTEGER NOT NULL,
    expires_unix   INTEGER NOT NULL,
    last_seen_unix INTEGER NOT NULL,
    doc            TEXT NOT NULL  -- JSON Session
) STRICT;
CREATE INDEX IF NOT EXISTS dir_sessions_device ON dir_sessions(device);
CREATE INDEX IF NOT EXISTS dir_sessions_seen ON dir_sessions(last_seen_unix);
CREATE TABLE IF NOT EXISTS dir_session_ends (
    kind            TEXT NOT NULL CHECK (kind IN ('session', 'device', 'user', 'all')),
    value           TEXT NOT NULL,
    ended_unix      INTEGER NOT NULL,
    keep_until_unix INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS dir_session_ends_value ON dir_session_ends(kind, value);
CREATE TABLE IF NOT EXISTS dir_recoveries (
    token_id     TEXT PRIMARY KEY NOT NULL,
    expires_unix INTEGER NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0,
    doc          TEXT NOT NULL  -- JSON RecoveryGrant
) STRICT;
";

/// A [`Directory`] in a SQLite file (usually the registry's).
#[derive(Debug)]
pub struct SqliteDirectory {
    conn: Mutex<Connection>,
}

fn to_json<T: Serialize>(value: &T) -> Result<String, DirectoryError> {
    serde_json::to_string(value).map_err(|e| DirectoryError::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, DirectoryError> {
    serde_json::from_str(text).map_err(|e| DirectoryError::Corrupt(e.to_string()))
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn is_foreign_key_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

/// A uniqueness violation is a conflict on `name`; anything else a store failure.
fn conflict(error: rusqlite::Error, name: &str) -> DirectoryError {
    if is_unique_violation(&error) {
        DirectoryError::Conflict(name.to_owned())
    } else {
        error.into()
    }
}

/// A foreign-key violation names a user that does not exist.
fn missing_user(error: rusqlite::Error, user_id: &str) -> DirectoryError {
    if is_foreign_key_violation(&error) {
        DirectoryError::NotFound(format!("user {user_id}"))
    } else {
        error.into()
    }
}

impl SqliteDirectory {
    /// Opens the directory tables in the SQLite file at `path`, creating the file (mode 0600)
    /// and the tables when absent.
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        crate::registry::sqlite::create_private_file(path)
            .map_err(|source| DirectoryError::Unavailable(Box::new(source)))?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, DirectoryError> {
        self.conn.lock().map_err(|_| DirectoryError::Poisoned)
    }

    fn count(conn: &Connection, table: &str) -> Result<usize, DirectoryError> {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn write_members(conn: &Connection, group: &Group) -> Result<(), DirectoryError> {
        conn.execute(
            "DELETE FROM dir_members WHERE group_id = ?1",
            params![group.id],
        )?;
        for member in &group.members {
            conn.execute(
                "INSERT OR IGNORE INTO dir_members (group_id, user_id) VALUES (?1, ?2)",
                params![group.id, member],
            )
            .map_err(|e| missing_user(e, member))?;
        }
        Ok(())
    }

    fn load_group(conn: &Connection, doc: &str) -> Result<Group, DirectoryError> {
        let mut group: Group = from_json(doc)?;
        let mut statement = conn.prepare_cached(
            "SELECT user_id FROM dir_members WHERE group_id = ?1 ORDER BY user_id",
        )?;
        group.members = statement
            .query_map(params![group.id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(group)
    }
}

fn group_doc(group: &Group) -> Result<String, DirectoryError> {
    let mut bare = group.clone();
    bare.members = Vec::new();
    to_json(&bare)
}

impl Directory for SqliteDirectory {
    fn create_user(&self, user: &User) -> Result<(), DirectoryError> {
        user.validate()?;
        let conn = self.conn()?;
        if Self::count(&conn, "dir_users")? >= MAX_USERS {
            return Err(DirectoryError::Full("users"));
        }
        conn.execute(
            "INSERT INTO dir_users (id, user_name, doc) VALUES (?1, ?2, ?3)",
            params![user.id, user.user_name, to_json(user)?],
        )
        .map_err(|e| conflict(e, &user.user_name))?;
        Ok(())
    }

    fn replace_user(&self, user: &User) -> Result<(), DirectoryError> {
        user.validate()?;
        let changed = self
            .conn()?
            .execute(
                "UPDATE dir_users SET user_name = ?2, doc = ?3 WHERE id = ?1",
                params![user.id, user.user_name, to_json(user)?],
            )
            .map_err(|e| conflict(e, &user.user_name))?;
        if changed == 0 {
            return Err(DirectoryError::NotFound(format!("user {}", user.id)));
        }
        Ok(())
    }

    fn user(&self, id: &str) -> Result<Option<User>, DirectoryError> {
        let doc: Option<String> = self
            .conn()?
            .prepare_cached("SELECT doc FROM dir_users WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        doc.as_deref().map(from_json).transpose()
    }

    fn user_by_name(&self, user_name: &str) -> Result<Option<User>, DirectoryError> {
        let doc: Option<String> = self
            .conn()?
            .prepare_cached("SELECT doc FROM dir_users WHERE user_name = ?1")?
            .query_row(params![user_name], |r| r.get(0))
            .optional()?;
        doc.as_deref().map(from_json).transpose()
    }

    fn list_users(&self) -> Result<Vec<User>, DirectoryError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached("SELECT doc FROM dir_users ORDER BY seq")?;
        let docs: Vec<String> = statement
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        docs.iter().map(|doc| from_json(doc)).collect()
    }

    fn delete_user(&self, id: &str) -> Result<bool, DirectoryError> {
        Ok(self
            .conn()?
            .execute("DELETE FROM dir_users WHERE id = ?1", params![id])?
            > 0)
    }

    fn create_group(&self, group: &Group) -> Result<(), DirectoryError> {
        group.validate()?;
        let mut conn = self.conn()?;
        if Self::count(&conn, "dir_groups")? >= MAX_GROUPS {
            return Err(DirectoryError::Full("groups"));
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO dir_groups (id, display_name, doc) VALUES (?1, ?2, ?3)",
            params![group.id, group.display_name, group_doc(group)?],
        )
        .map_err(|e| conflict(e, &group.display_name))?;
        Self::write_members(&tx, group)?;
        tx.commit()?;
        Ok(())
    }

    fn replace_group(&self, group: &Group) -> Result<(), DirectoryError> {
        group.validate()?;
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx
            .execute(
                "UPDATE dir_groups SET display_name = ?2, doc = ?3 WHERE id = ?1",
                params![group.id, group.display_name, group_doc(group)?],
            )
            .map_err(|e| conflict(e, &group.display_name))?;
        if changed == 0 {
            return Err(DirectoryError::NotFound(format!("group {}", group.id)));
        }
        Self::write_members(&tx, group)?;
        tx.commit()?;
        Ok(())
    }

    fn group(&self, id: &str) -> Result<Option<Group>, DirectoryError> {
        let conn = self.conn()?;
        let doc: Option<String> = conn
            .prepare_cached("SELECT doc FROM dir_groups WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        doc.map(|doc| Self::load_group(&conn, &doc)).transpose()
    }

    fn list_groups(&self) -> Result<Vec<Group>, DirectoryError> {
        let conn = self.conn()?;
        let docs: Vec<String> = conn
            .prepare_cached("SELECT doc FROM dir_groups ORDER BY seq")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        docs.iter()
            .map(|doc| Self::load_group(&conn, doc))
            .collect()
    }

    fn delete_group(&self, id: &str) -> Result<bool, DirectoryError> {
        Ok(self
            .conn()?
            .execute("DELETE FROM dir_groups WHERE id = ?1", params![id])?
            > 0)
    }

    fn groups_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(
            "SELECT g.display_name FROM dir_members m JOIN dir_groups g ON g.id = m.group_id \
             WHERE m.user_id = ?1 ORDER BY g.display_name",
        )?;
        let names = statement
            .query_map(params![user_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(names)
    }

    fn assign_device(&self, device: &str, user_id: &str) -> Result<(), DirectoryError> {
        self.conn()?
            .execute(
                "INSERT INTO dir_device_owners (device, user_id) VALUES (?1, ?2) \
                 ON CONFLICT (device) DO UPDATE SET user_id = excluded.user_id",
                params![device, user_id],
            )
            .map_err(|e| missing_user(e, user_id))?;
        Ok(())
    }

    fn device_owner(&self, device: &str) -> Result<Option<String>, DirectoryError> {
        Ok(self
            .conn()?
            .prepare_cached("SELECT user_id FROM dir_device_owners WHERE device = ?1")?
            .query_row(params![device], |r| r.get(0))
            .optional()?)
    }

    fn devices_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(
            "SELECT device FROM dir_device_owners WHERE user_id = ?1 ORDER BY device",
        )?;
        let devices = statement
            .query_map(params![user_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(devices)
    }

    fn touch_session(
        &self,
        session: &Session,
        limits: &SessionLimits,
    ) -> Result<(), DirectoryError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: bool = tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM dir_sessions WHERE id = ?1)")?
            .query_row(params![session.id], |r| r.get(0))?;
        if !known {
            let of_device: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM dir_sessions WHERE device = ?1")?
                .query_row(params![session.device], |r| r.get(0))?;
            if usize::try_from(of_device).unwrap_or(usize::MAX) >= limits.max_per_device {
                tx.execute(
                    "DELETE FROM dir_sessions WHERE id = (SELECT id FROM dir_sessions \
                     WHERE device = ?1 ORDER BY last_seen_unix LIMIT 1)",
                    params![session.device],
                )?;
            }
            if Self::count(&tx, "dir_sessions")? >= limits.max_sessions {
                tx.execute(
                    "DELETE FROM dir_sessions WHERE expires_unix < ?1",
                    params![session.last_seen_unix],
                )?;
            }
            if Self::count(&tx, "dir_sessions")? >= limits.max_sessions {
                tx.execute(
                    "DELETE FROM dir_sessions WHERE id = (SELECT id FROM dir_sessions \
                     ORDER BY last_seen_unix LIMIT 1)",
                    [],
                )?;
            }
        }
        tx.execute(
            "INSERT INTO dir_sessions \
             (id, device, user_id, issued_unix, expires_unix, last_seen_unix, doc) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
             expires_unix = excluded.expires_unix, last_seen_unix = excluded.last_seen_unix, \
             doc = excluded.doc",
            params![
                session.id,
                session.device,
                session.user_id,
                session.issued_unix,
                session.expires_unix,
                session.last_seen_unix,
                to_json(session)?
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn sessions(&self, now_unix: i64) -> Result<Vec<Session>, DirectoryError> {
        let conn = self.conn()?;
        let docs: Vec<String> = conn
            .prepare_cached(
                "SELECT doc FROM dir_sessions WHERE expires_unix >= ?1 \
                 ORDER BY last_seen_unix DESC, id",
            )?
            .query_map(params![now_unix], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        docs.iter().map(|doc| from_json(doc)).collect()
    }

    fn end_sessions(&self, end: &SessionEnd, now_unix: i64) -> Result<u64, DirectoryError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM dir_session_ends WHERE keep_until_unix < ?1",
            params![now_unix],
        )?;
        if Self::count(&tx, "dir_session_ends")? >= MAX_SESSION_ENDS {
            return Err(DirectoryError::Full("force-logout records"));
        }
        tx.execute(
            "INSERT INTO dir_session_ends (kind, value, ended_unix, keep_until_unix) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                end.scope.kind(),
                end.scope.value(),
                end.ended_unix,
                end.keep_until_unix
            ],
        )?;
        let value = end.scope.value();
        let removed = match end.scope.kind() {
            "session" => tx.execute(
                "DELETE FROM dir_sessions WHERE id = ?1 AND issued_unix <= ?2",
                params![value, end.ended_unix],
            )?,
            "device" => tx.execute(
                "DELETE FROM dir_sessions WHERE device = ?1 AND issued_unix <= ?2",
                params![value, end.ended_unix],
            )?,
            "user" => tx.execute(
                "DELETE FROM dir_sessions WHERE user_id = ?1 AND issued_unix <= ?2",
                params![value, end.ended_unix],
            )?,
            _ => tx.execute(
                "DELETE FROM dir_sessions WHERE issued_unix <= ?1",
                params![end.ended_unix],
            )?,
        };
        tx.commit()?;
        Ok(u64::try_from(removed).unwrap_or(u64::MAX))
    }

    fn session_ended(&self, session: &SessionRef<'_>) -> Result<bool, DirectoryError> {
        Ok(self
            .conn()?
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM dir_session_ends WHERE ended_unix >= ?1 AND (\
                 (kind = 'session' AND value = ?2) OR (kind = 'device' AND value = ?3) OR \
                 (kind = 'user' AND value = ?4) OR kind = 'all'))",
            )?
            .query_row(
                params![
                    session.issued_unix,
                    session.id,
                    session.device,
                    session.user_id.unwrap_or("")
                ],
                |r| r.get(0),
            )?)
    }

    fn put_recovery(&self, grant: &RecoveryGrant) -> Result<(), DirectoryError> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM dir_recoveries WHERE expires_unix < ?1 AND used = 0",
            params![grant.issued_unix],
        )?;
        if Self::count(&conn, "dir_recoveries")? >= MAX_USERS {
            return Err(DirectoryError::Full("recovery grants"));
        }
        conn.execute(
            "INSERT INTO dir_recoveries (token_id, expires_unix, used, doc) VALUES (?1, ?2, 0, ?3)",
            params![grant.token_id, grant.expires_unix, to_json(grant)?],
        )
        .map_err(|e| conflict(e, &grant.token_id))?;
        Ok(())
    }

    fn recovery(&self, token_id: &str) -> Result<Option<RecoveryGrant>, DirectoryError> {
        let doc: Option<String> = self
            .conn()?
            .prepare_cached("SELECT doc FROM dir_recoveries WHERE token_id = ?1")?
            .query_row(params![token_id], |r| r.get(0))
            .optional()?;
        doc.as_deref().map(from_json).transpose()
    }

    fn use_recovery(&self, token_id: &str, device: &str) -> Result<bool, DirectoryError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(bool, String)> = tx
            .query_row(
                "SELECT used, doc FROM dir_recoveries WHERE token_id = ?1",
                params![token_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((used, doc)) = row else {
            return Err(DirectoryError::NotFound(format!("recovery {token_id}")));
        };
        if used {
            return Ok(false);
        }
        let mut grant: RecoveryGrant = from_json(&doc)?;
        grant.used_by_device = Some(device.to_owned());
        tx.execute(
            "UPDATE dir_recoveries SET used = 1, doc = ?2 WHERE token_id = ?1",
            params![token_id, to_json(&grant)?],
        )?;
        tx.commit()?;
        Ok(true)
    }
}
