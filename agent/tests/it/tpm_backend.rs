//! TPM backend against a real swtpm: keys, signatures, persistence across agent and TPM
//! restarts, handle hygiene, loss and return of the TPM.
#![cfg(feature = "tpm")]

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use anyhow::{Result, ensure};
use hwsign_agent::backends::tpm::{TpmBackend, TpmConfig};
use hwsign_agent::backends::{BackendError, KeyBackend};
use hwsign_proto::api::KeyLevel;
use hwsign_test_support::swtpm::Swtpm;
use sha2::{Digest, Sha256};

fn open(tpm: &Swtpm, state: &std::path::Path) -> Result<TpmBackend> {
    let config = TpmConfig {
        tcti: tpm.tcti(),
        ..TpmConfig::default()
    };
    Ok(TpmBackend::open(&config, state)?)
}

/// Transient handles listed by tpm2_getcap over its own connection (the backend must be gone:
/// swtpm serves one client at a time).
fn transient_handles_via_tools(tpm: &Swtpm) -> Result<String> {
    let output = tpm.tool("tpm2_getcap").arg("handles-transient").output()?;
    ensure!(output.status.success(), "tpm2_getcap: {output:?}");
    Ok(String::from_utf8(output.stdout)?)
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[test]
fn key_signs_and_survives_agent_and_tpm_restart() -> Result<()> {
    let mut tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    ensure!(backend.health().available, "{:?}", backend.health());
    ensure!(backend.name() == "tpm" && !backend.is_fast());

    let key = backend.create_key("laptop")?;
    ensure!(key.level == KeyLevel::Tpm);
    ensure!(key.id == key.public_key.key_id());
    let message = digest("GET /v1/things");
    let signature = backend.sign_digest(&key.id, &message)?;
    ensure!(key.public_key.verify_digest(&message, &signature));
    ensure!(
        !key.public_key
            .verify_digest(&digest("something else"), &signature)
    );

    // Blobs are on disk with tight modes.
    let dir = state.path().join("tpm");
    ensure!(std::fs::metadata(&dir)?.permissions().mode() & 0o777 == 0o700);
    let file = dir.join(format!("key-{}.json", key.id));
    ensure!(std::fs::metadata(&file)?.permissions().mode() & 0o777 == 0o600);

    // Agent and TPM restart: a new backend over the same state dir, a rebooted TPM.
    drop(backend);
    tpm.restart()?;
    let backend = open(&tpm, state.path())?;
    let keys = backend.list_keys()?;
    ensure!(keys.len() == 1, "{keys:?}");
    ensure!(keys[0].id == key.id && keys[0].label == "laptop");
    ensure!(keys[0].created_unix == key.created_unix);
    let message = digest("after restart");
    let signature = backend.sign_digest(&key.id, &message)?;
    ensure!(key.public_key.verify_digest(&message, &signature));

    // A second key, then both still work.
    let other = backend.create_key("second")?;
    ensure!(other.id != key.id);
    let signature = backend.sign_digest(&other.id, &message)?;
    ensure!(other.public_key.verify_digest(&message, &signature));
    ensure!(!key.public_key.verify_digest(&message, &signature));
    ensure!(backend.list_keys()?.len() == 2);
    Ok(())
}

#[test]
fn unknown_key_and_bad_labels_are_refused() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    ensure!(matches!(
        backend.sign_digest("hk1_00000000000000000000000000000000", &[0; 32]),
        Err(BackendError::UnknownKey)
    ));
    ensure!(matches!(
        backend.create_key(""),
        Err(BackendError::InvalidLabel(_))
    ));
    ensure!(matches!(
        backend.create_key("a\nb"),
        Err(BackendError::InvalidLabel(_))
    ));
    ensure!(backend.list_keys()?.is_empty());
    Ok(())
}

#[test]
fn thousand_signs_leave_no_transient_handle() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    let key = backend.create_key("busy")?;
    // Only the storage root key stays loaded while the backend runs.
    let before = backend.transient_handles()?;
    ensure!(before.len() == 1, "{before:x?}");

    let message = digest("hot path");
    let started = Instant::now();
    let mut last = Vec::new();
    for _ in 0..1000 {
        last = backend.sign_digest(&key.id, &message)?;
    }
    let elapsed = started.elapsed();
    ensure!(key.public_key.verify_digest(&message, &last));
    println!(
        "1000 TPM signs: {:.3} ms/sign (load + sign + flush, swtpm over TCP)",
        elapsed.as_secs_f64()
    );

    let after = backend.transient_handles()?;
    ensure!(after == before, "before {before:x?}, after {after:x?}");

    // Once the backend is gone, not even the SRK is left in the TPM.
    drop(backend);
    let listed = transient_handles_via_tools(&tpm)?;
    ensure!(listed.trim().is_empty(), "tpm2_getcap lists {listed}");
    Ok(())
}

