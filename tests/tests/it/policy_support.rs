//! What the `policy_*` end-to-end tests share: devices (a swtpm, the real agent on it, optionally
//! STAND-IN posture services on a private dbus-daemon, an enrolled key) and one verifier with a
//! device policy that trusts them all.

use std::ops::{Deref, DerefMut};

use anyhow::{Context, Result, ensure};
use hwsign_client::Signer;
use hwsign_client::middleware::SigningMiddleware;
use hwsign_client::reattest::ATTEST_PATH;
use hwsign_e2e::tpm::{EnrollServer, agent_config, enroll_with_cli};
use hwsign_e2e::{AUDIENCE, AgentProcess, RawResponse, send_raw, to_raw};
use hwsign_test_support::posture_standins::{PostureStandIns, StandInPosture};
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::{DeviceFacts, KeyRegistry};

/// "Re-attest every hour" and an unchanged boot chain for /admin (docs/POLICY.md).
pub(crate) const HOURLY_POLICY: &str = r#"
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
pub(crate) const BOOT_POLICY: &str = r#"
@id("baseline")
permit(principal, action, resource);

@id("admin-tpm-unchanged-boot")
forbid(principal, action, resource in Hws::Route::"/admin")
unless { context.level == "tpm" && context.boot_state == "unchanged" };
"#;

/// How a device is set up.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceOptions {
    /// The agent re-attests every that many seconds on its own (`[reattestation]`).
    pub(crate) schedule: Option<u64>,
    /// The agent reads its posture from stand-in services reporting this.
    pub(crate) posture: Option<StandInPosture>,
}

/// One enrolled device.
pub(crate) struct Device {
    pub(crate) swtpm: Swtpm,
    pub(crate) agent: AgentProcess,
    pub(crate) key_id: String,
    pub(crate) device_id: String,
    _standins: Option<PostureStandIns>,
}

impl Device {
    pub(crate) fn signer(&self) -> Signer {
        Signer::new(self.agent.client(), self.key_id.clone(), AUDIENCE)
    }

    /// A reqwest client whose requests the middleware signs; with `reattest`, it also answers
    /// `attestation_required`.
    pub(crate) fn client(&self, reattest: bool) -> reqwest_middleware::ClientWithMiddleware {
        signing_client(self.signer(), reattest)
    }

    /// Stops the agent, extends PCR 4 (boot manager code) on its swtpm (which serves one
    /// connection), and starts the agent again.
    pub(crate) fn change_boot_chain(&mut self) -> Result<()> {
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
}

/// A verifier with a device policy and its devices; derefs to the first device.
pub(crate) struct Setup {
    pub(crate) server: EnrollServer,
    pub(crate) device: Device,
    pub(crate) others: Vec<Device>,
    _policies: tempfile::TempDir,
}

impl Deref for Setup {
    type Target = Device;

    fn deref(&self) -> &Device {
        &self.device
    }
}

impl DerefMut for Setup {
    fn deref_mut(&mut self) -> &mut Device {
        &mut self.device
    }
}

impl Setup {
    /// One device with default options.
    pub(crate) async fn start(policy: &str) -> Result<Self> {
        Self::start_with(policy, &[DeviceOptions::default()]).await
    }

    /// One device per entry of `devices` (at least one), all enrolled.
    pub(crate) async fn start_with(policy: &str, devices: &[DeviceOptions]) -> Result<Self> {
        let policies = tempfile::tempdir()?;
        std::fs::write(policies.path().join("policy.cedar"), policy)?;
        let swtpms = devices
            .iter()
            .map(|_| Swtpm::start_tcp())
            .collect::<Result<Vec<_>>>()?;
        let server = EnrollServer::start_for(&swtpms.iter().collect::<Vec<_>>(), |config| {
            config.policy = Some(hwsign_verifier::PolicySettings::new(policies.path()));
        })
        .await?;
        let mut enrolled = Vec::new();
        for (swtpm, options) in swtpms.into_iter().zip(devices) {
            enrolled.push(enroll(&server, swtpm, options).await?);
        }
        let mut enrolled = enrolled.into_iter();
        let device = enrolled.next().context("no device")?;
        Ok(Self {
            server,
            device,
            others: enrolled.collect(),
            _policies: policies,
        })
    }

    /// A signed GET by `device` sent as raw HTTP (no re-attestation).
    pub(crate) async fn raw_get_as(&self, device: &Device, path: &str) -> Result<RawResponse> {
        let mut request = http::Request::get(self.server.url(path)).body(Vec::new())?;
        device.signer().sign_request(&mut request).await?;
        send_raw(self.server.addr, &to_raw(&request)?).await
    }

