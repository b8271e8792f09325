//! Recovery enrollment (docs/ADMIN.md "Recovery") over a real swtpm: a token with a recovery
//! grant enrolls the device with the full attestation ceremony and assigns it to the grant's
//! user; a reused token, an expired grant, a deprovisioned user and a device that belongs to
//! another user are refused.

use crate::enrollment::{Fixture, activate_in_tpm, code, evidence_for, fixture, key_id_of, start};

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, Result, ensure};
use hwsign_proto::enrollment::{ActivateRequest, ActivateResponse};
use hwsign_verifier::directory::{Directory, MemoryDirectory, RecoveryGrant, User};
use hwsign_verifier::enrollment::{EnrollmentError, create_token};

use crate::attestation_support::KEY;

fn with_directory(f: Fixture, directory: &Arc<MemoryDirectory>) -> Fixture {
    Fixture {
        rig: f.rig,
        enrollment: f
            .enrollment
            .with_directory(Arc::clone(directory) as Arc<dyn Directory>),
        _dir: f._dir,
    }
}

fn user(id: &str) -> User {
    User {
        id: id.to_owned(),
        user_name: format!("{id}@example.com"),
        display_name: None,
        external_id: None,
        active: true,
        created_unix: 0,
        updated_unix: 0,
    }
}

fn unix(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Issues a recovery token for `user_id` expiring (grant) at `expires_unix`.
fn recovery_token(
    f: &Fixture,
    directory: &MemoryDirectory,
    user_id: &str,
    expires_unix: i64,
    now: SystemTime,
) -> Result<String> {
    let (token_id, token) = create_token(f.enrollment.store(), "recovery", 600, now)?;
    directory.put_recovery(&RecoveryGrant {
        token_id,
        user_id: user_id.to_owned(),
        issued_by: "hk1_admin".into(),
        issued_unix: unix(now),
        expires_unix,
        used_by_device: None,
    })?;
    Ok(token.to_string())
}

/// The whole ceremony for the rig's key with `token`.
fn enroll(f: &Fixture, token: &str, now: SystemTime) -> Result<ActivateResponse, EnrollmentError> {
    let key_id = key_id_of(&f.rig, KEY).map_err(|e| EnrollmentError::Malformed(e.to_string()))?;
    let started = start(f, token, &key_id, now)?;
    let evidence =
        evidence_for(f, KEY, &started).map_err(|e| EnrollmentError::Malformed(e.to_string()))?;
    let credential = f.enrollment.submit_evidence(&evidence, now)?;
    let secret =
        activate_in_tpm(f, &credential).map_err(|e| EnrollmentError::Malformed(e.to_string()))?;
    f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id,
            secret,
        },
        now,
    )
}

#[test]
fn admin_recovery_enrolls_the_device_for_the_user_and_is_single_use() -> Result<()> {
    let directory = Arc::new(MemoryDirectory::default());
    let f = with_directory(fixture()?, &directory);
    directory.create_user(&user("alice"))?;
    let now = SystemTime::now();
    let token = recovery_token(&f, &directory, "alice", unix(now) + 600, now)?;
    let done = enroll(&f, &token, now)?;
    ensure!(directory.device_owner(&done.device_id)?.as_deref() == Some("alice"));
    ensure!(directory.devices_of("alice")? == std::slice::from_ref(&done.device_id));
    let key = f
        .enrollment
        .registry()
        .lookup(&done.key_id)?
        .context("key not registered")?;
    ensure!(key.device_id.as_deref() == Some(done.device_id.as_str()) && !key.revoked);
    // The token is spent: a second use is refused at its first step.
    ensure!(code(enroll(&f, &token, now)) == "token_used");
    Ok(())
}

#[test]
fn admin_recovery_refuses_an_expired_grant() -> Result<()> {
    let directory = Arc::new(MemoryDirectory::default());
    let f = with_directory(fixture()?, &directory);
    directory.create_user(&user("alice"))?;
    let now = SystemTime::now();
    let token = recovery_token(&f, &directory, "alice", unix(now) - 1, now)?;
    ensure!(code(enroll(&f, &token, now)) == "recovery_refused:expired");
    ensure!(directory.devices_of("alice")?.is_empty());
    Ok(())
}

