//! Re-attestation through `hwsign-verifier serve` (issue 11 with issue 12): a private swtpm, the
//! real agent enrolled through `serve`'s enrollment router with the real `hwsign enroll`, a
//! device policy in `serve`'s `[verifier.policy]` that needs an attestation younger than an
//! hour, and the client library's reqwest middleware answering `attestation_required` through
//! `serve`'s re-attestation router. The upstream is the Python echo.

use anyhow::{Context as _, Result, ensure};
use hwsign_e2e::fleet::{Fleet, PythonUpstream};
use hwsign_e2e::refusal_code;
use hwsign_e2e::tpm::{agent_config, enroll_with_cli_at, hwsign_verifier};
use hwsign_e2e::{AUDIENCE, AgentProcess, send_raw, to_raw};
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::{KeyRegistry, SqliteRegistry};

use crate::policy_support::{HOURLY_POLICY, describe, nonce_of, signing_client};

/// When the device last attested, as the shared registry records it.
fn attested_at(registry: &SqliteRegistry, device_id: &str) -> Result<i64> {
    Ok(registry
        .device_facts(device_id)?
        .context("no facts recorded")?
        .last_attestation
        .context("no attestation recorded")?
        .at_unix)
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_serve_reattestation_renews_a_stale_device_and_the_retry_succeeds() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    let agent = AgentProcess::start_with(&agent_config(&swtpm), &[])?;
    let upstream = PythonUpstream::start()?;
    let policies = tempfile::tempdir()?;
    std::fs::write(policies.path().join("policy.cedar"), HOURLY_POLICY)?;
    let sections = format!(
        "[verifier.policy]\ndir = {:?}\n\n[enrollment]\nek_roots = [{:?}]\n\
         ek_intermediates = [{:?}]\n\n[reattestation]\nnonce_ttl_secs = 300\n",
        policies.path().display().to_string(),
        swtpm.ca_root_pem().display().to_string(),
        swtpm.ca_intermediate_pem().display().to_string(),
    );
    let fleet = Fleet::start(1, "memory", upstream.addr(), |settings| {
        settings.extra_sections = sections.clone();
    })
    .await?;
    let serve = &fleet.replicas[0];
    let base = format!("http://{}", serve.addr);

    // Enrollment through serve, token from the administration command on the shared registry.
    let db = fleet.registry_path().display().to_string();
    let output = hwsign_verifier(&["tokens", "create", "--db", &db, "--label", "laptop"])?;
    ensure!(output.status.success(), "tokens create: {output:?}");
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    let key_id = enroll_with_cli_at(&agent, &base, &[], &token)?;
    let registry = SqliteRegistry::open(&fleet.registry_path())?;
    let device_id = registry
        .lookup(&key_id)?
        .and_then(|key| key.device_id)
        .context("the key belongs to no device")?;
    let signer = hwsign_client::Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    let raw_get = |path: &str| {
        let signer = signer.clone();
        let url = format!("{base}{path}");
        async move {
            let mut request = http::Request::get(url).body(Vec::new())?;
            signer.sign_request(&mut request).await?;
            send_raw(serve.addr, &to_raw(&request)?).await
        }
    };
    let client = |reattest: bool| signing_client(signer.clone(), reattest);

    // Fresh from enrollment: forwarded.
    let fresh = raw_get("/admin/users").await?;
    ensure!(fresh.status == 200, "{}", describe(&fresh));

    // Attested two hours ago: serve answers 401 attestation_required with a nonce.
    let mut facts = registry.device_facts(&device_id)?.context("no facts")?;
    facts
        .last_attestation
        .as_mut()
        .context("no attestation")?
        .at_unix -= 2 * 3600;
    registry.put_device_facts(&device_id, &facts)?;
    let stale_at = attested_at(&registry, &device_id)?;
    let refused = raw_get("/admin/users").await?;
    ensure!(
        refused.status == 401 && refusal_code(&refused).as_deref() == Some("attestation_required"),
        "{}",
        describe(&refused)
    );
    ensure!(!nonce_of(&refused)?.is_empty());
    // Routes the policy does not restrict are still forwarded.
    let other = raw_get("/v1/items").await?;
    ensure!(other.status == 200, "{}", describe(&other));
    // A client without re-attestation sees the 401.
    let url = format!("{base}/admin/users");
    let answer = client(false).get(&url).send().await?;
    ensure!(answer.status() == 401, "{answer:?}");

    // The client library re-attests through serve and the retry is forwarded.
    let answer = client(true).get(&url).send().await?;
    let status = answer.status();
    let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await?)?;
    ensure!(status == 200, "retry refused: {status} {body}");
    let forwarded_level = body["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("x-hws-verified-level"))
        })
        .and_then(|pair| pair[1].as_str().map(str::to_owned));
    ensure!(forwarded_level.as_deref() == Some("tpm"), "{body}");
    let fresh_at = attested_at(&registry, &device_id)?;
    ensure!(
        fresh_at >= stale_at + 2 * 3600 - 5,
        "attestation time not renewed: {stale_at} -> {fresh_at}"
    );
    let again = raw_get("/admin/users").await?;
    ensure!(again.status == 200, "{}", describe(&again));
    Ok(())
}
