//! `hwsign-verifier keys --registry URL` against a running verifier's registry in another
//! process: a key added there is served here; a revocation there is refused here (SQLite file and
//! a real PostgreSQL started by the test harness), while this process's key cache was warm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use hwsign_test_support::postgres::Postgres;
use hwsign_verifier::KeyRegistry;
use hwsign_verifier::registry::open_registry;

use super::verify_support::TestKey;
use super::{run, stderr, write_key};

/// How long to wait for what must happen within a second (generous: a shared machine; the
/// benchmark measures the real figure).
const PROPAGATION: Duration = Duration::from_secs(5);

fn eventually(mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + PROPAGATION;
    while !check()? {
        if Instant::now() >= deadline {
            bail!("condition still false after {PROPAGATION:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// This process is the verifier (a cached registry); the command is another process.
fn revocation_reaches_the_running_verifier(url: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = TestKey::from_seed("fleet-cli")?;
    let pem = write_key(dir.path(), "key.pem", &key)?;
    let verifier: Arc<dyn KeyRegistry> = open_registry(url)?;

    let added = run(&[
        "keys",
        "add",
        "--registry",
        url,
        "--public-key",
        &pem,
        "--label",
        "fleet",
    ])?;
    ensure!(added.status.success(), "{}", stderr(&added));
    eventually(|| Ok(verifier.lookup(&key.id)?.is_some_and(|k| !k.revoked)))?;
    // Warm: repeated lookups are answered from the cache.
    for _ in 0..5 {
        ensure!(verifier.lookup(&key.id)?.is_some_and(|k| !k.revoked));
    }

    let revoked = run(&["keys", "revoke", "--registry", url, &key.id])?;
    ensure!(revoked.status.success(), "{}", stderr(&revoked));
    eventually(|| Ok(verifier.lookup(&key.id)?.is_some_and(|k| k.revoked)))?;

    let listed = run(&["keys", "list", "--registry", url])?;
    ensure!(listed.status.success(), "{}", stderr(&listed));
    let text = String::from_utf8_lossy(&listed.stdout);
    ensure!(text.contains(&key.id) && text.contains("revoked"), "{text}");
    Ok(())
}

#[test]
fn fleet_cli_revocation_reaches_a_running_verifier_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("keys.db").display());
    revocation_reaches_the_running_verifier(&url)
}

#[test]
fn fleet_cli_revocation_reaches_a_running_verifier_postgres() -> Result<()> {
    let pg = Postgres::start()?;
    revocation_reaches_the_running_verifier(&pg.url())?;
    // Enrollment tokens in the same database, seen by the library's store.
    let created = run(&["tokens", "create", "--registry", &pg.url(), "--label", "pg"])?;
    ensure!(created.status.success(), "{}", stderr(&created));
    let store = hwsign_verifier::enrollment::open_enrollment_store(&pg.url())?;
    let tokens = store.list_tokens()?;
    ensure!(tokens.len() == 1 && tokens[0].label == "pg", "{tokens:?}");
    let revoked = run(&["tokens", "revoke", "--registry", &pg.url(), &tokens[0].id])?;
    ensure!(revoked.status.success(), "{}", stderr(&revoked));
    let listed = run(&["tokens", "list", "--registry", &pg.url()])?;
    ensure!(
        String::from_utf8_lossy(&listed.stdout).contains("revoked"),
        "{}",
        stderr(&listed)
    );
    Ok(())
}

#[test]
fn fleet_cli_registry_url_errors_do_not_print_the_url() -> Result<()> {
    let output = run(&[
        "keys",
        "list",
        "--registry",
        "postgres://admin:s3cret@127.0.0.1:1/db",
    ])?;
    ensure!(!output.status.success());
    let text = stderr(&output);
    ensure!(!text.contains("s3cret"), "{text}");
    ensure!(text.contains("postgres"), "{text}");
    Ok(())
}
