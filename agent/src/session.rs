//! Delegated session keys (design brief §4, docs/PROTOCOL.md §8). For a key in delegated mode the
//! agent keeps, per (key, audience), an in-memory P-256 session key and a delegation statement the
//! hardware key signed for it; requests are then signed by the session key in microseconds
//! instead of by the TPM in milliseconds.
//!
//! Rotation: a session is renewed in the background once less than
//! [`SessionTiming::renew_before_secs`] of it is left, while requests keep using it; only when it
//! is nearly over ([`SessionTiming::min_remaining_secs`]) do requests wait for the new one. One
//! renewal runs at a time per (key, audience).
//!
//! Bounds: each key holds at most `limits.max_sessions_per_key` sessions (one per audience);
//! a new audience evicts the key's least recently used session, never another key's. Only keys
//! in delegated mode (each named by a key rule in the configuration) get sessions, so the whole
//! table is bounded by the configuration, and no caller can fill it for the others.
//!
//! Session keys exist only in this process's memory: they are generated inside AWS-LC (through
//! `aws-lc-rs`), never serialized, never logged, and their `Debug` shows the public key id only.
//! AWS-LC cleanses key memory when the key is freed (its `OPENSSL_free` overwrites every
//! allocation), so dropping a [`SessionKey`] zeroizes the scalar; `aws-lc-rs` was chosen over
//! `ring` (which does not zeroize) and `p256` (which does, but signs about 4x slower here).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use hwsign_proto::delegation::{DelegationStatement, MAX_DELEGATION_SECS};
use hwsign_proto::{PublicKey, SigningTime};
use thiserror::Error;

/// Default statement lifetime: the protocol's maximum.
pub(crate) const DEFAULT_SESSION_LIFETIME_SECS: u64 = 900;
/// Default of `limits.max_sessions_per_key`: sessions (audiences) one key holds at once.
pub(crate) const DEFAULT_MAX_SESSIONS_PER_KEY: usize = 8;
/// Upper bound of `limits.max_sessions_per_key`.
pub(crate) const MAX_SESSIONS_PER_KEY: usize = 256;
/// Longest back-dating of `not_before`, for signers whose clock runs a little ahead of ours.
const MAX_BACKDATE_SECS: i64 = 30;
/// Renewal starts when this much (or a third of the lifetime, if less) is left.
const RENEW_BEFORE_SECS: i64 = 180;
/// A session with less than this (or a sixth of the lifetime, if less) left is not used.
const MIN_REMAINING_SECS: i64 = 60;
/// After a failed background renewal, the next background attempt waits this long.
const RETRY_AFTER_SECS: i64 = 1;

/// Why a session could not be made or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum SessionError {
    /// The in-memory key could not be generated or used.
    #[error("session key: {0}")]
    Crypto(&'static str),
    /// The statement is outside the protocol's bounds (a bug: timing is validated).
    #[error("the delegation statement is out of bounds")]
    Statement(#[from] hwsign_proto::ProtoError),
}

/// When statements start and end, and when they are renewed. All in whole seconds, like the
/// statement itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTiming {
    /// `not_after - not_before`.
    pub(crate) lifetime_secs: i64,
    /// `not_before` is this much before the issuing time.
    pub(crate) backdate_secs: i64,
    /// Renew in the background when less than this is left.
    pub(crate) renew_before_secs: i64,
    /// Do not sign with a session that has less than this left.
    pub(crate) min_remaining_secs: i64,
}

impl SessionTiming {
    /// The timing for a statement lifetime of `lifetime_secs` (clamped to 1 s – 15 min). Short
    /// lifetimes (tests) scale every margin down with them.
    pub(crate) fn for_lifetime(lifetime_secs: u64) -> Self {
        let lifetime = i64::try_from(lifetime_secs)
            .unwrap_or(MAX_DELEGATION_SECS)
            .clamp(1, MAX_DELEGATION_SECS);
        Self {
            lifetime_secs: lifetime,
            backdate_secs: (lifetime / 10).min(MAX_BACKDATE_SECS),
            renew_before_secs: (lifetime / 3).clamp(1, RENEW_BEFORE_SECS),
            min_remaining_secs: (lifetime / 6).min(MIN_REMAINING_SECS),
        }
    }
}

