//! `fido2_*` end to end: the real agent binary with a `[backends.fido2]` section whose
//! `seam_socket` points at a software CTAP2 authenticator (1Password's passkey-authenticator,
//! test-support's `fido2_authenticator::SoftKey`). The seam — a SOCK_SEQPACKET socket carrying
//! 64-byte CTAPHID reports instead of USB — is the only stand-in; the notification daemon the
//! touch prompt goes to is a stand-in service on a real dbus-daemon.

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_client::AgentErrorCode;
use hwsign_e2e::{AgentProcess, create_key, wait};
use hwsign_proto::api::KeyLevel;
use hwsign_test_support::fido2_authenticator::SoftKey;
use hwsign_test_support::notifications_standin::NotificationsStandIn;
use tempfile::TempDir;

const RP_ID: &str = "api.example.test";

/// A software key on a seam in a fresh temp dir.
fn soft_key() -> Result<(TempDir, SoftKey)> {
    let dir = tempfile::Builder::new().prefix("hwsign-fido2-").tempdir()?;
    let key = SoftKey::start(dir.path())?;
    Ok((dir, key))
}

/// An agent whose fido2 backend talks to `key` (touch timeout `timeout_secs`), with `env`.
fn agent(key: &SoftKey, timeout_secs: u64, env: &[(&str, &str)]) -> Result<AgentProcess> {
    let config = format!(
        "[backends.software]\nenabled = true\n[backends.fido2]\nrp_id = {RP_ID:?}\n\
         seam_socket = {:?}\ntouch_timeout_secs = {timeout_secs}\n",
        key.socket_path().display().to_string(),
    );
    AgentProcess::start_with(&config, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_create_credential_stores_only_public_metadata() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let client = agent.client();
    let (id, public) = create_key(&client, "fido2", "laptop security key").await?;
    ensure!(key.touches() == 1, "creation takes one touch");
    let listed = client.list_keys().await?;
    let info = listed
        .iter()
        .find(|k| k.id == id)
        .context("the new key is listed")?;
    ensure!(info.backend == "fido2", "listed under fido2: {info:?}");
    ensure!(info.level == KeyLevel::HardwareUnattested);
    // The metadata holds the credential id and public key, and nothing else of the key.
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(
        agent.state_dir().join("fido2/credentials.json"),
    )?)?;
    let credential = &stored["credentials"][0];
    ensure!(credential["key_id"] == id.as_str());
    ensure!(credential["rp_id"] == RP_ID);
    let der = URL_SAFE_NO_PAD.decode(credential["public_key"].as_str().unwrap_or_default())?;
    ensure!(
        der == public.spki_der(),
        "stored public key is the listed one"
    );
    let credential_id =
        URL_SAFE_NO_PAD.decode(credential["credential_id"].as_str().unwrap_or_default())?;
    ensure!(!credential_id.is_empty());
    let fields: Vec<&String> = credential
        .as_object()
        .context("credential is an object")?
        .keys()
        .collect();
    ensure!(
        fields.len() == 7,
        "no field beyond the documented ones: {fields:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_credentials_survive_an_agent_restart() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let mut agent = agent(&key, 30, &[])?;
    let (id, _) = create_key(&agent.client(), "fido2", "kept").await?;
    tokio::task::block_in_place(|| agent.restart(&[]))?;
    let listed = agent.client().list_keys().await?;
    ensure!(listed.iter().any(|k| k.id == id && k.backend == "fido2"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_no_key_present_is_its_own_error() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    key.unplug();
    let refused = agent
        .client()
        .create_key("fido2", "absent")
        .await
        .err()
        .context("creating without a key must fail")?;
    ensure!(
        refused.agent_code() == Some(AgentErrorCode::NoSecurityKey),
        "got {refused}"
    );
    let status = agent.client().status().await?;
    let fido2 = status
        .backends
        .iter()
        .find(|b| b.name == "fido2")
        .context("fido2 in status")?;
    ensure!(!fido2.available, "an unplugged key is reported: {fido2:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_status_reports_a_present_key() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let status = agent.client().status().await?;
    let fido2 = status
        .backends
        .iter()
        .find(|b| b.name == "fido2")
        .context("fido2 in status")?;
    ensure!(fido2.available, "a plugged key is available: {fido2:?}");
    ensure!(key.touch_requests() == 0, "a status check needs no touch");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_timeout_without_touch_is_its_own_error() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 1, &[])?;
    key.set_touch(false);
    let refused = agent
        .client()
        .create_key("fido2", "untouched")
        .await
        .err()
        .context("creating without a touch must fail")?;
    ensure!(
        refused.agent_code() == Some(AgentErrorCode::TouchTimeout),
        "got {refused}"
    );
    ensure!(key.touch_requests() == 1 && key.touches() == 0);
    // The key was cancelled, not left waiting: a touch now serves the next request at once.
    key.set_touch(true);
    create_key(&agent.client(), "fido2", "touched").await?;
    ensure!(key.touches() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_touch_prompt_is_a_desktop_notification() -> Result<()> {
    let notifications = NotificationsStandIn::start().await?;
    let (_dir, key) = soft_key()?;
    let agent = agent(
        &key,
        30,
        &[("DBUS_SESSION_BUS_ADDRESS", notifications.address())],
    )?;
    create_key(&agent.client(), "fido2", "prompted").await?;
    wait::until(
        "the touch notification",
        || !notifications.seen().is_empty(),
        || format!("{:?}", notifications.seen()),
    )
    .await?;
    let seen = notifications.seen();
    ensure!(seen.len() == 1, "one prompt for one touch: {seen:?}");
    ensure!(seen[0].app_name == "hwsign-agent");
    ensure!(seen[0].summary == "Touch your security key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_keys_are_distinct_credentials() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let (a, _) = create_key(&agent.client(), "fido2", "one").await?;
    let (b, _) = create_key(&agent.client(), "fido2", "two").await?;
    ensure!(a != b, "each creation is a new credential");
    ensure!(key.touches() == 2);
    Ok(())
}
