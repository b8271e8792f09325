//! Fleet figures (issue 11), on a real PostgreSQL and Redis started in temp dirs on loopback:
//! - `verify_rate_ratio_postgres`: `Verifier::verify` with the cached PostgreSQL registry (what
//!   `open_registry("postgres://…")` gives) ÷ the bare ECDSA verify, like `verify_rate_ratio`;
//! - `redis_replay_rate`: reservations/s through `RedisReplayCache` (one Lua script each) from
//!   8 threads, each with its own connections, on one Redis node (reported);
//! - `revocation_propagation_ms`: from a revocation committed through one replica's registry to
//!   the first lookup of another replica (its own connections, listener and warm cache) that
//!   answers `revoked` (median of the runs; the bound is one second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use hwsign_bench::fixtures::{T0, signing_key};
use hwsign_bench::signers::public_key;
use hwsign_bench::verify::VerifyFixture;
use hwsign_test_support::postgres::Postgres;
use hwsign_test_support::redis::Redis;
use hwsign_verifier::registry::{CachedRegistry, PostgresRegistry};
use hwsign_verifier::replay::RedisReplayCache;
use hwsign_verifier::{
    Freshness, KeyLevel, KeyRegistry, RegisteredKey, ReplayCache, Reservation, VerifyBackend,
};

use crate::Plan;
use crate::figure::{Figure, Goal};
use crate::inproc::{verify_rate_of, verify_requests};
use crate::measure::median;

/// The longest the listener may take to come up before a figure gives up.
const LISTENER_READY: Duration = Duration::from_secs(10);