impl Default for SessionTiming {
    fn default() -> Self {
        Self::for_lifetime(DEFAULT_SESSION_LIFETIME_SECS)
    }
}

/// An in-memory ECDSA P-256 key. Not `Clone`, not serializable; `Debug` shows its key id.
pub(crate) struct SessionKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl SessionKey {
    /// Generates a key from the system CSPRNG, inside AWS-LC: the private scalar is never copied
    /// out into Rust memory, and AWS-LC overwrites it when the key pair is dropped.
    pub(crate) fn generate() -> Result<Self, SessionError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .map_err(|_| SessionError::Crypto("key generation failed"))?;
        let public = PublicKey::from_sec1(pair.public_key().as_ref())
            .map_err(|_| SessionError::Crypto("public key"))?;
        Ok(Self { pair, public, rng })
    }

    /// The public key.
    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// DER ECDSA signature over SHA-256(`message`).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SessionError> {
        self.pair
            .sign(&self.rng, message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| SessionError::Crypto("signing failed"))
    }
}

/// A session key with its statement, before the hardware key has signed the statement.
#[derive(Debug)]
pub(crate) struct PendingSession {
    key: SessionKey,
    statement: DelegationStatement,
}

impl PendingSession {
    /// A new session key and its statement for `device_key_id` and `audience`, issued at `now`.
    pub(crate) fn new(
        device_key_id: &str,
        audience: &str,
        now: i64,
        timing: SessionTiming,
    ) -> Result<Self, SessionError> {
        let key = SessionKey::generate()?;
        let not_before = now.saturating_sub(timing.backdate_secs);
        let statement = DelegationStatement {
            device_key_id: device_key_id.to_owned(),
            session_key: key.public_key().clone(),
            audience: audience.to_owned(),
            not_before: SigningTime::from_unix(not_before),
            not_after: SigningTime::from_unix(not_before.saturating_add(timing.lifetime_secs)),
        };
        statement.check()?;
        Ok(Self { key, statement })
    }

    /// The statement the device key must sign.
    pub(crate) fn statement(&self) -> &DelegationStatement {
        &self.statement
    }

    /// The session, with the `X-Hws-Delegation` value already built (a statement signed by a
    /// WebAuthn assertion has its own encoding).
    pub(crate) fn finish_with_header(self, header_value: String, timing: SessionTiming) -> Session {
        Session {
            key_id: self.key.public_key().key_id(),
            not_before: self.statement.not_before.unix(),
            not_after: self.statement.not_after.unix(),
            key: self.key,
            header_value,
            timing,
        }
    }
}

/// A usable session: the key and its signed statement as the `X-Hws-Delegation` value.
#[derive(Debug)]
pub(crate) struct Session {
    key: SessionKey,
    key_id: String,
    header_value: String,
    not_before: i64,
    not_after: i64,
    timing: SessionTiming,
}

impl Session {
    /// The session key's id: the `Credential` of the requests it signs.
    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `X-Hws-Delegation` header value.
    pub(crate) fn header_value(&self) -> &str {
        &self.header_value
    }

    /// Whether a request dated `now` may be signed with this session.
    pub(crate) fn usable_at(&self, now: i64) -> bool {
        now >= self.not_before
            && now.saturating_add(self.timing.min_remaining_secs) <= self.not_after
    }

    /// Whether a request dated `now` lies within the statement's window.
    pub(crate) fn covers(&self, now: i64) -> bool {
        (self.not_before..=self.not_after).contains(&now)
    }

    /// Whether a renewal should start at `now`.
    pub(crate) fn renewal_due(&self, now: i64) -> bool {
        self.not_after.saturating_sub(now) < self.timing.renew_before_secs
    }

    /// DER signature over SHA-256(`message`) (the string to sign).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SessionError> {
        self.key.sign(message)
    }
}

