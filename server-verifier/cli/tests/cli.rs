//! The `hwsign-verifier keys` admin command, run as a real process.

// The verifier's own test signer (keys from fixed seeds), shared rather than copied.
#[path = "../../tests/it/verify_support/mod.rs"]
mod verify_support;

#[path = "cli/fleet.rs"]
mod fleet;

#[path = "cli/audit.rs"]
mod audit;

#[path = "cli/fido2_cloned.rs"]
mod fido2_cloned;

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context as _, Result, ensure};
use hwsign_verifier::enrollment::EnrollmentStore;
use hwsign_verifier::{KeyLevel, KeyRegistry, SqliteRegistry};
use verify_support::TestKey;

fn run(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_hwsign-verifier"))
        .args(args)
        .output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_key(dir: &Path, name: &str, key: &TestKey) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, key.public.to_pem())?;
    Ok(path.display().to_string())
}

#[test]
fn keys_add_list_revoke() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    let db = db.to_str().unwrap_or_default();
    let laptop = TestKey::from_seed("cli-laptop")?;
    let token = TestKey::from_seed("cli-token")?;
    let laptop_pem = write_key(dir.path(), "laptop.pem", &laptop)?;
    let token_pem = write_key(dir.path(), "token.pem", &token)?;

    let added = run(&[
        "keys",
        "add",
        "--db",
        db,
        "--public-key",
        &laptop_pem,
        "--label",
        "laptop",
    ])?;
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(stdout(&added).trim(), laptop.id);
    let added = run(&[
        "keys",
        "add",
        "--db",
        db,
        "--public-key",
        &token_pem,
        "--label",
        "yubi token",
        "--level",
        "hardware-unattested",
    ])?;
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(stdout(&added).trim(), token.id);

    let listed = run(&["keys", "list", "--db", db])?;
    assert!(listed.status.success());
    let lines: Vec<Vec<String>> = stdout(&listed)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0][0], laptop.id);
    assert_eq!(lines[0][1..3], ["software", "active"]);
    assert_eq!(lines[0][4], "laptop");
    assert_eq!(lines[1][0], token.id);
    assert_eq!(lines[1][1..3], ["hardware-unattested", "active"]);
    assert_eq!(lines[1][4], "yubi token");

    let revoked = run(&["keys", "revoke", "--db", db, &laptop.id])?;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let listed = stdout(&run(&["keys", "list", "--db", db])?);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&laptop.id) && l.contains("\trevoked\t"))
    );

    // What the command wrote is what a verifier reads.
    let registry = SqliteRegistry::open(Path::new(db))?;
    let stored = registry
        .lookup(&token.id)?
        .ok_or_else(|| anyhow::anyhow!("token missing"))?;
    assert_eq!(stored.public_key, token.public);
    assert_eq!(stored.level, KeyLevel::HardwareUnattested);
    assert!(registry.lookup(&laptop.id)?.is_some_and(|k| k.revoked));
    Ok(())
}

#[test]
fn errors_exit_non_zero_with_a_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    let db = db.to_str().unwrap_or_default();
    let key = TestKey::from_seed("cli-error")?;
    let pem = write_key(dir.path(), "key.pem", &key)?;
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )?;
    let garbage = garbage.display().to_string();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["keys", "list", "--db", db], "no registry"),
        (
            vec![
                "keys",
                "add",
                "--db",
                db,
                "--public-key",
                "/nonexistent.pem",
                "--label",
                "x",
            ],
            "cannot read",
        ),
        (
            vec![
                "keys",
                "add",
                "--db",
                db,
                "--public-key",
                &garbage,
                "--label",
                "x",
            ],
            "not a PEM P-256 public key",
        ),
        (
            vec![
                "keys",
                "add",
                "--db",
                db,
                "--public-key",
                &pem,
                "--label",
                "",
            ],
            "label",
        ),
    ];
    for (args, message) in &cases {
        let output = run(args)?;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }

    assert!(
        run(&[
            "keys",
            "add",
            "--db",
            db,
            "--public-key",
            &pem,
            "--label",
            "k"
        ])?
        .status
        .success()
    );
    let again = run(&[
        "keys",
        "add",
        "--db",
        db,
        "--public-key",
        &pem,
        "--label",
        "k",
    ])?;
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already registered"));
    let unknown = run(&[
        "keys",
        "revoke",
        "--db",
        db,
        "hk1_00000000000000000000000000000000",
    ])?;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no key"));

    // Usage errors are clap's (exit 2).
    let bad_level = run(&[
        "keys",
        "add",
        "--db",
        db,
        "--public-key",
        &pem,
        "--label",
        "k",
        "--level",
        "gold",
    ])?;
    assert_eq!(bad_level.status.code(), Some(2));
    assert!(stderr(&bad_level).contains("gold"));
    Ok(())
}

