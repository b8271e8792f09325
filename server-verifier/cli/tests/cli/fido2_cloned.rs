//! `hwsign-verifier keys clear-cloned`: an administrator clears a FIDO2 credential's
//! possibly-cloned flag after checking the key; the action lands in the decision log when one
//! is named.

use std::io::BufRead as _;

use anyhow::{Context as _, Result, ensure};
use hwsign_verifier::audit::chain_files;
use hwsign_verifier::{Fido2Credential, KeyLevel, KeyRegistry, RegisteredKey, SqliteRegistry};

use super::verify_support::TestKey;
use super::{run, stderr};

#[test]
fn fido2_clear_cloned_flag_is_an_audited_admin_command() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let db = temp.path().join("registry.db");
    let key = TestKey::from_seed("cloned security key")?;
    {
        let registry = SqliteRegistry::open(&db)?;
        registry.add_fido2_credential(
            RegisteredKey::new(key.public.clone(), "alice", KeyLevel::Fido2, 0),
            Fido2Credential {
                key_id: key.id.clone(),
                credential_id: b"credential one".to_vec(),
                rp_id: "example.com".into(),
                aaguid: [1; 16],
                sign_count: 10,
                backup_eligible: false,
                backed_up: false,
                possibly_cloned: false,
            },
        )?;
        // A counter that goes backwards flags the credential.
        ensure!(!registry.advance_sign_count(&key.id, 5)?);
        ensure!(
            registry
                .fido2_credential(&key.id)?
                .is_some_and(|c| c.possibly_cloned)
        );
    }
    let checkpoint = temp.path().join("checkpoint.pem").display().to_string();
    let keygen = run(&["audit", "keygen", "--out", &checkpoint])?;
    ensure!(keygen.status.success(), "{}", stderr(&keygen));
    let audit_dir = temp.path().join("audit");
    let db_arg = db.display().to_string();
    let audit_arg = audit_dir.display().to_string();
    let clear = |key_id: &str| {
        run(&[
            "keys",
            "clear-cloned",
            "--db",
            &db_arg,
            key_id,
            "--audit-dir",
            &audit_arg,
            "--audit-key",
            &checkpoint,
        ])
    };

    let cleared = clear(&key.id)?;
    ensure!(cleared.status.success(), "{}", stderr(&cleared));
    ensure!(stderr(&cleared).contains("cleared"), "{}", stderr(&cleared));
    let registry = SqliteRegistry::open(&db)?;
    let credential = registry
        .fido2_credential(&key.id)?
        .context("credential kept")?;
    ensure!(!credential.possibly_cloned, "flag cleared");
    ensure!(credential.sign_count == 10, "the counter stays");
    // The next assertion must still beat the stored counter: a clone behind it is flagged again.
    ensure!(!registry.advance_sign_count(&key.id, 7)?);
    ensure!(
        registry
            .fido2_credential(&key.id)?
            .is_some_and(|c| c.possibly_cloned)
    );

    // An unknown key: refused, and recorded as such.
    let unknown = clear("hk1_00000000000000000000000000000000")?;
    ensure!(!unknown.status.success());
    ensure!(
        stderr(&unknown).contains("not a registered FIDO2 credential"),
        "{}",
        stderr(&unknown)
    );

    // Both actions are in the decision log, and its chain verifies.
    let mut records = Vec::new();
    for file in chain_files(&audit_dir)? {
        for line in std::io::BufReader::new(std::fs::File::open(file)?).lines() {
            let record: serde_json::Value = serde_json::from_str(&line?)?;
            if record["action"] == "fido2_clear_cloned" {
                records.push(record);
            }
        }
    }
    ensure!(records.len() == 2, "{records:?}");
    ensure!(records[0]["target"] == key.id.as_str() && records[0]["outcome"] == "ok");
    ensure!(records[0]["was_flagged"] == true, "{}", records[0]);
    ensure!(records[1]["outcome"] == "unknown_key", "{}", records[1]);
    let verified = run(&[
        "audit",
        "verify",
        "--key",
        &format!("{checkpoint}.pub"),
        &audit_arg,
    ])?;
    ensure!(verified.status.success(), "{}", stderr(&verified));
    Ok(())
}
