//! `fido2_*` end to end: the real agent binary with a `[backends.fido2]` section whose
//! `seam_socket` points at a software CTAP2 authenticator (1Password's passkey-authenticator,
//! test-support's `fido2_authenticator::SoftKey`). The seam — a SOCK_SEQPACKET socket carrying
//! 64-byte CTAPHID reports instead of USB — is the only stand-in; the notification daemon the
//! touch prompt goes to is a stand-in service on a real dbus-daemon.

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_client::middleware::SigningMiddleware;
use hwsign_client::{AgentErrorCode, Signer};
use hwsign_e2e::{
    AUDIENCE, AgentProcess, ApiServer, create_key, expect_refusal, send, signed, wait,
};
use hwsign_proto::api::{HeaderField, KeyLevel, SignRequest, SignResponse, StepUpSignRequest};
use hwsign_proto::keys::sha256_hex;
use hwsign_proto::verify_input::parse_header_signed;
use hwsign_proto::webauthn::{
    Assertion, AssertionExpectations, HWS1_WEBAUTHN, WEBAUTHN_HEADER, WebAuthnDelegation,
    request_challenge,
};
use hwsign_proto::{HWS1, PublicKey, RequestParts};
use hwsign_test_support::fido2_authenticator::{SOFT_KEY_AAGUID, SoftKey};
use hwsign_test_support::notifications_standin::NotificationsStandIn;
use hwsign_verifier::webauthn::{StepUp, WebAuthnSettings};
use hwsign_verifier::{
    Fido2Credential, KeyRegistry as _, RegisteredKey, RouteRule, VerifierConfig,
};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use crate::delegation_support;

const RP_ID: &str = "api.example.test";

/// A software key on a seam in a fresh temp dir.
fn soft_key() -> Result<(TempDir, SoftKey)> {
    let dir = tempfile::Builder::new().prefix("hwsign-fido2-").tempdir()?;
    let key = SoftKey::start(dir.path())?;
    Ok((dir, key))
}

