//! The verify path's session step: refuse a request whose session an administrator ended
//! (`session_revoked`), and record the session as seen.
//!
//! The check reads the [`Directory`] on every request — never a cached answer — so a force
//! logout written by any replica (or the admin CLI) is refused by every replica sharing the store
//! at its next request, the same guarantee revocation of keys has. Recording is coarse: a session
//! is written when first seen and then at most every [`SessionLimits::touch_interval_secs`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hwsign_proto::RejectCode;

use super::{Directory, Session, SessionRef};
use crate::registry::RegistryError;
use crate::rejection::Rejection;

/// Sessions remembered as recently written by one verifier; cleared when full.
const TOUCHED_CAPACITY: usize = 65_536;
/// Longest `User-Agent` kept, bytes.
const MAX_USER_AGENT_LEN: usize = 256;

/// Bounds on the session table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions kept per device; a new one drops the device's least recently seen.
    pub max_per_device: usize,
    /// Sessions kept in all; a new one drops expired ones, then the least recently seen.
    pub max_sessions: usize,
    /// A seen session's `last_seen` is written at most this often, seconds.
    pub touch_interval_secs: i64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_per_device: 32,
            max_sessions: 100_000,
            touch_interval_secs: 60,
        }
    }
}

/// The client's address, for the session record: a server inserts it into the request's
/// extensions before verification (`hwsign-verifier serve` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClient(pub IpAddr);

/// What the verifier knows about a request's session once its signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObservedSession {
    /// Session key id (delegated) or `strict:<key id>`.
    pub(crate) id: String,
    pub(crate) key_id: String,
    pub(crate) device: String,
    pub(crate) audience: String,
    pub(crate) delegated: bool,
    /// Delegated: the statement's not-before; strict: the request's date.
    pub(crate) issued_unix: i64,
    pub(crate) expires_unix: i64,
    pub(crate) user_agent: Option<String>,
}

impl ObservedSession {
    /// Keeps at most [`MAX_USER_AGENT_LEN`] bytes of a `User-Agent` (at a character boundary).
    pub(crate) fn user_agent_of(value: &str) -> String {
        let mut end = value.len().min(MAX_USER_AGENT_LEN);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value[..end].to_owned()
    }
}

/// Checks and records sessions for a [`Verifier`](crate::Verifier)
/// ([`Verifier::with_sessions`](crate::Verifier::with_sessions)).
#[derive(Debug)]
pub struct SessionGuard {
    directory: Arc<dyn Directory>,
    limits: SessionLimits,
    /// Session id → (first seen, last written), this process only.
    touched: Mutex<HashMap<String, (i64, i64)>>,
}

fn unavailable(error: super::DirectoryError) -> Rejection {
    tracing::error!(error = %crate::ErrorChain(&error), "directory failed; failing closed");
    Rejection::Registry(RegistryError::Unavailable(Box::new(error)))
}

impl SessionGuard {
    /// A guard reading and writing `directory`.
    pub fn new(directory: Arc<dyn Directory>, limits: SessionLimits) -> Self {
        Self {
            directory,
            limits,
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// The directory behind the guard.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// The bounds on the session table.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Refuses an ended session (`session_revoked`); records the session otherwise. Answers the
    /// id of the device's user (read for the force-logout check anyway), if it has one.
    pub(crate) fn admit(
        &self,
        observed: &ObservedSession,
        client: Option<SessionClient>,
        now_unix: i64,
    ) -> Result<Option<String>, Rejection> {
        let user_id = self
            .directory
            .device_owner(&observed.device)
            .map_err(unavailable)?;
        let ended = self
            .directory
            .session_ended(&SessionRef {
                id: &observed.id,
                device: &observed.device,
                user_id: user_id.as_deref(),
                issued_unix: observed.issued_unix,
            })
            .map_err(unavailable)?;
        if ended {
            return Err(Rejection::new(
                RejectCode::SessionRevoked,
                "an administrator ended this session",
            ));
        }
        let first_seen = {
            let Ok(mut touched) = self.touched.lock() else {
                return Err(unavailable(super::DirectoryError::Poisoned));
            };
            match touched.get(&observed.id) {
                Some(&(_, written))
                    if now_unix.saturating_sub(written) < self.limits.touch_interval_secs =>
                {
                    return Ok(user_id);
                }
                Some(&(first, _)) => {
                    touched.insert(observed.id.clone(), (first, now_unix));
                    first
                }
                None => {
                    if touched.len() >= TOUCHED_CAPACITY {
                        touched.clear();
                    }
                    touched.insert(observed.id.clone(), (observed.issued_unix, now_unix));
                    observed.issued_unix
                }
            }
        };
        let session = Session {
            id: observed.id.clone(),
            key_id: observed.key_id.clone(),
            device: observed.device.clone(),
            user_id: user_id.clone(),
            audience: observed.audience.clone(),
            delegated: observed.delegated,
            issued_unix: if observed.delegated {
                observed.issued_unix
            } else {
                first_seen
            },
            expires_unix: observed.expires_unix,
            last_seen_unix: now_unix,
            source_address: client.map(|SessionClient(ip)| ip.to_string()),
            user_agent: observed.user_agent.clone(),
        };
        // Recording is best effort: a request is not refused because its session could not be
        // written (the force-logout check above already read the store).
        if let Err(error) = self.directory.touch_session(&session, &self.limits) {
            tracing::warn!(error = %crate::ErrorChain(&error), "session not recorded");
        }
        Ok(user_id)
    }
}