/// One (key, audience): the current session and the one-at-a-time renewal.
#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Arc<Session>>>,
    renewal: Arc<tokio::sync::Mutex<()>>,
    /// No background renewal before this (after a failed one).
    retry_after: Mutex<i64>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Session>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn publish(&self, session: Arc<Session>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(session);
    }
}

/// One key's (audience, slot) pairs, least recently used first.
type KeySlots = Vec<(String, Arc<Slot>)>;

/// The live sessions of the agent, per (key id, audience), at most
/// [`Self::max_per_key`] per key.
#[derive(Debug)]
pub(crate) struct SessionManager {
    /// Per key id: its (audience, slot) pairs, least recently used first.
    slots: Mutex<HashMap<String, KeySlots>>,
    max_per_key: usize,
}

impl Default for SessionManager {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionManager {
    /// An empty manager with [`DEFAULT_MAX_SESSIONS_PER_KEY`].
    pub(crate) fn new() -> Self {
        Self::with_max_per_key(DEFAULT_MAX_SESSIONS_PER_KEY)
    }

    /// An empty manager holding at most `max_per_key` sessions per key (at least 1).
    pub(crate) fn with_max_per_key(max_per_key: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            max_per_key: max_per_key.max(1),
        }
    }

    /// Live (key, audience) slots.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Audiences `key_id` holds a session slot for, least recently used first.
    #[cfg(test)]
    fn audiences(&self, key_id: &str) -> Vec<String> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .map(|slots| slots.iter().map(|(audience, _)| audience.clone()).collect())
            .unwrap_or_default()
    }

    /// The slot of (`key_id`, `audience`), made most recently used; a new one evicts the key's
    /// least recently used slot when the key is at its bound. Other keys' slots are never
    /// touched. A request still holding an evicted slot finishes with it; the slot is then
    /// dropped, and its session key with it.
    fn slot(&self, key_id: &str, audience: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let of_key = slots.entry(key_id.to_owned()).or_default();
        if let Some(index) = of_key.iter().position(|(a, _)| a == audience) {
            let entry = of_key.remove(index);
            let slot = Arc::clone(&entry.1);
            of_key.push(entry);
            return slot;
        }
        while of_key.len() >= self.max_per_key {
            let (evicted, _) = of_key.remove(0);
            tracing::info!(
                key_id,
                audience = %evicted.escape_debug(),
                "delegated session evicted: the key is at its session bound"
            );
        }
        let slot = Arc::new(Slot::default());
        of_key.push((audience.to_owned(), Arc::clone(&slot)));
        slot
    }

    /// Forgets the session of (`key_id`, `audience`) if its session key is `session_key_id`
    /// (a verifier ended it); the next [`Self::session`] issues a new one. False when that is not
    /// the current session (none, or already renewed).
    pub(crate) fn end(&self, key_id: &str, audience: &str, session_key_id: &str) -> bool {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.get(key_id).and_then(|of_key| {
                of_key
                    .iter()
                    .find(|(a, _)| a == audience)
                    .map(|(_, slot)| Arc::clone(slot))
            })
        };
        let Some(slot) = slot else {
            return false;
        };
        let mut current = slot.current.write().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|session| session.key_id() == session_key_id)
        {
            *current = None;
            return true;
        }
        false
    }

    /// A session for `key_id` and `audience` usable at `clock()`. `issue` makes a new one (it
    /// has the hardware key sign the statement); it runs in the background when the current
    /// session is merely due for renewal, inline when there is no usable session. Errors of a
    /// background renewal are logged and retried by a later request.
    pub(crate) async fn session<F, Fut, E>(
        &self,
        key_id: &str,
        audience: &str,
        clock: impl Fn() -> i64,
        issue: F,
    ) -> Result<Arc<Session>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Arc<Session>, E>> + Send + 'static,
        E: From<SessionError> + std::fmt::Display + Send + 'static,
    {
        let now = clock();
        let slot = self.slot(key_id, audience);
        if let Some(session) = slot.current().filter(|s| s.usable_at(now)) {
            if session.renewal_due(now) {
                renew_in_background(&slot, now, issue);
            }
            return Ok(session);
        }
        // No usable session: wait for a renewal under way, or make one.
        let _renewing = slot.renewal.lock().await;
        if let Some(session) = slot.current().filter(|s| s.usable_at(clock())) {
            return Ok(session);
        }
        let session = issue().await?;
        slot.publish(Arc::clone(&session));
        Ok(session)
    }
}