/// An agent whose fido2 backend talks to `key` (touch timeout `timeout_secs`), with `env`.
fn agent(key: &SoftKey, timeout_secs: u64, env: &[(&str, &str)]) -> Result<AgentProcess> {
    let config = format!(
        "[backends.software]\nenabled = true\n[backends.fido2]\nrp_id = {RP_ID:?}\n\
         seam_socket = {:?}\ntouch_timeout_secs = {timeout_secs}\n",
        key.socket_path().display().to_string(),
    );
    AgentProcess::start_with(&config, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_create_credential_stores_only_public_metadata() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let client = agent.client();
    let (id, public) = create_key(&client, "fido2", "laptop security key").await?;
    ensure!(key.touches() == 1, "creation takes one touch");
    let listed = client.list_keys().await?;
    let info = listed
        .iter()
        .find(|k| k.id == id)
        .context("the new key is listed")?;
    ensure!(info.backend == "fido2", "listed under fido2: {info:?}");
    ensure!(info.level == KeyLevel::Fido2Unattested);
    // The metadata holds the credential id and public key, and nothing else of the key.
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(
        agent.state_dir().join("fido2/credentials.json"),
    )?)?;
    let credential = &stored["credentials"][0];
    ensure!(credential["key_id"] == id.as_str());
    ensure!(credential["rp_id"] == RP_ID);
    let der = URL_SAFE_NO_PAD.decode(credential["public_key"].as_str().unwrap_or_default())?;
    ensure!(
        der == public.spki_der(),
        "stored public key is the listed one"
    );
    let credential_id =
        URL_SAFE_NO_PAD.decode(credential["credential_id"].as_str().unwrap_or_default())?;
    ensure!(!credential_id.is_empty());
    let fields: Vec<&String> = credential
        .as_object()
        .context("credential is an object")?
        .keys()
        .collect();
    ensure!(
        fields.len() == 7,
        "no field beyond the documented ones: {fields:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_credentials_survive_an_agent_restart() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let mut agent = agent(&key, 30, &[])?;
    let (id, _) = create_key(&agent.client(), "fido2", "kept").await?;
    tokio::task::block_in_place(|| agent.restart(&[]))?;
    let listed = agent.client().list_keys().await?;
    ensure!(listed.iter().any(|k| k.id == id && k.backend == "fido2"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_no_key_present_is_its_own_error() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    key.unplug();
    let refused = agent
        .client()
        .create_key("fido2", "absent")
        .await
        .err()
        .context("creating without a key must fail")?;
    ensure!(
        refused.agent_code() == Some(AgentErrorCode::NoSecurityKey),
        "got {refused}"
    );
    let status = agent.client().status().await?;
    let fido2 = status
        .backends
        .iter()
        .find(|b| b.name == "fido2")
        .context("fido2 in status")?;
    ensure!(!fido2.available, "an unplugged key is reported: {fido2:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_status_reports_a_present_key() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let status = agent.client().status().await?;
    let fido2 = status
        .backends
        .iter()
        .find(|b| b.name == "fido2")
        .context("fido2 in status")?;
    ensure!(fido2.available, "a plugged key is available: {fido2:?}");
    ensure!(key.touch_requests() == 0, "a status check needs no touch");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_timeout_without_touch_is_its_own_error() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 1, &[])?;
    key.set_touch(false);
    let refused = agent
        .client()
        .create_key("fido2", "untouched")
        .await
        .err()
        .context("creating without a touch must fail")?;
    ensure!(
        refused.agent_code() == Some(AgentErrorCode::TouchTimeout),
        "got {refused}"
    );
    ensure!(key.touch_requests() == 1 && key.touches() == 0);
    // The key was cancelled, not left waiting: a touch now serves the next request at once.
    key.set_touch(true);
    create_key(&agent.client(), "fido2", "touched").await?;
    ensure!(key.touches() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_touch_prompt_is_a_desktop_notification() -> Result<()> {
    let notifications = NotificationsStandIn::start().await?;
    let (_dir, key) = soft_key()?;
    let agent = agent(
        &key,
        30,
        &[("DBUS_SESSION_BUS_ADDRESS", notifications.address())],
    )?;
    create_key(&agent.client(), "fido2", "prompted").await?;
    wait::until(
        "the touch notification",
        || !notifications.seen().is_empty(),
        || format!("{:?}", notifications.seen()),
    )
    .await?;
    let seen = notifications.seen();
    ensure!(seen.len() == 1, "one prompt for one touch: {seen:?}");
    ensure!(seen[0].app_name == "hwsign-agent");
    ensure!(seen[0].summary == "Touch your security key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_keys_are_distinct_credentials() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let (a, _) = create_key(&agent.client(), "fido2", "one").await?;
    let (b, _) = create_key(&agent.client(), "fido2", "two").await?;
    ensure!(a != b, "each creation is a new credential");
    ensure!(key.touches() == 2);
    Ok(())
}

// ---- Signing: HWS1-WEBAUTHN-ES256, one touch per session, step-up ----
//
// Requests go to the real verifier (`fido2_requests_are_accepted_by_the_real_verifier`, the
// step-up test); single signatures are also taken apart with the proto functions the verifier
// uses (canonical request and string to sign from the headers as sent, `Assertion::check`, ES256
// over the assertion digest), and checked independently with Python's fido2
// (`fido2_assertions_verify_with_python_fido2`).

const ORIGIN: &str = "https://api.example.test";
const BODY: &[u8] = b"{\"amount\":100}";

fn sign_request(key_id: &str, path: &str) -> SignRequest {
    SignRequest {
        key_id: key_id.to_owned(),
        audience: AUDIENCE.to_owned(),
        method: "POST".to_owned(),
        authority: RP_ID.to_owned(),
        path: path.to_owned(),
        query: String::new(),
        headers: vec![HeaderField {
            name: "content-type".to_owned(),
            value: "application/json".to_owned(),
        }],
        body_sha256: sha256_hex(BODY),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: Default::default(),
    }
}

/// The request as it goes on the wire: host, the caller's headers, then the agent's.
fn wire_headers(request: &SignRequest, response: &SignResponse) -> Vec<(String, String)> {
    let mut headers = vec![("host".to_owned(), request.authority.clone())];
    headers.extend(
        request
            .headers
            .iter()
            .chain(&response.headers)
            .map(|h| (h.name.clone(), h.value.clone())),
    );
    headers
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One assertion as the Python check takes it.
fn python_item(
    public: &PublicKey,
    assertion: &Assertion,
    signature: &[u8],
    challenge: &str,
) -> serde_json::Value {
    serde_json::json!({
        "public_key": URL_SAFE_NO_PAD.encode(public.spki_der()),
        "authenticator_data": URL_SAFE_NO_PAD.encode(&assertion.authenticator_data),
        "client_data_json": URL_SAFE_NO_PAD.encode(&assertion.client_data_json),
        "signature": URL_SAFE_NO_PAD.encode(signature),
        "challenge": challenge,
        "rp_id": RP_ID,
        "origin": ORIGIN,
    })
}

/// A strict HWS1-WEBAUTHN-ES256 request, checked as a verifier would: returns the assertion,
/// its signature, its challenge and the sign counter.
fn check_strict(
    request: &SignRequest,
    headers: &[(String, String)],
    public: &PublicKey,
) -> Result<(Assertion, Vec<u8>, String, u32)> {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &refs,
    };
    let claimed = parse_header_signed(&HWS1_WEBAUTHN, &parts)?;
    ensure!(claimed.authorization.credential == public.key_id());
    ensure!(
        header(headers, "x-hws-delegation").is_none(),
        "a strict request carries no delegation"
    );
    let assertion = Assertion::parse_header_value(
        header(headers, WEBAUTHN_HEADER).context("no X-Hws-WebAuthn header")?,
    )?;
    let challenge = request_challenge(&claimed.string_to_sign);
    let checked = assertion.check(&AssertionExpectations {
        challenge: &challenge,
        rp_id: RP_ID,
        origins: &[ORIGIN.to_owned()],
        user_verification: false,
    })?;
    ensure!(
        public.verify_digest(&checked.digest, &claimed.authorization.signature),
        "the assertion's signature does not verify"
    );
    Ok((
        assertion,
        claimed.authorization.signature,
        challenge,
        checked.authenticator_data.sign_count,
    ))
}

/// A request signed by a session key under a statement signed by a FIDO2 assertion: returns the
/// delegation (checked against `fido2_key`) and verifies the session key's signature.
fn check_delegated(
    request: &SignRequest,
    headers: &[(String, String)],
    fido2_key: &PublicKey,
) -> Result<WebAuthnDelegation> {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &refs,
    };
    let claimed = parse_header_signed(&HWS1, &parts)?;
    let value = claimed
        .delegation
        .as_deref()
        .context("a delegated request carries X-Hws-Delegation")?;
    let delegation = WebAuthnDelegation::parse_header_value(value)?;
    ensure!(delegation.statement.device_key_id == fido2_key.key_id());
    let checked = delegation.assertion.check(&AssertionExpectations {
        challenge: &delegation.challenge(),
        rp_id: RP_ID,
        origins: &[ORIGIN.to_owned()],
        user_verification: false,
    })?;
    ensure!(
        fido2_key.verify_digest(&checked.digest, &delegation.signature),
        "the statement's assertion does not verify"
    );
    ensure!(claimed.authorization.credential == delegation.statement.session_key.key_id());
    let digest: [u8; 32] = Sha256::digest(claimed.string_to_sign.as_str().as_bytes()).into();
    ensure!(
        delegation
            .statement
            .session_key
            .verify_digest(&digest, &claimed.authorization.signature),
        "the session key's signature does not verify"
    );
    Ok(delegation)
}

/// Puts `key_id` in delegated mode (a key rule) and restarts the agent.
fn make_delegated(agent: &mut AgentProcess, key_id: &str) -> Result<()> {
    tokio::task::block_in_place(|| delegation_support::make_delegated(agent, key_id, None))
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_signed_request_verifies_and_binds_the_request() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "signer").await?;
    let request = sign_request(&id, "/orders");
    let response = agent.client().sign(&request).await?;
    ensure!(key.touches() == 2, "one touch to create, one to sign");
    let headers = wire_headers(&request, &response);
    let authorization = header(&headers, "authorization").context("no Authorization")?;
    ensure!(authorization.starts_with("HWS1-WEBAUTHN-ES256 Credential="));
    check_strict(&request, &headers, &public)?;
    // The assertion covers this request only: the same headers on another path fail.
    let mut moved = request.clone();
    moved.path = "/refunds".to_owned();
    ensure!(
        check_strict(&moved, &headers, &public).is_err(),
        "an assertion must not verify for another request"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_sign_counter_increments() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "counted").await?;
    let mut counters = Vec::new();
    for i in 0..3 {
        let request = sign_request(&id, &format!("/orders/{i}"));
        let response = agent.client().sign(&request).await?;
        let (_, _, _, count) = check_strict(&request, &wire_headers(&request, &response), &public)?;
        counters.push(count);
    }
    ensure!(
        counters.windows(2).all(|w| w[1] > w[0]) && counters[0] > 0,
        "the counter grows with each assertion: {counters:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_one_touch_authorizes_many_delegated_requests() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let mut agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "session").await?;
    make_delegated(&mut agent, &id)?;
    let client = agent.client();
    let mut statements = Vec::new();
    for i in 0..100 {
        let request = sign_request(&id, &format!("/orders/{i}"));
        let response = client.sign(&request).await?;
        let delegation = check_delegated(&request, &wire_headers(&request, &response), &public)?;
        statements.push(delegation.statement);
    }
    ensure!(
        statements.iter().all(|s| *s == statements[0]),
        "one statement for the whole session"
    );
    ensure!(
        key.touches() == 2,
        "one touch to create the key, one for the session: {} touches for 100 requests",
        key.touches()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_step_up_signs_strictly_even_in_delegated_mode() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let mut agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "step-up").await?;
    make_delegated(&mut agent, &id)?;
    let client = agent.client();
    let request = sign_request(&id, "/orders");
    client.sign(&request).await?;
    let before = key.touches();
    let response = client
        .sign_step_up(&StepUpSignRequest {
            request: request.clone(),
            user_verification: false,
        })
        .await?;
    ensure!(key.touches() == before + 1, "a step-up is a fresh touch");
    check_strict(&request, &wire_headers(&request, &response), &public)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_step_up_is_refused_for_keys_that_cannot_prove_presence() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let (software, _) = create_key(&agent.client(), "software", "file key").await?;
    let refused = agent
        .client()
        .sign_step_up(&StepUpSignRequest {
            request: sign_request(&software, "/orders"),
            user_verification: false,
        })
        .await
        .err()
        .context("a software key cannot step up")?;
    ensure!(
        refused.agent_code() == Some(AgentErrorCode::Unsupported),
        "got {refused}"
    );
    // And a FIDO2 key cannot presign: a URL has nowhere to carry the assertion.
    let (fido2, _) = create_key(&agent.client(), "fido2", "no presign").await?;
    let mut presign = sign_request(&fido2, "/download");
    presign.presign_expires_secs = Some(60);
    let refused = agent
        .client()
        .sign(&presign)
        .await
        .err()
        .context("a FIDO2 key cannot presign")?;
    ensure!(refused.agent_code() == Some(AgentErrorCode::Unsupported));
    Ok(())
}

/// The real verifier (in-process API, memory registry) with WebAuthn settings for the agent's
/// RP ID and origin, a step-up route under `/admin/`, and the agent's FIDO2 credential
/// registered at level `fido2` (as FIDO2 enrollment would).
async fn fido2_api(agent: &AgentProcess, public: &PublicKey) -> Result<ApiServer> {
    let mut config = VerifierConfig::any_host(AUDIENCE);
    config.webauthn = Some(WebAuthnSettings {
        rp_id: RP_ID.to_owned(),
        origins: vec![ORIGIN.to_owned()],
        require_user_verification: false,
        attestation_roots: Vec::new(),
        aaguids: Vec::new(),
    });
    config.route_rules = vec![RouteRule {
        step_up: Some(StepUp {
            max_age_secs: 60,
            user_verification: false,
        }),
        ..RouteRule::new("/admin/", KeyLevel::Software)
    }];
    let server = ApiServer::start_with(config).await?;
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(
        agent.state_dir().join("fido2/credentials.json"),
    )?)?;
    let credential = stored["credentials"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["key_id"] == public.key_id().as_str()))
        .context("the key's credential in the agent's metadata")?;
    let credential_id =
        URL_SAFE_NO_PAD.decode(credential["credential_id"].as_str().unwrap_or_default())?;
    server.registry.add_fido2_credential(
        RegisteredKey::new(public.clone(), "security key", KeyLevel::Fido2, 0),
        Fido2Credential {
            key_id: public.key_id(),
            credential_id,
            rp_id: RP_ID.to_owned(),
            aaguid: SOFT_KEY_AAGUID,
            sign_count: 0,
            backup_eligible: false,
            backed_up: false,
            possibly_cloned: false,
        },
    )?;
    Ok(server)
}

fn post(server: &ApiServer, path: &str) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::post(server.url(path))
        .header("content-type", "application/json")
        .body(BODY.to_vec())?)
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_requests_are_accepted_by_the_real_verifier() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let mut agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "verified").await?;
    let server = fido2_api(&agent, &public).await?;
    // Strict: every request is an assertion.
    let signer = Signer::new(agent.client(), id.clone(), AUDIENCE);
    for i in 0..2 {
        let request = signed(&signer, post(&server, &format!("/pay/{i}"))?).await?;
        let response = send(&server, &request).await?;
        ensure!(
            response.status == 200,
            "strict request refused: {response:?}"
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body)?;
        ensure!(
            body["level"] == "fido2" && body["delegated"] == false,
            "{body}"
        );
    }
    let stored = server.registry.fido2_credential(&id)?;
    ensure!(
        stored.is_some_and(|c| c.sign_count >= 2),
        "the verifier stored the growing counter"
    );
    // Delegated: one touch for the session, the verifier accepts every request.
    make_delegated(&mut agent, &id)?;
    let signer = Signer::new(agent.client(), id.clone(), AUDIENCE);
    let touches = key.touches();
    for i in 0..20 {
        let request = signed(&signer, post(&server, &format!("/pay/d{i}"))?).await?;
        let response = send(&server, &request).await?;
        ensure!(
            response.status == 200,
            "delegated request refused: {response:?}"
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body)?;
        ensure!(body["delegated"] == true, "{body}");
    }
    ensure!(
        key.touches() == touches + 1,
        "one touch for 20 delegated requests"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_client_library_answers_step_up_with_a_touch() -> Result<()> {
    let (_dir, key) = soft_key()?;
    let mut agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "sdk").await?;
    make_delegated(&mut agent, &id)?;
    let server = fido2_api(&agent, &public).await?;
    let signer = Signer::new(agent.client(), id.clone(), AUDIENCE);
    // Without the middleware's retry, the delegated request is refused by the step-up route.
    let plain = signed(&signer, post(&server, "/admin/keys")?).await?;
    let refused = send(&server, &plain).await?;
    expect_refusal(&refused, 401, "step_up_required")?;
    // The middleware answers the refusal with a touch and sends once more.
    let touches = key.touches();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SigningMiddleware::new(signer))
        .build();
    let response = client
        .post(server.url("/admin/keys"))
        .header("content-type", "application/json")
        .body(BODY.to_vec())
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "after one step-up the route accepts: {}",
        response.status()
    );
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    ensure!(body["delegated"] == false, "{body}");
    ensure!(
        key.touches() == touches + 1,
        "exactly one more touch: {} -> {}",
        touches,
        key.touches()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_assertions_verify_with_python_fido2() -> Result<()> {
    let python = hwsign_e2e::sdk::prepare("fido2")?;
    let script = hwsign_e2e::sdk::repo_root()?.join("tests/python/check_fido2_assertions.py");
    let (_dir, key) = soft_key()?;
    let mut agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "python").await?;
    let mut items = Vec::new();
    for i in 0..2 {
        let request = sign_request(&id, &format!("/orders/{i}"));
        let response = agent.client().sign(&request).await?;
        let (assertion, signature, challenge, _) =
            check_strict(&request, &wire_headers(&request, &response), &public)?;
        items.push(python_item(&public, &assertion, &signature, &challenge));
    }
    // The statement of a delegated session is an assertion too.
    make_delegated(&mut agent, &id)?;
    let request = sign_request(&id, "/orders/delegated");
    let response = agent.client().sign(&request).await?;
    let delegation = check_delegated(&request, &wire_headers(&request, &response), &public)?;
    items.push(python_item(
        &public,
        &delegation.assertion,
        &delegation.signature,
        &delegation.challenge(),
    ));
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("python stdin")?;
        stdin.write_all(&serde_json::to_vec(&items)?)?;
    }
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "python-fido2 refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    ensure!(report["verified"] == 3, "{report}");
    let counters: Vec<u64> = report["counters"]
        .as_array()
        .context("counters")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    ensure!(
        counters.len() == 3 && counters.windows(2).all(|w| w[1] > w[0]),
        "python sees the counter grow: {counters:?}"
    );
    Ok(())
}

