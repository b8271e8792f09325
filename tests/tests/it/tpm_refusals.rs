//! What TPM enrollment refuses, each with its documented code, over the real agent (swtpm) and a
//! real server: wrong activation secret, certify over an old nonce, a replayed quote, an AK that
//! is not restricted or not fixedTPM, a duplicable signing key, an EK certificate from an
//! untrusted CA, a TPM rolled back to an older state (which also revokes the device), and a
//! software key on a route that demands `tpm`.

use anyhow::{Context, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::tpm::{
    EnrollServer, attributes, clear_attributes, code, start_agent, tpm_evidence,
};
use hwsign_e2e::{AUDIENCE, AgentProcess, RawResponse, create_key, refusal_code, send_raw, to_raw};
use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::KeyAttestation;
use hwsign_proto::enrollment::StartResponse;
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::{KeyRegistry, RegisteredKey, RouteRule};

struct Setup {
    _swtpm: Swtpm,
    agent: AgentProcess,
    server: EnrollServer,
    key_id: String,
}

async fn setup() -> Result<Setup> {
    let swtpm = Swtpm::start_tcp()?;
    let agent = start_agent(&swtpm)?;
    let server = EnrollServer::start(&swtpm, Vec::new()).await?;
    let (key_id, _) = create_key(&agent.client(), "tpm", "refusals").await?;
    Ok(Setup {
        _swtpm: swtpm,
        agent,
        server,
        key_id,
    })
}

impl Setup {
    async fn challenge(&self) -> Result<StartResponse> {
        self.server
            .start_ceremony(&self.server.token()?, &self.key_id)
            .await
    }

    async fn evidence(&self, started: &StartResponse) -> Result<KeyAttestation> {
        Ok(self
            .agent
            .client()
            .attestation(&self.key_id, &started.nonce)
            .await?)
    }

    /// Sends `evidence` for `started` and expects refusal `expected`; the ceremony is then over
    /// and the key unregistered.
    async fn refused(
        &self,
        started: &StartResponse,
        evidence: &KeyAttestation,
        expected: &str,
    ) -> Result<()> {
        let (status, body) = self
            .server
            .send_evidence(&started.challenge_id, evidence)
            .await?;
        ensure!(
            status == 403 && code(&body) == expected,
            "expected 403 {expected}, got {status} {body}"
        );
        let (status, body) = self
            .server
            .send_secret(&started.challenge_id, "AAAA")
            .await?;
        ensure!(
            status == 404 && code(&body) == "challenge_unknown",
            "{status} {body}"
        );
        ensure!(self.server.registry.lookup(&self.key_id)?.is_none());
        Ok(())
    }
}

async fn signed_get(server: &EnrollServer, signer: &Signer, path: &str) -> Result<RawResponse> {
    let mut request = http::Request::get(server.url(path)).body(Vec::new())?;
    signer.sign_request(&mut request).await?;
    send_raw(server.addr, &to_raw(&request)?).await
}

/// The credential is opened in the TPM, but the secret returned is another: refused, one try
/// only, nothing registered.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_refused_wrong_activation_secret() -> Result<()> {
    let s = setup().await?;
    let started = s.challenge().await?;
    let evidence = s.evidence(&started).await?;
    let (status, body) = s
        .server
        .send_evidence(&started.challenge_id, &evidence)
        .await?;
    ensure!(status == 200, "{status} {body}");
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (status, body) = s.server.send_secret(&started.challenge_id, wrong).await?;
    ensure!(
        status == 403 && code(&body) == "activation_failed",
        "{status} {body}"
    );
    let (status, body) = s.server.send_secret(&started.challenge_id, wrong).await?;
    ensure!(
        status == 404 && code(&body) == "challenge_unknown",
        "{status} {body}"
    );
    ensure!(s.server.registry.lookup(&s.key_id)?.is_none());
    let signer = Signer::new(s.agent.client(), s.key_id.clone(), AUDIENCE);
    let response = signed_get(&s.server, &signer, "/x").await?;
    ensure!(refusal_code(&response).as_deref() == Some("unknown_key"));
    Ok(())
}

