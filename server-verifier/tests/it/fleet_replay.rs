//! Fleet replay caches: the `check_and_remember` contract on memory, a real Redis node and a
//! real three-master Redis Cluster (started by the test harness); concurrent reservations of one
//! nonce from many connections; per-key quotas across connections; Redis killed under a running
//! cache (fail closed: `verifier_unavailable`) and back (with `appendonly yes`: served again,
//! same cache object; without persistence: refused for a replay window, it forgot the nonces).

use crate::replay_cache::put_limited as put;

use anyhow::Result;
use hwsign_verifier::replay::open_replay_cache;
use hwsign_verifier::{Freshness, ReplayCache, ReplayError};

const KEY: &str = "hk1_00000000000000000000000000000001";
const OTHER_KEY: &str = "hk1_00000000000000000000000000000002";

/// The contract of `ReplayCache::check_and_remember`, steps 1-3 and 5 (step 4, a full cache, is
/// the memory cache's own bound: Redis is bounded by its maxmemory).
fn contract(cache: &dyn ReplayCache) -> Result<()> {
    let many = usize::MAX;
    // 1. Never inserted when already expired; the expiry itself is inclusive.
    assert_eq!(put(cache, KEY, "late", 99, 100, many)?, Freshness::Expired);
    assert_eq!(put(cache, KEY, "late", 200, 100, many)?, Freshness::Fresh);
    assert_eq!(put(cache, KEY, "edge", 100, 100, many)?, Freshness::Fresh);
    assert_eq!(
        put(cache, KEY, "edge", 100, 100, many)?,
        Freshness::Replayed
    );
    // 2. Replays per key until the expiry; another key's nonce is its own.
    assert_eq!(put(cache, KEY, "n1", 1_000, 500, many)?, Freshness::Fresh);
    assert_eq!(
        put(cache, KEY, "n1", 1_000, 600, many)?,
        Freshness::Replayed
    );
    assert_eq!(
        put(cache, KEY, "n1", 1_000, 1_000, many)?,
        Freshness::Replayed
    );
    assert_eq!(
        put(cache, OTHER_KEY, "n1", 1_000, 600, many)?,
        Freshness::Fresh
    );
    assert_eq!(put(cache, KEY, "n1", 2_000, 1_001, many)?, Freshness::Fresh);
    // Key and nonce cannot be confused, whatever they contain.
    assert_eq!(put(cache, "a", "b c", 5_000, 0, many)?, Freshness::Fresh);
    assert_eq!(put(cache, "a b", "c", 5_000, 0, many)?, Freshness::Fresh);
    assert_eq!(put(cache, "a}:n:b", "c", 5_000, 0, many)?, Freshness::Fresh);
    assert_eq!(put(cache, "a", "b}:n:c", 5_000, 0, many)?, Freshness::Fresh);
    // 3. Quota: a key holding its quota of live nonces is refused and nothing is remembered; a
    // replay is still a replay; other keys are not affected; expired nonces free the quota.
    let quota_key = "hk1_00000000000000000000000000000003";
    for i in 0..4 {
        assert_eq!(
            put(cache, quota_key, &format!("q{i}"), 10_050, 10_000, 4)?,
            Freshness::Fresh
        );
    }
    assert_eq!(
        put(cache, quota_key, "q4", 10_050, 10_001, 4)?,
        Freshness::OverQuota
    );
    assert_eq!(
        put(cache, quota_key, "q0", 10_050, 10_001, 4)?,
        Freshness::Replayed
    );
    assert_eq!(
        put(
            cache,
            "hk1_00000000000000000000000000000004",
            "q4",
            10_050,
            10_001,
            4
        )?,
        Freshness::Fresh
    );
    assert_eq!(
        put(cache, quota_key, "q4", 10_200, 10_051, 4)?,
        Freshness::Fresh
    );
    // The refused q4 was not remembered at 10_001: at 10_051 it was fresh, now it is taken.
    assert_eq!(
        put(cache, quota_key, "q4", 10_200, 10_052, 4)?,
        Freshness::Replayed
    );
    Ok(())
}

#[test]
fn fleet_replay_contract_memory() -> Result<()> {
    contract(open_replay_cache("memory", 1_000)?.as_ref())
}