// ---- tampering is caught by the independent check too ----

#[tokio::test(flavor = "multi_thread")]
async fn fido2_tampered_assertion_is_refused_by_python_fido2() -> Result<()> {
    let python = hwsign_e2e::sdk::prepare("fido2")?;
    let script = hwsign_e2e::sdk::repo_root()?.join("tests/python/check_fido2_assertions.py");
    let (_dir, key) = soft_key()?;
    let agent = agent(&key, 30, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "tamper").await?;
    let request = sign_request(&id, "/orders");
    let response = agent.client().sign(&request).await?;
    let (mut assertion, signature, challenge, _) =
        check_strict(&request, &wire_headers(&request, &response), &public)?;
    // Clear the UP flag (byte 32): the CVE class where a verifier skips the presence check.
    if let Some(flags) = assertion.authenticator_data.get_mut(32) {
        *flags &= !0x01;
    }
    let items = vec![python_item(&public, &assertion, &signature, &challenge)];
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("python stdin")?;
        stdin.write_all(&serde_json::to_vec(&items)?)?;
    }
    let output = child.wait_with_output()?;
    ensure!(
        !output.status.success(),
        "a cleared UP flag must be refused"
    );
    ensure!(String::from_utf8_lossy(&output.stderr).contains("UP flag not set"));
    Ok(())
}

