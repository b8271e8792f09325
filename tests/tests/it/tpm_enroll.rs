//! TPM enrollment end to end: a private swtpm, the real `hwsign-agent` (`--features tpm`), the
//! real `hwsign` CLI and `hwsign-verifier` binaries, and an axum API mounting the enrollment
//! router beside the HWS1 verifier, all on 127.0.0.1 with one SQLite file.

use anyhow::{Context, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::tpm::{
    EnrollServer, enroll_with_cli, start_agent, token_from_cli, transient_handles,
};
use hwsign_e2e::{AUDIENCE, RawResponse, refusal_code, send_raw, to_raw};
use hwsign_proto::api::KeyLevel;
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::{KeyRegistry, RouteRule};

fn tpm_only(prefix: &str) -> Result<Vec<RouteRule>> {
    // Through serde, so fields added to RouteRule later keep their defaults.
    Ok(vec![serde_json::from_value(serde_json::json!({
        "path_prefix": prefix,
        "min_level": "tpm",
    }))?])
}

async fn get(server: &EnrollServer, signer: &Signer, path: &str) -> Result<RawResponse> {
    let mut request = http::Request::get(server.url(path)).body(Vec::new())?;
    signer.sign_request(&mut request).await?;
    send_raw(server.addr, &to_raw(&request)?).await
}

async fn accepted_as_tpm(
    server: &EnrollServer,
    signer: &Signer,
    path: &str,
) -> Result<serde_json::Value> {
    let response = get(server, signer, path).await?;
    ensure!(
        response.status == 200,
        "{path} refused: {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    let json = response.json()?;
    ensure!(json["level"] == "tpm", "{json}");
    Ok(json)
}

/// The whole ceremony with the shipped commands: `hwsign-verifier tokens create` issues the token
/// into the server's database, `hwsign enroll --create` runs the three steps; the key then signs
/// requests the verifier accepts at level `tpm` on a route that demands it, for the enrolled
/// device. The token is single use.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_enroll_with_the_cli_then_sign_through_the_verifier() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    let agent = start_agent(&swtpm)?;
    let server = EnrollServer::start(&swtpm, tpm_only("/admin/")?).await?;

    let token = token_from_cli(&server)?;
    let key_id = enroll_with_cli(&agent, &server, &token)?;
    let key = server
        .registry
        .lookup(&key_id)?
        .context("key not registered")?;
    ensure!(key.level == KeyLevel::Tpm && key.label == "cli laptop");
    let device_id = key.device_id.context("no device")?;
    ensure!(server.registry.device(&device_id)?.is_some());

    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    let json = accepted_as_tpm(&server, &signer, "/admin/users").await?;
    ensure!(json["key_id"] == key_id.as_str() && json["device_id"] == device_id.as_str());

    // The same token again: refused by the server, reported by the CLI with the code.
    let output = hwsign_e2e::tpm::hwsign(
        &agent,
        &[
            "enroll",
            "--server",
            &server.base_url(),
            "--token",
            &token,
            "--key",
            &key_id,
        ],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("token_used"),
        "{stderr}"
    );

    // `tokens list` shows it used, without the secret.
    let db = server.db().display().to_string();
    let listed = hwsign_e2e::tpm::hwsign_verifier(&["tokens", "list", "--db", &db])?;
    let listed = String::from_utf8(listed.stdout)?;
    ensure!(
        listed.contains("\tused\t") && !listed.contains(&token),
        "{listed}"
    );
    Ok(())
}

/// An enrolled key keeps working after the agent and the TPM restart (blobs reloaded from the
/// agent's state dir, TPM state kept), and a later re-enrollment of the same device moves its
/// recorded clock forward.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_enrolled_key_survives_agent_and_swtpm_restart() -> Result<()> {
    let mut swtpm = Swtpm::start_tcp()?;
    let mut agent = start_agent(&swtpm)?;
    let server = EnrollServer::start(&swtpm, tpm_only("/")?).await?;
    let key_id = enroll_with_cli(&agent, &server, &server.token()?)?;
    let device_id = server
        .registry
        .lookup(&key_id)?
        .and_then(|k| k.device_id)
        .context("no device")?;
    let before = server
        .registry
        .device(&device_id)?
        .context("no device")?
        .clock;

    ensure!(
        agent.stop()?,
        "agent did not stop cleanly:\n{}",
        agent.log()
    );
    swtpm.restart()?;
    agent.restart(&[])?;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    accepted_as_tpm(&server, &signer, "/after-restart").await?;

    // Re-attestation after the reboot: accepted, and the clock record moves forward.
    let (status, body) = server.enroll_by_hand(&agent.client(), &key_id).await?;
    ensure!(status == 200, "re-enrollment refused: {status} {body}");
    let after = server
        .registry
        .device(&device_id)?
        .context("no device")?
        .clock;
    ensure!(
        after.reset_count > before.reset_count,
        "{before:?} -> {after:?}"
    );
    Ok(())
}

