//! People and their sessions (issue 13, docs/ADMIN.md): users, groups, which user a device
//! belongs to, the sessions devices hold, the force-logout records that end them, and the
//! recovery grants an administrator issues.
//!
//! [`Directory`] is synchronous like [`KeyRegistry`](crate::KeyRegistry): the verifier asks it
//! once per request whether the request's session was ended ([`SessionGuard`]), and that answer
//! is never cached, so an ended session is refused by every replica sharing the store at once.
//! Implementations: [`MemoryDirectory`] (tests, one process) and [`SqliteDirectory`] (tables in
//! the registry's SQLite file, shared by the replicas on one host).
//!
//! A *device* here is what owns keys: the enrolled device id of a TPM key, or the key id itself
//! for a key without a device ([`device_ref`]).

pub mod deprovision;
mod memory;
pub(crate) mod people;
#[cfg(feature = "postgres")]
mod postgres;
mod scim;
pub(crate) mod sessions;
mod sqlite;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::registry::RegisteredKey;

pub use memory::MemoryDirectory;
#[cfg(feature = "postgres")]
pub use postgres::PostgresDirectory;
pub use scim::{MAX_SCIM_BODY, MAX_SCIM_COUNT, SCIM_PREFIX, ScimConfig, scim_router};
pub use sessions::{SessionClient, SessionGuard, SessionLimits};
pub use sqlite::SqliteDirectory;

/// Most users a directory holds.
pub const MAX_USERS: usize = 100_000;
/// Most groups a directory holds.
pub const MAX_GROUPS: usize = 10_000;
/// Most members one group lists.
pub const MAX_GROUP_MEMBERS: usize = 10_000;
/// Longest user name, display name or external id, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most force-logout records kept at once (each lives until the sessions it ends have expired).
pub const MAX_SESSION_ENDS: usize = 100_000;

/// A person, as the identity provider describes them (SCIM `User`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Our id (random, opaque).
    pub id: String,
    /// The unique login name (`userName`), compared case-insensitively.
    pub user_name: String,
    /// A name to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The identity provider's id for this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Deprovisioned users are inactive: their devices are revoked and sessions ended.
    pub active: bool,
    /// When the user was created, seconds since the epoch.
    pub created_unix: i64,
    /// When the user last changed.
    pub updated_unix: i64,
}

/// A group of users (SCIM `Group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Our id (random, opaque).
    pub id: String,
    /// The group's unique name.
    pub display_name: String,
    /// The identity provider's id for this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Member user ids.
    pub members: Vec<String>,
    /// When the group was created, seconds since the epoch.
    pub created_unix: i64,
    /// When the group last changed.
    pub updated_unix: i64,
}

/// A device's session: a delegated session key, or (for a strict key) the key's recent activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session key's id (delegated), or `strict:<key id>`.
    pub id: String,
    /// The device key behind the session.
    pub key_id: String,
    /// The device ([`device_ref`]).
    pub device: String,
    /// The device's user, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The audience the session signs for.
    pub audience: String,
    /// Whether a delegated session key signs (false: the hardware key itself).
    pub delegated: bool,
    /// Delegated: the statement's not-before; strict: the first request's date.
    pub issued_unix: i64,
    /// Delegated: the statement's not-after; strict: the last request's date plus the window.
    pub expires_unix: i64,
    /// When a request of the session was last seen (updated at most every
    /// [`SessionLimits::touch_interval_secs`]).
    pub last_seen_unix: i64,
    /// The client's address as the verifier saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// The client's `User-Agent`, truncated to 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// Which sessions a force logout ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "id", rename_all = "snake_case")]
pub enum SessionScope {
    /// One session, by id.
    Session(String),
    /// Every session of a device ([`device_ref`]).
    Device(String),
    /// Every session of a user's devices.
    User(String),
    /// Every session (with [`SessionEnd::ended_unix`]: every one issued at or before it).
    All,
}

impl SessionScope {
    fn kind(&self) -> &'static str {
        match self {
            Self::Session(_) => "session",
            Self::Device(_) => "device",
            Self::User(_) => "user",
            Self::All => "all",
        }
    }

    fn value(&self) -> &str {
        match self {
            Self::Session(id) | Self::Device(id) | Self::User(id) => id,
            Self::All => "",
        }
    }
}

/// A force-logout record: sessions in `scope` issued at or before `ended_unix` are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    /// Which sessions.
    pub scope: SessionScope,
    /// Sessions issued at or before this second are ended; later ones are not.
    pub ended_unix: i64,
    /// When the record may be forgotten: every session it ends has expired by then.
    pub keep_until_unix: i64,
}

