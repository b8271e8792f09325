//! Console sessions, held server side: the cookie carries a random id, the table (keyed by the
//! id's SHA-256) holds the user, the CSRF token, and the sign-in and last-use times. Bounded: at
//! most `max_sessions` (past it the least recently used ends) and [`MAX_SESSIONS_PER_USER`] per
//! user; a session ends after `idle_timeout_secs` unused or `max_session_secs` after sign-in.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ConsoleError;

/// Most sessions one user holds at once (past it their least recently used ends).
pub(crate) const MAX_SESSIONS_PER_USER: usize = 8;

/// A signed-in console user.
#[derive(Debug, Clone)]
pub(crate) struct ConsoleSession {
    /// The directory user name.
    pub(crate) user_name: String,
    /// The per-session CSRF token every form carries.
    pub(crate) csrf: String,
    signed_in_unix: i64,
    last_used_unix: i64,
}

impl ConsoleSession {
    /// Whether `token` is this session's CSRF token (constant time).
    pub(crate) fn csrf_matches(&self, token: &str) -> bool {
        token.len() == self.csrf.len() && bool::from(token.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

#[derive(Debug)]
pub(crate) struct SessionTable {
    sessions: Mutex<HashMap<[u8; 32], ConsoleSession>>,
    max_sessions: usize,
    idle_secs: i64,
    lifetime_secs: i64,
}

/// 32 random bytes, base64url.
pub(crate) fn random_token() -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| ConsoleError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl SessionTable {
    pub(crate) fn new(max_sessions: usize, idle_secs: u64, lifetime_secs: u64) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max_sessions,
            idle_secs: i64::try_from(idle_secs).unwrap_or(i64::MAX),
            lifetime_secs: i64::try_from(lifetime_secs).unwrap_or(i64::MAX),
        }
    }

    fn live(&self, session: &ConsoleSession, now: i64) -> bool {
        now.saturating_sub(session.last_used_unix) < self.idle_secs
            && now.saturating_sub(session.signed_in_unix) < self.lifetime_secs
    }

    /// Starts a session for `user_name`; answers its id (the cookie value).
    pub(crate) fn start(&self, user_name: &str, now: i64) -> Result<String, ConsoleError> {
        let id = random_token()?;
        let session = ConsoleSession {
            user_name: user_name.to_owned(),
            csrf: random_token()?,
            signed_in_unix: now,
            last_used_unix: now,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| self.live(s, now));
        let evict_oldest = |sessions: &mut HashMap<[u8; 32], ConsoleSession>, of_user: bool| {
            let oldest = sessions
                .iter()
                .filter(|(_, s)| !of_user || s.user_name == user_name)
                .min_by_key(|(_, s)| s.last_used_unix)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        };
        if sessions
            .values()
            .filter(|s| s.user_name == user_name)
            .count()
            >= MAX_SESSIONS_PER_USER
        {
            evict_oldest(&mut sessions, true);
        }
        while sessions.len() >= self.max_sessions {
            evict_oldest(&mut sessions, false);
        }
        sessions.insert(key(&id), session);
        Ok(id)
    }

    /// The live session with this id, marked used now; an idle or expired one is removed.
    pub(crate) fn get(&self, id: &str, now: i64) -> Option<ConsoleSession> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(id);
        let live = sessions.get(&k).is_some_and(|s| self.live(s, now));
        if !live {
            sessions.remove(&k);
            return None;
        }
        let session = sessions.get_mut(&k)?;
        session.last_used_unix = now;
        Some(session.clone())
    }

    /// Ends the session with this id.
    pub(crate) fn end(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_expired_sessions_end_and_the_table_is_bounded() {
        let table = SessionTable::new(2, 10, 100);
        let a = table.start("alice", 0).unwrap_or_default();
        assert!(table.get(&a, 9).is_some());
        assert!(table.get(&a, 18).is_some(), "use resets the idle clock");
        assert!(table.get(&a, 29).is_none(), "idle for 11 s");
        let b = table.start("bob", 0).unwrap_or_default();
        for t in (5..100).step_by(5) {
            assert!(table.get(&b, t).is_some());
        }
        assert!(table.get(&b, 100).is_none(), "past the lifetime");
        let c = table.start("carol", 200).unwrap_or_default();
        let d = table.start("dave", 201).unwrap_or_default();
        let e = table.start("erin", 202).unwrap_or_default();
        assert!(table.get(&c, 203).is_none(), "least recently used evicted");
        assert!(table.get(&d, 203).is_some() && table.get(&e, 203).is_some());
        let session = table.get(&d, 204).map(|s| s.csrf).unwrap_or_default();
        let found = table.get(&d, 204);
        assert!(found.as_ref().is_some_and(|s| s.csrf_matches(&session)));
        assert!(found.is_some_and(|s| !s.csrf_matches("nope")));
    }
}
