//! SCIM provisioning end to end (docs/ADMIN.md "SCIM"): a Python stdlib SCIM client, as Okta or
//! Entra ID would, provisions users and groups on a `serve` replica; deprovisioning a user
//! (`active` false, or DELETE) revokes the user's devices and sessions on every replica at once.

use crate::admin_support::{AdminFleet, SCIM_TOKEN, expect_ok};

use anyhow::{Result, ensure};
use hwsign_e2e::expect_refusal;

#[tokio::test(flavor = "multi_thread")]
async fn admin_scim_provisions_users_and_groups_with_the_bearer_token() -> Result<()> {
    let f = AdminFleet::start(1, 0).await?;
    let created = f.scim(0, &["create-user", "alice@example.com"])?;
    ensure!(created["status"] == 201, "{created}");
    ensure!(
        created["body"]["userName"] == "alice@example.com" && created["body"]["active"] == true
    );
    let id = created["body"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The same name again (any case) is a SCIM uniqueness error.
    let dup = f.scim(0, &["create-user", "ALICE@example.com"])?;
    ensure!(
        dup["status"] == 409
            && dup["body"]["scimType"] == "uniqueness"
            && dup["body"]["schemas"][0] == "urn:ietf:params:scim:api:messages:2.0:Error",
        "{dup}"
    );
    // The filter Okta and Entra send before creating.
    let found = f.scim(0, &["find-user", "alice@example.com"])?;
    ensure!(
        found["body"]["totalResults"] == 1 && found["body"]["Resources"][0]["id"] == id.as_str()
    );
    let none = f.scim(0, &["find-user", "nobody@example.com"])?;
    ensure!(
        none["status"] == 200 && none["body"]["totalResults"] == 0,
        "{none}"
    );

    let bob = f.scim(0, &["create-user", "bob@example.com"])?;
    let bob_id = bob["body"]["id"].as_str().unwrap_or_default().to_owned();
    let group = f.scim(0, &["create-group", "hwsign-operators", &id])?;
    ensure!(group["status"] == 201, "{group}");
    let group_id = group["body"]["id"].as_str().unwrap_or_default().to_owned();
    f.scim(0, &["add-member", &group_id, &bob_id])?;
    let removed = f.scim(0, &["remove-member", &group_id, &id])?;
    ensure!(
        removed["body"]["members"].as_array().map(Vec::len) == Some(1)
            && removed["body"]["members"][0]["value"] == bob_id.as_str(),
        "{removed}"
    );
    // The admin API reads the same directory.
    let shown = f
        .admin_ok(0, "GET", "/admin/v1/users/bob@example.com", None)
        .await?;
    ensure!(shown["groups"][0] == "hwsign-operators", "{shown}");

    // No token, a wrong token: 401 with a SCIM error body.
    let wrong = f.scim(0, &["raw", "GET", "/scim/v2/Users", "not-the-token"])?;
    ensure!(
        wrong["status"] == 401 && wrong["body"]["status"] == "401",
        "{wrong}"
    );
    let truncated = &SCIM_TOKEN[..SCIM_TOKEN.len() - 1];
    let wrong = f.scim(0, &["raw", "GET", "/scim/v2/Users", truncated])?;
    ensure!(wrong["status"] == 401, "{wrong}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_scim_deactivation_revokes_devices_and_sessions_on_every_replica() -> Result<()> {
    let f = AdminFleet::start(2, 2).await?;
    let (laptop, other) = (f.devices[0].clone(), f.devices[1].clone());
    let alice = f.user_with_devices("alice@example.com", &[&laptop]).await?;
    f.user_with_devices("bob@example.com", &[&other]).await?;
    for replica in 0..2 {
        expect_ok(&f.api_get(replica, &laptop).await?)?;
        expect_ok(&f.api_get(replica, &other).await?)?;
    }
    ensure!(
        f.sessions(1)
            .await?
            .iter()
            .any(|s| s["user_id"] == alice.as_str())
    );

    // The identity provider deactivates Alice through replica 0 ...
    let patched = f.scim(0, &["deactivate", &alice])?;
    ensure!(
        patched["status"] == 200 && patched["body"]["active"] == false,
        "{patched}"
    );
    // ... and replica 1 refuses her device at its next request; Bob is untouched.
    expect_refusal(&f.api_get(1, &laptop).await?, 403, "device_revoked")?;
    expect_refusal(&f.api_get(0, &laptop).await?, 403, "device_revoked")?;
    expect_ok(&f.api_get(1, &other).await?)?;
    let sessions = f.sessions(1).await?;
    ensure!(
        !sessions.iter().any(|s| s["user_id"] == alice.as_str()),
        "Alice's sessions are ended: {sessions:?}"
    );
    let device = f
        .admin_ok(1, "GET", &format!("/admin/v1/devices/{laptop}"), None)
        .await?;
    ensure!(device["revoked"] == true, "{device}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_scim_delete_deprovisions_the_user() -> Result<()> {
    let f = AdminFleet::start(2, 1).await?;
    let laptop = f.devices[0].clone();
    let alice = f.user_with_devices("alice@example.com", &[&laptop]).await?;
    expect_ok(&f.api_get(1, &laptop).await?)?;
    let deleted = f.scim(0, &["delete-user", &alice])?;
    ensure!(deleted["status"] == 204, "{deleted}");
    expect_refusal(&f.api_get(1, &laptop).await?, 403, "device_revoked")?;
    let gone = f.scim(1, &["get-user", &alice])?;
    ensure!(gone["status"] == 404, "{gone}");
    Ok(())
}
