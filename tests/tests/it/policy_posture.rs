//! Device posture end to end (issue 12 item 2): the real agent reads its posture over D-Bus
//! from STAND-IN UDisks2, logind, fwupd and hostname1 services on a private `dbus-daemon`
//! (the real daemons cannot run here: no udev, no firmware), the client binds the report into a
//! TPM quote by the enrolled AK (`SHA-256(nonce ‖ SHA-256(posture JSON))`), and the verifier's
//! device policy decides on it.

use anyhow::{Context, Result, ensure};
use hwsign_client::reattest::AttestationChallenge;
use hwsign_e2e::refusal_code;
use hwsign_test_support::posture_standins::StandInPosture;
use hwsign_verifier::registry::Fact;

use super::policy_support::{Device, DeviceOptions, Setup, describe};

const POSTURE_POLICY: &str = r#"
@id("baseline")
permit(principal, action, resource);

@id("vault-disk-encrypted")
forbid(principal, action, resource in Hws::Route::"/vault")
unless { context.posture has disk_encrypted && context.posture.disk_encrypted.value };

@id("hr-encrypted-and-locking")
forbid(principal, action, resource in Hws::Route::"/hr")
unless {
  context.posture has disk_encrypted && context.posture.disk_encrypted.value &&
  context.posture has screen_lock && context.posture.screen_lock.value &&
  context has posture_age_secs && context.posture_age_secs < 3600
};

@id("secrets-attested-disk-encryption")
forbid(principal, action, resource in Hws::Route::"/secrets")
unless {
  context.posture has disk_encrypted &&
  context.posture.disk_encrypted.value &&
  context.posture.disk_encrypted.attested
};
"#;

fn with_disk(encrypted: bool) -> DeviceOptions {
    DeviceOptions {
        posture: Some(StandInPosture {
            root_encrypted: encrypted,
            ..StandInPosture::default()
        }),
        ..DeviceOptions::default()
    }
}

/// `device` attests with its posture through the attest endpoint, as the client library does.
async fn attest_with_posture(setup: &Setup, device: &Device) -> Result<()> {
    let nonce = setup.challenge_for(device).await?;
    let request = device
        .signer()
        .attest_request(&AttestationChallenge { nonce })
        .await?;
    let (status, body) = setup.post_attest(&serde_json::to_value(&request)?).await?;
    ensure!(status == 200, "attestation refused: {status} {body}");
    Ok(())
}

async fn refused(setup: &Setup, device: &Device, path: &str) -> Result<()> {
    let response = setup.raw_get_as(device, path).await?;
    ensure!(
        response.status == 403 && refusal_code(&response).as_deref() == Some("policy_denied"),
        "{path}: {}",
        describe(&response)
    );
    Ok(())
}

/// The stand-ins report `/` on an unencrypted block device for one device and an encrypted one
/// for the other; after each attests with its posture, the route requiring disk encryption
/// refuses the first and accepts the second. Before any posture report, the fact is unknown and
/// the route refuses both.
#[tokio::test(flavor = "multi_thread")]
async fn policy_posture_unencrypted_disk_is_refused_on_a_route_requiring_it() -> Result<()> {
    let setup = Setup::start_with(POSTURE_POLICY, &[with_disk(false), with_disk(true)]).await?;
    let plain = &setup.device;
    let encrypted = setup.others.first().context("second device")?;
    refused(&setup, encrypted, "/vault").await?;

    attest_with_posture(&setup, plain).await?;
    attest_with_posture(&setup, encrypted).await?;
    let posture = setup.facts_of(plain)?.posture.context("no posture")?;
    ensure!(
        posture.disk_encrypted == Some(Fact::claimed(false)),
        "{posture:?}"
    );
    ensure!(
        posture.screen_lock == Some(Fact::claimed(true)),
        "{posture:?}"
    );
    ensure!(
        posture.firmware_hsi == Some(Fact::claimed(2)),
        "{posture:?}"
    );
    ensure!(posture.managed == Some(Fact::claimed(true)), "{posture:?}");
    ensure!(
        posture.kernel == Some(Fact::claimed("6.1.0-stand-in".to_owned())),
        "{posture:?}"
    );
    ensure!(
        posture
            .os_name
            .as_ref()
            .is_some_and(|f| f.value.contains("[stand-in]")),
        "{posture:?}"
    );

    refused(&setup, plain, "/vault").await?;
    let response = setup.raw_get_as(encrypted, "/vault").await?;
    ensure!(response.status == 200, "{}", describe(&response));
    // Unrestricted routes are not affected.
    let response = setup.raw_get_as(plain, "/v1/items").await?;
    ensure!(response.status == 200, "{}", describe(&response));
    Ok(())
}

