//! The bounded in-memory replay cache: replays detected, expired nonces forgotten, a full cache
//! refusing rather than forgetting a live nonce, per-key quotas, and no entry born expired.

use anyhow::Result;
use hwsign_verifier::{Freshness, MemoryReplayCache, ReplayCache, ReplayError, Reservation};

/// `check_and_remember` with a quota no test here reaches.
fn put(
    cache: &MemoryReplayCache,
    key_id: &str,
    nonce: &str,
    expires_unix: i64,
    now_unix: i64,
) -> Result<Freshness, ReplayError> {
    put_limited(cache, key_id, nonce, expires_unix, now_unix, usize::MAX)
}

/// `check_and_remember` on any replay cache (the fleet tests share it).
pub(crate) fn put_limited(
    cache: &dyn ReplayCache,
    key_id: &str,
    nonce: &str,
    expires_unix: i64,
    now_unix: i64,
    per_key_limit: usize,
) -> Result<Freshness, ReplayError> {
    cache.check_and_remember(&Reservation {
        key_id,
        nonce,
        expires_unix,
        now_unix,
        per_key_limit,
    })
}

const KEY: &str = "hk1_00000000000000000000000000000001";
const OTHER_KEY: &str = "hk1_00000000000000000000000000000002";

#[test]
fn detects_replays_per_key_until_expiry() -> Result<()> {
    let cache = MemoryReplayCache::new(10);
    assert_eq!(put(&cache, KEY, "n1", 100, 0)?, Freshness::Fresh);
    assert_eq!(put(&cache, KEY, "n1", 100, 50)?, Freshness::Replayed);
    // Expiry is inclusive: at second 100 the request could still be accepted.
    assert_eq!(put(&cache, KEY, "n1", 100, 100)?, Freshness::Replayed);
    assert_eq!(put(&cache, OTHER_KEY, "n1", 100, 50)?, Freshness::Fresh);
    assert_eq!(put(&cache, KEY, "n2", 100, 50)?, Freshness::Fresh);
    assert_eq!(put(&cache, KEY, "n1", 200, 101)?, Freshness::Fresh);
    Ok(())
}

#[test]
fn key_and_nonce_cannot_be_confused() -> Result<()> {
    let cache = MemoryReplayCache::new(10);
    assert_eq!(put(&cache, "a", "b c", 100, 0)?, Freshness::Fresh);
    assert_eq!(put(&cache, "a b", "c", 100, 0)?, Freshness::Fresh);
    Ok(())
}

#[test]
fn full_cache_evicts_only_expired_nonces_and_otherwise_refuses() -> Result<()> {
    let cache = MemoryReplayCache::new(3);
    assert_eq!(cache.capacity(), 3);
    assert_eq!(put(&cache, KEY, "a", 10, 0)?, Freshness::Fresh);
    assert_eq!(put(&cache, KEY, "b", 20, 0)?, Freshness::Fresh);
    assert_eq!(put(&cache, KEY, "c", 30, 0)?, Freshness::Fresh);
    assert_eq!(cache.len(), 3);

    // Every nonce is live: refuse rather than forget one.
    let refused = put(&cache, KEY, "d", 40, 5);
    assert!(
        matches!(refused, Err(ReplayError::Full { capacity: 3 })),
        "{refused:?}"
    );
    // Replays are still reported while full.
    assert_eq!(put(&cache, KEY, "a", 10, 5)?, Freshness::Replayed);

    // At 11 "a" has expired: exactly one slot frees up, and "b" and "c" are still remembered.
    assert_eq!(put(&cache, KEY, "d", 40, 11)?, Freshness::Fresh);
    assert_eq!(cache.len(), 3);
    assert!(matches!(
        put(&cache, KEY, "e", 40, 11),
        Err(ReplayError::Full { .. })
    ));
    assert_eq!(put(&cache, KEY, "b", 20, 11)?, Freshness::Replayed);
    assert_eq!(put(&cache, KEY, "c", 30, 11)?, Freshness::Replayed);

    // Later, everything but "d" has expired.
    assert_eq!(put(&cache, KEY, "e", 50, 31)?, Freshness::Fresh);
    assert_eq!(cache.len(), 2);
    assert_eq!(put(&cache, KEY, "d", 40, 31)?, Freshness::Replayed);
    Ok(())
}

