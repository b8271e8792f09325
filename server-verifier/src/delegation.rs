//! Delegated session keys (design brief §4, docs/PROTOCOL.md §8): the checks on an
//! `X-Hws-Delegation` statement, and a bounded cache of statements whose device signature already
//! verified.
//!
//! A delegated request is signed by an in-memory session key; the statement, signed by the
//! enrolled device key, says which session key may sign, for which audience, until when. The
//! checks run cheapest first: parse → Credential names the statement's session key → audience →
//! validity window → device key lookup (unknown, revoked) → the device key's signature over the
//! statement. The request's own signature is then checked with the session key by the caller.
//!
//! The cache spares the device-key ECDSA verification on every request: an entry is keyed by
//! SHA-256 of the exact header value and remembers which device public key verified it. The
//! registry is still consulted on every request, so revoking the device (or replacing its key)
//! takes effect on the next request, cached statement or not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hwsign_proto::delegation::DelegationStatement;
use hwsign_proto::webauthn::{WebAuthnDelegation, is_webauthn_delegation};
use hwsign_proto::{PublicKey, RejectCode};
use sha2::{Digest, Sha256};

use crate::ecdsa_backend::PreparedKey;
use crate::registry::RegisteredKey;
use crate::rejection::Rejection;

/// Verified statements remembered at once; past this, expired entries are dropped and, if none
/// are, the cache starts over (a miss only costs one more device-key verification).
pub const STATEMENT_CACHE_CAPACITY: usize = 16_384;

/// What a request's signing step needs from its delegation statement.
#[derive(Debug, Clone)]
pub struct CheckedDelegation {
    /// The device key that signed the statement; the request is attributed to it.
    pub device_key: RegisteredKey,
    /// The session key, prepared for the request signature.
    pub session_key: Arc<PreparedKey>,
    /// The last second (verifier clock) the statement may be used: `not-after + skew`. The
    /// verifier judges it again with the clock read after the body is complete.
    pub usable_until_unix: i64,
    /// The statement's not-before (when the session was issued), signer's clock.
    pub issued_unix: i64,
    /// The statement's not-after, signer's clock.
    pub expires_unix: i64,
}

/// What the request claims, as far as the statement is concerned.
#[derive(Debug, Clone, Copy)]
pub struct RequestClaims<'a> {
    /// The `Authorization` Credential (must be the session key id).
    pub credential: &'a str,
    /// The scope's audience (already checked to be this verifier's).
    pub audience: &'a str,
    /// `X-Hws-Date`, seconds since the epoch (already checked to be within the clock window).
    pub date_unix: i64,
    /// The verifier's clock, seconds since the epoch.
    pub now_unix: i64,
    /// The verifier's allowed clock skew, seconds.
    pub skew_secs: i64,
}

/// What a statement allows, checked against every request.
#[derive(Debug, Clone)]
struct Terms {
    session_key_id: String,
    audience: String,
    not_before: i64,
    not_after: i64,
}

impl Terms {
    fn of(statement: &DelegationStatement) -> Self {
        Self {
            session_key_id: statement.session_key.key_id(),
            audience: statement.audience.clone(),
            not_before: statement.not_before.unix(),
            not_after: statement.not_after.unix(),
        }
    }

    /// Until when (verifier clock) a request may still present it: a request dated `not_after`
    /// is accepted until its date leaves the clock window.
    fn usable_until(&self, skew_secs: i64) -> i64 {
        self.not_after.saturating_add(skew_secs)
    }

    /// The checks that depend on the request, run on every request (cached statement or not).
    fn check(&self, claims: &RequestClaims<'_>) -> Result<(), Rejection> {
        // Key ids are public; no constant-time comparison needed.
        if self.session_key_id != claims.credential {
            return Err(invalid("the Credential is not the statement's session key"));
        }
        if self.audience != claims.audience {
            return Err(invalid(format!(
                "the statement is for audience {:?}, the request for {:?}",
                self.audience, claims.audience
            )));
        }
        // The request date and the statement window both come from the signer's clock, so they
        // are compared without skew. The date is within the skew of our clock, which bounds the
        // statement's use by our clock to [not_before - skew, not_after + skew]; that is checked
        // too, so the bound holds even for a caller that skipped the date check.
        if claims.date_unix < self.not_before
            || claims.now_unix < self.not_before.saturating_sub(claims.skew_secs)
        {
            return Err(invalid("the statement is not valid yet"));
        }
        if claims.date_unix > self.not_after
            || claims.now_unix > self.usable_until(claims.skew_secs)
        {
            return Err(invalid(format!(
                "the statement expired {} s before the request's date",
                claims.date_unix.saturating_sub(self.not_after).max(0)
            )));
        }
        Ok(())
    }
}

