//! `fido2_*` onboarding end to end: the real agent binary with its FIDO2 backend on the test
//! seam (a SOCK_SEQPACKET pair carrying CTAPHID reports — the only stand-in) in front of a
//! software CTAP2 authenticator (passkey-authenticator), the real `hwsign` CLI, the real
//! `hwsign-verifier tokens create` and a real `hwsign-verifier serve` in front of a Python
//! upstream. The security key is registered through the verifier's own registration ceremony
//! (`hwsign enroll --fido2`), nothing is inserted into the registry by the test.
//!
//! The software authenticator answers `none` attestation only (passkey-authenticator 0.6 has no
//! attestation key), so a credential enrolled here ranks `fido2-unattested`; `packed` with an
//! x5c chain to a configured root (level `fido2`) is tested through the library with a chain
//! the test generates (server-verifier's `webauthn_registration` tests).

use std::path::Path;
use std::process::Output;

use anyhow::{Context as _, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::fleet::{FLEET_HOST, PythonUpstream, ServeProcess, ServeSettings};
use hwsign_e2e::{AUDIENCE, AgentProcess, send_raw, signed, to_raw};
use hwsign_test_support::fido2_authenticator::SoftKey;
use tempfile::TempDir;

const RP_ID: &str = "api.example.test";
const ORIGIN: &str = "https://api.example.test";
const LABEL: &str = "alice security key";

/// A software key on a seam and an agent whose fido2 backend talks to it.
fn key_and_agent() -> Result<(TempDir, SoftKey, AgentProcess)> {
    let dir = tempfile::Builder::new().prefix("hwsign-fido2-").tempdir()?;
    let key = SoftKey::start(dir.path())?;
    let agent = agent_for(&key, RP_ID, 30)?;
    Ok((dir, key, agent))
}

/// `hwsign-verifier serve` with `[verifier.webauthn]` for [`RP_ID`] and `[enrollment]` (the
/// token store) on an SQLite registry, in front of the Python upstream.
struct Verifier {
    _state: TempDir,
    _upstream: PythonUpstream,
    db: std::path::PathBuf,
    serve: ServeProcess,
}

impl Verifier {
    async fn start() -> Result<Self> {
        Self::start_with("").await
    }

    /// With `webauthn_extra` appended to `[verifier.webauthn]`.
    async fn start_with(webauthn_extra: &str) -> Result<Self> {
        let state = tempfile::Builder::new()
            .prefix("hwsign-fido2-serve-")
            .tempdir()?;
        let db = state.path().join("registry.db");
        let upstream = PythonUpstream::start()?;
        let mut settings = ServeSettings::new(
            &format!("sqlite:{}", db.display()),
            "memory",
            upstream.addr(),
        );
        settings.extra_sections = format!(
            "[verifier.webauthn]\nrp_id = {RP_ID:?}\norigins = [{ORIGIN:?}]\n{webauthn_extra}\n\n\
             [enrollment]\nbuiltin_ek_roots = true\n"
        );
        let serve = ServeProcess::start(&settings).await?;
        Ok(Self {
            _state: state,
            _upstream: upstream,
            db,
            serve,
        })
    }
}

/// An agent whose fido2 backend is for `rp_id` and talks to `key`.
fn agent_for(key: &SoftKey, rp_id: &str, touch_timeout_secs: u64) -> Result<AgentProcess> {
    AgentProcess::start_with(
        &format!(
            "[backends.fido2]\nrp_id = {rp_id:?}\nseam_socket = {:?}\n\
             touch_timeout_secs = {touch_timeout_secs}\n",
            key.socket_path().display().to_string(),
        ),
        &[],
    )
}

/// `hwsign-verifier tokens create --db <db> --label LABEL`: the token.
fn issue_token(db: &Path) -> Result<String> {
    let output = hwsign_e2e::tpm::hwsign_verifier(&[
        "tokens",
        "create",
        "--db",
        &db.display().to_string(),
        "--label",
        LABEL,
    ])?;
    ensure!(output.status.success(), "tokens create: {output:?}");
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// `hwsign enroll --fido2 --server <serve> --token <token>`.
fn enroll(agent: &AgentProcess, serve: &ServeProcess, token: &str) -> Result<Output> {
    hwsign_e2e::tpm::hwsign(
        agent,
        &[
            "enroll",
            "--fido2",
            "--server",
            &format!("http://{}", serve.addr),
            "--token",
            token,
        ],
    )
}

/// `enrolled <key id>  level=<level> ...` → (key id, level).
fn enrolled(output: &Output) -> Result<(String, String)> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "enroll --fido2 failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut words = stdout
        .strip_prefix("enrolled ")
        .context("no `enrolled` line")?
        .split_whitespace();
    let key_id = words.next().context("no key id")?.to_owned();
    let level = words
        .next()
        .and_then(|w| w.strip_prefix("level="))
        .context("no level")?
        .to_owned();
    Ok((key_id, level))
}

/// A signed `GET /v1/things` through `serve`: (status, upstream echo or refusal body).
async fn signed_get(signer: &Signer, serve: &ServeProcess) -> Result<(u16, serde_json::Value)> {
    let request = http::Request::get(format!("http://{FLEET_HOST}/v1/things")).body(Vec::new())?;
    let raw = to_raw(&signed(signer, request).await?)?;
    let response = send_raw(serve.addr, &raw).await?;
    Ok((response.status, response.json().unwrap_or_default()))
}

fn echoed<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"].as_array()?.iter().find_map(|pair| {
        (pair[0].as_str()?.eq_ignore_ascii_case(name))
            .then(|| pair[1].as_str())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_security_key_enrolls_through_the_agent_and_signs() -> Result<()> {
    let verifier = Verifier::start().await?;
    let (db, serve) = (&verifier.db, &verifier.serve);
    let (_dir, key, agent) = key_and_agent()?;

    // Enroll: options with the token, one touch on the key, the attestation to `serve`.
    let token = issue_token(db)?;
    let (key_id, level) = enrolled(&enroll(&agent, serve, &token)?)?;
    ensure!(level == "fido2-unattested", "`none` attestation: {level}");
    ensure!(key.touches() == 1, "registration takes one touch");
    let listed = agent.client().list_keys().await?;
    let info = listed
        .iter()
        .find(|k| k.id == key_id)
        .context("the agent keeps the registered credential")?;
    ensure!(info.backend == "fido2" && info.label == LABEL, "{info:?}");

    // The agent signs with it (an SDK here), `serve` accepts at the registered level.
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    let (status, echo) = signed_get(&signer, serve).await?;
    ensure!(status == 200, "signed request refused: {status} {echo}");
    ensure!(
        echoed(&echo, "x-hws-verified-key") == Some(key_id.as_str()),
        "{echo}"
    );
    ensure!(
        echoed(&echo, "x-hws-verified-level") == Some("fido2-unattested"),
        "{echo}"
    );
    ensure!(
        key.touches() == 2,
        "a strict request is one assertion, one touch"
    );

    // The token again: refused before the key is asked for anything.
    let reused = enroll(&agent, serve, &token)?;
    let stderr = String::from_utf8_lossy(&reused.stderr);
    ensure!(
        !reused.status.success() && stderr.contains("token_used"),
        "{stderr}"
    );
    ensure!(key.touches() == 2);

    // The same key for the same user with a new token: the verifier's exclude list names the
    // registered credential, the key refuses after a touch, nothing is created anywhere.
    let second = issue_token(db)?;
    let excluded = enroll(&agent, serve, &second)?;
    let stderr = String::from_utf8_lossy(&excluded.stderr);
    ensure!(
        !excluded.status.success()
            && stderr.contains("already registered")
            && stderr.contains("credential_excluded"),
        "{stderr}"
    );
    ensure!(
        key.touches() == 3,
        "the key confirms an exclusion with a touch"
    );
    ensure!(
        agent.client().list_keys().await?.len() == 1,
        "no second credential"
    );

    // That token is unspent: another security key of the same user enrolls with it.
    let (_dir2, other_key, other_agent) = key_and_agent()?;
    let (other_id, level) = enrolled(&enroll(&other_agent, serve, &second)?)?;
    ensure!(other_id != key_id && level == "fido2-unattested");
    ensure!(other_key.touches() == 1);
    let (status, echo) = signed_get(
        &Signer::new(other_agent.client(), other_id.clone(), AUDIENCE),
        serve,
    )
    .await?;
    ensure!(
        status == 200 && echoed(&echo, "x-hws-verified-key") == Some(other_id.as_str()),
        "{status} {echo}"
    );
    Ok(())
}

/// `hwsign enroll --fido2` says what went wrong and spends nothing: no key plugged in, no touch
/// before the timeout, an agent configured for another RP; the same token then enrolls.
#[tokio::test(flavor = "multi_thread")]
async fn fido2_enroll_refusals_say_what_to_do_and_keep_the_token() -> Result<()> {
    let verifier = Verifier::start().await?;
    let (db, serve) = (&verifier.db, &verifier.serve);
    let token = issue_token(db)?;
    let refused = |output: &Output, says: &str| -> Result<()> {
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            !output.status.success() && stderr.contains(says),
            "{stderr}"
        );
        Ok(())
    };

    // No security key.
    let (_dir, key, _) = key_and_agent()?;
    let agent = agent_for(&key, RP_ID, 1)?;
    key.unplug();
    refused(&enroll(&agent, serve, &token)?, "no security key found")?;

    // No touch within the agent's timeout (1 s).
    let (_dir, key, _) = key_and_agent()?;
    let agent = agent_for(&key, RP_ID, 1)?;
    key.set_touch(false);
    refused(&enroll(&agent, serve, &token)?, "not touched in time")?;
    ensure!(key.touches() == 0);

    // An agent whose key is for another RP refuses the verifier's options before any touch.
    let other_rp = agent_for(&key, "other.example.test", 30)?;
    key.set_touch(true);
    refused(&enroll(&other_rp, serve, &token)?, "rp_id")?;
    ensure!(
        key.touch_requests() == 1,
        "only the timed-out attempt asked for a touch"
    );

    // None of that spent the token.
    let (key_id, level) = enrolled(&enroll(&agent, serve, &token)?)?;
    ensure!(level == "fido2-unattested" && key_id.starts_with("hk1_"));
    Ok(())
}