fn renew_in_background<F, Fut, E>(slot: &Arc<Slot>, now: i64, issue: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Arc<Session>, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    {
        let retry_after = slot
            .retry_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if now < *retry_after {
            return;
        }
    }
    // Only one renewal at a time; if one is under way, this request has nothing to do.
    let Ok(guard) = Arc::clone(&slot.renewal).try_lock_owned() else {
        return;
    };
    let slot = Arc::clone(slot);
    tokio::spawn(async move {
        let _renewing = guard;
        // A renewal that finished just before this one took the lock already did the work.
        if slot.current().is_some_and(|s| !s.renewal_due(now)) {
            return;
        }
        match issue().await {
            Ok(session) => slot.publish(session),
            Err(error) => {
                tracing::warn!(%error, "renewing a delegated session failed; the current one stays in use");
                *slot
                    .retry_after
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = now.saturating_add(RETRY_AFTER_SECS);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use sha2::Digest as _;

    use super::*;

    const T0: i64 = 1_795_462_200;

    async fn issue_at(now: i64, timing: SessionTiming) -> Result<Arc<Session>, SessionError> {
        let pending = PendingSession::new(&format!("hk1_{}", "a".repeat(32)), "api", now, timing)?;
        // The tests check rotation, not the statement's signature.
        Ok(Arc::new(
            pending.finish_with_header("test-header".to_owned(), timing),
        ))
    }

    #[test]
    fn timing_scales_with_the_lifetime() {
        let full = SessionTiming::default();
        assert_eq!(
            (
                full.lifetime_secs,
                full.backdate_secs,
                full.renew_before_secs,
                full.min_remaining_secs
            ),
            (900, 30, 180, 60)
        );
        let short = SessionTiming::for_lifetime(2);
        assert_eq!(
            (
                short.lifetime_secs,
                short.backdate_secs,
                short.renew_before_secs,
                short.min_remaining_secs
            ),
            (2, 0, 1, 0)
        );
        assert_eq!(SessionTiming::for_lifetime(100_000).lifetime_secs, 900);
        assert_eq!(SessionTiming::for_lifetime(0).lifetime_secs, 1);
    }

    #[test]
    fn session_keys_sign_and_stay_out_of_debug() -> Result<(), SessionError> {
        let pending = PendingSession::new(
            &format!("hk1_{}", "b".repeat(32)),
            "api",
            T0,
            SessionTiming::default(),
        )?;
        assert_eq!(pending.statement().not_before.unix(), T0 - 30);
        assert_eq!(pending.statement().not_after.unix(), T0 + 870);
        let session_key = pending.statement().session_key.clone();
        let session =
            pending.finish_with_header("test-header".to_owned(), SessionTiming::default());
        let message = b"HWS1-ECDSA-P256-SHA256\n...";
        let signature = session.sign(message)?;
        let digest: [u8; 32] = sha2::Sha256::digest(message).into();
        assert!(session_key.verify_digest(&digest, &signature));
        let debug = format!("{session:?}");
        assert!(debug.contains(session.key_id()));
        assert!(!debug.to_lowercase().contains("pair"), "{debug}");
        Ok(())
    }

    async fn get(
        manager: &SessionManager,
        now: &Arc<AtomicI64>,
        issued: &Arc<AtomicUsize>,
        timing: SessionTiming,
    ) -> Result<Arc<Session>, SessionError> {
        let clock = Arc::clone(now);
        let issued = Arc::clone(issued);
        let at = now.load(Ordering::SeqCst);
        manager
            .session(
                "hk1_k",
                "api",
                move || clock.load(Ordering::SeqCst),
                move || {
                    issued.fetch_add(1, Ordering::SeqCst);
                    issue_at(at, timing)
                },
            )
            .await
    }

    #[tokio::test]
    async fn renews_in_the_background_and_keeps_serving() -> Result<(), SessionError> {
        let manager = SessionManager::new();
        let timing = SessionTiming::default();
        let now = Arc::new(AtomicI64::new(T0));
        let issued = Arc::new(AtomicUsize::new(0));
        let first = get(&manager, &now, &issued, timing).await?;
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        // Well inside the lifetime: the same session, no renewal.
        now.store(T0 + 600, Ordering::SeqCst);
        assert!(Arc::ptr_eq(
            &first,
            &get(&manager, &now, &issued, timing).await?
        ));
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        // Renewal window: the old session is returned at once, the new one arrives behind it.
        now.store(T0 + 700, Ordering::SeqCst);
        assert!(Arc::ptr_eq(
            &first,
            &get(&manager, &now, &issued, timing).await?
        ));
        let slot = manager.slot("hk1_k", "api");
        let _done = slot.renewal.lock().await;
        let second = slot.current().ok_or(SessionError::Crypto("no session"))?;
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        drop(_done);
        // Past the old session's end the new one is used without another issue.
        now.store(T0 + 880, Ordering::SeqCst);
        assert!(Arc::ptr_eq(
            &second,
            &get(&manager, &now, &issued, timing).await?
        ));
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        Ok(())
    }

    #[tokio::test]
    async fn an_ended_session_is_replaced_at_the_next_call_unless_already_renewed()
    -> Result<(), SessionError> {
        let manager = SessionManager::new();
        let timing = SessionTiming::default();
        let now = Arc::new(AtomicI64::new(T0));
        let issued = Arc::new(AtomicUsize::new(0));
        let first = get(&manager, &now, &issued, timing).await?;
        // Another session key, another audience, another key: nothing ends.
        assert!(!manager.end("hk1_k", "api", "hk1_other"));
        assert!(!manager.end("hk1_k", "other", first.key_id()));
        assert!(!manager.end("hk1_x", "api", first.key_id()));
        assert!(Arc::ptr_eq(
            &first,
            &get(&manager, &now, &issued, timing).await?
        ));
        // The current session ended: the next call issues a new one.
        assert!(manager.end("hk1_k", "api", first.key_id()));
        let second = get(&manager, &now, &issued, timing).await?;
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        // A late second end of the old session keeps the new one.
        assert!(!manager.end("hk1_k", "api", first.key_id()));
        assert!(Arc::ptr_eq(
            &second,
            &get(&manager, &now, &issued, timing).await?
        ));
        Ok(())
    }

    #[tokio::test]
    async fn sessions_are_per_key_and_audience_and_bounded_per_key() -> Result<(), SessionError> {
        let manager = SessionManager::with_max_per_key(3);
        let timing = SessionTiming::default();
        let a = manager
            .session("k1", "api", || T0, move || issue_at(T0, timing))
            .await?;
        let b = manager
            .session("k1", "other", || T0, move || issue_at(T0, timing))
            .await?;
        let c = manager
            .session("k2", "api", || T0, move || issue_at(T0, timing))
            .await?;
        assert_ne!(a.key_id(), b.key_id());
        assert_ne!(a.key_id(), c.key_id());
        // k1 uses "api" again: it becomes the most recently used.
        manager
            .session("k1", "api", || T0, move || issue_at(T0, timing))
            .await?;
        // Many more audiences for k1: each evicts k1's least recently used, never k2's.
        for i in 0..100 {
            manager
                .session(
                    "k1",
                    &format!("aud{i}"),
                    || T0,
                    move || issue_at(T0, timing),
                )
                .await?;
            assert!(manager.audiences("k1").len() <= 3);
        }
        assert_eq!(manager.audiences("k1"), ["aud97", "aud98", "aud99"]);
        assert_eq!(manager.audiences("k2"), ["api"]);
        assert_eq!(manager.len(), 4);
        // k2's session is the one it had, not a new one.
        let again = manager
            .session("k2", "api", || T0, move || issue_at(T0, timing))
            .await?;
        assert!(Arc::ptr_eq(&c, &again));
        Ok(())
    }
}
