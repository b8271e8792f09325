//! The admin API on a PostgreSQL registry and directory (docs/ADMIN.md "Model"): two `serve`
//! replicas on one real PostgreSQL; a user provisioned over SCIM through one replica, a force
//! logout written through it, and the other replica refusing the session at its next request;
//! deprovisioning through the other replica revokes the device for both.

use crate::admin_support::{AdminFleet, expect_ok};

use anyhow::{Result, ensure};
use hwsign_e2e::expect_refusal;
use hwsign_test_support::postgres::Postgres;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn admin_postgres_force_logout_and_deprovisioning_hold_on_the_other_replica() -> Result<()> {
    let pg = Postgres::start()?;
    let url = pg.database("admin")?;
    let f = AdminFleet::start_on_postgres(2, 2, &url).await?;
    let (laptop, other) = (f.devices[0].clone(), f.devices[1].clone());
    let alice = f.user_with_devices("alice@example.com", &[&laptop]).await?;
    expect_ok(&f.api_get(0, &laptop).await?)?;
    expect_ok(&f.api_get(1, &other).await?)?;
    // The sessions recorded by either replica are listed by both.
    for i in 0..2 {
        let sessions = f.sessions(i).await?;
        ensure!(sessions.len() == 2, "replica {i}: {sessions:?}");
    }
    let listed = f
        .admin_ok(1, "GET", "/admin/v1/users/alice@example.com", None)
        .await?;
    ensure!(listed["id"] == alice.as_str() && listed["devices"][0] == laptop.as_str());

    // Force logout of the laptop's session through replica 0: replica 1 refuses it next.
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
    expect_ok(&f.api_get(1, &other).await?)?;

    // Deprovisioning through replica 1's SCIM endpoint revokes the device on both.
    let patched = f.scim(1, &["deactivate", &alice])?;
    ensure!(patched["status"] == 200, "{patched}");
    for i in 0..2 {
        let response = f.api_get(i, &laptop).await?;
        ensure!(
            response.status == 401 || response.status == 403,
            "replica {i}: {}",
            response.status
        );
    }
    let device = f
        .admin_ok(0, "GET", &format!("/admin/v1/devices/{laptop}"), None)
        .await?;
    ensure!(device["revoked"] == true, "{device}");
    let user = f
        .admin_ok(0, "GET", &format!("/admin/v1/users/{alice}"), None)
        .await?;
    ensure!(user["active"] == false, "{user}");
    drop(f);
    drop(pg);
    Ok(())
}