#[test]
fn admin_recovery_refuses_a_device_of_another_user_and_a_deprovisioned_user() -> Result<()> {
    let directory = Arc::new(MemoryDirectory::default());
    let f = with_directory(fixture()?, &directory);
    directory.create_user(&user("alice"))?;
    directory.create_user(&user("bob"))?;
    let now = SystemTime::now();
    let bob_token = recovery_token(&f, &directory, "bob", unix(now) + 600, now)?;
    let bob_device = enroll(&f, &bob_token, now)?.device_id;
    // Alice's token cannot take Bob's device.
    let alice_token = recovery_token(&f, &directory, "alice", unix(now) + 600, now)?;
    ensure!(code(enroll(&f, &alice_token, now)) == "recovery_refused:device_of_another_user");
    ensure!(directory.device_owner(&bob_device)?.as_deref() == Some("bob"));
    // A user deprovisioned after the token was issued gets no device.
    let mut carol = user("carol");
    directory.create_user(&carol)?;
    let carol_token = recovery_token(&f, &directory, "carol", unix(now) + 600, now)?;
    carol.active = false;
    directory.replace_user(&carol)?;
    ensure!(code(enroll(&f, &carol_token, now)) == "recovery_refused:user_inactive");
    Ok(())
}

/// The audit records of `dir` (after syncing `log`), as JSON objects.
fn audit_records(
    log: &hwsign_verifier::audit::AuditLog,
    dir: &std::path::Path,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    log.sync().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::new();
    for path in hwsign_verifier::audit::chain_files(dir)? {
        for line in std::fs::read_to_string(path)?.lines() {
            if let serde_json::Value::Object(record) = serde_json::from_str(line)? {
                out.push(record);
            }
        }
    }
    Ok(out)
}

fn has(records: &[serde_json::Map<String, serde_json::Value>], wanted: &[(&str, &str)]) -> bool {
    records.iter().any(|record| {
        wanted
            .iter()
            .all(|(field, value)| record.get(*field).and_then(|v| v.as_str()) == Some(*value))
    })
}

#[test]
fn admin_recovery_and_enrollment_steps_are_in_the_audit_log() -> Result<()> {
    use hwsign_verifier::audit::{AuditLog, AuditSettings, CheckpointSigner};
    let temp = tempfile::tempdir()?;
    let (private, _public) = CheckpointSigner::generate_pem()?;
    let key_path = temp.path().join("checkpoint.pem");
    std::fs::write(&key_path, private.as_bytes())?;
    let dir = temp.path().join("audit");
    let log = Arc::new(AuditLog::open(&AuditSettings::new(&dir, &key_path))?);
    let directory = Arc::new(MemoryDirectory::default());
    let f = with_directory(fixture()?, &directory);
    let f = Fixture {
        rig: f.rig,
        enrollment: f.enrollment.with_audit_log(Arc::clone(&log)),
        _dir: f._dir,
    };
    directory.create_user(&user("alice"))?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;

    // An expired grant: evidence accepted, activation refused, the grant refused.
    let expired = recovery_token(&f, &directory, "alice", unix(now) - 1, now)?;
    ensure!(code(enroll(&f, &expired, now)) == "recovery_refused:expired");
    // A good grant: every step, the grant spent for the device.
    let token = recovery_token(&f, &directory, "alice", unix(now) + 600, now)?;
    let done = enroll(&f, &token, now)?;
    // The token again: refused at its first step.
    ensure!(code(enroll(&f, &token, now)) == "token_used");

    let records = audit_records(&log, &dir)?;
    let enrollment = |step: &str, outcome: &str| {
        has(
            &records,
            &[
                ("kind", "enrollment"),
                ("step", step),
                ("key", &key_id),
                ("outcome", outcome),
            ],
        )
    };
    ensure!(enrollment("started", "ok"), "started: {records:?}");
    ensure!(enrollment("evidence", "ok"));
    ensure!(enrollment("activated", "recovery_refused:expired"));
    ensure!(has(
        &records,
        &[
            ("kind", "enrollment"),
            ("step", "activated"),
            ("outcome", "ok"),
            ("device", &done.device_id),
        ]
    ));
    ensure!(enrollment("started", "token_used"));
    ensure!(has(
        &records,
        &[
            ("kind", "recovery"),
            ("step", "grant_refused"),
            ("user", "alice"),
            ("outcome", "recovery_refused:expired"),
        ]
    ));
    ensure!(has(
        &records,
        &[
            ("kind", "recovery"),
            ("step", "grant_spent"),
            ("user", "alice"),
            ("device", &done.device_id),
            ("outcome", "ok"),
        ]
    ));
    // No record holds the token's secret.
    ensure!(!records.iter().any(|r| {
        serde_json::Value::Object(r.clone())
            .to_string()
            .contains(&token)
    }));
    Ok(())
}
