//! `hwsign-verifier audit keygen | verify | export`, and the auditor's own checker
//! (scripts/audit-check.py) on the same log and export.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Result, ensure};
use hwsign_verifier::audit::{AuditEvent, AuditLog, AuditSettings, chain_files};

use super::{run, stderr, stdout};

fn python_check(args: &[&str]) -> Result<Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/audit-check.py");
    Ok(Command::new("python3").arg(script).args(args).output()?)
}

/// A log of 30 records (admin and enrollment, alternating), a checkpoint every 4.
fn write_log(dir: &Path) -> Result<(PathBuf, String)> {
    let key = dir.join("checkpoint.pem");
    let keygen = run(&["audit", "keygen", "--out", &key.display().to_string()])?;
    ensure!(keygen.status.success(), "{}", stderr(&keygen));
    let log_dir = dir.join("audit");
    let mut settings = AuditSettings::new(&log_dir, &key);
    settings.checkpoint_every_records = 4;
    let log = AuditLog::open(&settings)?;
    for i in 0..30 {
        let device = format!("tpm-{i}");
        let event = if i % 2 == 0 {
            AuditEvent::admin("alice", "revoke_device", Some(&device), "ok")
        } else {
            AuditEvent::enrollment(Some(&device), Some("hk1_abc"), "ok")
        };
        log.record(event).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    log.close();
    Ok((log_dir, format!("{}.pub", key.display())))
}

#[test]
fn audit_cli_verifies_exports_and_agrees_with_the_python_checker() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let (log_dir, public) = write_log(temp.path())?;
    let dir = log_dir.display().to_string();
    let checkpoints = log_dir.join("checkpoints.jsonl").display().to_string();
    let chain = chain_files(&log_dir)?;
    let chain: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();

    let verified = run(&["audit", "verify", "--key", &public, &dir])?;
    ensure!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    ensure!(stdout(&verified).contains("checkpoints verified"));

    let mut args = vec![
        "--key",
        public.as_str(),
        "--checkpoints",
        checkpoints.as_str(),
    ];
    args.extend(chain.iter().map(String::as_str));
    let python = python_check(&args)?;
    ensure!(
        python.status.success(),
        "{}{}",
        stdout(&python),
        stderr(&python)
    );
    // The same head hash from both implementations.
    let head = stdout(&verified)
        .split("head ")
        .nth(1)
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
    ensure!(
        head.len() == 64 && stdout(&python).contains(&head),
        "{head}: {}",
        stdout(&python)
    );

    // A filtered export: enrollment records only, still verifiable by both.
    let exported = run(&["audit", "export", "--filter", "kind=enrollment", &dir])?;
    ensure!(exported.status.success(), "{}", stderr(&exported));
    let export_path = temp.path().join("export.jsonl");
    std::fs::write(&export_path, &exported.stdout)?;
    let export = export_path.display().to_string();
    ensure!(stdout(&exported).matches("\"kind\":\"enrollment\"").count() == 15);
    let verified = run(&["audit", "verify", "--export", "--key", &public, &export])?;
    ensure!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    let python = python_check(&["--export", "--key", &public, &export])?;
    ensure!(
        python.status.success(),
        "{}{}",
        stdout(&python),
        stderr(&python)
    );

    // CSV, by time range: every record is from now.
    let csv = run(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--from",
        "2020-01-01T00:00:00Z",
        "--filter",
        "kind=admin,action=revoke_device",
        &dir,
    ])?;
    ensure!(csv.status.success(), "{}", stderr(&csv));
    ensure!(stdout(&csv).lines().count() == 16, "{}", stdout(&csv));
    let empty = run(&["audit", "export", "--to", "2020-01-01T00:00:00Z", &dir])?;
    ensure!(empty.status.success() && empty.stdout.is_empty());

    // Record 10 (an admin record) edited: both name it.
    let file = &chain[0];
    let text = std::fs::read_to_string(file)?;
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            if line.contains("\"seq\":10,") {
                line.replace("tpm-", "tpm-x")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(file, edited.join("\n") + "\n")?;
    let verified = run(&["audit", "verify", "--key", &public, &dir])?;
    ensure!(!verified.status.success());
    ensure!(
        stderr(&verified).contains("seq 10: edited"),
        "{}",
        stderr(&verified)
    );
    let python = python_check(&args)?;
    ensure!(!python.status.success());
    ensure!(
        stdout(&python).contains("broken at seq 10: edited"),
        "{}",
        stdout(&python)
    );
    Ok(())
}

#[test]
fn audit_cli_and_python_checker_find_a_truncated_tail() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let (log_dir, public) = write_log(temp.path())?;
    let file = &chain_files(&log_dir)?[0];
    let text = std::fs::read_to_string(file)?;
    let kept: Vec<&str> = text.lines().take(20).collect();
    std::fs::write(file, kept.join("\n") + "\n")?;
    let dir = log_dir.display().to_string();
    let verified = run(&["audit", "verify", "--key", &public, &dir])?;
    ensure!(!verified.status.success());
    ensure!(
        stderr(&verified).contains("seq 20: truncated"),
        "{}",
        stderr(&verified)
    );
    let checkpoints = log_dir.join("checkpoints.jsonl").display().to_string();
    let file = file.display().to_string();
    let python = python_check(&["--key", &public, "--checkpoints", &checkpoints, &file])?;
    ensure!(!python.status.success());
    ensure!(
        stdout(&python).contains("broken at seq 20: truncated"),
        "{}",
        stdout(&python)
    );
    Ok(())
}
