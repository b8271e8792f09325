//! Fleet registries: the same trait suite on memory, SQLite and a real PostgreSQL (started by
//! the test harness), each bare and behind the key cache; the cache following changes made
//! through other connections (SQLite `data_version`, PostgreSQL `LISTEN`/`NOTIFY`), bypassed
//! while the notification channel is down; PostgreSQL restarted under a running registry.

use crate::registry::{exercise, exercise_facts, sample_facts};
use crate::verify_support;

use std::sync::Arc;

use anyhow::Result;
use hwsign_verifier::registry::{CachedRegistry, open_registry};
use hwsign_verifier::{KeyLevel, KeyRegistry, MemoryRegistry, RegistryError, SqliteRegistry};
use verify_support::TestKey;

/// Polls `check` every 10 ms until it holds, for at most `limit`.
pub(crate) fn eventually(
    limit: std::time::Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check()? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("condition still false after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn revoked(registry: &dyn KeyRegistry, key_id: &str) -> Result<bool> {
    Ok(registry.lookup(key_id)?.is_some_and(|k| k.revoked))
}

#[test]
fn fleet_registry_suite_on_memory_and_sqlite_bare_and_cached() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for cached in [false, true] {
        let memory: Arc<dyn KeyRegistry> = Arc::new(MemoryRegistry::new());
        let sqlite: Arc<dyn KeyRegistry> = Arc::new(SqliteRegistry::open(
            &dir.path().join(format!("keys-{cached}.db")),
        )?);
        for registry in [memory, sqlite] {
            let registry: Arc<dyn KeyRegistry> = if cached {
                Arc::new(CachedRegistry::new(registry))
            } else {
                registry
            };
            exercise(registry.as_ref())?;
        }
        let facts_memory: Arc<dyn KeyRegistry> = Arc::new(MemoryRegistry::new());
        let facts_sqlite = open_registry(&format!(
            "sqlite:{}",
            dir.path().join(format!("facts-{cached}.db")).display()
        ))?;
        for registry in [facts_memory, facts_sqlite] {
            exercise_facts(registry.as_ref(), &sample_facts())?;
        }
    }
    Ok(())
}

#[test]
fn fleet_registry_urls_are_checked() {
    for url in ["", "mysql://x", "sqlite:", "file:/tmp/x"] {
        assert!(
            matches!(open_registry(url), Err(RegistryError::InvalidUrl(_))),
            "{url}"
        );
    }
    assert!(open_registry("memory:").is_ok());
}

