//! The web console in a real browser (docs/ADMIN.md "The console"): a real `hwsign-verifier
//! serve` with `[admin.api]`, `[admin.console]` and a decision log, a real agent whose devices
//! hold delegated sessions, a real Python upstream, users and groups provisioned through SCIM,
//! and Debian's Chromium driven by Playwright (`tests/console/console.mjs`) with Chromium's
//! virtual authenticator (CDP `WebAuthn`). The console's origin is `http://localhost:<admin
//! port>` (`insecure_cookies_on_loopback`). Screenshots go to `$HWSIGN_ARTIFACTS/console` or
//! `target/console-screenshots`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::fleet::{FLEET_HOST, Fleet, PythonUpstream};
use hwsign_e2e::{
    AUDIENCE, AgentProcess, RawResponse, create_key, expect_refusal, send_raw, signed, to_raw,
};
use hwsign_proto::api::KeyLevel;
use hwsign_test_support::binaries::bin_path;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::admin_support::expect_ok;
use crate::delegation_support::make_delegated;

const ADMIN_HOST: &str = "admin.hwsign.test";
const ADMIN_AUDIENCE: &str = "hwsign-admin";
const SCIM_TOKEN: &str = "scim-console-e2e-7c41d0";
const BOOTSTRAP: &str = "console-bootstrap-e2e-5b9e2f17a3";
const ADMIN_USER: &str = "alice@example.com";
const VIEWER_USER: &str = "vera@example.com";
const DEVICE_USER: &str = "bob@example.com";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn screenshots() -> PathBuf {
    std::env::var_os("HWSIGN_ARTIFACTS").map_or_else(
        || repo().join("target/console-screenshots"),
        |dir| PathBuf::from(dir).join("console"),
    )
}

/// One `serve` with the console, the agent and its device keys.
struct ConsoleSetup {
    agent: AgentProcess,
    _upstream: PythonUpstream,
    fleet: Fleet,
    /// Device keys (delegated): the first belongs to Bob.
    devices: Vec<String>,
    admin_key: String,
    dir: tempfile::TempDir,
    /// `http://localhost:<admin port>`.
    base: String,
}