fn cached_postgres(url: &str) -> Result<(Arc<PostgresRegistry>, Arc<CachedRegistry>)> {
    let inner = Arc::new(PostgresRegistry::connect(url)?);
    let cached = Arc::new(CachedRegistry::new(
        Arc::clone(&inner) as Arc<dyn KeyRegistry>
    ));
    let deadline = Instant::now() + LISTENER_READY;
    while !inner.is_listening() {
        if Instant::now() > deadline {
            bail!("the registry's change listener did not come up");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((inner, cached))
}

/// `verify_rate_ratio_postgres`.
pub(crate) fn verify_rate_postgres(plan: &Plan, pg: &Postgres) -> Result<Figure> {
    let url = pg.database("bench_verify")?;
    let (_inner, cached) = cached_postgres(&url)?;
    let fixture = VerifyFixture::on_registry(
        VerifyBackend::default(),
        Arc::clone(&cached) as Arc<dyn KeyRegistry>,
        verify_requests(plan),
        tempfile::tempdir()?,
    )?;
    let mut figure = verify_rate_of(
        plan,
        &fixture,
        "verify_rate_ratio_postgres",
        "postgres (cached)",
    )?;
    let stats = cached.stats();
    figure.detail.push_str(&format!(
        "; key cache: {} hits, {} misses, {} bypassed",
        stats.hits, stats.misses, stats.bypassed
    ));
    Ok(figure)
}

/// `redis_replay_rate`.
pub(crate) fn redis_replay_rate(plan: &Plan) -> Result<Figure> {
    const THREADS: usize = 8;
    let per_thread = plan.verify_batch * 2;
    let redis = Redis::start()?;
    let url = redis.url();
    let caches: Vec<RedisReplayCache> = (0..THREADS)
        .map(|_| RedisReplayCache::open(&url))
        .collect::<Result<_, _>>()?;
    // Connect and load the script before the clock starts.
    for (i, cache) in caches.iter().enumerate() {
        reserve(cache, i, usize::MAX)?;
    }
    let start = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = caches
            .iter()
            .enumerate()
            .map(|(t, cache)| {
                scope.spawn(move || {
                    for n in 0..per_thread {
                        reserve(cache, t, n)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    for result in results {
        result?;
    }
    let total = THREADS * per_thread;
    let rate = total as f64 / elapsed;
    Ok(Figure::measured(
        "redis_replay_rate",
        rate,
        Goal::AtLeast(0.0),
        format!(
            "reported, no floor: {total} reservations (one EVALSHA each, 8 threads, 1000 keys) \
             in {elapsed:.2} s wall clock on one local redis-server, {:.1}µs each; shares the \
             machine's cores with Redis",
            elapsed * 1e6 / total as f64
        ),
    ))
}

/// One fresh reservation for thread `t`, nonce `n`.
fn reserve(cache: &RedisReplayCache, t: usize, n: usize) -> Result<()> {
    let key_id = format!("hk1_{:032x}", (t * 7919 + n) % 1000);
    let nonce = format!("t{t}-n{n}");
    let answer = cache.check_and_remember(&Reservation {
        key_id: &key_id,
        nonce: &nonce,
        expires_unix: T0 + 600,
        now_unix: T0,
        per_key_limit: usize::MAX,
    })?;
    ensure!(
        answer == Freshness::Fresh,
        "reservation answered {answer:?}"
    );
    Ok(())
}

/// `revocation_propagation_ms`.
pub(crate) fn revocation_propagation(plan: &Plan, pg: &Postgres) -> Result<Figure> {
    let runs = plan.rounds.max(5) * 2;
    let url = pg.database("bench_revoke")?;
    let (_admin_inner, admin) = cached_postgres(&url)?;
    let (_replica_inner, replica) = cached_postgres(&url)?;
    let mut samples = Vec::new();
    for run in 0..runs {
        let key = bench_key(run)?;
        let key_id = key.key_id.clone();
        admin.add(key)?;
        // Warm the replica's cache with the live key.
        let deadline = Instant::now() + LISTENER_READY;
        let hits_before = replica.stats().hits;
        while replica.stats().hits < hits_before + 3 {
            ensure!(
                replica.lookup(&key_id)?.is_some_and(|k| !k.revoked),
                "the replica does not see the key"
            );
            ensure!(Instant::now() < deadline, "the replica's cache stays cold");
        }
        let start = Instant::now();
        admin.revoke(&key_id)?;
        loop {
            if replica.lookup(&key_id)?.is_some_and(|k| k.revoked) {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(5),
                "revocation not seen after 5 s"
            );
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let max = samples.iter().copied().fold(0.0, f64::max);
    let revoke_ms = median(samples.clone());
    Ok(Figure::measured(
        "revocation_propagation_ms",
        revoke_ms,
        Goal::AtMost(1000.0),
        format!(
            "median of {runs} runs (max {max:.1} ms): revoke committed through one replica's \
             PostgreSQL registry until another replica's warm cached lookup answers revoked \
             (NOTIFY → LISTEN; includes the revoke's own round trip); both replicas in this \
             process with their own connections"
        ),
    ))
}

/// A distinct key for each run (the registry refuses a revoked key added again).
fn bench_key(run: usize) -> Result<RegisteredKey> {
    let public = public_key(&signing_key(&format!("bench-revoke-{run}"))?)?;
    Ok(RegisteredKey::new(
        public,
        format!("bench-revoke-{run}"),
        KeyLevel::Software,
        T0,
    ))
}

/// Every fleet figure; one that cannot be measured is reported with its reason.
pub(crate) fn figures(plan: &Plan) -> Vec<Figure> {
    let pg = Postgres::start();
    let unavailable = |name: &str, goal, error: &anyhow::Error| {
        Figure::unavailable(name, goal, format!("{error:#}"))
    };
    let mut figures = Vec::new();
    match &pg {
        Ok(pg) => {
            figures.push(verify_rate_postgres(plan, pg).unwrap_or_else(|e| {
                unavailable("verify_rate_ratio_postgres", Goal::AtLeast(0.9), &e)
            }));
            figures.push(revocation_propagation(plan, pg).unwrap_or_else(|e| {
                unavailable("revocation_propagation_ms", Goal::AtMost(1000.0), &e)
            }));
        }
        Err(e) => {
            figures.push(unavailable(
                "verify_rate_ratio_postgres",
                Goal::AtLeast(0.9),
                e,
            ));
            figures.push(unavailable(
                "revocation_propagation_ms",
                Goal::AtMost(1000.0),
                e,
            ));
        }
    }
    figures.push(
        redis_replay_rate(plan)
            .unwrap_or_else(|e| unavailable("redis_replay_rate", Goal::AtLeast(0.0), &e)),
    );
    figures
}