#[test]
fn stays_within_its_bound_under_many_requests() -> Result<()> {
    let cache = MemoryReplayCache::new(1000);
    let mut refused = 0;
    for second in 0..20_000i64 {
        // Each nonce lives 100 s; 1 request per second never fills 1000 slots...
        let nonce = format!("n{second}");
        assert_eq!(
            put(&cache, KEY, &nonce, second + 100, second)?,
            Freshness::Fresh
        );
        assert!(cache.len() <= 1000);
    }
    // ...but 20 per second does, and then the cache refuses instead of growing.
    for i in 0..40_000i64 {
        let second = 20_000 + i / 20;
        match put(&cache, KEY, &format!("m{i}"), second + 100, second) {
            Ok(Freshness::Fresh) => {}
            Ok(other) => anyhow::bail!("fresh nonce reported as {other:?}"),
            Err(ReplayError::Full { .. }) => refused += 1,
            Err(other) => return Err(other.into()),
        }
        assert!(cache.len() <= 1000);
    }
    assert!(refused > 0);
    Ok(())
}

/// One key filling the cache with live nonces (e.g. week-long presigned URLs) is refused at its
/// quota; every other key still gets in, and the global-full case stays an error (503).
#[test]
fn hardening_one_key_cannot_fill_the_cache() -> Result<()> {
    let cache = MemoryReplayCache::new(10);
    for i in 0..4 {
        assert_eq!(
            put_limited(&cache, KEY, &format!("n{i}"), 604_800, 0, 4)?,
            Freshness::Fresh
        );
    }
    assert_eq!(
        put_limited(&cache, KEY, "n4", 604_800, 1, 4)?,
        Freshness::OverQuota
    );
    assert_eq!(cache.len_for(KEY), 4);
    // A replay is still reported as a replay, not as over quota.
    assert_eq!(
        put_limited(&cache, KEY, "n0", 604_800, 1, 4)?,
        Freshness::Replayed
    );
    // Another key is not affected.
    for i in 0..4 {
        assert_eq!(
            put_limited(&cache, OTHER_KEY, &format!("n{i}"), 100, 1, 4)?,
            Freshness::Fresh
        );
    }
    // Once the key's entries expire, its quota is free again.
    let third = "hk1_00000000000000000000000000000003";
    assert_eq!(put_limited(&cache, third, "x", 50, 1, 4)?, Freshness::Fresh);
    assert_eq!(put_limited(&cache, third, "y", 50, 1, 4)?, Freshness::Fresh);
    assert!(matches!(
        put_limited(&cache, third, "z", 50, 1, 4),
        Err(ReplayError::Full { capacity: 10 })
    ));
    assert_eq!(
        put_limited(&cache, third, "z", 200, 101, 4)?,
        Freshness::Fresh
    );
    assert_eq!(cache.len_for(OTHER_KEY), 0);
    assert_eq!(cache.len_for(KEY), 4);
    Ok(())
}

/// An entry that would already be expired is never inserted (it would be forgotten at once and
/// could mask nothing), and says so.
#[test]
fn hardening_expired_entries_are_never_inserted() -> Result<()> {
    let cache = MemoryReplayCache::new(10);
    assert_eq!(put(&cache, KEY, "late", 99, 100)?, Freshness::Expired);
    assert!(cache.is_empty());
    // Expiry is inclusive: an entry expiring this very second is still live and remembered.
    assert_eq!(put(&cache, KEY, "edge", 100, 100)?, Freshness::Fresh);
    assert_eq!(put(&cache, KEY, "edge", 100, 100)?, Freshness::Replayed);
    Ok(())
}