/// Evidence made for an earlier challenge (its certify and quote carry the old nonce) is refused
/// by a later challenge.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_refused_certify_over_an_old_nonce() -> Result<()> {
    let s = setup().await?;
    let first = s.challenge().await?;
    let old = s.evidence(&first).await?;
    let second = s.challenge().await?;
    s.refused(&second, &old, "evidence_invalid:certify_nonce_mismatch")
        .await
}

/// Fresh certify, but the quote (and its PCR values) from an earlier challenge.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_refused_replayed_quote() -> Result<()> {
    let s = setup().await?;
    let first = s.challenge().await?;
    let mut old = s.evidence(&first).await?;
    let second = s.challenge().await?;
    let mut fresh = s.evidence(&second).await?;
    {
        let old = tpm_evidence(&mut old)?;
        let fresh = tpm_evidence(&mut fresh)?;
        fresh.quote_info = old.quote_info.clone();
        fresh.quote_signature = old.quote_signature.clone();
        fresh.pcrs_sha256 = old.pcrs_sha256.clone();
    }
    s.refused(&second, &fresh, "evidence_invalid:quote_nonce_mismatch")
        .await
}

/// The AK's public area with `restricted` cleared (an AK that would sign any digest, so its
/// "attestations" could be forged), then with `fixedTPM` cleared (an AK that could have been
/// duplicated out of the TPM).
#[tokio::test(flavor = "multi_thread")]
async fn tpm_refused_ak_without_restricted_or_fixed_tpm() -> Result<()> {
    let s = setup().await?;
    for (bit, expected) in [
        (attributes::RESTRICTED, "evidence_invalid:ak_not_restricted"),
        (attributes::FIXED_TPM, "evidence_invalid:ak_not_fixed_tpm"),
    ] {
        let started = s.challenge().await?;
        let mut evidence = s.evidence(&started).await?;
        clear_attributes(&mut tpm_evidence(&mut evidence)?.ak_public, bit)?;
        s.refused(&started, &evidence, expected).await?;
    }
    Ok(())
}

/// The signing key presented as duplicable (fixedTPM cleared): refused on its attributes. The
/// verifier's own tests certify a really duplicable key with a real AK for the same code.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_refused_signing_key_not_fixed_tpm() -> Result<()> {
    let s = setup().await?;
    let started = s.challenge().await?;
    let mut evidence = s.evidence(&started).await?;
    clear_attributes(
        &mut tpm_evidence(&mut evidence)?.key_public,
        attributes::FIXED_TPM,
    )?;
    s.refused(&started, &evidence, "evidence_invalid:key_not_fixed_tpm")
        .await
}

/// A server that trusts another TPM manufacturer (a second swtpm's local CA) refuses this TPM's
/// EK certificate.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_refused_ek_certificate_from_an_untrusted_ca() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    let other = Swtpm::start()?;
    let agent = start_agent(&swtpm)?;
    let server = EnrollServer::start(&other, Vec::new()).await?;
    let (key_id, _) = create_key(&agent.client(), "tpm", "untrusted").await?;
    let s = Setup {
        _swtpm: swtpm,
        agent,
        server,
        key_id,
    };
    let started = s.challenge().await?;
    let evidence = s.evidence(&started).await?;
    s.refused(&started, &evidence, "evidence_invalid:ek_untrusted")
        .await
}

