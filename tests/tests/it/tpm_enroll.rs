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
    let device_id = server.device_of(&key_id)?;
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

/// Removes every EK certificate swtpm_setup wrote into NV (platform hierarchy, empty auth on
/// swtpm), leaving the TPM as firmware TPMs and cloud vTPMs ship: an EK, no certificate.
fn remove_ek_certificates(swtpm: &Swtpm) -> Result<()> {
    let listed = swtpm.tool("tpm2_getcap").arg("handles-nv-index").output()?;
    ensure!(listed.status.success(), "tpm2_getcap: {listed:?}");
    let mut removed = 0;
    for line in String::from_utf8(listed.stdout)?.lines() {
        let handle = line.trim_start_matches("- ").trim();
        let Ok(value) = u32::from_str_radix(handle.trim_start_matches("0x"), 16) else {
            continue;
        };
        if (0x01c0_0002..=0x01c0_0016).contains(&value) {
            let output = swtpm
                .tool("tpm2_nvundefine")
                .args(["-C", "p", handle])
                .output()?;
            ensure!(
                output.status.success(),
                "tpm2_nvundefine {handle}: {output:?}"
            );
            removed += 1;
        }
    }
    ensure!(removed >= 1, "swtpm had no EK certificate to remove");
    Ok(())
}

/// A TPM without an EK certificate, through the real agent, CLI and verifier: `hwsign enroll`
/// is refused with `ek_unregistered` until the administrator registers the EK public key (read on
/// the device with `tpm2_createek`, registered with `hwsign-verifier ek add`); then the full
/// ceremony runs (credential activation by that EK) and the key signs at level `tpm`.
#[tokio::test(flavor = "multi_thread")]
async fn tpm_without_ek_certificate_enrolls_after_its_ek_is_registered() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    remove_ek_certificates(&swtpm)?;
    let eks = tempfile::tempdir()?;
    let eks_dir = eks.path().join("registered-eks");
    // The administrator reads the EK public key on the device at provisioning (before the agent
    // holds the TPM connection); it is registered below, after a first refused attempt.
    let ek_pem = eks.path().join("ek.pem");
    let ek_pem_arg = ek_pem.display().to_string();
    let created = swtpm
        .tool("tpm2_createek")
        .args(["-G", "rsa", "-c", "-", "-f", "pem", "-u", &ek_pem_arg])
        .output()?;
    ensure!(created.status.success(), "tpm2_createek: {created:?}");
    let flushed = swtpm.tool("tpm2_flushcontext").arg("-t").output()?;
    ensure!(flushed.status.success(), "tpm2_flushcontext: {flushed:?}");
    let agent = start_agent(&swtpm)?;
    let server =
        EnrollServer::start_with_registered_eks(&swtpm, eks_dir.clone(), tpm_only("/admin/")?)
            .await?;

    // Not registered yet: the CLI reports the refusal with its code.
    let token = token_from_cli(&server)?;
    let output = hwsign_e2e::tpm::hwsign(
        &agent,
        &[
            "enroll",
            "--server",
            &server.base_url(),
            "--token",
            &token,
            "--create",
            "--label",
            "laptop",
        ],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("ek_unregistered"),
        "{stderr}"
    );

    let dir_arg = eks_dir.display().to_string();
    let added = hwsign_e2e::tpm::hwsign_verifier(&[
        "ek",
        "add",
        "--dir",
        &dir_arg,
        "--label",
        "asset 4711",
        &ek_pem_arg,
    ])?;
    ensure!(added.status.success(), "ek add: {added:?}");
    let added = String::from_utf8(added.stdout)?;
    let mut fields = added.trim().split('\t');
    let fingerprint = fields.next().context("no fingerprint")?.to_owned();
    let device_id = fields.next().context("no device id")?.to_owned();
    let listed = hwsign_e2e::tpm::hwsign_verifier(&["ek", "list", "--dir", &dir_arg])?;
    ensure!(String::from_utf8(listed.stdout)?.contains("asset 4711"));

    // Now the ceremony completes, and the device is the one `ek add` announced.
    let token = token_from_cli(&server)?;
    let key_id = enroll_with_cli(&agent, &server, &token)?;
    ensure!(
        server.device_of(&key_id)? == device_id,
        "device id is not derived from the registered EK {fingerprint}"
    );
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    let json = accepted_as_tpm(&server, &signer, "/admin/users").await?;
    ensure!(json["key_id"] == key_id.as_str(), "{json}");
    Ok(())
}