/// The shipped binary and a running server share the SQLite file: a token the binary issues is
/// seen by the server, and what the server writes afterwards is seen by the binary (the store
/// never opens the file behind SQLite's back, which would drop the server's locks and let the
/// binary delete the WAL the server still writes to).
#[test]
fn the_tokens_command_and_a_running_server_share_the_database() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("shared.db");
    let _registry = SqliteRegistry::open(&db)?;
    let store = EnrollmentStore::open(&db)?;
    let cli = |args: &[&str]| -> Result<String> {
        let output = Command::new(env!("CARGO_BIN_EXE_hwsign-verifier"))
            .args(args)
            .output()?;
        ensure!(output.status.success(), "{output:?}");
        Ok(String::from_utf8(output.stdout)?)
    };
    let db_arg = db.display().to_string();
    let token = cli(&["tokens", "create", "--db", &db_arg, "--ttl-secs", "60"])?;
    let token = token.trim();
    let id = token
        .strip_prefix("hwt1_")
        .and_then(|rest| rest.split_once('.'))
        .context("token shape")?
        .0;
    ensure!(store.list_tokens()?.iter().any(|t| t.id == id));
    store.revoke_token(id)?;
    let listed = cli(&["tokens", "list", "--db", &db_arg])?;
    ensure!(listed.contains(&format!("{id}\trevoked\t")), "{listed}");
    ensure!(!listed.contains(token), "the list shows the token itself");
    let missing = Command::new(env!("CARGO_BIN_EXE_hwsign-verifier"))
        .args(["tokens", "create", "--db", &db_arg, "--ttl-secs", "0"])
        .output()?;
    ensure!(!missing.status.success());
    Ok(())
}

/// `--level tpm` is an administrator's claim nothing checks: the command says so. Revocation is
/// permanent, and says so; dates are for people.
#[test]
fn newuser_admin_flow_says_what_it_does_not_check() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    let db = db.to_str().context("non-UTF-8 temp path")?;
    let key = TestKey::from_seed("newuser-tpm-claim")?;
    let pem = write_key(dir.path(), "claimed.pem", &key)?;
    let added = run(&[
        "keys",
        "add",
        "--db",
        db,
        "--public-key",
        &pem,
        "--label",
        "claimed",
        "--level",
        "tpm",
    ])?;
    ensure!(added.status.success(), "{}", stderr(&added));
    ensure!(stdout(&added).trim() == key.id);
    ensure!(
        stderr(&added).contains("warning: --level tpm is your claim, not checked"),
        "{}",
        stderr(&added)
    );
    let other = TestKey::from_seed("newuser-software")?;
    let other_pem = write_key(dir.path(), "software.pem", &other)?;
    let added = run(&[
        "keys",
        "add",
        "--db",
        db,
        "--public-key",
        &other_pem,
        "--label",
        "plain",
    ])?;
    ensure!(added.status.success(), "{}", stderr(&added));
    ensure!(!stderr(&added).contains("warning"), "{}", stderr(&added));

    let listed = stdout(&run(&["keys", "list", "--db", db])?);
    let added_at = listed
        .lines()
        .next()
        .and_then(|l| l.split('\t').nth(3))
        .context("no added column")?;
    ensure!(
        added_at.ends_with(" UTC") && added_at.len() == "2026-11-23 19:30:00 UTC".len(),
        "{listed}"
    );

    let revoked = run(&["keys", "revoke", "--db", db, &key.id])?;
    ensure!(revoked.status.success(), "{}", stderr(&revoked));
    ensure!(
        stderr(&revoked).contains("permanent"),
        "{}",
        stderr(&revoked)
    );
    Ok(())
}

