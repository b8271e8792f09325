//! Device policy over attested facts end to end (issue 12): a private swtpm, the real
//! `hwsign-agent`, the real `hwsign` and `hwsign-verifier` binaries, and an axum API mounting
//! the enrollment and re-attestation routers beside the HWS1 verifier with a device policy. The
//! client is the client library's reqwest middleware, which answers `attestation_required`
//! itself.

use anyhow::{Context, Result, ensure};
use hwsign_client::reattest::AttestationChallenge;
use hwsign_e2e::refusal_code;
use hwsign_verifier::KeyRegistry;

use super::policy_support::{BOOT_POLICY, DeviceOptions, HOURLY_POLICY, Setup, describe, nonce_of};

/// An attestation older than the policy allows is answered `401 attestation_required` with a
/// nonce; a client without re-attestation gets exactly that; the client library with
/// re-attestation posts the agent's fresh quote over the nonce to the attest endpoint and the
/// retry succeeds, with the device's attestation time moved to now.
#[tokio::test(flavor = "multi_thread")]
async fn policy_stale_attestation_is_renewed_by_the_client_and_the_retry_succeeds() -> Result<()> {
    let setup = Setup::start(HOURLY_POLICY).await?;
    let url = setup.server.url("/admin/users");
    // Fresh from enrollment: allowed.
    let answer = setup.client(false).get(&url).send().await?;
    ensure!(answer.status() == 200, "fresh device refused: {answer:?}");

    setup.age_attestation(2 * 3600)?;
    let stale_at = setup.attested_at()?;
    let refused = setup.raw_get("/admin/users").await?;
    ensure!(
        refused.status == 401 && refusal_code(&refused).as_deref() == Some("attestation_required"),
        "{}",
        describe(&refused)
    );
    ensure!(!nonce_of(&refused)?.is_empty());
    // Routes the policy does not restrict are not affected.
    ensure!(setup.raw_get("/v1/items").await?.status == 200);
    // Without re-attestation, the client sees the 401.
    let answer = setup.client(false).get(&url).send().await?;
    ensure!(answer.status() == 401, "{answer:?}");
    ensure!(setup.attested_at()? == stale_at, "nothing attested yet");

    // With it: re-attest, retry, accepted.
    let answer = setup.client(true).get(&url).send().await?;
    let status = answer.status();
    let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await?)?;
    ensure!(status == 200, "retry refused: {status} {body}");
    ensure!(body["level"] == "tpm", "{body}");
    let fresh_at = setup.attested_at()?;
    ensure!(
        fresh_at >= stale_at + 2 * 3600 - 5,
        "attestation time not renewed: {stale_at} -> {fresh_at}"
    );
    // And the raw client is accepted again without anything else.
    let again = setup.raw_get("/admin/users").await?;
    ensure!(again.status == 200, "{}", describe(&again));
    Ok(())
}

/// The nonce of an `attestation_required` answer is single use, bound to the device's key, and
/// evidence must be made over it.
#[tokio::test(flavor = "multi_thread")]
async fn policy_reattestation_nonce_is_single_use_and_bound() -> Result<()> {
    let setup = Setup::start(HOURLY_POLICY).await?;
    setup.age_attestation(2 * 3600)?;
    let first = nonce_of(&setup.raw_get("/admin/users").await?)?;
    let second = nonce_of(&setup.raw_get("/admin/users").await?)?;
    let signer = setup.signer();

    // Evidence made over the first nonce, presented with the second: the quote is over another
    // nonce. The second nonce is spent by that try.
    let over_first = signer
        .attest_request(&AttestationChallenge {
            nonce: first.clone(),
        })
        .await?;
    let (status, body) = setup
        .post_attest(&serde_json::json!({"nonce": second, "evidence": over_first.evidence}))
        .await?;
    ensure!(
        status == 403 && body["error"]["code"] == "evidence_invalid:certify_nonce_mismatch",
        "{status} {body}"
    );
    let (status, body) = setup
        .post_attest(&serde_json::to_value(&over_first)?)
        .await?;
    ensure!(status == 200, "{status} {body}");
    ensure!(body["boot_state"] == "unchanged", "{body}");
    ensure!(body["device_id"] == setup.device_id.as_str(), "{body}");
    // Replaying the accepted evidence: the nonce is gone.
    let (status, body) = setup
        .post_attest(&serde_json::to_value(&over_first)?)
        .await?;
    ensure!(
        status == 404 && body["error"]["code"] == "challenge_unknown",
        "{status} {body}"
    );
    // A nonce nobody issued.
    let (status, body) = setup
        .post_attest(&serde_json::json!({"nonce": "A".repeat(43), "evidence": over_first.evidence}))
        .await?;
    ensure!(
        status == 404 && body["error"]["code"] == "challenge_unknown",
        "{status} {body}"
    );
    Ok(())
}

