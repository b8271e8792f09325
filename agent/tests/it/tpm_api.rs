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

#[tokio::test(flavor = "multi_thread")]
async fn tpm_keys_over_the_socket() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let agent = TestAgent::start_with(|c| {
        c.backends.tpm = Some(TpmConfig {
            tcti: tpm.tcti(),
            ..TpmConfig::default()
        });
    })
    .await?;
    let status: StatusResponse = agent.get_ok("/v1/status").await?;
    let names: Vec<&str> = status.backends.iter().map(|b| b.name.as_str()).collect();
    ensure!(names == ["software", "tpm"], "{status:?}");

    let key: KeyInfo = agent
        .post("/v1/keys", &json!({"backend": "tpm", "label": "laptop"}))
        .await?
        .ok_json()?;
    ensure!(key.level == KeyLevel::Tpm && key.backend == "tpm");

    let request = SignRequest {
        key_id: key.id.clone(),
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
    };
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