    /// A signed GET by the first device sent as raw HTTP (no re-attestation).
    pub(crate) async fn raw_get(&self, path: &str) -> Result<RawResponse> {
        self.raw_get_as(&self.device, path).await
    }

    /// A signed GET that must be accepted at level `tpm`.
    pub(crate) async fn accepted(&self, path: &str) -> Result<()> {
        let response = self.raw_get(path).await?;
        ensure!(response.status == 200, "{path}: {}", describe(&response));
        ensure!(response.json()?["level"] == "tpm");
        Ok(())
    }

    /// `hwsign-verifier policy approve-baseline` for the first device.
    pub(crate) fn approve_baseline(&self) -> Result<()> {
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

    /// The facts the registry keeps about `device`.
    pub(crate) fn facts_of(&self, device: &Device) -> Result<DeviceFacts> {
        self.server
            .registry
            .device_facts(&device.device_id)?
            .context("no facts recorded")
    }

    /// When the first device last attested, as the registry records it.
    pub(crate) fn attested_at(&self) -> Result<i64> {
        Ok(self
            .facts_of(&self.device)?
            .last_attestation
            .context("no attestation recorded")?
            .at_unix)
    }

    /// Moves the first device's last attestation (and the posture report that came with it)
    /// `secs` into the past, as if that much time passed since it attested.
    pub(crate) fn age_attestation(&self, secs: i64) -> Result<()> {
        let mut facts = self.facts_of(&self.device)?;
        let attestation = facts.last_attestation.as_mut().context("no attestation")?;
        attestation.at_unix -= secs;
        if let Some(posture) = facts.posture.as_mut() {
            posture.received_unix -= secs;
        }
        self.server
            .registry
            .put_device_facts(&self.device_id, &facts)?;
        Ok(())
    }

    /// POSTs `body` to the attest endpoint; the status and JSON answer.
    pub(crate) async fn post_attest(
        &self,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value)> {
        self.server.post(ATTEST_PATH, body).await
    }

    /// A nonce from `POST /hws/v1/attest/challenge` for `device`'s key.
    pub(crate) async fn challenge_for(&self, device: &Device) -> Result<String> {
        let (status, body) = self
            .server
            .post(
                hwsign_proto::reattestation::CHALLENGE_PATH,
                &serde_json::json!({ "key_id": device.key_id }),
            )
            .await?;
        ensure!(status == 200, "challenge refused: {status} {body}");
        Ok(body["nonce"].as_str().context("no nonce")?.to_owned())
    }
}

/// Starts `device`'s agent on `swtpm` (with its options) and enrolls a new key with the CLI.
async fn enroll(server: &EnrollServer, swtpm: Swtpm, options: &DeviceOptions) -> Result<Device> {
    let mut config = agent_config(&swtpm);
    let standins = match &options.posture {
        Some(posture) => Some(PostureStandIns::start(posture).await?),
        None => None,
    };
    if let Some(standins) = &standins {
        config.push_str(&format!(
            "\n[posture]\nbus = \"{}\"\nmanaged = true\n",
            standins.address()
        ));
    }
    if let Some(interval) = options.schedule {
        config.push_str(&format!(
            "\n[reattestation]\nverifier = \"{}\"\ninterval_secs = {interval}\n",
            server.base_url()
        ));
    }
    let agent = AgentProcess::start_with(&config, &[])?;
    let key_id = enroll_with_cli(&agent, server, &server.token()?)?;
    let device_id = server.device_of(&key_id)?;
    Ok(Device {
        swtpm,
        agent,
        key_id,
        device_id,
        _standins: standins,
    })
}

/// A reqwest client whose requests the middleware signs with `signer`; with `reattest`, it
/// also answers `attestation_required`.
pub(crate) fn signing_client(
    signer: Signer,
    reattest: bool,
) -> reqwest_middleware::ClientWithMiddleware {
    let middleware = SigningMiddleware::new(signer);
    let middleware = if reattest {
        middleware.with_reattestation()
    } else {
        middleware
    };
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// The nonce of an `attestation_required` answer.
pub(crate) fn nonce_of(response: &RawResponse) -> Result<String> {
    let header = response
        .header("www-authenticate")
        .context("no WWW-Authenticate")?;
    let (_, rest) = header.split_once("nonce=\"").context("no nonce")?;
    let (nonce, _) = rest.split_once('"').context("unterminated nonce")?;
    Ok(nonce.to_owned())
}

/// Status, challenge and body, for failure messages.
pub(crate) fn describe(response: &RawResponse) -> String {
    format!(
        "{} {:?} {}",
        response.status,
        response.header("www-authenticate"),
        String::from_utf8_lossy(&response.body)
    )
}