/// 1,000 requests signed by the enrolled TPM key through the agent, each verified by the server;
/// afterwards the TPM holds only the agent's storage root key (checked after SIGKILL, so the
/// agent's own clean-up on exit cannot hide a leak).
#[tokio::test(flavor = "multi_thread")]
async fn tpm_thousand_signs_through_the_agent_leave_no_handle() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    let mut agent = start_agent(&swtpm)?;
    let server = EnrollServer::start(&swtpm, tpm_only("/")?).await?;
    let key_id = enroll_with_cli(&agent, &server, &server.token()?)?;
    let signer = Signer::new(agent.client(), key_id, AUDIENCE);
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let response = get(&server, &signer, &format!("/n/{i}")).await?;
        ensure!(
            response.status == 200,
            "request {i} refused: {} {:?}",
            response.status,
            refusal_code(&response)
        );
    }
    println!(
        "tpm: 1000 signed and verified requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    agent.kill()?;
    let handles = transient_handles(&swtpm)?;
    ensure!(handles.len() == 1, "transient objects left: {handles:?}");
    Ok(())
}

/// Device policy end to end: a route allowing only `tpm` devices with `boot_state ==
/// "unchanged"` accepts the enrolled device; after `tpm2_pcrextend` changes PCR 4 on the
/// device's swtpm and the device attests again (re-enrollment through the real agent), it is
/// refused with `policy_denied`, until `hwsign-verifier policy approve-baseline` approves the
/// new boot chain.
#[tokio::test(flavor = "multi_thread")]
async fn policy_tpm_boot_chain_change_is_refused_until_approved() -> Result<()> {
    let policies = tempfile::tempdir()?;
    std::fs::write(
        policies.path().join("admin.cedar"),
        r#"
@id("baseline")
permit(principal, action, resource);

@id("admin-tpm-unchanged-boot")
forbid(principal, action, resource in Hws::Route::"/admin")
unless { context.level == "tpm" && context.boot_state == "unchanged" };
"#,
    )?;
    let swtpm = Swtpm::start_tcp()?;
    let mut agent = start_agent(&swtpm)?;
    let server = EnrollServer::start_configured(&swtpm, |config| {
        config.policy = Some(hwsign_verifier::PolicySettings::new(policies.path()));
    })
    .await?;
    let key_id = enroll_with_cli(&agent, &server, &server.token()?)?;
    let device_id = server
        .registry
        .lookup(&key_id)?
        .and_then(|k| k.device_id)
        .context("no device")?;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    accepted_as_tpm(&server, &signer, "/admin/users").await?;

    // Change the boot chain: PCR 4 (boot manager code) extended while the agent is stopped
    // (swtpm serves one connection).
    ensure!(
        agent.stop()?,
        "agent did not stop cleanly:\n{}",
        agent.log()
    );
    let output = swtpm
        .tool("tpm2_pcrextend")
        .arg(format!("4:sha256={}", "42".repeat(32)))
        .output()?;
    ensure!(output.status.success(), "tpm2_pcrextend: {output:?}");
    agent.restart(&[])?;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    // Not yet attested again: the recorded boot state is still the enrollment's.
    accepted_as_tpm(&server, &signer, "/admin/users").await?;

    let (status, body) = server.enroll_by_hand(&agent.client(), &key_id).await?;
    ensure!(status == 200, "re-attestation refused: {status} {body}");
    let response = get(&server, &signer, "/admin/users").await?;
    ensure!(
        response.status == 403 && refusal_code(&response).as_deref() == Some("policy_denied"),
        "{} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    // Routes the policy does not restrict still work.
    accepted_as_tpm(&server, &signer, "/v1/items").await?;

    let db = server.db().display().to_string();
    let approved = hwsign_e2e::tpm::hwsign_verifier(&[
        "policy",
        "approve-baseline",
        "--db",
        &db,
        "--device",
        &device_id,
    ])?;
    ensure!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    accepted_as_tpm(&server, &signer, "/admin/users").await?;
    Ok(())
}

/// `hwsign enroll` over HTTPS: the ceremony through a rustls TLS front with a test CA given by
/// `--cacert`; without it the server's certificate is not trusted and nothing is enrolled; plain
/// http:// to a host that is not loopback is refused before anything is sent.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_enroll_over_https_with_the_cli() -> Result<()> {
    use hwsign_e2e::tls_front::{TestPki, TlsFront};
    let swtpm = Swtpm::start_tcp()?;
    let agent = start_agent(&swtpm)?;
    let server = EnrollServer::start(&swtpm, tpm_only("/admin/")?).await?;
    let pki = TestPki::generate()?;
    let (listener, tls) = TlsFront::bind(&pki).await?;
    let front = TlsFront::serve(listener, tls, server.addr)?;
    let ca = pki.ca_path().display().to_string();

    let token = token_from_cli(&server)?;
    let untrusted = hwsign_e2e::tpm::enroll_with_cli_at(&agent, &front.url(), &[], &token);
    let error = format!(
        "{:#}",
        untrusted
            .err()
            .context("enrolled without trusting the CA")?
    );
    ensure!(error.contains("certificate"), "{error}");
    let key_id =
        hwsign_e2e::tpm::enroll_with_cli_at(&agent, &front.url(), &["--cacert", &ca], &token)?;
    let key = server
        .registry
        .lookup(&key_id)?
        .context("key not registered")?;
    ensure!(key.level == KeyLevel::Tpm);

    let output = hwsign_e2e::tpm::hwsign(
        &agent,
        &[
            "enroll",
            "--server",
            "http://192.0.2.1:8080",
            "--token",
            "hwt1_x",
            "--key",
            &key_id,
        ],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("--insecure-http"),
        "{stderr}"
    );
    Ok(())
}