/// The device enrolls; its TPM is then restored from a copy of an older state (lower resetCount).
/// A later re-enrollment completes the credential round, proving the old state is this very
/// TPM's, and is refused as a rollback; the device and its key are revoked, so requests signed
/// with the key are refused with `device_revoked`.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_refused_reset_count_rollback_and_device_revoked() -> Result<()> {
    let mut swtpm = Swtpm::start_tcp()?;
    // A cleanly shut down state to roll back to later, then two reboots past it.
    swtpm.stop()?;
    let old_state = swtpm.snapshot_state()?;
    swtpm.restart()?;
    swtpm.restart()?;
    let mut agent = start_agent(&swtpm)?;
    let server = EnrollServer::start(&swtpm, Vec::new()).await?;
    let (key_id, _) = create_key(&agent.client(), "tpm", "rollback").await?;
    let (status, body) = server.enroll_by_hand(&agent.client(), &key_id).await?;
    ensure!(status == 200, "{status} {body}");
    let device_id = body["device_id"].as_str().context("device id")?.to_owned();
    let recorded = server.registry.device(&device_id)?.context("device")?.clock;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    ensure!(signed_get(&server, &signer, "/before").await?.status == 200);

    ensure!(
        agent.stop()?,
        "agent did not stop cleanly:\n{}",
        agent.log()
    );
    swtpm.restore_state(&old_state)?;
    agent.restart(&[])?;
    let (status, body) = server.enroll_by_hand(&agent.client(), &key_id).await?;
    ensure!(
        status == 403 && code(&body) == "evidence_invalid:clock_rollback",
        "expected a rollback refusal after {recorded:?}, got {status} {body}"
    );
    let device = server.registry.device(&device_id)?.context("device")?;
    ensure!(device.revoked && device.clock == recorded);
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    let response = signed_get(&server, &signer, "/after").await?;
    ensure!(
        response.status == 403 && refusal_code(&response).as_deref() == Some("device_revoked"),
        "{} {:?}",
        response.status,
        refusal_code(&response)
    );
    // A revoked device cannot enroll again, even from its current state.
    let started = server.start_ceremony(&server.token()?, &key_id).await?;
    let evidence = agent.client().attestation(&key_id, &started.nonce).await?;
    let (status, body) = server
        .send_evidence(&started.challenge_id, &evidence)
        .await?;
    ensure!(
        status == 403 && code(&body) == "device_revoked",
        "{status} {body}"
    );
    Ok(())
}

/// A route demanding `tpm`: the enrolled TPM key passes, a registered software key of the same
/// agent gets 403 `policy_denied` there and 200 elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_software_key_on_a_tpm_route_is_policy_denied() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    let agent = start_agent(&swtpm)?;
    let rule: RouteRule = serde_json::from_value(serde_json::json!({
        "path_prefix": "/admin/",
        "min_level": "tpm",
    }))?;
    let server = EnrollServer::start(&swtpm, vec![rule]).await?;
    let (tpm_key, _) = create_key(&agent.client(), "tpm", "hardware").await?;
    let (status, body) = server.enroll_by_hand(&agent.client(), &tpm_key).await?;
    ensure!(status == 200, "{status} {body}");
    let (software_key, public) = create_key(&agent.client(), "software", "soft").await?;
    server
        .registry
        .add(RegisteredKey::new(public, "soft", KeyLevel::Software, 0))?;

    let hardware = Signer::new(agent.client(), tpm_key, AUDIENCE);
    let software = Signer::new(agent.client(), software_key, AUDIENCE);
    let response = signed_get(&server, &hardware, "/admin/users").await?;
    ensure!(response.status == 200 && response.json()?["level"] == "tpm");
    let response = signed_get(&server, &software, "/admin/users").await?;
    ensure!(
        response.status == 403 && refusal_code(&response).as_deref() == Some("policy_denied"),
        "{} {:?}",
        response.status,
        refusal_code(&response)
    );
    // Another spelling of the same route is the same route.
    let response = signed_get(&server, &software, "/public/../admin/users").await?;
    ensure!(refusal_code(&response).as_deref() == Some("policy_denied"));
    let response = signed_get(&server, &software, "/public").await?;
    ensure!(response.status == 200 && response.json()?["level"] == "software");
    Ok(())
}