#[test]
fn fleet_replay_urls_are_checked() {
    for url in ["", "memcached://x", "redis+cluster://", "redis://"] {
        assert!(
            matches!(open_replay_cache(url, 10), Err(ReplayError::InvalidUrl(_))),
            "{url}"
        );
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::fleet_registry::eventually;
    use crate::verify_support;

    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use hwsign_verifier::{
        KeyLevel, KeyRegistry, MemoryRegistry, RejectCode, Verifier, VerifierConfig,
    };
    use verify_support::{SignOptions, T0, TestKey, TestRequest, at, sign};

    use hwsign_test_support::redis::{Redis, RedisCluster};
    use hwsign_verifier::replay::RedisReplayCache;

    const RECOVERY: Duration = Duration::from_secs(30);

    /// A verifier whose replay cache is `replay`, and requests signed by its one key.
    fn verifier_on(replay: Arc<dyn ReplayCache>) -> Result<(Verifier, TestKey)> {
        let key = TestKey::from_seed("fleet-replay")?;
        let registry = Arc::new(MemoryRegistry::new());
        registry.add(key.registered("laptop", KeyLevel::Software))?;
        let config = VerifierConfig::new(verify_support::AUDIENCE, ["api.example.com"]);
        Ok((Verifier::new(config, registry, replay)?, key))
    }

    fn signed(key: &TestKey) -> Result<TestRequest> {
        sign(
            key,
            &TestRequest::new("GET", "/v1/a", "", "api.example.com"),
            &SignOptions {
                time: T0,
                ..SignOptions::default()
            },
        )
    }

    fn verdict(verifier: &Verifier, request: &TestRequest) -> Result<String, RejectCode> {
        request
            .with_parts(|p| verifier.verify(p, &request.body_sha256(), at(0)))
            .map(|p| p.key_id)
            .map_err(|r| r.code())
    }

    #[test]
    fn fleet_replay_contract_redis_single_node() -> Result<()> {
        let redis = Redis::start()?;
        contract(open_replay_cache(&redis.url(), 0)?.as_ref())
    }

    #[test]
    fn fleet_replay_contract_redis_cluster() -> Result<()> {
        let cluster = RedisCluster::start()?;
        let cache = open_replay_cache(&cluster.url(), 0)?;
        contract(cache.as_ref())?;
        // Keys spread over the three masters: many key ids, each reserved once.
        for i in 0..200 {
            let key = format!("hk1_{i:032x}");
            assert_eq!(put(cache.as_ref(), &key, "n", 100, 0, 8)?, Freshness::Fresh);
            assert_eq!(
                put(cache.as_ref(), &key, "n", 100, 0, 8)?,
                Freshness::Replayed
            );
        }
        Ok(())
    }

    /// One captured request sent by 16 replicas (each its own connections) at the same moment:
    /// exactly one reservation is fresh.
    fn one_fresh_among_concurrent(url: &str) -> Result<()> {
        const REPLICAS: usize = 16;
        for round in 0..5 {
            let barrier = Arc::new(Barrier::new(REPLICAS));
            let caches: Vec<Arc<RedisReplayCache>> = (0..REPLICAS)
                .map(|_| RedisReplayCache::open(url).map(Arc::new))
                .collect::<Result<_, _>>()?;
            let threads: Vec<_> = caches
                .into_iter()
                .map(|cache| {
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        barrier.wait();
                        put(cache.as_ref(), KEY, &format!("same-{round}"), 100, 0, 1_000)
                    })
                })
                .collect();
            let mut fresh = 0;
            for thread in threads {
                match thread.join() {
                    Ok(Ok(Freshness::Fresh)) => fresh += 1,
                    Ok(Ok(Freshness::Replayed)) => {}
                    other => anyhow::bail!("unexpected answer {other:?}"),
                }
            }
            assert_eq!(fresh, 1, "round {round}");
        }
        Ok(())
    }

    /// 8 replicas × 10 distinct nonces of one key with a quota of 20: exactly 20 are admitted.
    fn quota_across_replicas(url: &str) -> Result<()> {
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|replica| {
                let barrier = Arc::clone(&barrier);
                let cache = RedisReplayCache::open(url);
                std::thread::spawn(move || -> Result<Vec<Freshness>> {
                    let cache = cache?;
                    barrier.wait();
                    (0..10)
                        .map(|i| {
                            Ok(put(
                                &cache,
                                OTHER_KEY,
                                &format!("r{replica}-{i}"),
                                100,
                                0,
                                20,
                            )?)
                        })
                        .collect()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for thread in threads {
            answers.extend(
                thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("thread panicked"))??,
            );
        }
        let fresh = answers.iter().filter(|a| **a == Freshness::Fresh).count();
        let over = answers
            .iter()
            .filter(|a| **a == Freshness::OverQuota)
            .count();
        assert_eq!((fresh, over), (20, 60));
        Ok(())
    }

    #[test]
    fn fleet_redis_concurrent_reservations_and_quotas_single_node() -> Result<()> {
        let redis = Redis::start()?;
        one_fresh_among_concurrent(&redis.url())?;
        quota_across_replicas(&redis.url())
    }

    #[test]
    fn fleet_redis_concurrent_reservations_and_quotas_cluster() -> Result<()> {
        let cluster = RedisCluster::start()?;
        one_fresh_among_concurrent(&cluster.url())?;
        quota_across_replicas(&cluster.url())
    }

    /// Redis (with `appendonly yes`) killed under a running verifier: requests are refused with
    /// `verifier_unavailable`; once Redis is back the same verifier (same cache object) serves
    /// again, and the nonce accepted before the outage is still refused (Redis kept it).
    #[test]
    fn fleet_redis_killed_then_restarted_fails_closed_then_recovers() -> Result<()> {
        let mut redis = Redis::start_persistent()?;
        let (verifier, key) = verifier_on(open_replay_cache(&redis.url(), 0)?)?;
        let first = signed(&key)?;
        assert_eq!(verdict(&verifier, &first), Ok(key.id.clone()));
        assert_eq!(verdict(&verifier, &first), Err(RejectCode::ReplayedNonce));

        redis.server().stop();
        assert_eq!(
            verdict(&verifier, &signed(&key)?),
            Err(RejectCode::VerifierUnavailable)
        );

        redis.server().start()?;
        eventually(RECOVERY, || {
            Ok(verdict(&verifier, &signed(&key)?) == Ok(key.id.clone()))
        })?;
        assert_eq!(verdict(&verifier, &first), Err(RejectCode::ReplayedNonce));
        let after = signed(&key)?;
        assert_eq!(verdict(&verifier, &after), Ok(key.id.clone()));
        assert_eq!(verdict(&verifier, &after), Err(RejectCode::ReplayedNonce));
        Ok(())
    }

    /// Redis without persistence restarted under a running verifier comes back empty: the
    /// nonce accepted before would be replayable, so the verifier that saw the old data set
    /// refuses every request (`verifier_unavailable`) for the replay window, while Redis itself
    /// answers (a cache object that never saw the old data set reserves at once).
    #[test]
    fn fleet_redis_restarted_empty_is_refused_for_a_replay_window() -> Result<()> {
        let mut redis = Redis::start()?;
        let (verifier, key) = verifier_on(open_replay_cache(&redis.url(), 0)?)?;
        let first = signed(&key)?;
        assert_eq!(verdict(&verifier, &first), Ok(key.id.clone()));

        redis.server().stop();
        redis.server().start()?;
        // Redis is up: a cache that never saw the old data set works.
        let newcomer = open_replay_cache(&redis.url(), 0)?;
        assert_eq!(
            put(newcomer.as_ref(), "hk1_newcomer", "n1", 100, 0, 8)?,
            Freshness::Fresh
        );
        // The verifier that did refuses, the replay of the request it accepted above included
        // (Redis forgot its nonce), on every try (it reconnected after the first failure).
        for _ in 0..5 {
            assert_eq!(
                verdict(&verifier, &first),
                Err(RejectCode::VerifierUnavailable)
            );
            assert_eq!(
                verdict(&verifier, &signed(&key)?),
                Err(RejectCode::VerifierUnavailable)
            );
        }
        Ok(())
    }

    /// A cluster master killed: reservations for its slots fail closed; back, served again.
    #[test]
    fn fleet_redis_cluster_master_killed_then_restarted() -> Result<()> {
        let mut cluster = RedisCluster::start()?;
        let cache = open_replay_cache(&cluster.url(), 0)?;
        let keys: Vec<String> = (0..30).map(|i| format!("hk1_{i:032x}")).collect();
        for key in &keys {
            assert_eq!(
                put(cache.as_ref(), key, "before", 100, 0, 8)?,
                Freshness::Fresh
            );
        }
        cluster.nodes()[1].stop();
        let failed = keys
            .iter()
            .filter(|key| {
                matches!(
                    put(cache.as_ref(), key, "during", 100, 0, 8),
                    Err(ReplayError::Unavailable(_))
                )
            })
            .count();
        assert!(failed > 0, "no key fell on the stopped master");
        cluster.nodes()[1].start()?;
        let mut round = 0;
        eventually(RECOVERY, || {
            round += 1;
            Ok(keys.iter().all(|key| {
                matches!(
                    put(
                        cache.as_ref(),
                        key,
                        &format!("after-{round}"),
                        100,
                        0,
                        1_000
                    ),
                    Ok(Freshness::Fresh)
                )
            }))
        })?;
        Ok(())
    }

    /// A Redis that may evict live nonces is refused (fail closed), not trusted.
    #[test]
    fn fleet_redis_with_an_evicting_policy_is_refused() -> Result<()> {
        let redis = Redis::start()?;
        let port = redis
            .url()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        hwsign_test_support::redis::redis_cli(
            port.parse()?,
            &["config", "set", "maxmemory-policy", "allkeys-lru"],
        )?;
        let cache = open_replay_cache(&redis.url(), 0)?;
        assert!(matches!(
            put(cache.as_ref(), KEY, "n", 100, 0, 8),
            Err(ReplayError::Unavailable(_))
        ));
        Ok(())
    }
}

/// The fleet form end to end in one verifier: the cached PostgreSQL registry and the Redis replay
/// cache, both opened by URL. A replay is refused; a revocation made through another replica's
/// registry is refused (`device_revoked`); PostgreSQL down → `verifier_unavailable`, back →
/// served again by the same verifier.
#[cfg(all(feature = "redis", feature = "postgres"))]
#[test]
fn fleet_verifier_on_postgres_and_redis() -> Result<()> {
    use std::sync::Arc;
    use std::time::Duration;

    use hwsign_test_support::postgres::Postgres;
    use hwsign_test_support::redis::Redis;
    use hwsign_verifier::registry::open_registry;
    use hwsign_verifier::{KeyLevel, RejectCode, Verifier, VerifierConfig};

    use crate::fleet_registry::eventually;
    use crate::verify_support::{self, SignOptions, T0, TestKey, TestRequest, at, sign};

    let mut pg = Postgres::start()?;
    let redis = Redis::start()?;
    let registry = open_registry(&pg.url())?;
    let other_replica = open_registry(&pg.url())?;
    let key = TestKey::from_seed("fleet-verifier")?;
    other_replica.add(key.registered("laptop", KeyLevel::Software))?;
    let verifier = Verifier::new(
        VerifierConfig::new(verify_support::AUDIENCE, ["api.example.com"]),
        Arc::clone(&registry),
        open_replay_cache(&redis.url(), 0)?,
    )?;
    let signed = || {
        sign(
            &key,
            &TestRequest::new("GET", "/v1/a", "", "api.example.com"),
            &SignOptions {
                time: T0,
                ..SignOptions::default()
            },
        )
    };
    let verdict = |request: &TestRequest| {
        request
            .with_parts(|p| verifier.verify(p, &request.body_sha256(), at(0)))
            .map(|p| p.key_id)
            .map_err(|r| r.code())
    };
    let limit = Duration::from_secs(5);
    eventually(limit, || Ok(verdict(&signed()?) == Ok(key.id.clone())))?;
    let request = signed()?;
    assert_eq!(verdict(&request), Ok(key.id.clone()));
    assert_eq!(verdict(&request), Err(RejectCode::ReplayedNonce));

    pg.stop()?;
    assert_eq!(verdict(&signed()?), Err(RejectCode::VerifierUnavailable));
    pg.start_again()?;
    eventually(Duration::from_secs(15), || {
        Ok(verdict(&signed()?) == Ok(key.id.clone()))
    })?;

    other_replica.revoke(&key.id)?;
    eventually(limit, || {
        Ok(verdict(&signed()?) == Err(RejectCode::DeviceRevoked))
    })?;
    Ok(())
}
