//! What the request handlers and the use cases behind them share: the configuration, the key
//! store, the delegated session keys and the audit log.

use std::sync::Arc;
use std::time::Instant;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::keystore::KeyStore;
use crate::session::SessionManager;

/// The agent's shared state, built once by [`crate::Agent::open`].
#[derive(Debug)]
pub struct Context {
    /// The configuration.
    pub(crate) config: Arc<Config>,
    /// Key id → backend.
    pub(crate) keys: KeyStore,
    /// The delegated session keys of keys in delegated mode (memory only).
    pub(crate) sessions: SessionManager,
    /// The audit log.
    pub(crate) audit: AuditLog,
    /// When the agent started (for `uptime_secs`).
    pub(crate) started: Instant,
}

impl Context {
    /// The shared state over opened backends; sessions are bounded by
    /// `limits.max_sessions_per_key`.
    pub(crate) fn new(config: Arc<Config>, keys: KeyStore, audit: AuditLog) -> Self {
        let sessions = SessionManager::with_max_per_key(config.limits.max_sessions_per_key);
        Self {
            config,
            keys,
            sessions,
            audit,
            started: Instant::now(),
        }
    }
}