/// Another connection to the same SQLite file (another process, `hwsign-verifier keys revoke`)
/// revokes a cached key: a lookup sees it once `PRAGMA data_version` is read again (at most
/// `CHANGE_CHECK_INTERVAL` later; polled here with a generous deadline, the benchmark measures
/// the time). A write through the cached registry itself is seen by the very next lookup.
#[test]
fn fleet_sqlite_cache_follows_other_connections() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    let key = TestKey::from_seed("fleet-sqlite")?;
    let cached = CachedRegistry::new(Arc::new(SqliteRegistry::open(&path)?));
    cached.add(key.registered("laptop", KeyLevel::Software))?;
    for _ in 0..3 {
        assert!(!revoked(&cached, &key.id)?);
    }
    assert!(cached.stats().hits >= 2, "{:?}", cached.stats());
    SqliteRegistry::open(&path)?.revoke(&key.id)?;
    eventually(std::time::Duration::from_secs(5), || {
        revoked(&cached, &key.id)
    })?;
    let own = TestKey::from_seed("fleet-sqlite-own")?;
    cached.add(own.registered("phone", KeyLevel::Software))?;
    assert!(!revoked(&cached, &own.id)?);
    cached.revoke(&own.id)?;
    assert!(revoked(&cached, &own.id)?);
    Ok(())
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    use std::time::Duration;

    use hwsign_test_support::postgres::Postgres;
    use hwsign_verifier::registry::PostgresRegistry;

    /// How long the tests wait for what must happen within a second (generous: the machine is
    /// shared; the benchmark measures the real figure).
    const PROPAGATION: Duration = Duration::from_secs(5);

    /// Runs `statement` through a connection of its own.
    fn sql(url: &str, statement: &str) -> Result<()> {
        let mut client = ::postgres::Client::connect(url, ::postgres::NoTls)?;
        client.batch_execute(statement)?;
        Ok(())
    }

    #[test]
    fn fleet_postgres_registry_passes_the_same_suite_bare_and_cached() -> Result<()> {
        let pg = Postgres::start()?;
        let bare_url = pg.database("bare")?;
        let bare = PostgresRegistry::connect(&bare_url)?;
        exercise(&bare)?;
        let cached = open_registry(&pg.database("cached")?)?;
        exercise(cached.as_ref())?;
        let facts = PostgresRegistry::connect(&pg.database("facts")?)?;
        exercise_facts(&facts, &sample_facts())?;
        // A second verifier on the same database finds the schema in place.
        let again = PostgresRegistry::connect(&bare_url)?;
        assert_eq!(again.list()?.len(), 3);
        Ok(())
    }

    #[test]
    fn fleet_postgres_refuses_a_newer_schema() -> Result<()> {
        let pg = Postgres::start()?;
        drop(PostgresRegistry::connect(&pg.url())?);
        sql(&pg.url(), "UPDATE hwsign_schema SET version = 99")?;
        let error = PostgresRegistry::connect(&pg.url()).err();
        assert!(
            matches!(&error, Some(RegistryError::Corrupt(text)) if text.contains("99")),
            "{error:?}"
        );
        Ok(())
    }

    /// Two replicas, each with its own connections and cache: a revocation through one (or
    /// straight in SQL) is seen by the other, whose cache had the key.
    #[test]
    fn fleet_postgres_revocation_reaches_every_cache() -> Result<()> {
        let pg = Postgres::start()?;
        let first = open_registry(&pg.url())?;
        let second = CachedRegistry::new(Arc::new(PostgresRegistry::connect(&pg.url())?));
        let a = TestKey::from_seed("fleet-pg-a")?;
        let b = TestKey::from_seed("fleet-pg-b")?;
        first.add(a.registered("a", KeyLevel::Software))?;
        first.add(b.registered("b", KeyLevel::Software))?;
        // Once its listener is up, the second replica answers from its cache.
        eventually(PROPAGATION, || {
            let _ = second.lookup(&a.id)?;
            Ok(second.stats().hits > 0)
        })?;
        assert!(!revoked(&second, &a.id)?);

        first.revoke(&a.id)?;
        eventually(PROPAGATION, || revoked(&second, &a.id))?;
        // Straight in SQL, as an operator might: the trigger notifies all the same.
        assert!(!revoked(&second, &b.id)?);
        sql(
            &pg.url(),
            &format!(
                "UPDATE hwsign_keys SET revoked = TRUE WHERE key_id = '{}'",
                b.id
            ),
        )?;
        eventually(PROPAGATION, || revoked(&second, &b.id))?;
        Ok(())
    }

    /// With its notification connection cut, a replica stops trusting its cache: a revocation
    /// whose notification it never received is still refused, and the listener comes back.
    #[test]
    fn fleet_postgres_cache_is_bypassed_while_notifications_are_down() -> Result<()> {
        let pg = Postgres::start()?;
        let inner = Arc::new(PostgresRegistry::connect(&pg.url())?);
        let cached = CachedRegistry::new(Arc::clone(&inner) as Arc<dyn KeyRegistry>);
        let key = TestKey::from_seed("fleet-pg-listener")?;
        cached.add(key.registered("k", KeyLevel::Software))?;
        eventually(PROPAGATION, || Ok(inner.is_listening()))?;
        // Warm the cache.
        eventually(PROPAGATION, || {
            let _ = cached.lookup(&key.id)?;
            Ok(cached.stats().hits > 0)
        })?;
        // Cut the listener's connection and revoke at once: the notification is lost.
        let admin = PostgresRegistry::connect(&pg.url())?;
        sql(
            &pg.url(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'hwsign-verifier-listener'",
        )?;
        admin.revoke(&key.id)?;
        eventually(PROPAGATION, || revoked(&cached, &key.id))?;
        eventually(PROPAGATION, || Ok(inner.is_listening()))?;
        Ok(())
    }

    /// PostgreSQL stops under running replicas: lookups fail (the verifier answers 503); once
    /// it is back, the same registry object answers again.
    #[test]
    fn fleet_postgres_restart_is_survived_without_restarting_the_verifier() -> Result<()> {
        let mut pg = Postgres::start()?;
        let registry = open_registry(&pg.url())?;
        let key = TestKey::from_seed("fleet-pg-restart")?;
        registry.add(key.registered("k", KeyLevel::Software))?;
        assert!(registry.lookup(&key.id)?.is_some());
        pg.stop()?;
        eventually(PROPAGATION, || {
            Ok(matches!(
                registry.lookup(&key.id),
                Err(RegistryError::Unavailable(_))
            ))
        })?;
        pg.start_again()?;
        eventually(Duration::from_secs(15), || {
            Ok(registry.lookup(&key.id).is_ok_and(|k| k.is_some()))
        })?;
        // Every worker's connection was cut by the restart; each one reconnects by itself.
        for _ in 0..8 {
            registry.revoke(&key.id)?;
            assert!(revoked(registry.as_ref(), &key.id)?);
        }
        Ok(())
    }
}