/// A statement whose device signature verified.
#[derive(Debug)]
struct VerifiedStatement {
    device_key_id: String,
    /// The device public key (SPKI DER) the signature verified with.
    device_spki: Vec<u8>,
    session_key: Arc<PreparedKey>,
    terms: Terms,
}

fn invalid(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectCode::DelegationInvalid, detail)
}

fn foreign_signature() -> Rejection {
    invalid("the statement is not signed by the enrolled device key")
}

/// The bounded cache of verified statements.
#[derive(Debug)]
pub struct StatementCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Arc<VerifiedStatement>>>,
}

impl Default for StatementCache {
    fn default() -> Self {
        Self::new(STATEMENT_CACHE_CAPACITY)
    }
}

impl StatementCache {
    /// A cache holding at most `capacity` statements.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Statements currently remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every statement (a new verify backend prepares keys differently).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Arc<VerifiedStatement>> {
        // A poisoned lock only costs the cache: verify afresh.
        self.entries.lock().ok()?.get(hash).map(Arc::clone)
    }

    fn insert(&self, hash: [u8; 32], entry: Arc<VerifiedStatement>, now: i64, skew: i64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.terms.usable_until(skew) >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(hash, entry);
    }

    /// Checks `header_value` for a request with `claims`. `lookup` finds a registered key (and
    /// refuses unknown or revoked ones with their usual codes); `prepare` turns a public key into
    /// the verify backend's form.
    pub fn check(
        &self,
        header_value: &str,
        claims: &RequestClaims<'_>,
        lookup: impl FnOnce(&str) -> Result<RegisteredKey, Rejection>,
        prepare: impl Fn(&PublicKey) -> Result<Arc<PreparedKey>, Rejection>,
    ) -> Result<CheckedDelegation, Rejection> {
        self.check_with_assertions(header_value, claims, lookup, prepare, |_, _| {
            Err(invalid(
                "this verifier accepts no assertion-signed statements",
            ))
        })
    }

    /// [`StatementCache::check`], also accepting statements signed by a WebAuthn assertion
    /// (docs/WEBAUTHN.md): `assertion` checks the assertion of such a statement against the
    /// device key (a FIDO2 credential) and answers the message its ES256 signature covers.
    pub fn check_with_assertions(
        &self,
        header_value: &str,
        claims: &RequestClaims<'_>,
        lookup: impl FnOnce(&str) -> Result<RegisteredKey, Rejection>,
        prepare: impl Fn(&PublicKey) -> Result<Arc<PreparedKey>, Rejection>,
        assertion: impl FnOnce(&RegisteredKey, &WebAuthnDelegation) -> Result<Vec<u8>, Rejection>,
    ) -> Result<CheckedDelegation, Rejection> {
        let hash: [u8; 32] = Sha256::digest(header_value.as_bytes()).into();
        if let Some(entry) = self.get(&hash) {
            entry.terms.check(claims)?;
            let device_key = lookup(&entry.device_key_id)?;
            // The registered key for this id changed since the statement was cached: the old
            // verification says nothing about the new key.
            if entry.device_spki != device_key.public_key.spki_der() {
                return Err(foreign_signature());
            }
            return Ok(CheckedDelegation {
                device_key,
                session_key: Arc::clone(&entry.session_key),
                usable_until_unix: entry.terms.usable_until(claims.skew_secs),
                issued_unix: entry.terms.not_before,
                expires_unix: entry.terms.not_after,
            });
        }
        let (statement, signature, webauthn) = if is_webauthn_delegation(header_value) {
            let parsed = WebAuthnDelegation::parse_header_value(header_value)
                .map_err(|e| invalid(e.to_string()))?;
            (
                parsed.statement.clone(),
                parsed.signature.clone(),
                Some(parsed),
            )
        } else {
            let (statement, signature) = DelegationStatement::parse_header_value(header_value)
                .map_err(|e| invalid(e.to_string()))?;
            (statement, signature, None)
        };
        let terms = Terms::of(&statement);
        terms.check(claims)?;
        let device_key = lookup(&statement.device_key_id)?;
        let device = prepare(&device_key.public_key)?;
        let message = match &webauthn {
            Some(delegation) => assertion(&device_key, delegation)?,
            None => statement.to_text().into_bytes(),
        };
        if !device.verify(&message, &signature) {
            return Err(foreign_signature());
        }
        let session_key = prepare(&statement.session_key)?;
        let usable_until_unix = terms.usable_until(claims.skew_secs);
        let (issued_unix, expires_unix) = (terms.not_before, terms.not_after);
        self.insert(
            hash,
            Arc::new(VerifiedStatement {
                device_key_id: statement.device_key_id,
                device_spki: device_key.public_key.spki_der().to_vec(),
                session_key: Arc::clone(&session_key),
                terms,
            }),
            claims.now_unix,
            claims.skew_secs,
        );
        Ok(CheckedDelegation {
            device_key,
            session_key,
            usable_until_unix,
            issued_unix,
            expires_unix,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hwsign_proto::SigningTime;
    use hwsign_proto::api::KeyLevel;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::{Signature, SigningKey};

    use super::*;
    use crate::ecdsa_backend::VerifyBackend;

    const NOW: i64 = 1_795_462_200;
    const AUDIENCE: &str = "payments";

    struct Key {
        signing: SigningKey,
        public: PublicKey,
    }

    fn key(seed: &str) -> Result<Key, Box<dyn std::error::Error>> {
        let signing = SigningKey::from_slice(&Sha256::digest(seed.as_bytes()))?;
        let public = PublicKey::from_verifying_key(*signing.verifying_key())?;
        Ok(Key { signing, public })
    }

    fn statement(
        device: &Key,
        session: &Key,
        audience: &str,
        nb: i64,
        na: i64,
    ) -> DelegationStatement {
        DelegationStatement {
            device_key_id: device.public.key_id(),
            session_key: session.public.clone(),
            audience: audience.into(),
            not_before: SigningTime::from_unix(nb),
            not_after: SigningTime::from_unix(na),
        }
    }

    fn header(
        statement: &DelegationStatement,
        signer: &Key,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let signature: Signature = signer.signing.sign_prehash(&statement.digest())?;
        Ok(statement.to_header_value(signature.to_der().as_bytes()))
    }

    fn claims<'a>(session: &'a str, date: i64) -> RequestClaims<'a> {
        RequestClaims {
            credential: session,
            audience: AUDIENCE,
            date_unix: date,
            now_unix: date,
            skew_secs: 300,
        }
    }

    /// A registry of one device key, revoked or not, counting lookups.
    struct Registry {
        device: RegisteredKey,
        lookups: AtomicUsize,
    }

    impl Registry {
        fn new(device: &Key, revoked: bool) -> Self {
            let mut key = RegisteredKey::new(device.public.clone(), "device", KeyLevel::Tpm, 0);
            key.revoked = revoked;
            Self {
                device: key,
                lookups: AtomicUsize::new(0),
            }
        }

        fn lookup(&self, id: &str) -> Result<RegisteredKey, Rejection> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            if id != self.device.key_id {
                return Err(Rejection::new(RejectCode::UnknownKey, "unknown"));
            }
            if self.device.revoked {
                return Err(Rejection::new(RejectCode::DeviceRevoked, "revoked"));
            }
            Ok(self.device.clone())
        }
    }

    fn prepare(key: &PublicKey) -> Result<Arc<PreparedKey>, Rejection> {
        Ok(Arc::new(VerifyBackend::default().prepare(key)))
    }

    fn check(
        cache: &StatementCache,
        registry: &Registry,
        value: &str,
        claims: &RequestClaims<'_>,
    ) -> Result<CheckedDelegation, RejectCode> {
        cache
            .check(value, claims, |id| registry.lookup(id), prepare)
            .map_err(|r| r.code())
    }

    #[test]
    fn valid_statement_is_accepted_and_cached() -> Result<(), Box<dyn std::error::Error>> {
        let (device, session) = (key("device")?, key("session")?);
        let value = header(
            &statement(&device, &session, AUDIENCE, NOW - 30, NOW + 870),
            &device,
        )?;
        let registry = Registry::new(&device, false);
        let cache = StatementCache::default();
        let session_id = session.public.key_id();
        let checked = check(&cache, &registry, &value, &claims(&session_id, NOW))
            .map_err(|c| c.to_string())?;
        assert_eq!(checked.device_key.key_id, device.public.key_id());
        assert!(checked.session_key.is_for(&session.public));
        assert_eq!(cache.len(), 1);
        // The cached entry still consults the registry and still checks the window.
        assert!(check(&cache, &registry, &value, &claims(&session_id, NOW + 800)).is_ok());
        assert_eq!(registry.lookups.load(Ordering::Relaxed), 2);
        assert_eq!(
            check(&cache, &registry, &value, &claims(&session_id, NOW + 871)).err(),
            Some(RejectCode::DelegationInvalid)
        );
        Ok(())
    }

    #[test]
    fn window_edges() -> Result<(), Box<dyn std::error::Error>> {
        let (device, session) = (key("device")?, key("session")?);
        let value = header(
            &statement(&device, &session, AUDIENCE, NOW, NOW + 60),
            &device,
        )?;
        let registry = Registry::new(&device, false);
        let cache = StatementCache::default();
        let id = session.public.key_id();
        for (date, now, ok) in [
            (NOW, NOW, true),
            (NOW + 60, NOW + 60, true),
            (NOW + 60, NOW + 360, true),
            (NOW - 1, NOW, false),
            (NOW + 61, NOW + 61, false),
            (NOW + 60, NOW + 361, false),
            (NOW, NOW - 301, false),
        ] {
            let c = RequestClaims {
                now_unix: now,
                ..claims(&id, date)
            };
            assert_eq!(
                check(&cache, &registry, &value, &c).is_ok(),
                ok,
                "date {date} now {now}"
            );
        }
        Ok(())
    }

    #[test]
    fn refusals() -> Result<(), Box<dyn std::error::Error>> {
        let (device, session, other) = (key("device")?, key("session")?, key("other")?);
        let good = statement(&device, &session, AUDIENCE, NOW - 30, NOW + 870);
        let registry = Registry::new(&device, false);
        let id = session.public.key_id();
        let c = claims(&id, NOW);
        let invalid = Some(RejectCode::DelegationInvalid);
        let fresh = || StatementCache::default();

        // Signed by a key other than the one it names.
        let foreign = header(&good, &other)?;
        assert_eq!(check(&fresh(), &registry, &foreign, &c).err(), invalid);
        // Another audience.
        let billing = header(
            &statement(&device, &session, "billing", NOW - 30, NOW + 870),
            &device,
        )?;
        assert_eq!(check(&fresh(), &registry, &billing, &c).err(), invalid);
        // Expired, not yet valid.
        let expired = header(
            &statement(&device, &session, AUDIENCE, NOW - 900, NOW - 1),
            &device,
        )?;
        assert_eq!(check(&fresh(), &registry, &expired, &c).err(), invalid);
        let future = header(
            &statement(&device, &session, AUDIENCE, NOW + 1, NOW + 800),
            &device,
        )?;
        assert_eq!(check(&fresh(), &registry, &future, &c).err(), invalid);
        // The Credential is not the session key.
        let value = header(&good, &device)?;
        let device_id = device.public.key_id();
        assert_eq!(
            check(&fresh(), &registry, &value, &claims(&device_id, NOW)).err(),
            invalid
        );
        // Malformed: truncated, tampered statement text, signature bytes garbled.
        assert_eq!(
            check(&fresh(), &registry, &value[..value.len() - 4], &c).err(),
            invalid
        );
        assert_eq!(check(&fresh(), &registry, "e30.MEUCIQ", &c).err(), invalid);
        let (text, sig) = value.split_once('.').ok_or("no dot")?;
        let tampered = format!("{}.{sig}", text.replacen('A', "B", 1));
        assert_eq!(check(&fresh(), &registry, &tampered, &c).err(), invalid);
        // Names a device the registry does not know / has revoked.
        let unknown = header(
            &statement(&other, &session, AUDIENCE, NOW - 30, NOW + 870),
            &other,
        )?;
        assert_eq!(
            check(&fresh(), &registry, &unknown, &c).err(),
            Some(RejectCode::UnknownKey)
        );
        let revoked = Registry::new(&device, true);
        assert_eq!(
            check(&fresh(), &revoked, &value, &c).err(),
            Some(RejectCode::DeviceRevoked)
        );
        // The good one passes, so each refusal above is about its own defect.
        assert!(check(&fresh(), &registry, &value, &c).is_ok());
        Ok(())
    }

    #[test]
    fn revocation_and_key_change_reach_cached_statements() -> Result<(), Box<dyn std::error::Error>>
    {
        let (device, session, replacement) = (key("device")?, key("session")?, key("replacement")?);
        let value = header(
            &statement(&device, &session, AUDIENCE, NOW - 30, NOW + 870),
            &device,
        )?;
        let cache = StatementCache::default();
        let id = session.public.key_id();
        assert!(
            check(
                &cache,
                &Registry::new(&device, false),
                &value,
                &claims(&id, NOW)
            )
            .is_ok()
        );
        assert_eq!(
            check(
                &cache,
                &Registry::new(&device, true),
                &value,
                &claims(&id, NOW)
            )
            .err(),
            Some(RejectCode::DeviceRevoked)
        );
        // A registry whose entry for this id holds another public key (impossible with derived
        // ids, but the cache must not rely on that).
        let mut swapped = Registry::new(&device, false);
        swapped.device.public_key = replacement.public.clone();
        assert_eq!(
            check(&cache, &swapped, &value, &claims(&id, NOW)).err(),
            Some(RejectCode::DelegationInvalid)
        );
        Ok(())
    }

    #[test]
    fn cache_is_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let device = key("device")?;
        let registry = Registry::new(&device, false);
        let cache = StatementCache::new(4);
        for i in 0..10 {
            let session = key(&format!("session-{i}"))?;
            let value = header(
                &statement(&device, &session, AUDIENCE, NOW - 30, NOW + 870),
                &device,
            )?;
            let id = session.public.key_id();
            assert!(check(&cache, &registry, &value, &claims(&id, NOW)).is_ok());
            assert!(cache.len() <= 4);
        }
        Ok(())
    }
}