impl SessionEnd {
    /// Whether this record ends `session`.
    pub fn ends(&self, session: &SessionRef<'_>) -> bool {
        if session.issued_unix > self.ended_unix {
            return false;
        }
        match &self.scope {
            SessionScope::Session(id) => id == session.id,
            SessionScope::Device(device) => device == session.device,
            SessionScope::User(user) => session.user_id == Some(user.as_str()),
            SessionScope::All => true,
        }
    }
}

/// What the force-logout check needs to know about a request's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef<'a> {
    /// The session id ([`Session::id`]).
    pub id: &'a str,
    /// The device.
    pub device: &'a str,
    /// The device's user.
    pub user_id: Option<&'a str>,
    /// When the session was issued.
    pub issued_unix: i64,
}

/// A single-use recovery enrollment token's binding to a user (the token itself is an
/// enrollment token: only its hash is stored, by the enrollment store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryGrant {
    /// The enrollment token's id.
    pub token_id: String,
    /// The user the enrolled device is assigned to.
    pub user_id: String,
    /// The administrator key that issued it.
    pub issued_by: String,
    /// When it was issued.
    pub issued_unix: i64,
    /// When it expires.
    pub expires_unix: i64,
    /// The device enrolled with it, once used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by_device: Option<String>,
}

/// The device a key belongs to: its enrolled device id, or the key id for a key without one.
pub fn device_ref(key: &RegisteredKey) -> &str {
    key.device_id.as_deref().unwrap_or(&key.key_id)
}

/// The active user a device belongs to and the names of that user's groups: what route rules
/// and policies (Cedar principal parents) take from the directory. `None` when the device has no
/// user or the user is deprovisioned.
pub fn principal_of(
    directory: &dyn Directory,
    device: &str,
) -> Result<Option<(User, Vec<String>)>, DirectoryError> {
    let Some(user_id) = directory.device_owner(device)? else {
        return Ok(None);
    };
    match directory.user(&user_id)? {
        Some(user) if user.active => {
            let groups = directory.groups_of(&user.id)?;
            Ok(Some((user, groups)))
        }
        _ => Ok(None),
    }
}

/// A new random id (32 hex digits).
pub fn new_id() -> Result<String, DirectoryError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| DirectoryError::Unavailable(Box::new(e)))?;
    Ok(hex::encode(bytes))
}

