//! The delegation statement cache through its public API: a statement's validity window at its
//! `not_before` edge (by the signer's date and by the verifier's clock), a verified statement not
//! verified again, and the cache's bound (expired entries go first, live ones stay).

use crate::verify_support;

use std::cell::Cell;
use std::sync::Arc;

use anyhow::Result;
use hwsign_proto::PublicKey;
use hwsign_verifier::delegation::{RequestClaims, StatementCache};
use hwsign_verifier::ecdsa_backend::PreparedKey;
use hwsign_verifier::{KeyLevel, RegisteredKey, RejectCode, Rejection, VerifyBackend};
use verify_support::{AUDIENCE, T0, TestKey, delegation_header};

const SKEW: i64 = 300;

/// One device key and the keys it delegates to; counts the keys prepared for verification (each
/// statement verified afresh prepares the device key and the session key).
struct Device {
    key: TestKey,
    registered: RegisteredKey,
    prepared: Cell<usize>,
}

impl Device {
    fn new() -> Result<Self> {
        let key = TestKey::from_seed("delegation-window-device")?;
        let registered = key.registered("device", KeyLevel::Tpm);
        Ok(Self {
            key,
            registered,
            prepared: Cell::new(0),
        })
    }

    fn statement(&self, session: &TestKey, not_before: i64, not_after: i64) -> Result<String> {
        delegation_header(&self.key, session, not_before, not_after)
    }

    /// Checks `statement` for a request by `session` dated `date`, with the verifier's clock at
    /// `now`.
    fn check(
        &self,
        cache: &StatementCache,
        statement: &str,
        session: &TestKey,
        date: i64,
        now: i64,
    ) -> Result<(), RejectCode> {
        let claims = RequestClaims {
            credential: &session.id,
            audience: AUDIENCE,
            date_unix: date,
            now_unix: now,
            skew_secs: SKEW,
        };
        let lookup = |id: &str| {
            if id == self.registered.key_id {
                Ok(self.registered.clone())
            } else {
                Err(Rejection::new(RejectCode::UnknownKey, "unknown key"))
            }
        };
        let prepare = |key: &PublicKey| -> Result<Arc<PreparedKey>, Rejection> {
            self.prepared.set(self.prepared.get() + 1);
            Ok(Arc::new(VerifyBackend::default().prepare(key)))
        };
        cache
            .check(statement, &claims, lookup, prepare)
            .map(|_| ())
            .map_err(|rejection| rejection.code())
    }

    /// Keys prepared since the last call.
    fn take_prepared(&self) -> usize {
        self.prepared.replace(0)
    }
}

/// A statement is usable from its `not_before` on, by the request's date (signer's clock, no
/// skew), and by the verifier's clock from `not_before - skew` on; one second earlier is refused.
#[test]
fn a_statement_is_refused_one_second_before_its_not_before() -> Result<()> {
    let device = Device::new()?;
    let session = TestKey::from_seed("delegation-window-session")?;
    let (not_before, not_after) = (T0, T0 + 900);
    let statement = device.statement(&session, not_before, not_after)?;

    // By the request's date: not_before - 1 is refused, not_before accepted (fresh caches, so
    // no verdict is a cached one).
    let invalid = Err(RejectCode::DelegationInvalid);
    let early = device.check(&StatementCache::default(), &statement, &session, T0 - 1, T0);
    assert_eq!(early, invalid);
    let on_time = device.check(&StatementCache::default(), &statement, &session, T0, T0);
    assert_eq!(on_time, Ok(()));

    // By the verifier's clock, for a request dated not_before: up to `skew` ahead is accepted.
    let lagging = device.check(
        &StatementCache::default(),
        &statement,
        &session,
        T0,
        T0 - SKEW,
    );
    assert_eq!(lagging, Ok(()));
    let too_far_behind = device.check(
        &StatementCache::default(),
        &statement,
        &session,
        T0,
        T0 - SKEW - 1,
    );
    assert_eq!(too_far_behind, invalid);

    // The same edges hold for a statement already in the cache.
    let cache = StatementCache::default();
    assert_eq!(device.check(&cache, &statement, &session, T0, T0), Ok(()));
    assert_eq!(
        device.check(&cache, &statement, &session, T0 - 1, T0),
        invalid
    );
    assert_eq!(
        device.check(&cache, &statement, &session, T0, T0 - SKEW - 1),
        invalid
    );
    assert_eq!(
        device.check(&cache, &statement, &session, T0, T0 - SKEW),
        Ok(())
    );
    Ok(())
}

/// A statement whose device signature verified is not verified again while it is cached, and is
/// verified afresh once the cache is cleared (as when the verify backend changes).
#[test]
fn a_cached_statement_is_not_verified_again() -> Result<()> {
    let device = Device::new()?;
    let session = TestKey::from_seed("delegation-window-session")?;
    let statement = device.statement(&session, T0, T0 + 900)?;
    let cache = StatementCache::default();
    assert!(cache.is_empty());

    assert_eq!(device.check(&cache, &statement, &session, T0, T0), Ok(()));
    assert_eq!(device.take_prepared(), 2, "device key and session key");
    assert_eq!((cache.len(), cache.is_empty()), (1, false));
    for offset in [1, 60, 900] {
        let at = T0 + offset;
        assert_eq!(device.check(&cache, &statement, &session, at, at), Ok(()));
    }
    assert_eq!(device.take_prepared(), 0, "answered from the cache");

    cache.clear();
    assert_eq!((cache.len(), cache.is_empty()), (0, true));
    assert_eq!(device.check(&cache, &statement, &session, T0, T0), Ok(()));
    assert_eq!(device.take_prepared(), 2, "verified afresh after clear");
    Ok(())
}

/// A full cache drops its expired statements first and keeps the live ones; when none has
/// expired it starts over. It never holds more than its capacity.
#[test]
fn a_full_cache_drops_expired_statements_first() -> Result<()> {
    let device = Device::new()?;
    let sessions = (0..4)
        .map(|i| TestKey::from_seed(&format!("delegation-window-session-{i}")))
        .collect::<Result<Vec<_>>>()?;
    let short = device.statement(&sessions[0], T0, T0 + 10)?;
    let long = device.statement(&sessions[1], T0, T0 + 900)?;
    let third = device.statement(&sessions[2], T0, T0 + 900)?;
    let fourth = device.statement(&sessions[3], T0, T0 + 900)?;
    let cache = StatementCache::new(2);

    assert_eq!(device.check(&cache, &short, &sessions[0], T0, T0), Ok(()));
    assert_eq!(device.check(&cache, &long, &sessions[1], T0, T0), Ok(()));
    assert_eq!(cache.len(), 2);
    device.take_prepared();

    // The short statement is no longer usable (not-after + skew has passed): it makes room.
    let later = T0 + 10 + SKEW + 1;
    assert_eq!(
        device.check(&cache, &third, &sessions[2], later, later),
        Ok(())
    );
    assert_eq!(device.take_prepared(), 2);
    assert_eq!(cache.len(), 2);
    // The long statement stayed cached.
    assert_eq!(
        device.check(&cache, &long, &sessions[1], later, later),
        Ok(())
    );
    assert_eq!(device.take_prepared(), 0, "the live statement was kept");

    // Full of live statements: the cache starts over with the new one.
    assert_eq!(
        device.check(&cache, &fourth, &sessions[3], later, later),
        Ok(())
    );
    assert_eq!(cache.len(), 1);
    device.take_prepared();
    assert_eq!(
        device.check(&cache, &fourth, &sessions[3], later, later),
        Ok(())
    );
    assert_eq!(device.take_prepared(), 0);
    Ok(())
}
