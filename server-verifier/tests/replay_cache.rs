//! The bounded in-memory replay cache: replays detected, expired nonces forgotten, and a full
//! cache refusing rather than forgetting a live nonce.

use anyhow::Result;
use hwsign_verifier::{Freshness, MemoryReplayCache, ReplayCache, ReplayError};

const KEY: &str = "hk1_00000000000000000000000000000001";
const OTHER_KEY: &str = "hk1_00000000000000000000000000000002";

#[test]
fn detects_replays_per_key_until_expiry() -> Result<()> {
    let cache = MemoryReplayCache::new(10);
    assert_eq!(
        cache.check_and_remember(KEY, "n1", 100, 0)?,
        Freshness::Fresh
    );
    assert_eq!(
        cache.check_and_remember(KEY, "n1", 100, 50)?,
        Freshness::Replayed
    );
    // Expiry is inclusive: at second 100 the request could still be accepted.
    assert_eq!(
        cache.check_and_remember(KEY, "n1", 100, 100)?,
        Freshness::Replayed
    );
    assert_eq!(
        cache.check_and_remember(OTHER_KEY, "n1", 100, 50)?,
        Freshness::Fresh
    );
    assert_eq!(
        cache.check_and_remember(KEY, "n2", 100, 50)?,
        Freshness::Fresh
    );
    assert_eq!(
        cache.check_and_remember(KEY, "n1", 200, 101)?,
        Freshness::Fresh
    );
    Ok(())
}

#[test]
fn key_and_nonce_cannot_be_confused() -> Result<()> {
    let cache = MemoryReplayCache::new(10);
    assert_eq!(
        cache.check_and_remember("a", "b c", 100, 0)?,
        Freshness::Fresh
    );
    assert_eq!(
        cache.check_and_remember("a b", "c", 100, 0)?,
        Freshness::Fresh
    );
    Ok(())
}

#[test]
fn full_cache_evicts_only_expired_nonces_and_otherwise_refuses() -> Result<()> {
    let cache = MemoryReplayCache::new(3);
    assert_eq!(cache.capacity(), 3);
    assert_eq!(cache.check_and_remember(KEY, "a", 10, 0)?, Freshness::Fresh);
    assert_eq!(cache.check_and_remember(KEY, "b", 20, 0)?, Freshness::Fresh);
    assert_eq!(cache.check_and_remember(KEY, "c", 30, 0)?, Freshness::Fresh);
    assert_eq!(cache.len(), 3);

    // Every nonce is live: refuse rather than forget one.
    let refused = cache.check_and_remember(KEY, "d", 40, 5);
    assert!(
        matches!(refused, Err(ReplayError::Full { capacity: 3 })),
        "{refused:?}"
    );
    // Replays are still reported while full.
    assert_eq!(
        cache.check_and_remember(KEY, "a", 10, 5)?,
        Freshness::Replayed
    );

    // At 11 "a" has expired: exactly one slot frees up, and "b" and "c" are still remembered.
    assert_eq!(
        cache.check_and_remember(KEY, "d", 40, 11)?,
        Freshness::Fresh
    );
    assert_eq!(cache.len(), 3);
    assert!(matches!(
        cache.check_and_remember(KEY, "e", 40, 11),
        Err(ReplayError::Full { .. })
    ));
    assert_eq!(
        cache.check_and_remember(KEY, "b", 20, 11)?,
        Freshness::Replayed
    );
    assert_eq!(
        cache.check_and_remember(KEY, "c", 30, 11)?,
        Freshness::Replayed
    );

    // Later, everything but "d" has expired.
    assert_eq!(
        cache.check_and_remember(KEY, "e", 50, 31)?,
        Freshness::Fresh
    );
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache.check_and_remember(KEY, "d", 40, 31)?,
        Freshness::Replayed
    );
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
            cache.check_and_remember(KEY, &nonce, second + 100, second)?,
            Freshness::Fresh
        );
        assert!(cache.len() <= 1000);
    }
    // ...but 20 per second does, and then the cache refuses instead of growing.
    for i in 0..40_000i64 {
        let second = 20_000 + i / 20;
        match cache.check_and_remember(KEY, &format!("m{i}"), second + 100, second) {
            Ok(Freshness::Fresh) => {}
            Ok(Freshness::Replayed) => anyhow::bail!("fresh nonce reported as replay"),
            Err(ReplayError::Full { .. }) => refused += 1,
            Err(other) => return Err(other.into()),
        }
        assert!(cache.len() <= 1000);
    }
    assert!(refused > 0);
    Ok(())
}