/// Why a directory operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// Another user or group already has this name (or id).
    #[error("already exists: {0}")]
    Conflict(String),
    /// No such user, group or session.
    #[error("not found: {0}")]
    NotFound(String),
    /// A field is out of bounds.
    #[error("invalid directory entry: {0}")]
    Invalid(&'static str),
    /// A table is full.
    #[error("directory is full: {0}")]
    Full(&'static str),
    /// The store holds something this code cannot read.
    #[error("directory store is corrupt: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("directory store failed")]
    Store(#[from] rusqlite::Error),
    /// A lock was poisoned by a panic in another thread.
    #[error("directory lock poisoned")]
    Poisoned,
    /// The store cannot be reached now.
    #[error("directory store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The directory URL is not one this build can open.
    #[error("invalid directory URL: {0}")]
    InvalidUrl(&'static str),
}

fn check_text(text: &str, what: &'static str) -> Result<(), DirectoryError> {
    if text.is_empty() || text.len() > MAX_NAME_LEN || text.chars().any(char::is_control) {
        return Err(DirectoryError::Invalid(what));
    }
    Ok(())
}

impl User {
    /// Checks bounds before storing.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        check_text(&self.id, "user id must be 1-256 bytes")?;
        check_text(
            &self.user_name,
            "userName must be 1-256 bytes without control characters",
        )?;
        for text in [&self.display_name, &self.external_id]
            .into_iter()
            .flatten()
        {
            check_text(text, "names must be 1-256 bytes without control characters")?;
        }
        Ok(())
    }
}

impl Group {
    /// Checks bounds before storing.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        check_text(&self.id, "group id must be 1-256 bytes")?;
        check_text(
            &self.display_name,
            "displayName must be 1-256 bytes without control characters",
        )?;
        if let Some(external) = &self.external_id {
            check_text(external, "externalId must be 1-256 bytes")?;
        }
        if self.members.len() > MAX_GROUP_MEMBERS {
            return Err(DirectoryError::Invalid(
                "a group lists at most 10000 members",
            ));
        }
        Ok(())
    }
}

/// Users, groups, device owners, sessions and recovery grants.
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Stores a new user; an existing id or (case-insensitively) user name is a conflict.
    fn create_user(&self, user: &User) -> Result<(), DirectoryError>;
    /// Replaces user `user.id` (which must exist); its name must stay unique.
    fn replace_user(&self, user: &User) -> Result<(), DirectoryError>;
    /// The user with this id.
    fn user(&self, id: &str) -> Result<Option<User>, DirectoryError>;
    /// The user with this user name (case-insensitive).
    fn user_by_name(&self, user_name: &str) -> Result<Option<User>, DirectoryError>;
    /// Every user, oldest first.
    fn list_users(&self) -> Result<Vec<User>, DirectoryError>;
    /// Deletes a user, their group memberships and device assignments; false if unknown.
    fn delete_user(&self, id: &str) -> Result<bool, DirectoryError>;

    /// Stores a new group (members must exist); an existing id or name is a conflict.
    fn create_group(&self, group: &Group) -> Result<(), DirectoryError>;
    /// Replaces group `group.id` (which must exist), members included.
    fn replace_group(&self, group: &Group) -> Result<(), DirectoryError>;
    /// The group with this id.
    fn group(&self, id: &str) -> Result<Option<Group>, DirectoryError>;
    /// Every group, oldest first.
    fn list_groups(&self) -> Result<Vec<Group>, DirectoryError>;
    /// Deletes a group; false if unknown.
    fn delete_group(&self, id: &str) -> Result<bool, DirectoryError>;
    /// The names of the groups user `id` belongs to, sorted.
    fn groups_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError>;

    /// Assigns a device to a user (replacing any previous owner); the user must exist.
    fn assign_device(&self, device: &str, user_id: &str) -> Result<(), DirectoryError>;
    /// The user a device belongs to.
    fn device_owner(&self, device: &str) -> Result<Option<String>, DirectoryError>;
    /// The devices of a user, sorted.
    fn devices_of(&self, user_id: &str) -> Result<Vec<String>, DirectoryError>;

    /// Inserts or updates a session (by id), within `limits`: a device over its share drops its
    /// least recently seen session, a full table first drops expired ones, then the least
    /// recently seen one.
    fn touch_session(
        &self,
        session: &Session,
        limits: &SessionLimits,
    ) -> Result<(), DirectoryError>;
    /// Sessions not expired at `now_unix`, most recently seen first.
    fn sessions(&self, now_unix: i64) -> Result<Vec<Session>, DirectoryError>;
    /// Records a force logout and deletes the sessions it ends; returns how many were listed.
    /// Records whose `keep_until_unix` passed are dropped first.
    fn end_sessions(&self, end: &SessionEnd, now_unix: i64) -> Result<u64, DirectoryError>;
    /// Whether a force-logout record ends this session. Read from the store every time.
    fn session_ended(&self, session: &SessionRef<'_>) -> Result<bool, DirectoryError>;

    /// Stores a recovery grant.
    fn put_recovery(&self, grant: &RecoveryGrant) -> Result<(), DirectoryError>;
    /// The recovery grant of enrollment token `token_id`.
    fn recovery(&self, token_id: &str) -> Result<Option<RecoveryGrant>, DirectoryError>;
    /// Marks a grant used by `device`; false if it was already used (single use).
    fn use_recovery(&self, token_id: &str, device: &str) -> Result<bool, DirectoryError>;
}

/// Opens the directory that goes with a registry URL: `memory` → a new [`MemoryDirectory`],
/// `sqlite:PATH` → [`SqliteDirectory`] tables in the same file, `postgres://…` →
/// `PostgresDirectory` tables in the same database (cargo feature `postgres`; connects with the
/// blocking client: call it off any async runtime's threads).
pub fn open_directory(url: &str) -> Result<std::sync::Arc<dyn Directory>, DirectoryError> {
    if url == "memory:" || url == "memory" {
        return Ok(std::sync::Arc::new(MemoryDirectory::default()));
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(DirectoryError::InvalidUrl("sqlite: needs a file path"));
        }
        return Ok(std::sync::Arc::new(SqliteDirectory::open(
            std::path::Path::new(path),
        )?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(std::sync::Arc::new(PostgresDirectory::connect(url)?));
        #[cfg(not(feature = "postgres"))]
        return Err(DirectoryError::InvalidUrl(
            "a postgres:// directory needs the `postgres` cargo feature",
        ));
    }
    Err(DirectoryError::InvalidUrl(
        "the directory lives with the registry: memory, sqlite:PATH or postgres://…",
    ))
}
