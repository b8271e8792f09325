//! Sessions and force logout end to end (docs/ADMIN.md "Sessions"): two `serve` replicas sharing
//! a registry; the agent's delegated session keys are listed with their device, user and client,
//! and each force-logout scope, written through one replica, is refused by the other at the next
//! request with `session_revoked`.

use crate::admin_support::{AdminFleet, expect_ok};

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, ensure};
use hwsign_e2e::expect_refusal;
use serde_json::json;

fn now_unix() -> Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    )?)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_sessions_are_listed_with_device_user_and_client() -> Result<()> {
    let f = AdminFleet::start(2, 1).await?;
    let laptop = f.devices[0].clone();
    let alice = f.user_with_devices("alice@example.com", &[&laptop]).await?;
    expect_ok(&f.api_get(0, &laptop).await?)?;
    // Listed by the other replica: the store is shared.
    let sessions = f.sessions(1).await?;
    let session = sessions
        .iter()
        .find(|s| s["key_id"] == laptop.as_str())
        .context("no session")?;
    ensure!(
        session["device"] == laptop.as_str()
            && session["user_id"] == alice.as_str()
            && session["audience"] == hwsign_e2e::AUDIENCE
            && session["delegated"] == true
            && session["user_agent"] == "admin-e2e/1"
            && session["source_address"] == "127.0.0.1",
        "{session}"
    );
    let id = session["id"].as_str().context("id")?;
    ensure!(
        id.starts_with("hk1_") && id != laptop,
        "the session key, not the device key"
    );
    ensure!(session["expires_unix"].as_i64() > session["issued_unix"].as_i64());
    // Filtered by user and by device.
    let by_user = f
        .admin_ok(1, "GET", "/admin/v1/sessions?user=alice@example.com", None)
        .await?;
    ensure!(
        by_user["sessions"].as_array().map(Vec::len) == Some(1),
        "{by_user}"
    );
    let by_device = f
        .admin_ok(1, "GET", "/admin/v1/sessions?device=nothing", None)
        .await?;
    ensure!(by_device["sessions"].as_array().map(Vec::len) == Some(0));
    // The device shows when it was last seen.
    let device = f
        .admin_ok(0, "GET", &format!("/admin/v1/devices/{laptop}"), None)
        .await?;
    ensure!(device["last_seen_unix"].as_i64().is_some() && device["user_id"] == alice.as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_force_logout_of_one_session_holds_on_every_replica() -> Result<()> {
    let f = AdminFleet::start(2, 2).await?;
    let (laptop, other) = (f.devices[0].clone(), f.devices[1].clone());
    expect_ok(&f.api_get(0, &laptop).await?)?;
    expect_ok(&f.api_get(0, &other).await?)?;
    let session = f.session_of(0, &laptop).await?;
    let ended = f
        .admin_ok(
            0,
            "POST",
            "/admin/v1/sessions/end",
            Some(json!({"scope": "session", "id": session})),
        )
        .await?;
    ensure!(ended["sessions_ended"] == 1, "{ended}");
    expect_refusal(&f.api_get(1, &laptop).await?, 401, "session_revoked")?;
    expect_refusal(&f.api_get(0, &laptop).await?, 401, "session_revoked")?;
    expect_ok(&f.api_get(1, &other).await?)?;
    // The device itself is not revoked.
    let device = f
        .admin_ok(1, "GET", &format!("/admin/v1/devices/{laptop}"), None)
        .await?;
    ensure!(device["revoked"] == false, "{device}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_force_logout_of_a_device_and_of_a_user() -> Result<()> {
    let f = AdminFleet::start(2, 3).await?;
    let (a1, a2, b1) = (
        f.devices[0].clone(),
        f.devices[1].clone(),
        f.devices[2].clone(),
    );
    f.user_with_devices("alice@example.com", &[&a1, &a2])
        .await?;
    f.user_with_devices("bob@example.com", &[&b1]).await?;
    for device in [&a1, &a2, &b1] {
        expect_ok(&f.api_get(0, device).await?)?;
    }
    // Every session of one device.
    f.admin_ok(
        0,
        "POST",
        "/admin/v1/sessions/end",
        Some(json!({"scope": "device", "id": a1})),
    )
    .await?;
    expect_refusal(&f.api_get(1, &a1).await?, 401, "session_revoked")?;
    expect_ok(&f.api_get(1, &a2).await?)?;
    // Every session of a user, on each of the user's devices.
    f.admin_ok(
        1,
        "POST",
        "/admin/v1/sessions/end",
        Some(json!({"scope": "user", "id": "alice@example.com"})),
    )
    .await?;
    expect_refusal(&f.api_get(0, &a2).await?, 401, "session_revoked")?;
    expect_ok(&f.api_get(0, &b1).await?)?;
    ensure!(
        f.sessions(0)
            .await?
            .iter()
            .all(|s| s["key_id"] == b1.as_str()),
        "only Bob's session is listed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_force_logout_of_every_session_issued_before_a_time() -> Result<()> {
    let f = AdminFleet::start(2, 2).await?;
    for device in &f.devices {
        expect_ok(&f.api_get(0, device).await?)?;
    }
    // A cut before the sessions were issued ends none of them.
    f.admin_ok(
        0,
        "POST",
        "/admin/v1/sessions/end",
        Some(json!({"scope": "all", "issued_before_unix": now_unix()? - 3600})),
    )
    .await?;
    for device in &f.devices {
        expect_ok(&f.api_get(1, device).await?)?;
    }
    // A cut in the future is refused.
    let future = f
        .admin_call(
            0,
            &f.admin,
            "POST",
            "/admin/v1/sessions/end",
            Some(json!({"scope": "all", "issued_before_unix": now_unix()? + 3600})),
        )
        .await?;
    crate::admin_support::expect_admin_refusal(&future, 400, "invalid_request")?;
    // Now: every session is ended, on both replicas.
    f.admin_ok(
        0,
        "POST",
        "/admin/v1/sessions/end",
        Some(json!({"scope": "all"})),
    )
    .await?;
    for device in &f.devices {
        expect_refusal(&f.api_get(1, device).await?, 401, "session_revoked")?;
    }
    ensure!(f.sessions(1).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_revoking_a_device_refuses_it_everywhere() -> Result<()> {
    let f = AdminFleet::start(2, 2).await?;
    let (laptop, other) = (f.devices[0].clone(), f.devices[1].clone());
    expect_ok(&f.api_get(1, &laptop).await?)?;
    let revoked = f
        .admin_ok(
            0,
            "POST",
            &format!("/admin/v1/devices/{laptop}/revoke"),
            None,
        )
        .await?;
    ensure!(
        revoked["revoked"] == true && revoked["sessions_ended"] == 1,
        "{revoked}"
    );
    // Refused at once on the other replica: its sessions were ended in the shared store, which
    // is read on every request; the revoked key itself is seen once that replica's key cache
    // has checked for changes (SQLite: at most every 100 ms), from then on `device_revoked`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = f.api_get(1, &laptop).await?;
        if expect_refusal(&response, 403, "device_revoked").is_ok() {
            break;
        }
        expect_refusal(&response, 401, "session_revoked")?;
        ensure!(
            std::time::Instant::now() < deadline,
            "the revoked key was never refused as device_revoked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    expect_ok(&f.api_get(1, &other).await?)?;
    let unknown = f
        .admin_call(
            0,
            &f.admin,
            "POST",
            "/admin/v1/devices/hk1_nothing/revoke",
            None,
        )
        .await?;
    crate::admin_support::expect_admin_refusal(&unknown, 404, "not_found")?;
    Ok(())
}