impl ConsoleSetup {
    async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hwsign-console-")
            .tempdir()?;
        let keygen = Command::new(bin_path("hwsign-verifier")?)
            .args(["audit", "keygen", "--out"])
            .arg(dir.path().join("checkpoint.pem"))
            .output()?;
        ensure!(
            keygen.status.success(),
            "audit keygen: {}",
            String::from_utf8_lossy(&keygen.stderr)
        );
        let mut agent = AgentProcess::start()?;
        let client = agent.client();
        let mut publics = Vec::new();
        let mut devices = Vec::new();
        for i in 0..2 {
            let (id, public) = create_key(&client, "software", &format!("laptop {i}")).await?;
            devices.push(id);
            publics.push(public);
        }
        let (admin_key, public) = create_key(&client, "software", "admin").await?;
        publics.push(public);
        for device in &devices {
            make_delegated(&mut agent, device, None)?;
        }
        let scim_sha = hex::encode(Sha256::digest(SCIM_TOKEN.as_bytes()));
        let bootstrap_sha = hex::encode(Sha256::digest(BOOTSTRAP.as_bytes()));
        let sections = format!(
            "[audit]
dir = {audit:?}
checkpoint_key = {key:?}
checkpoint_every_records = 1

[admin.api]
hosts = [{ADMIN_HOST:?}]
min_key_level = \"software\"
admins = [{{ key_id = {admin_key:?}, role = \"admin\" }}]
[admin.api.role_groups]
\"console-admins\" = \"admin\"
\"console-viewers\" = \"viewer\"
[admin.api.scim]
token_sha256 = {scim_sha:?}

[admin.console]
insecure_cookies_on_loopback = true
bootstrap_user = {ADMIN_USER:?}
bootstrap_token_sha256 = {bootstrap_sha:?}
idle_timeout_secs = 600
",
            audit = dir.path().join("audit").display().to_string(),
            key = dir.path().join("checkpoint.pem").display().to_string(),
        );
        let upstream = PythonUpstream::start()?;
        let fleet = Fleet::start(1, "memory", upstream.addr(), |settings| {
            settings.extra_sections = sections.clone();
        })
        .await?;
        for public in &publics {
            fleet.register(public, KeyLevel::Software)?;
        }
        let base = format!("http://localhost:{}", fleet.replicas[0].admin.port());
        let setup = Self {
            agent,
            _upstream: upstream,
            fleet,
            devices,
            admin_key,
            dir,
            base,
        };
        let mut ids = Vec::new();
        for user in [ADMIN_USER, VIEWER_USER, DEVICE_USER] {
            let created = setup.scim(&["create-user", user])?;
            ensure!(created["status"] == 201, "{created}");
            ids.push(
                created["body"]["id"]
                    .as_str()
                    .context("user id")?
                    .to_owned(),
            );
        }
        for (group, member) in [("console-admins", &ids[0]), ("console-viewers", &ids[1])] {
            let created = setup.scim(&["create-group", group, member])?;
            ensure!(created["status"] == 201, "{created}");
        }
        let assigned = setup
            .admin_call(
                "POST",
                &format!("/admin/v1/devices/{}/assign", setup.devices[0]),
                json!({ "user": DEVICE_USER }),
            )
            .await?;
        ensure!(
            assigned.status == 200,
            "assign: {}",
            String::from_utf8_lossy(&assigned.body)
        );
        Ok(setup)
    }

    fn scim(&self, args: &[&str]) -> Result<Value> {
        let output = Command::new("python3")
            .arg(repo().join("tests/tests/it/admin_support/scim_client.py"))
            .arg(format!("http://{}", self.fleet.replicas[0].admin))
            .arg(SCIM_TOKEN)
            .args(args)
            .output()
            .context("running the SCIM client")?;
        ensure!(
            output.status.success(),
            "scim {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    async fn admin_call(&self, method: &str, path: &str, body: Value) -> Result<RawResponse> {
        let signer = Signer::new(self.agent.client(), &self.admin_key, ADMIN_AUDIENCE);
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{ADMIN_HOST}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())?;
        let raw = to_raw(&signed(&signer, request).await?)?;
        send_raw(self.fleet.replicas[0].admin, &raw).await
    }

    /// `GET /v1/items` through the proxy, signed by `device`'s session key.
    async fn api_get(&self, device: &str) -> Result<RawResponse> {
        let signer = Signer::new(self.agent.client(), device, AUDIENCE);
        let request = http::Request::get(format!("http://{FLEET_HOST}/v1/items"))
            .header("user-agent", "console-e2e/1")
            .body(Vec::new())?;
        send_raw(
            self.fleet.replicas[0].addr,
            &to_raw(&signed(&signer, request).await?)?,
        )
        .await
    }

    /// The id of the live session of `device` (its session key), from the admin API.
    async fn session_of(&self, device: &str) -> Result<String> {
        let listed = self
            .admin_call("GET", "/admin/v1/sessions", json!({}))
            .await?
            .json()?;
        listed["sessions"]
            .as_array()
            .and_then(|sessions| sessions.iter().find(|s| s["device"] == device))
            .and_then(|s| s["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no session of {device}: {listed}"))
    }

    /// Runs one scenario of `tests/console/console.mjs`; its JSON report (an error in it fails).
    async fn browser(&self, scenario: &str, env: &[(&str, &str)]) -> Result<Value> {
        let mut env: Vec<(&str, String)> = env.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        env.push(("HWSIGN_BOOTSTRAP", BOOTSTRAP.to_owned()));
        env.push(("HWSIGN_SCREENSHOTS", screenshots().display().to_string()));
        let report = hwsign_e2e::browser::run_script(
            &repo(),
            &repo().join("tests/console/console.mjs"),
            &[&self.base, scenario],
            &env,
        )
        .await?;
        // Every scenario signed in with the bootstrap passkey first; the session cookie is
        // HttpOnly, SameSite=Strict, scoped to /console.
        let cookie = &report["cookie"];
        ensure!(
            cookie["httpOnly"] == true
                && cookie["sameSite"] == "Strict"
                && cookie["path"] == "/console",
            "session cookie: {cookie}"
        );
        ensure!(
            report["anonymous"]["url"] == format!("{}/console/sign-in", self.base),
            "an anonymous visit was not sent to sign in: {}",
            report["anonymous"]
        );
        Ok(report)
    }
}

/// The console's refusal in a scenario's form POST.
fn refused(answer: &Value, status: u16, code: &str) -> Result<()> {
    ensure!(
        answer["status"] == status && answer["code"] == code,
        "expected {status} {code}, got {answer}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn console_sign_in_with_a_passkey_and_every_page() -> Result<()> {
    let s = ConsoleSetup::start().await?;
    expect_ok(&s.api_get(&s.devices[0]).await?)?;
    let report = s.browser("tour", &[]).await?;
    ensure!(
        report["registered"]
            .as_str()
            .is_some_and(|text| text.contains(ADMIN_USER)),
        "{}",
        report["registered"]
    );
    let csp = report["devices_headers"]["content-security-policy"]
        .as_str()
        .unwrap_or("");
    ensure!(
        csp.starts_with("default-src 'none'") && csp.contains("script-src 'self'"),
        "CSP: {csp}"
    );
    ensure!(report["anonymous"]["csp"] == csp, "CSP on every page");
    let pages = &report["pages"];
    let devices = pages["devices"].as_str().unwrap_or("");
    for device in &s.devices {
        ensure!(devices.contains(device.as_str()), "devices page: {devices}");
    }
    ensure!(devices.contains(DEVICE_USER) && devices.contains("software"));
    let sessions = pages["sessions"].as_str().unwrap_or("");
    ensure!(
        sessions.contains(&s.devices[0]) && sessions.contains("console-e2e/1"),
        "sessions page: {sessions}"
    );
    let users = pages["users"].as_str().unwrap_or("");
    ensure!(
        users.contains(VIEWER_USER) && users.contains("console-admins"),
        "users page: {users}"
    );
    let audit = pages["audit"].as_str().unwrap_or("");
    ensure!(
        audit.contains("console_sign_in") && audit.contains("decision"),
        "audit page: {audit}"
    );
    ensure!(
        pages["rules"]
            .as_str()
            .is_some_and(|t| t.contains("Route rules"))
    );
    // The bootstrap token registers only the first passkey.
    let again = &report["bootstrap_again"];
    ensure!(
        again["status"] == 403 && again["body"]["error"]["code"] == "token_invalid",
        "{again}"
    );
    ensure!(
        report["after_sign_out"] == format!("{}/console/sign-in", s.base),
        "signed out: {}",
        report["after_sign_out"]
    );
    for page in ["devices", "sessions", "users", "audit", "rules"] {
        ensure!(screenshots().join(format!("tour-{page}.png")).exists());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn console_force_logout_of_a_session_refuses_the_agents_next_request() -> Result<()> {
    let s = ConsoleSetup::start().await?;
    let (laptop, other) = (s.devices[0].clone(), s.devices[1].clone());
    expect_ok(&s.api_get(&laptop).await?)?;
    expect_ok(&s.api_get(&other).await?)?;
    let session = s.session_of(&laptop).await?;
    let report = s
        .browser("end_session", &[("HWSIGN_TARGET", &session)])
        .await?;
    ensure!(
        report["listed"] == true && report["listed_after"] == false,
        "{report}"
    );
    expect_refusal(&s.api_get(&laptop).await?, 401, "session_revoked")?;
    expect_ok(&s.api_get(&other).await?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn console_revoke_a_device() -> Result<()> {
    let s = ConsoleSetup::start().await?;
    let (laptop, other) = (s.devices[0].clone(), s.devices[1].clone());
    expect_ok(&s.api_get(&laptop).await?)?;
    let report = s
        .browser("revoke_device", &[("HWSIGN_TARGET", &laptop)])
        .await?;
    ensure!(
        report["state_before"] == "active" && report["state_after"] == "revoked",
        "{report}"
    );
    let refused = s.api_get(&laptop).await?;
    ensure!(
        matches!(refused.status, 401 | 403)
            && matches!(
                hwsign_e2e::refusal_code(&refused).as_deref(),
                Some("session_revoked" | "device_revoked" | "key_revoked")
            ),
        "the revoked device was not refused: {} {}",
        refused.status,
        String::from_utf8_lossy(&refused.body)
    );
    expect_ok(&s.api_get(&other).await?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn console_audit_export_download_verifies() -> Result<()> {
    let s = ConsoleSetup::start().await?;
    expect_ok(&s.api_get(&s.devices[0]).await?)?;
    let download = s.dir.path().join("export.jsonl");
    let report = s
        .browser(
            "audit_export",
            &[("HWSIGN_DOWNLOAD", &download.display().to_string())],
        )
        .await?;
    ensure!(
        report["downloaded"]
            .as_str()
            .is_some_and(|name| name.starts_with("hwsign-audit-") && name.ends_with(".jsonl")),
        "{report}"
    );
    let text = std::fs::read_to_string(&download)?;
    let records: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        records.iter().any(|r| r["kind"] == "admin"
            && r["action"] == "console_sign_in"
            && r["actor"] == format!("console:{ADMIN_USER}")),
        "no sign-in record in the export:\n{text}"
    );
    ensure!(
        records.iter().any(|r| r["omitted"] == true),
        "the records the filter leaves out are stand-ins:\n{text}"
    );
    ensure!(
        records.iter().all(|r| r["omitted"] == true
            || r["kind"] == "checkpoint"
            || r["action"] == "console_sign_in"),
        "only the searched records are whole:\n{text}"
    );
    let verify = |path: &std::path::Path| -> Result<std::process::Output> {
        Ok(Command::new(bin_path("hwsign-verifier")?)
            .args(["audit", "verify", "--export", "--key"])
            .arg(s.dir.path().join("checkpoint.pem.pub"))
            .arg(path)
            .output()?)
    };
    let checked = verify(&download)?;
    ensure!(
        checked.status.success(),
        "audit verify: {}\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // The check can fail: the same export with one record edited does not verify.
    let tampered = s.dir.path().join("tampered.jsonl");
    std::fs::write(
        &tampered,
        text.replacen("console_sign_in", "console_sign_out", 1),
    )?;
    ensure!(
        !verify(&tampered)?.status.success(),
        "an edited export verified"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn console_viewer_cannot_press_operator_buttons() -> Result<()> {
    let s = ConsoleSetup::start().await?;
    let laptop = s.devices[0].clone();
    expect_ok(&s.api_get(&laptop).await?)?;
    let report = s
        .browser(
            "viewer",
            &[("HWSIGN_TARGET", &laptop), ("HWSIGN_VIEWER", VIEWER_USER)],
        )
        .await?;
    ensure!(report["link_is_one_time"] == true, "{report}");
    ensure!(
        report["viewer_role"] == "viewer",
        "{}",
        report["viewer_role"]
    );
    // The buttons are shown disabled, with no form behind them.
    let devices = &report["devices_buttons"];
    ensure!(
        devices["enabled"] == 0 && devices["forms"] == 0 && devices["disabled"].as_u64() >= Some(2),
        "{devices}"
    );
    let sessions = &report["sessions_buttons"];
    ensure!(
        sessions["enabled"] == 0 && sessions["disabled"].as_u64() >= Some(2),
        "{sessions}"
    );
    // Pressing anyway with a forged form is refused by role.
    refused(&report["forged_revoke"], 403, "forbidden_role")?;
    refused(&report["forged_end"], 403, "forbidden_role")?;
    let reused = &report["link_reused"];
    ensure!(
        reused["status"] == 403 && reused["body"]["error"]["code"] == "token_invalid",
        "the passkey link worked twice: {reused}"
    );
    expect_ok(&s.api_get(&laptop).await?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn console_post_without_csrf_token_refused() -> Result<()> {
    let s = ConsoleSetup::start().await?;
    let laptop = s.devices[0].clone();
    expect_ok(&s.api_get(&laptop).await?)?;
    let report = s.browser("csrf", &[("HWSIGN_TARGET", &laptop)]).await?;
    refused(&report["without_token"], 403, "csrf_token")?;
    refused(&report["wrong_token"], 403, "csrf_token")?;
    refused(&report["sign_out_without_token"], 403, "csrf_token")?;
    // Nothing happened to the device, also not from the other origin.
    ensure!(report["state_after"] == "active", "{report}");
    // With the token the same session's form is accepted (a redirect: opaque to fetch).
    ensure!(
        report["with_token"]["status"] == 0,
        "{}",
        report["with_token"]
    );
    expect_refusal(&s.api_get(&laptop).await?, 401, "session_revoked")?;
    Ok(())
}