/// With `require_user_verification`, the verifier's options ask for UV: the agent reads the
/// key's PIN from its askpass program, sends `pinAuth` with makeCredential, and the verifier
/// finds UV in the authenticator data. Without a PIN the same key cannot register.
#[tokio::test(flavor = "multi_thread")]
async fn fido2_enroll_with_user_verification_takes_the_pin_from_askpass() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let verifier = Verifier::start_with("require_user_verification = true").await?;
    let (db, serve) = (&verifier.db, &verifier.serve);
    let dir = tempfile::Builder::new().prefix("hwsign-fido2-").tempdir()?;
    let key = SoftKey::start(dir.path())?;
    key.set_pin("482915");
    let askpass = dir.path().join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\nprintf '%s\\n' '482915'\n")?;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755))?;

    // No askpass: the agent asks the key for built-in verification, which it does not have.
    let plain = agent_for(&key, RP_ID, 30)?;
    let token = issue_token(db)?;
    let refused = enroll(&plain, serve, &token)?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success()
            && stderr.contains("operation_denied")
            && stderr.contains("askpass"),
        "{stderr}"
    );

    let agent = AgentProcess::start_with(
        &format!(
            "[backends.fido2]\nrp_id = {RP_ID:?}\nseam_socket = {:?}\naskpass = {:?}\n",
            key.socket_path().display().to_string(),
            askpass.display().to_string(),
        ),
        &[],
    )?;
    let (key_id, level) = enrolled(&enroll(&agent, serve, &token)?)?;
    ensure!(level == "fido2-unattested");
    let registry = hwsign_verifier::SqliteRegistry::open(db)?;
    ensure!(
        hwsign_verifier::KeyRegistry::lookup(&registry, &key_id)?.is_some(),
        "registered"
    );
    Ok(())
}
