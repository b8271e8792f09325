//! Delegated mode with a TPM key on a private swtpm (TCP): the real `hwsign-agent` built with
//! `--features tpm` signs through a session key under a statement the TPM signed; the verifier
//! accepts the requests at level `tpm`, delegated. Also prints strict vs delegated signing rates
//! through the agent (information only: no timing assertion).

use crate::delegation_support;

use std::time::Instant;

use anyhow::{Result, ensure};
use delegation_support::{credential, expect_ok, make_delegated, statement};
use hwsign_client::{AgentClient, Signer};
use hwsign_e2e::{AUDIENCE, AgentProcess, ApiServer, create_key, send, signed};
use hwsign_proto::api::{KeyLevel, SignRequest};
use hwsign_proto::keys::EMPTY_SHA256;
use hwsign_test_support::swtpm::Swtpm;

fn sign_request(key_id: &str) -> SignRequest {
    SignRequest {
        key_id: key_id.to_owned(),
        audience: AUDIENCE.to_owned(),
        method: "GET".to_owned(),
        authority: "api.example.com".to_owned(),
        path: "/items".to_owned(),
        query: String::new(),
        headers: Vec::new(),
        body_sha256: EMPTY_SHA256.to_owned(),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: Default::default(),
    }
}

/// Signatures per second through the agent, one client, `count` signs in a row.
async fn rate(client: &AgentClient, key_id: &str, count: u32) -> Result<f64> {
    let request = sign_request(key_id);
    let start = Instant::now();
    for _ in 0..count {
        client.sign(&request).await?;
    }
    Ok(f64::from(count) / start.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn delegation_tpm_key_end_to_end_and_rates() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    let mut agent = AgentProcess::start_with(
        &format!(
            "[backends.software]\nenabled = true\n\n[backends.tpm]\ntcti = \"{}\"\nrequest_timeout_secs = 30\n",
            swtpm.tcti()
        ),
        &[],
    )?;
    let server = ApiServer::start().await?;
    let (strict_key, strict_public) = create_key(&agent.client(), "tpm", "strict").await?;
    let (delegated_key, delegated_public) = create_key(&agent.client(), "tpm", "delegated").await?;
    server.register(&strict_public, KeyLevel::Tpm)?;
    server.register(&delegated_public, KeyLevel::Tpm)?;
    make_delegated(&mut agent, &delegated_key, None)?;

    let signer = Signer::new(agent.client(), delegated_key.clone(), AUDIENCE);
    for i in 0..3 {
        let request = signed(
            &signer,
            http::Request::get(server.url(&format!("/tpm/{i}"))).body(Vec::new())?,
        )
        .await?;
        ensure!(statement(&request)?.device_key_id == delegated_key);
        ensure!(credential(&request)? != delegated_key);
        let json = expect_ok(&send(&server, &request).await?)?;
        ensure!(
            json["key_id"] == delegated_key.as_str()
                && json["level"] == "tpm"
                && json["delegated"] == true,
            "{json}"
        );
    }
    let strict = Signer::new(agent.client(), strict_key.clone(), AUDIENCE);
    let request = signed(
        &strict,
        http::Request::get(server.url("/tpm/strict")).body(Vec::new())?,
    )
    .await?;
    let json = expect_ok(&send(&server, &request).await?)?;
    ensure!(json["key_id"] == strict_key.as_str() && json["delegated"] == false);

    let client = agent.client();
    let strict_rate = rate(&client, &strict_key, 100).await?;
    let delegated_rate = rate(&client, &delegated_key, 3000).await?;
    println!(
        "swtpm, {} test build, one client: strict {strict_rate:.0} signs/s, delegated \
         {delegated_rate:.0} signs/s, ratio {:.1}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        delegated_rate / strict_rate
    );
    Ok(())
}