/// `hwsign-verifier check-config` reads the shipped example, names the file, and prints each
/// cause of a failure once.
#[test]
fn newuser_check_config_checks_the_verifier_configuration() -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier.example.toml");
    let example = example.to_str().context("non-UTF-8 path")?;
    let output = run(&["check-config", example])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    ensure!(
        stdout(&output).contains(&format!("configuration file: {example}"))
            && stdout(&output).contains("configuration OK"),
        "{}",
        stdout(&output)
    );

    let dir = tempfile::tempdir()?;
    let any = dir.path().join("any.toml");
    std::fs::write(&any, "audience = \"payments\"\nhosts = [\"*\"]\n")?;
    let output = run(&["check-config", any.to_str().context("path")?])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    ensure!(
        stdout(&output).contains("warning: hosts = [\"*\"]"),
        "{}",
        stdout(&output)
    );

    let missing = dir.path().join("missing.toml");
    let output = run(&["check-config", missing.to_str().context("path")?])?;
    ensure!(!output.status.success());
    ensure!(
        stderr(&output).matches("No such file or directory").count() == 1,
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn newuser_completions_and_man_page_are_generated() -> Result<()> {
    let output = run(&["completions", "bash"])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    ensure!(
        stdout(&output).contains("hwsign-verifier"),
        "{}",
        stdout(&output)
    );
    let output = run(&["man"])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    ensure!(
        stdout(&output).contains(".TH hwsign-verifier"),
        "{}",
        stdout(&output)
    );
    Ok(())
}

/// `hwsign-verifier policy validate DIR` lists the policy ids or names each problem's file and
/// line; `policy check` decides a request for a registered key as the verifier would and prints
/// the decision with the determining policy ids.
#[test]
fn policy_validate_and_check_commands() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    std::fs::write(
        policies.join("baseline.cedar"),
        "@id(\"baseline\")\npermit(principal, action, resource);\n",
    )?;
    std::fs::write(
        policies.join("admin.cedar"),
        "@id(\"admin-tpm-only\")\nforbid(principal, action, resource in Hws::Route::\"/v1/admin\")\n  unless { context.level == \"tpm\" };\n",
    )?;
    let policies_arg = policies.to_str().unwrap_or_default();
    let validated = run(&["policy", "validate", policies_arg])?;
    assert!(validated.status.success(), "{}", stderr(&validated));
    assert_eq!(stdout(&validated), "admin-tpm-only\nbaseline\n");

    let db = dir.path().join("registry.db");
    let registry = SqliteRegistry::open(&db)?;
    let laptop = TestKey::from_seed("cli-policy-laptop")?;
    registry.add(laptop.registered("laptop", KeyLevel::Software))?;
    let tpm = TestKey::from_seed("cli-policy-tpm")?;
    registry.add(tpm.registered("tpm", KeyLevel::Tpm))?;
    let db = db.to_str().unwrap_or_default();
    let check = |key: &str, request: &str| {
        run(&[
            "policy",
            "check",
            "--db",
            db,
            "--device",
            key,
            "--request",
            request,
            "--policies",
            policies_arg,
        ])
    };
    let denied = check(&laptop.id, "POST /v1/admin/keys")?;
    assert!(denied.status.success(), "{}", stderr(&denied));
    let text = stdout(&denied);
    assert!(text.contains("decision: deny\n"), "{text}");
    assert!(text.contains("policies: admin-tpm-only\n"), "{text}");
    let allowed = check(&tpm.id, "POST /v1/admin/keys")?;
    let text = stdout(&allowed);
    assert!(text.contains("decision: allow\n"), "{text}");
    assert!(text.contains("policies: baseline\n"), "{text}");
    let bad = check(&laptop.id, "/v1/admin/keys")?;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("METHOD PATH"), "{}", stderr(&bad));

    // No attestation recorded for an unknown device: nothing to approve.
    let approve = run(&[
        "policy",
        "approve-baseline",
        "--db",
        db,
        "--device",
        "tpm-0000",
    ])?;
    assert!(!approve.status.success());
    assert!(
        stderr(&approve).contains("no recorded attestation"),
        "{}",
        stderr(&approve)
    );

    std::fs::write(
        policies.join("admin.cedar"),
        "@id(\"admin-tpm-only\")\nforbid(principal, action, resource)\n  unless { context.levle == \"tpm\" };\n",
    )?;
    let invalid = run(&["policy", "validate", policies_arg])?;
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("admin.cedar:3:"),
        "{}",
        stderr(&invalid)
    );
    assert!(stderr(&invalid).contains("levle"), "{}", stderr(&invalid));
    Ok(())
}

const INSTALLED_BINARY: &str = "/usr/local/bin/hwsign-verifier";

fn serve_unit() -> Result<String> {
    Ok(std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../systemd/system/hwsign-verifier-serve.service"),
    )?)
}

/// The proxy's system unit passes `systemd-analyze verify` without a warning (with ExecStart
/// pointing at the freshly built binary: verify insists that the command exists).
#[test]
fn the_serve_unit_verifies() -> Result<()> {
    let text = serve_unit()?;
    ensure!(text.contains(&format!("ExecStart={INSTALLED_BINARY} serve ")));
    let dir = tempfile::tempdir()?;
    let unit = "hwsign-verifier-serve.service";
    std::fs::write(
        dir.path().join(unit),
        text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_hwsign-verifier")),
    )?;
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("./{unit}"))
        .current_dir(dir.path())
        .output()
        .context("running systemd-analyze (scripts/test installs systemd)")?;
    ensure!(output.status.success(), "{}", stderr(&output));
    ensure!(
        stderr(&output).trim().is_empty(),
        "warnings: {}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn the_serve_unit_stays_hardened() -> Result<()> {
    let text = serve_unit()?;
    for line in [
        "Type=notify",
        "User=hwsign-verifier",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "StateDirectory=hwsign-verifier",
    ] {
        ensure!(text.lines().any(|l| l == line), "the unit lacks {line}");
    }
    Ok(())
}

/// `serve --check-config` accepts the sample configuration and refuses an invalid one.
#[test]
fn serve_check_config() -> Result<()> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../serve/serve.example.toml");
    let output = run(&[
        "serve",
        "--config",
        &sample.to_string_lossy(),
        "--check-config",
    ])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    ensure!(stdout(&output).contains("configuration OK"));
    let invalid = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../serve/tests/fixtures/config/invalid-upstream-path.toml");
    let output = run(&[
        "serve",
        "--config",
        &invalid.to_string_lossy(),
        "--check-config",
    ])?;
    ensure!(!output.status.success());
    ensure!(
        stderr(&output).contains("must be http://host[:port] with no path"),
        "{}",
        stderr(&output)
    );
    Ok(())
}