#[test]
fn lost_tpm_is_unavailable_then_recovers_without_reopening() -> Result<()> {
    let mut tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    let key = backend.create_key("flaky")?;
    let message = digest("before");
    ensure!(
        key.public_key
            .verify_digest(&message, &backend.sign_digest(&key.id, &message)?)
    );

    tpm.stop()?;
    let result = backend.sign_digest(&key.id, &message);
    ensure!(
        matches!(result, Err(BackendError::Unavailable(_))),
        "{result:?}"
    );
    let health = backend.health();
    ensure!(!health.available && health.detail.is_some(), "{health:?}");
    // Keys stay listed: the list does not need the TPM.
    ensure!(backend.list_keys()?.len() == 1);
    ensure!(matches!(
        backend.create_key("while down"),
        Err(BackendError::Unavailable(_))
    ));

    tpm.restart()?;
    let message = digest("after");
    let signature = backend.sign_digest(&key.id, &message)?;
    ensure!(key.public_key.verify_digest(&message, &signature));
    ensure!(backend.health().available);
    ensure!(backend.transient_handles()?.len() == 1);
    Ok(())
}

#[test]
fn tpm_down_at_start_is_not_fatal() -> Result<()> {
    let mut tpm = Swtpm::start_tcp()?;
    tpm.stop()?;
    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    ensure!(!backend.health().available);
    tpm.restart()?;
    let key = backend.create_key("late")?;
    let message = digest("late start");
    ensure!(
        key.public_key
            .verify_digest(&message, &backend.sign_digest(&key.id, &message)?)
    );
    Ok(())
}

#[test]
fn malformed_tcti_is_refused_at_open() -> Result<()> {
    let state = tempfile::tempdir()?;
    for tcti in [
        "swtpm:path=/run/swtpm.sock",
        "swtpm:hots=127.0.0.1",
        "nonsense",
    ] {
        let config = TpmConfig {
            tcti: tcti.into(),
            ..TpmConfig::default()
        };
        let result = TpmBackend::open(&config, state.path());
        ensure!(
            matches!(result, Err(BackendError::InvalidInput(_))),
            "{tcti}: {result:?}"
        );
    }
    let parsed: Result<TpmConfig, _> = toml::from_str("tcti = \"tabrmd\"\nbogus = 1\n");
    ensure!(parsed.is_err(), "unknown config keys must be refused");
    let parsed: TpmConfig = toml::from_str("tcti = \"device:/dev/tpmrm0\"\n")?;
    ensure!(parsed.request_timeout_secs == 60);
    Ok(())
}

#[test]
fn objects_left_by_a_crashed_client_are_flushed_on_connect() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    // tpm2-tools without a resource manager leaves its primaries loaded: fill all three slots.
    for n in 0..3 {
        let output = tpm
            .tool("tpm2_createprimary")
            .args(["-C", "o", "-c"])
            .arg(tpm.scratch().join(format!("primary{n}.ctx")))
            .output()?;
        ensure!(output.status.success(), "{output:?}");
    }
    ensure!(transient_handles_via_tools(&tpm)?.lines().count() == 3);

    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    let key = backend.create_key("after crash")?;
    let message = digest("slots free again");
    ensure!(
        key.public_key
            .verify_digest(&message, &backend.sign_digest(&key.id, &message)?)
    );
    ensure!(backend.transient_handles()?.len() == 1);
    Ok(())
}

#[test]
fn concurrent_callers_share_the_single_connection() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let backend = std::sync::Arc::new(open(&tpm, state.path())?);
    let keys = [backend.create_key("one")?, backend.create_key("two")?];
    let workers: Vec<_> = (0..4)
        .map(|n| {
            let backend = std::sync::Arc::clone(&backend);
            let key = keys[n % 2].clone();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..50 {
                    let message = digest(&format!("thread {n} request {i}"));
                    let signature = backend.sign_digest(&key.id, &message)?;
                    ensure!(key.public_key.verify_digest(&message, &signature));
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("signing thread panicked"))??;
    }
    ensure!(backend.transient_handles()?.len() == 1);
    Ok(())
}