/// PCR 4 extended on the device's swtpm: the re-attestation the client makes when asked records
/// `boot_state == "changed"`, so the retry is refused with `policy_denied` (a re-attestation
/// cannot help, so no `attestation_required` either), until `hwsign-verifier policy
/// approve-baseline` approves the new boot chain.
#[tokio::test(flavor = "multi_thread")]
async fn policy_reattestation_after_pcr_change_is_refused_until_approved() -> Result<()> {
    let mut setup = Setup::start(HOURLY_POLICY).await?;
    setup.change_boot_chain()?;
    setup.age_attestation(2 * 3600)?;

    let url = setup.server.url("/admin/users");
    let answer = setup.client(true).get(&url).send().await?;
    let status = answer.status();
    let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await?)?;
    ensure!(
        status == 403 && body["error"]["code"] == "policy_denied",
        "{status} {body}"
    );
    let facts = setup
        .server
        .registry
        .device_facts(&setup.device_id)?
        .context("no facts")?;
    let attestation = facts.last_attestation.context("no attestation")?;
    ensure!(
        attestation.boot_state.as_str() == "changed",
        "{attestation:?}"
    );
    // Fresh but changed: refused outright.
    let refused = setup.raw_get("/admin/users").await?;
    ensure!(
        refused.status == 403 && refusal_code(&refused).as_deref() == Some("policy_denied"),
        "{}",
        describe(&refused)
    );

    setup.approve_baseline()?;
    let answer = setup.client(true).get(&url).send().await?;
    ensure!(answer.status() == 200, "{answer:?}");
    Ok(())
}

/// A route allowing only `tpm` devices with `boot_state == "unchanged"` accepts the enrolled
/// device; after `tpm2_pcrextend` changes PCR 4 on the device's swtpm and the device attests
/// again by enrolling its key again through the real agent (enrollment records the boot state
/// too), it is refused with `policy_denied`, until `hwsign-verifier policy approve-baseline`
/// approves the new boot chain.
#[tokio::test(flavor = "multi_thread")]
async fn policy_tpm_boot_chain_change_is_refused_until_approved() -> Result<()> {
    let mut setup = Setup::start(BOOT_POLICY).await?;
    setup.accepted("/admin/users").await?;
    setup.change_boot_chain()?;
    // Not yet attested again: the recorded boot state is still the enrollment's.
    setup.accepted("/admin/users").await?;

    let (status, body) = setup
        .server
        .enroll_by_hand(&setup.agent.client(), &setup.key_id)
        .await?;
    ensure!(status == 200, "re-enrollment refused: {status} {body}");
    let refused = setup.raw_get("/admin/users").await?;
    ensure!(
        refused.status == 403 && refusal_code(&refused).as_deref() == Some("policy_denied"),
        "{}",
        describe(&refused)
    );
    // Routes the policy does not restrict still work.
    setup.accepted("/v1/items").await?;
    setup.approve_baseline()?;
    setup.accepted("/admin/users").await
}

/// The agent's own schedule (`[reattestation]` with the verifier's URL): with no client
/// involved, the agent asks for a nonce, quotes over it and posts the evidence every interval,
/// so a device whose attestation went stale is fresh again by itself and its requests pass
/// without any `attestation_required` round.
#[tokio::test(flavor = "multi_thread")]
async fn policy_agent_reattests_on_its_own_schedule() -> Result<()> {
    let setup = Setup::start_with(
        HOURLY_POLICY,
        &[DeviceOptions {
            schedule: Some(1),
            ..DeviceOptions::default()
        }],
    )
    .await?;
    setup.age_attestation(2 * 3600)?;
    let aged = setup.attested_at()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while setup.attested_at()? <= aged + 3600 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the agent did not re-attest on its schedule:\n{}",
            setup.agent.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    ensure!(
        setup
            .agent
            .log()
            .contains("scheduled re-attestation accepted"),
        "{}",
        setup.agent.log()
    );
    setup.accepted("/admin/users").await
}
