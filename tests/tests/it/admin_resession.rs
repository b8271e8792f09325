//! The client starts a new session by itself after `session_revoked` (docs/ADMIN.md
//! "Sessions"): an administrator ends the SDK's delegated session; the SDK's next call is
//! refused `session_revoked`, the agent forgets that session, and the call is signed again by a
//! new session and succeeds. Once the device is revoked, the new session is refused too
//! (`device_revoked`): ending a session never outlives the device.

use crate::admin_support::AdminFleet;

use anyhow::{Result, ensure};
use hwsign_client::Signer;
use hwsign_client::middleware::SigningMiddleware;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn admin_sdk_starts_a_new_session_after_session_revoked_unless_the_device_is_revoked()
-> Result<()> {
    let f = AdminFleet::start(1, 1).await?;
    let laptop = f.devices[0].clone();
    let signer = Signer::new(f.agent.client(), laptop.clone(), hwsign_e2e::AUDIENCE);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SigningMiddleware::new(signer))
        .build();
    let url = format!("http://{}/v1/items", f.fleet.replicas[0].addr);
    let get = || async {
        let response = client.get(&url).send().await?;
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
        anyhow::Ok((status, body))
    };

    let (status, body) = get().await?;
    ensure!(status == 200, "{status} {body}");
    let first = f.session_of(0, &laptop).await?;
    // Force logout of that session.
    let ended = f
        .admin_ok(
            0,
            "POST",
            "/admin/v1/sessions/end",
            Some(json!({"scope": "session", "id": first})),
        )
        .await?;
    ensure!(ended["sessions_ended"] == 1, "{ended}");
    // The SDK's next call succeeds, with a new session.
    let (status, body) = get().await?;
    ensure!(status == 200, "after force logout: {status} {body}");
    let second = f.session_of(0, &laptop).await?;
    ensure!(second != first, "a new session key: {second}");

    // A revoked device gets no new session: the retry is refused device_revoked.
    let revoked = f
        .admin_ok(
            0,
            "POST",
            &format!("/admin/v1/devices/{laptop}/revoke"),
            None,
        )
        .await?;
    ensure!(revoked["revoked"] == true, "{revoked}");
    let (status, body) = get().await?;
    ensure!(
        status == 403 && body["error"]["code"] == "device_revoked",
        "after revocation: {status} {body}"
    );
    let sessions = f.sessions(0).await?;
    ensure!(
        sessions.iter().all(|s| s["key_id"] != laptop.as_str()),
        "no live session for the revoked device: {sessions:?}"
    );
    Ok(())
}