// ---- User verification with the key's PIN (clientPIN, PIN protocol one) ----

const PIN: &str = "483920";

/// An askpass program (a shell script, run by the agent without a shell) printing `pin`.
fn askpass(dir: &TempDir, pin: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.path().join("askpass");
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' '{pin}'\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// An agent whose fido2 backend asks `askpass` for the PIN, with a FIDO2 key whose rule asks
/// for user verification.
async fn pin_agent(
    key: &SoftKey,
    askpass: &std::path::Path,
) -> Result<(AgentProcess, String, PublicKey)> {
    let config = format!(
        "[backends.software]\nenabled = true\n[backends.fido2]\nrp_id = {RP_ID:?}\n\
         seam_socket = {:?}\naskpass = {:?}\n",
        key.socket_path().display().to_string(),
        askpass.display().to_string(),
    );
    let mut agent = AgentProcess::start_with(&config, &[])?;
    let (id, public) = create_key(&agent.client(), "fido2", "pin key").await?;
    let path = agent.dir().join("agent.toml");
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(&format!(
        "\n[[key_rules]]\nkey_id = \"{id}\"\nuser_verification = true\n"
    ));
    std::fs::write(&path, text)?;
    tokio::task::block_in_place(|| agent.restart(&[]))?;
    Ok((agent, id, public))
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_user_verification_with_pin_from_askpass() -> Result<()> {
    let (dir, key) = soft_key()?;
    key.set_pin(PIN);
    let (agent, id, public) = pin_agent(&key, &askpass(&dir, PIN)?).await?;
    let request = sign_request(&id, "/admin/keys");
    let response = agent.client().sign(&request).await?;
    let headers = wire_headers(&request, &response);
    let (assertion, ..) = check_strict(&request, &headers, &public)?;
    let parsed = hwsign_proto::webauthn::AuthenticatorData::parse(&assertion.authenticator_data)?;
    ensure!(
        parsed.flags.user_verified(),
        "the PIN verified the user: UV set"
    );
    ensure!(key.pin_retries() == 8);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_wrong_pin_is_refused_with_retries_left() -> Result<()> {
    let (dir, key) = soft_key()?;
    key.set_pin(PIN);
    let (agent, id, _) = pin_agent(&key, &askpass(&dir, "000000")?).await?;
    let touches = key.touches();
    let refused = agent
        .client()
        .sign(&sign_request(&id, "/admin/keys"))
        .await
        .err()
        .context("a wrong PIN must fail")?;
    ensure!(
        refused.agent_code() == Some(AgentErrorCode::PinIncorrect),
        "got {refused}"
    );
    ensure!(
        refused.to_string().contains("7 retries left"),
        "the refusal says how many tries are left: {refused}"
    );
    ensure!(key.pin_retries() == 7);
    ensure!(
        key.touches() == touches,
        "no touch is asked after a wrong PIN"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fido2_blocked_pin_is_pin_locked() -> Result<()> {
    let (dir, key) = soft_key()?;
    key.set_pin(PIN);
    let (agent, id, _) = pin_agent(&key, &askpass(&dir, PIN)?).await?;
    key.block_pin();
    let refused = agent
        .client()
        .sign(&sign_request(&id, "/admin/keys"))
        .await
        .err()
        .context("a blocked PIN must fail")?;
    ensure!(
        refused.agent_code() == Some(AgentErrorCode::PinLocked),
        "got {refused}"
    );
    Ok(())
}
