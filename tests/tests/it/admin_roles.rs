//! The admin API's guards end to end (docs/ADMIN.md "Roles", "Recovery"): every request
//! HWS1-signed for the admin audience, roles `viewer < operator < admin`, recovery only on a fresh
//! signature by the hardware key itself; and `hwsign-verifier admin`, signing through the agent.

use crate::admin_support::{ADMIN_HOST, AdminFleet, FRESH_SECS, expect_admin_refusal};

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use hwsign_e2e::{expect_refusal, send_raw};
use hwsign_test_support::binaries::bin_path;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn admin_roles_are_enforced() -> Result<()> {
    let f = AdminFleet::start(1, 1).await?;
    let laptop = f.devices[0].clone();
    let end = json!({"scope": "device", "id": laptop});

    // Viewer reads, but cannot end sessions or revoke.
    let listed = f
        .admin_call(0, &f.viewer, "GET", "/admin/v1/devices", None)
        .await?;
    ensure!(
        listed.status == 200,
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    let whoami = f
        .admin_call(0, &f.viewer, "GET", "/admin/v1/whoami", None)
        .await?
        .json()?;
    ensure!(whoami["role"] == "viewer", "{whoami}");
    let refused = f
        .admin_call(
            0,
            &f.viewer,
            "POST",
            "/admin/v1/sessions/end",
            Some(end.clone()),
        )
        .await?;
    expect_admin_refusal(&refused, 403, "forbidden_role")?;
    let refused = f
        .admin_call(
            0,
            &f.viewer,
            "POST",
            &format!("/admin/v1/devices/{laptop}/revoke"),
            None,
        )
        .await?;
    expect_admin_refusal(&refused, 403, "forbidden_role")?;

    // Operator ends sessions and issues enrollment tokens, but issues no recovery token.
    let ended = f
        .admin_call(0, &f.operator, "POST", "/admin/v1/sessions/end", Some(end))
        .await?;
    ensure!(
        ended.status == 200,
        "{}",
        String::from_utf8_lossy(&ended.body)
    );
    let token = f
        .admin_call(
            0,
            &f.operator,
            "POST",
            "/admin/v1/enrollment-tokens",
            Some(json!({"label": "new laptop", "ttl_secs": 600})),
        )
        .await?
        .json()?;
    ensure!(
        token["token"].as_str().is_some_and(|t| t.contains('.')),
        "{token}"
    );
    let recovery = f
        .admin_call(
            0,
            &f.operator,
            "POST",
            "/admin/v1/recovery",
            Some(json!({"user": "x"})),
        )
        .await?;
    expect_admin_refusal(&recovery, 403, "forbidden_role")?;

    // A registered key without a role; a user's device key; nothing signed; the API audience.
    for key in [&f.stranger, &laptop] {
        let refused = f
            .admin_call(0, key, "GET", "/admin/v1/devices", None)
            .await?;
        expect_admin_refusal(&refused, 403, "forbidden_role")?;
    }
    let unsigned = format!(
        "GET /admin/v1/devices HTTP/1.1\r\nhost: {ADMIN_HOST}\r\nconnection: close\r\n\r\n"
    );
    expect_refusal(
        &send_raw(f.admin_addr(0), unsigned.as_bytes()).await?,
        401,
        "missing_authorization",
    )?;
    let signer =
        hwsign_client::Signer::new(f.agent.client(), f.admin.clone(), hwsign_e2e::AUDIENCE);
    let request =
        http::Request::get(format!("http://{ADMIN_HOST}/admin/v1/devices")).body(Vec::new())?;
    let raw = hwsign_e2e::to_raw(&hwsign_e2e::signed(&signer, request).await?)?;
    expect_refusal(
        &send_raw(f.admin_addr(0), &raw).await?,
        401,
        "wrong_audience",
    )?;
    // The health endpoints are still there.
    ensure!(f.fleet.replicas[0].admin_get("/healthz").await?.status == 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_recovery_needs_the_admin_role_and_a_fresh_hardware_signature() -> Result<()> {
    let f = AdminFleet::start(1, 0).await?;
    let alice = f.user_with_devices("alice@example.com", &[]).await?;
    let body = json!({"user": "alice@example.com"});

    // Signed by a delegated session key of an admin key: not fresh enough.
    let delegated = f
        .admin_call(
            0,
            &f.delegated_admin,
            "POST",
            "/admin/v1/recovery",
            Some(body.clone()),
        )
        .await?;
    expect_admin_refusal(&delegated, 403, "fresh_signature_required")?;
    // Signed by the admin key itself, but sent later than the freshness window (still within
    // the verifier's clock skew, so the signature itself is accepted).
    let late = f
        .admin_request(&f.admin, "POST", "/admin/v1/recovery", Some(body.clone()))
        .await?;
    tokio::time::sleep(Duration::from_secs(FRESH_SECS + 2)).await;
    expect_admin_refusal(
        &send_raw(f.admin_addr(0), &late).await?,
        403,
        "fresh_signature_required",
    )?;
    // Fresh: a single-use token bound to Alice.
    let issued = f
        .admin_ok(0, "POST", "/admin/v1/recovery", Some(body))
        .await?;
    ensure!(
        issued["user_id"] == alice.as_str() && issued["token"].as_str().is_some(),
        "{issued}"
    );
    let tokens = f
        .admin_ok(0, "GET", "/admin/v1/enrollment-tokens", None)
        .await?;
    let listed = tokens["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == issued["token_id"])
        .context("recovery token not listed")?;
    ensure!(
        listed["label"] == "recovery alice@example.com" && listed["used_unix"].is_null(),
        "{listed}"
    );
    // A deprovisioned user gets none.
    f.scim(0, &["deactivate", &alice])?;
    let inactive = f
        .admin_call(
            0,
            &f.admin,
            "POST",
            "/admin/v1/recovery",
            Some(json!({"user": alice})),
        )
        .await?;
    expect_admin_refusal(&inactive, 409, "user_inactive")?;
    Ok(())
}

fn cli(f: &AdminFleet, args: &[&str]) -> Result<(bool, Value, String)> {
    let output = std::process::Command::new(bin_path("hwsign-verifier")?)
        .arg("admin")
        .arg("--url")
        .arg(format!("http://{}", f.admin_addr(0)))
        .arg("--host")
        .arg(ADMIN_HOST)
        .arg("--key")
        .arg(&f.admin)
        .arg("--agent-socket")
        .arg(f.agent.socket())
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Ok((output.status.success(), json, stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_cli_signs_through_the_agent_and_prints_json() -> Result<()> {
    let f = AdminFleet::start(1, 1).await?;
    let laptop = f.devices[0].clone();
    crate::admin_support::expect_ok(&f.api_get(0, &laptop).await?)?;
    let (ok, whoami, err) = cli(&f, &["whoami"])?;
    ensure!(ok && whoami["role"] == "admin", "{whoami} {err}");
    let (ok, devices, err) = cli(&f, &["devices", "list"])?;
    ensure!(
        ok && devices["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["device"] == laptop.as_str())),
        "{devices} {err}"
    );
    let (ok, sessions, err) = cli(&f, &["sessions", "list", "--device", &laptop])?;
    ensure!(
        ok && sessions["sessions"].as_array().map(Vec::len) == Some(1),
        "{sessions} {err}"
    );
    let (ok, ended, err) = cli(&f, &["sessions", "end", "--device", &laptop])?;
    ensure!(ok && ended["sessions_ended"] == 1, "{ended} {err}");
    expect_refusal(&f.api_get(0, &laptop).await?, 401, "session_revoked")?;
    // A refusal exits non-zero with the error on stderr.
    let (ok, _, err) = cli(&f, &["users", "show", "nobody"])?;
    ensure!(!ok && err.contains("not_found"), "{err}");
    Ok(())
}
