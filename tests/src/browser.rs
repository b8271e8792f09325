//! Running a Playwright script (Node) against Debian's Chromium for the browser tests
//! (`webauthn_browser_*`, `console_*`): `scripts/browser-env` provides playwright-core, the
//! script prints one JSON line as its report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

/// Runs `node <script> <args…>` with `HWSIGN_BROWSER_ENV` set and `env` added, within 180 s, on
/// a blocking thread (the servers it talks to may run on the caller's runtime); the report
/// (the last stdout line, JSON). A report with an `error` member fails, showing `console`.
pub async fn run_script(
    repo: &Path,
    script: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> Result<Value> {
    let env_dir = Command::new("bash")
        .arg(repo.join("scripts/browser-env"))
        .output()
        .context("scripts/browser-env")?;
    ensure!(
        env_dir.status.success(),
        "scripts/browser-env failed: {}",
        String::from_utf8_lossy(&env_dir.stderr)
    );
    let env_dir = String::from_utf8(env_dir.stdout)?.trim().to_owned();
    let mut command = Command::new("node");
    command
        .arg(script)
        .args(args)
        .env("HWSIGN_BROWSER_ENV", &env_dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let run = tokio::task::spawn_blocking(move || command.output());
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .context("the browser scenario did not finish within 180 s")???;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .with_context(|| format!("no report from the browser:\n{stdout}\n{stderr}"))?;
    ensure!(
        report.get("error").is_none(),
        "the browser scenario failed: {}\n{}\n{stderr}",
        report["error"],
        report["console"]
    );
    Ok(report)
}
