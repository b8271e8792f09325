//! Device policy over attested facts end to end (issue 12): a private swtpm, the real
//! `hwsign-agent`, the real `hwsign` and `hwsign-verifier` binaries, and an axum API mounting
//! the enrollment and re-attestation routers beside the HWS1 verifier with a device policy. The
//! client is the client library's reqwest middleware, which answers `attestation_required`
//! itself.

use anyhow::{Context, Result, ensure};
use hwsign_client::Signer;
use hwsign_client::middleware::SigningMiddleware;
use hwsign_client::reattest::{ATTEST_PATH, AttestationChallenge};
use hwsign_e2e::tpm::{EnrollServer, agent_config, enroll_with_cli};
use hwsign_e2e::{AUDIENCE, AgentProcess, RawResponse, refusal_code, send_raw, to_raw};
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::KeyRegistry;

/// "Re-attest every hour" and an unchanged boot chain for /admin (docs/POLICY.md).
const HOURLY_POLICY: &str = r#"
@id("baseline")
permit(principal, action, resource);

@id("admin-fresh-unchanged-boot")
forbid(principal, action, resource in Hws::Route::"/admin")
unless {
  context.level == "tpm" &&
  context.boot_state == "unchanged" &&
  context has attestation_age_secs && context.attestation_age_secs < 3600
};
"#;

/// An unchanged boot chain for /admin, whatever the attestation's age.
const BOOT_POLICY: &str = r#"
@id("baseline")
permit(principal, action, resource);

@id("admin-tpm-unchanged-boot")
forbid(principal, action, resource in Hws::Route::"/admin")
unless { context.level == "tpm" && context.boot_state == "unchanged" };
"#;

/// A swtpm, the agent on it, a verifier with a device policy, and an enrolled key.
struct Setup {
    server: EnrollServer,
    agent: AgentProcess,
    swtpm: Swtpm,
    key_id: String,
    device_id: String,
    _policies: tempfile::TempDir,
}

impl Setup {
    async fn start(policy: &str) -> Result<Self> {
        Self::start_with(policy, None).await
    }

    /// With `schedule`, the agent also re-attests every that many seconds on its own
    /// (`[reattestation]` pointing at the verifier).
    async fn start_with(policy: &str, schedule: Option<u64>) -> Result<Self> {
        let policies = tempfile::tempdir()?;
        std::fs::write(policies.path().join("admin.cedar"), policy)?;
        let swtpm = Swtpm::start_tcp()?;
        let server = EnrollServer::start_configured(&swtpm, |config| {
            config.policy = Some(hwsign_verifier::PolicySettings::new(policies.path()));
        })
        .await?;
        let mut config = agent_config(&swtpm);
        if let Some(interval) = schedule {
            config.push_str(&format!(
                "\n[reattestation]\nverifier = \"{}\"\ninterval_secs = {interval}\n",
                server.base_url()
            ));
        }
        let agent = AgentProcess::start_with(&config, &[])?;
        let key_id = enroll_with_cli(&agent, &server, &server.token()?)?;
        let device_id = server.device_of(&key_id)?;
        Ok(Self {
            server,
            agent,
            swtpm,
            key_id,
            device_id,
            _policies: policies,
        })
    }

    fn signer(&self) -> Signer {
        Signer::new(self.agent.client(), self.key_id.clone(), AUDIENCE)
    }

    /// A reqwest client whose requests the middleware signs; with `reattest`, it also answers
    /// `attestation_required`.
    fn client(&self, reattest: bool) -> reqwest_middleware::ClientWithMiddleware {
        let middleware = SigningMiddleware::new(self.signer());
        let middleware = if reattest {
            middleware.with_reattestation()
        } else {
            middleware
        };
        reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(middleware)
            .build()
    }

    /// A signed GET sent as raw HTTP (no re-attestation).
    async fn raw_get(&self, path: &str) -> Result<RawResponse> {
        let mut request = http::Request::get(self.server.url(path)).body(Vec::new())?;
        self.signer().sign_request(&mut request).await?;
        send_raw(self.server.addr, &to_raw(&request)?).await
    }

    /// A signed GET that must be accepted at level `tpm`.
    async fn accepted(&self, path: &str) -> Result<()> {
        let response = self.raw_get(path).await?;
        ensure!(response.status == 200, "{path}: {}", describe(&response));
        ensure!(response.json()?["level"] == "tpm");
        Ok(())
    }

    /// Stops the agent, extends PCR 4 (boot manager code) on its swtpm (which serves one
    /// connection), and starts the agent again.
    fn change_boot_chain(&mut self) -> Result<()> {
        ensure!(
            self.agent.stop()?,
            "agent did not stop cleanly:\n{}",
            self.agent.log()
        );
        let output = self
            .swtpm
            .tool("tpm2_pcrextend")
            .arg(format!("4:sha256={}", "42".repeat(32)))
            .output()?;
        ensure!(output.status.success(), "tpm2_pcrextend: {output:?}");
        self.agent.restart(&[])
    }

    /// `hwsign-verifier policy approve-baseline` for the device.
    fn approve_baseline(&self) -> Result<()> {
        let db = self.server.db().display().to_string();
        let approved = hwsign_e2e::tpm::hwsign_verifier(&[
            "policy",
            "approve-baseline",
            "--db",
            &db,
            "--device",
            &self.device_id,
        ])?;
        ensure!(
            approved.status.success(),
            "{}",
            String::from_utf8_lossy(&approved.stderr)
        );
        Ok(())
    }

    /// When the device last attested, as the registry records it.
    fn attested_at(&self) -> Result<i64> {
        Ok(self
            .server
            .registry
            .device_facts(&self.device_id)?
            .and_then(|f| f.last_attestation)
            .context("no attestation recorded")?
            .at_unix)
    }

    /// Moves the device's last attestation `secs` into the past (as if that much time passed
    /// since it attested).
    fn age_attestation(&self, secs: i64) -> Result<()> {
        let mut facts = self
            .server
            .registry
            .device_facts(&self.device_id)?
            .context("no facts")?;
        let attestation = facts.last_attestation.as_mut().context("no attestation")?;
        attestation.at_unix -= secs;
        self.server
            .registry
            .put_device_facts(&self.device_id, &facts)?;
        Ok(())
    }

    /// POSTs `body` to the attest endpoint; the status and JSON answer.
    async fn post_attest(&self, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
        self.server.post(ATTEST_PATH, body).await
    }
}

fn nonce_of(response: &RawResponse) -> Result<String> {
    let header = response
        .header("www-authenticate")
        .context("no WWW-Authenticate")?;
    let (_, rest) = header.split_once("nonce=\"").context("no nonce")?;
    let (nonce, _) = rest.split_once('"').context("unterminated nonce")?;
    Ok(nonce.to_owned())
}

fn describe(response: &RawResponse) -> String {
    format!(
        "{} {:?} {}",
        response.status,
        response.header("www-authenticate"),
        String::from_utf8_lossy(&response.body)
    )
}

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
    let setup = Setup::start_with(HOURLY_POLICY, Some(1)).await?;
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
