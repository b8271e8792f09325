//! The TPM backend behind the agent's socket (real swtpm): keys created over the API carry
//! level `tpm`, sign verifiable requests, and produce attestation evidence bound to the nonce.
#![cfg(all(feature = "tpm", feature = "software"))]

use crate::support;

use anyhow::{Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;
use serde_json::json;

use hwsign_agent::backends::tpm::TpmConfig;
use hwsign_proto::api::{KeyInfo, KeyLevel, SignRequest, SignResponse, StatusResponse};
use hwsign_proto::attestation::{Evidence, KeyAttestation};
use hwsign_proto::keys::EMPTY_SHA256;
use hwsign_proto::verify_input::parse_header_signed;
use hwsign_proto::{HWS1, PublicKey, RequestParts};
use hwsign_test_support::swtpm::Swtpm;

use support::TestAgent;

/// An agent with the software backend and `tpm`.
async fn agent_with(tpm: &Swtpm) -> Result<TestAgent> {
    TestAgent::start_with(|c| {
        c.backends.tpm = Some(TpmConfig {
            tcti: tpm.tcti(),
            ..TpmConfig::default()
        });
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tpm_keys_over_the_socket() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let agent = agent_with(&tpm).await?;
    let status: StatusResponse = agent.get_ok("/v1/status").await?;
    let names: Vec<&str> = status.backends.iter().map(|b| b.name.as_str()).collect();
    ensure!(names == ["software", "tpm"], "{status:?}");

    let key: KeyInfo = agent
        .post("/v1/keys", &json!({"backend": "tpm", "label": "laptop"}))
        .await?
        .ok_json()?;
    ensure!(key.level == KeyLevel::Tpm && key.backend == "tpm");

    let request = sign_request(&key.id);
    let signed: SignResponse = agent.post("/v1/sign", &request).await?.ok_json()?;
    let mut headers = vec![("host", "api.example.com")];
    headers.extend(
        signed
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str())),
    );
    let parts = RequestParts {
        method: "GET",
        path: "/things",
        query: "",
        headers: &headers,
    };
    let claimed = parse_header_signed(&HWS1, &parts)?;
    let public = PublicKey::from_spki_pem(&key.public_key_pem)?;
    ensure!(public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));

    let nonce = [7u8; 32];
    let attestation: KeyAttestation = agent
        .get_ok(&format!(
            "/v1/keys/{}/attestation?nonce={}",
            key.id,
            URL_SAFE_NO_PAD.encode(nonce)
        ))
        .await?;
    ensure!(attestation.version == 1 && attestation.key_id == key.id);
    ensure!(attestation.level == KeyLevel::Tpm);
    ensure!(matches!(attestation.evidence, Evidence::Tpm(_)));

    // Software keys still work beside the TPM.
    let answer = agent
        .post("/v1/keys", &json!({"backend": "software", "label": "s"}))
        .await?;
    ensure!(answer.status == 201);
    let list = agent.call(Method::GET, "/v1/keys", None).await?;
    let list: hwsign_proto::api::KeyList = list.ok_json()?;
    ensure!(list.keys.len() == 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_tpm_attestation_and_activation_follow_key_rules_uids() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let tpm_config = || TpmConfig {
        tcti: tpm.tcti(),
        ..TpmConfig::default()
    };
    let agent = TestAgent::start_with(|c| c.backends.tpm = Some(tpm_config())).await?;
    let key: KeyInfo = agent
        .post("/v1/keys", &json!({"backend": "tpm", "label": "guarded"}))
        .await?
        .ok_json()?;
    let dir = agent.stop().await?;

    let mut config = support::config_in(dir.path());
    config.backends.tpm = Some(tpm_config());
    config.key_rules = hwsign_agent::Config::parse(&format!(
        "state_dir = \"/unused\"\nsocket_path = \"/unused.sock\"\n\
         [[key_rules]]\nkey_id = \"{}\"\nuids = [{}]\n",
        key.id,
        hwsign_agent::config::own_uid().wrapping_add(1),
    ))?
    .key_rules;
    config.validate()?;
    let agent = TestAgent::start_in(dir, config).await?;

    // The TPM would attest and activate for anyone; the key's rule now decides first.
    agent
        .call(
            Method::GET,
            &format!(
                "/v1/keys/{}/attestation?nonce={}",
                key.id,
                URL_SAFE_NO_PAD.encode([7u8; 32])
            ),
            None,
        )
        .await?
        .expect_error(403, "key_not_permitted")?;
    agent
        .post(
            &format!("/v1/keys/{}/activate-credential", key.id),
            &json!({"credential_blob": "AAAA", "encrypted_secret": "AAAA"}),
        )
        .await?
        .expect_error(403, "key_not_permitted")?;
    Ok(())
}

/// A stopped swtpm process (SIGSTOP): the TPM holds every command until [`Stopped::resume`]
/// (or drop) sends SIGCONT. Found by its state directory, which is unique to this test's TPM.
struct Stopped {
    pid: String,
    resumed: bool,
}

impl Stopped {
    fn new(tpm: &Swtpm) -> Result<Self> {
        let dir = tpm
            .scratch()
            .parent()
            .map(|d| d.display().to_string())
            .ok_or_else(|| anyhow::anyhow!("swtpm scratch dir has no parent"))?;
        let mut found = None;
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("swtpm\0") && cmdline.contains(&format!("dir={dir}/")) {
                found = Some(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let pid = found.ok_or_else(|| anyhow::anyhow!("no swtpm process for {dir}"))?;
        signal(&pid, "-STOP")?;
        Ok(Self {
            pid,
            resumed: false,
        })
    }

    fn resume(mut self) -> Result<()> {
        self.resumed = true;
        signal(&self.pid, "-CONT")
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.resumed {
            let _ = signal(&self.pid, "-CONT");
        }
    }
}

fn signal(pid: &str, which: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(which)
        .arg(pid)
        .status()?;
    ensure!(status.success(), "kill {which} {pid}: {status}");
    Ok(())
}

fn sign_request(key_id: &str) -> SignRequest {
    SignRequest {
        key_id: key_id.to_owned(),
        audience: "things".into(),
        method: "GET".into(),
        authority: "api.example.com".into(),
        path: "/things".into(),
        query: String::new(),
        headers: Vec::new(),
        body_sha256: EMPTY_SHA256.into(),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: Default::default(),
    }
}

/// A TPM that does not answer holds up its own signs only: the TPM sign waits off the async
/// runtime (on the TPM's worker thread), so software-key signs are answered meanwhile — on a
/// single-threaded runtime, where a sign blocking the thread would stall them all — and the TPM
/// sign completes once the TPM answers again. Every sign has its audit record, in the order
/// the signatures were released.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_tpm_does_not_hold_up_software_signs() -> Result<()> {
    const SOFTWARE_SIGNS: usize = 20;
    let tpm = Swtpm::start_tcp()?;
    let agent = agent_with(&tpm).await?;
    let tpm_key: KeyInfo = agent
        .post("/v1/keys", &json!({"backend": "tpm", "label": "slow"}))
        .await?
        .ok_json()?;
    let software_key: KeyInfo = agent
        .post("/v1/keys", &json!({"backend": "software", "label": "fast"}))
        .await?
        .ok_json()?;

    let stopped = Stopped::new(&tpm)?;
    let mut tpm_client = agent.connect().await?;
    let body = serde_json::to_vec(&sign_request(&tpm_key.id))?;
    let tpm_sign =
        tokio::spawn(async move { tpm_client.call(Method::POST, "/v1/sign", Some(body)).await });
    let mut software = agent.connect().await?;
    let body = serde_json::to_vec(&sign_request(&software_key.id))?;
    for _ in 0..SOFTWARE_SIGNS {
        let answer = software
            .call(Method::POST, "/v1/sign", Some(body.clone()))
            .await?;
        let _: SignResponse = answer.ok_json()?;
    }
    ensure!(
        !tpm_sign.is_finished(),
        "the TPM sign was answered while the TPM was stopped"
    );
    stopped.resume()?;
    let signed: SignResponse = tpm_sign.await??.ok_json()?;
    ensure!(signed.key_id == tpm_key.id);

    let log = std::fs::read_to_string(&agent.config.audit_log)?;
    let signs: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("\"op\":\"sign\""))
        .collect();
    ensure!(signs.len() == SOFTWARE_SIGNS + 1, "{log}");
    ensure!(signs.iter().all(|line| line.contains("\"outcome\":\"ok\"")));
    ensure!(
        signs[..SOFTWARE_SIGNS]
            .iter()
            .all(|line| line.contains(&software_key.id)),
        "{log}"
    );
    ensure!(signs[SOFTWARE_SIGNS].contains(&tpm_key.id), "{log}");
    Ok(())
}