/// Disk encryption reported by the agent is a claim, even bound into a quote: a rule that
/// requires the fact `attested` refuses it, while the rule that accepts a claimed value passes.
#[tokio::test(flavor = "multi_thread")]
async fn policy_posture_claimed_fact_cannot_satisfy_an_attested_only_rule() -> Result<()> {
    let setup = Setup::start_with(POSTURE_POLICY, &[with_disk(true)]).await?;
    attest_with_posture(&setup, &setup.device).await?;
    let posture = setup
        .facts_of(&setup.device)?
        .posture
        .context("no posture")?;
    ensure!(
        posture.disk_encrypted == Some(Fact::claimed(true)),
        "{posture:?}"
    );
    setup.accepted("/vault").await?;
    refused(&setup, &setup.device, "/secrets").await
}

/// A posture report cannot be carried to another device: the report of a device with an
/// encrypted disk, presented by a device without one with that device's own quote, does not
/// match what its TPM quoted over; the other device's whole attestation, presented for this
/// device's nonce, is for another key; and once used it cannot be used again. The device's
/// posture stays what its own agent reported.
#[tokio::test(flavor = "multi_thread")]
async fn policy_posture_report_replayed_from_another_device_is_refused() -> Result<()> {
    let setup = Setup::start_with(POSTURE_POLICY, &[with_disk(false), with_disk(true)]).await?;
    let plain = &setup.device;
    let encrypted = setup.others.first().context("second device")?;
    attest_with_posture(&setup, plain).await?;

    // The encrypted device's report and attestation, made for its own nonce.
    let its_nonce = setup.challenge_for(encrypted).await?;
    let theirs = encrypted
        .signer()
        .attest_request(&AttestationChallenge { nonce: its_nonce })
        .await?;

    // 1. The plain device's own quote, with the other device's report swapped in.
    let nonce = setup.challenge_for(plain).await?;
    let mut swapped = plain
        .signer()
        .attest_request(&AttestationChallenge { nonce })
        .await?;
    swapped.posture = theirs.posture.clone();
    let (status, body) = setup.post_attest(&serde_json::to_value(&swapped)?).await?;
    ensure!(
        status == 403 && body["error"]["code"] == "evidence_invalid:certify_nonce_mismatch",
        "{status} {body}"
    );

    // 2. The other device's whole attestation, for the plain device's nonce.
    let nonce = setup.challenge_for(plain).await?;
    let mut replayed = theirs.clone();
    replayed.nonce = nonce;
    let (status, body) = setup.post_attest(&serde_json::to_value(&replayed)?).await?;
    ensure!(
        status == 403 && body["error"]["code"] == "evidence_invalid:key_mismatch",
        "{status} {body}"
    );

    // 3. Used once by its own device, it cannot be used again.
    let (status, body) = setup.post_attest(&serde_json::to_value(&theirs)?).await?;
    ensure!(status == 200, "{status} {body}");
    let (status, body) = setup.post_attest(&serde_json::to_value(&theirs)?).await?;
    ensure!(
        status == 404 && body["error"]["code"] == "challenge_unknown",
        "{status} {body}"
    );

    let posture = setup.facts_of(plain)?.posture.context("no posture")?;
    ensure!(
        posture.disk_encrypted == Some(Fact::claimed(false)),
        "{posture:?}"
    );
    refused(&setup, plain, "/vault").await
}

/// "Disk encrypted and screen lock on", with a report less than an hour old (docs/POLICY.md):
/// a stale report is not refused but answered `attestation_required`; the client library
/// re-attests, which sends a fresh report bound into the quote, and the retry passes.
#[tokio::test(flavor = "multi_thread")]
async fn policy_posture_stale_report_is_renewed_by_reattestation() -> Result<()> {
    let setup = Setup::start_with(POSTURE_POLICY, &[with_disk(true)]).await?;
    attest_with_posture(&setup, &setup.device).await?;
    setup.accepted("/hr").await?;

    setup.age_attestation(2 * 3600)?;
    let stale = setup
        .facts_of(&setup.device)?
        .posture
        .context("no posture")?;
    let response = setup.raw_get("/hr").await?;
    ensure!(
        response.status == 401
            && refusal_code(&response).as_deref() == Some("attestation_required"),
        "{}",
        describe(&response)
    );
    let url = setup.server.url("/hr");
    let answer = setup.client(true).get(&url).send().await?;
    ensure!(answer.status() == 200, "{answer:?}");
    let fresh = setup
        .facts_of(&setup.device)?
        .posture
        .context("no posture")?;
    ensure!(
        fresh.received_unix >= stale.received_unix + 2 * 3600 - 5,
        "posture not renewed: {} -> {}",
        stale.received_unix,
        fresh.received_unix
    );
    Ok(())
}
