//! hwsign's RFC 9421 encoding against an independent implementation, both ways: pyauth's
//! `http-message-signatures` (Python, `scripts/sdk-env rfc9421`) signs a request that the hwsign
//! verifier accepts, and verifies a request hwsign's signer helpers produced; a changed body or
//! query is refused on either side.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, ensure};
use hwsign_proto::rfc9421::{content_digest_sha256, signature_member};
use hwsign_proto::rfc9421_request::{
    LABEL, components_for, request_signature_base, signing_params,
};
use hwsign_proto::{Nonce, PublicKey, RequestParts};
use hwsign_verifier::{
    KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RegisteredKey, Verifier,
    VerifierConfig,
};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use sha2::{Digest as _, Sha256};

const AUDIENCE: &str = "payments";
const HOST: &str = "api.example.com";
const BODY: &str = r#"{"amount":100}"#;

struct Peer {
    python: std::path::PathBuf,
    script: std::path::PathBuf,
}

impl Peer {
    fn new() -> Result<Self> {
        Ok(Self {
            python: hwsign_e2e::sdk::prepare("rfc9421")?,
            script: hwsign_e2e::sdk::repo_root()?.join("tests/python/rfc9421_interop.py"),
        })
    }

    fn run(&self, mode: &str, job: &serde_json::Value) -> Result<(bool, String)> {
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(job.to_string().as_bytes())?;
        let output = child.wait_with_output()?;
        ensure!(
            output.stderr.is_empty() || output.status.success(),
            "python: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.success(), String::from_utf8(output.stdout)?))
    }
}

fn now_unix() -> Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    )?)
}

fn key() -> Result<(SigningKey, String)> {
    let signing = SigningKey::from_slice(&Sha256::digest(b"rfc9421 interop"))?;
    let key_id = PublicKey::from_verifying_key(*signing.verifying_key())?.key_id();
    Ok((signing, key_id))
}

fn verifier(signing: &SigningKey) -> Result<Verifier> {
    let registry = Arc::new(MemoryRegistry::new());
    let public = PublicKey::from_verifying_key(*signing.verifying_key())?;
    registry.add(RegisteredKey::new(
        public,
        "interop",
        KeyLevel::Software,
        now_unix()?,
    ))?;
    Ok(Verifier::new(
        VerifierConfig::new(AUDIENCE, [HOST]),
        registry as Arc<dyn KeyRegistry>,
        Arc::new(MemoryReplayCache::new(1_000)),
    )?)
}

fn verify(
    verifier: &Verifier,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<String, String> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let parts = RequestParts {
        method,
        path,
        query,
        headers: &pairs,
    };
    let digest: [u8; 32] = Sha256::digest(body).into();
    verifier
        .verify(&parts, &digest, SystemTime::now())
        .map(|principal| principal.key_id)
        .map_err(|rejection| rejection.code().as_str().to_owned())
}

#[test]
fn rfc9421_python_signs_and_the_hwsign_verifier_accepts() -> Result<()> {
    let peer = Peer::new()?;
    let (signing, key_id) = key()?;
    let verifier = verifier(&signing)?;
    let sign = |nonce: &str| -> Result<Vec<(String, String)>> {
        let (ok, out) = peer.run(
            "sign",
            &serde_json::json!({
                "method": "POST",
                "url": format!("https://{HOST}/v1/payouts?currency=eur"),
                "headers": [["host", HOST], ["content-type", "application/json"]],
                "body": BODY,
                "key_id": key_id,
                "audience": AUDIENCE,
                "private_key_pem": signing.to_pkcs8_pem(LineEnding::LF)?.as_str(),
                "created": now_unix()?,
                "nonce": nonce,
            }),
        )?;
        ensure!(ok, "python could not sign: {out}");
        Ok(serde_json::from_str(&out)?)
    };
    let headers = sign(Nonce::from_random([1; 16]).as_str())?;
    ensure!(
        headers
            .iter()
            .any(|(n, v)| n == "signature-input" && v.contains("tag=\"hws1:payments\"")),
        "{headers:?}"
    );
    let accepted = verify(
        &verifier,
        "POST",
        "/v1/payouts",
        "currency=eur",
        &headers,
        BODY.as_bytes(),
    );
    ensure!(accepted.as_deref() == Ok(key_id.as_str()), "{accepted:?}");
    // Replayed: the nonce is spent.
    let replayed = verify(
        &verifier,
        "POST",
        "/v1/payouts",
        "currency=eur",
        &headers,
        BODY.as_bytes(),
    );
    ensure!(replayed == Err("replayed_nonce".to_owned()), "{replayed:?}");

    let headers = sign(Nonce::from_random([2; 16]).as_str())?;
    let other_body = verify(
        &verifier,
        "POST",
        "/v1/payouts",
        "currency=eur",
        &headers,
        b"{}",
    );
    ensure!(
        other_body == Err("body_hash_mismatch".to_owned()),
        "{other_body:?}"
    );
    let headers = sign(Nonce::from_random([3; 16]).as_str())?;
    let other_query = verify(
        &verifier,
        "POST",
        "/v1/payouts",
        "currency=usd",
        &headers,
        BODY.as_bytes(),
    );
    ensure!(
        other_query == Err("signature_invalid".to_owned()),
        "{other_query:?}"
    );
    Ok(())
}

#[test]
fn rfc9421_hwsign_signs_and_python_verifies() -> Result<()> {
    let peer = Peer::new()?;
    let (signing, key_id) = key()?;
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), HOST.into()),
        ("content-type".into(), "application/json".into()),
        (
            "content-digest".into(),
            content_digest_sha256(&Sha256::digest(BODY.as_bytes()).into()),
        ),
    ];
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let parts = RequestParts {
        method: "POST",
        path: "/v1/payouts",
        query: "currency=eur",
        headers: &pairs,
    };
    let params = signing_params(
        components_for(&parts, &[]),
        now_unix()?,
        &Nonce::from_random([4; 16]),
        &key_id,
        AUDIENCE,
    );
    let base = request_signature_base(&parts, &params)?;
    let signature: Signature = signing.sign(base.as_bytes());
    headers.push((
        "signature-input".into(),
        format!("{LABEL}={}", params.serialize()),
    ));
    headers.push((
        "signature".into(),
        signature_member(LABEL, &signature.to_bytes()),
    ));

    let public_key_pem = signing.verifying_key().to_public_key_pem(LineEnding::LF)?;
    let job = |url: &str, body: &str| {
        serde_json::json!({
            "method": "POST",
            "url": url,
            "headers": headers,
            "body": body,
            "key_id": key_id,
            "audience": AUDIENCE,
            "public_key_pem": public_key_pem,
        })
    };
    let url = format!("https://{HOST}/v1/payouts?currency=eur");
    let (ok, out) = peer.run("verify", &job(&url, BODY))?;
    ensure!(
        ok && out.contains(&key_id),
        "python refused hwsign's signature: {out}"
    );
    let (ok, out) = peer.run("verify", &job(&url, "{}"))?;
    ensure!(!ok, "python accepted another body: {out}");
    let other = format!("https://{HOST}/v1/payouts?currency=usd");
    let (ok, out) = peer.run("verify", &job(&other, BODY))?;
    ensure!(!ok, "python accepted another query: {out}");
    Ok(())
}

/// The agent signs in the RFC 9421 encoding when asked (`SignRequest.encoding = "rfc9421"`,
/// `Signer::with_encoding`): the real agent binary's software key, the real API behind the
/// verifier layer, the same rules — accepted, replay refused, tampered body refused — and the
/// agent's signature also verifies with the independent implementation.
#[tokio::test(flavor = "multi_thread")]
async fn rfc9421_the_agent_signs_in_the_rfc9421_encoding() -> Result<()> {
    use hwsign_client::{SignEncoding, Signer};
    use hwsign_e2e::{AUDIENCE as E2E_AUDIENCE, AgentProcess, ApiServer, create_key, send};
    use hwsign_proto::api::KeyLevel as Level;

    let agent = AgentProcess::start_with("[backends.software]\nenabled = true\n", &[])?;
    let server = ApiServer::start().await?;
    let (key_id, public) = create_key(&agent.client(), "software", "rfc9421").await?;
    server.register(&public, Level::Software)?;
    let signer = Signer::new(agent.client(), key_id.clone(), E2E_AUDIENCE)
        .with_encoding(SignEncoding::Rfc9421);
    let build = |body: &str| -> Result<http::Request<Vec<u8>>> {
        Ok(http::Request::builder()
            .method("POST")
            .uri(server.url("/v1/payouts?currency=eur"))
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())?)
    };
    let mut request = build(BODY)?;
    signer.sign_request(&mut request).await?;
    ensure!(
        request.headers().contains_key("signature-input")
            && request.headers().contains_key("content-digest")
            && !request.headers().contains_key("authorization"),
        "{:?}",
        request.headers()
    );
    let response = send(&server, &request).await?;
    ensure!(
        response.status == 200,
        "refused: {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    ensure!(response.json()?["key_id"] == key_id.as_str());
    let replayed = send(&server, &request).await?;
    ensure!(replayed.status == 401, "replay accepted");

    // Same signature, another body: the Content-Digest no longer matches.
    let mut tampered = build(BODY)?;
    signer.sign_request(&mut tampered).await?;
    *tampered.body_mut() = b"{}".to_vec();
    let refused = send(&server, &tampered).await?;
    ensure!(
        refused.status == 401
            && hwsign_e2e::refusal_code(&refused).as_deref() == Some("body_hash_mismatch"),
        "{} {}",
        refused.status,
        String::from_utf8_lossy(&refused.body)
    );

    // The agent's signature, checked by the independent implementation.
    let mut fresh = build(BODY)?;
    signer.sign_request(&mut fresh).await?;
    let headers: Vec<(String, String)> = fresh
        .headers()
        .iter()
        .map(|(n, v)| Ok((n.as_str().to_owned(), v.to_str()?.to_owned())))
        .collect::<Result<_>>()?;
    let host = server
        .url("/")
        .split('/')
        .nth(2)
        .context("host")?
        .to_owned();
    let mut with_host = headers.clone();
    with_host.push(("host".into(), host.clone()));
    let public_pem = public.to_pem();
    let (ok, out) = Peer::new()?.run(
        "verify",
        &serde_json::json!({
            "method": "POST",
            "url": format!("http://{host}/v1/payouts?currency=eur"),
            "headers": with_host,
            "body": BODY,
            "key_id": key_id,
            "audience": E2E_AUDIENCE,
            "public_key_pem": public_pem,
        }),
    )?;
    ensure!(ok, "python refused the agent's signature: {out}");
    Ok(())
}

/// A key in delegated mode signs in the RFC 9421 encoding with its session key: `keyid` is the
/// session key, the statement travels in `x-hws-delegation` (a covered component), and the
/// verifier accepts the request as the device key, delegated. A replay is refused; so are a
/// changed body, a request whose statement was swapped after signing, and one whose statement
/// was stripped.
#[tokio::test(flavor = "multi_thread")]
async fn rfc9421_a_delegated_key_signs_with_its_session_key() -> Result<()> {
    use crate::delegation_support::{expect_ok, expect_refusal, make_delegated};
    use hwsign_client::{SignEncoding, Signer};
    use hwsign_e2e::{AUDIENCE as E2E_AUDIENCE, AgentProcess, ApiServer, create_key, send};
    use hwsign_proto::api::KeyLevel as Level;

    let mut agent = AgentProcess::start()?;
    let server = ApiServer::start().await?;
    let (key_id, public) = create_key(&agent.client(), "software", "rfc9421-delegated").await?;
    server.register(&public, Level::Software)?;
    make_delegated(&mut agent, &key_id, None)?;
    let signer = Signer::new(agent.client(), key_id.clone(), E2E_AUDIENCE)
        .with_encoding(SignEncoding::Rfc9421);
    let build = || -> Result<http::Request<Vec<u8>>> {
        Ok(http::Request::builder()
            .method("POST")
            .uri(server.url("/v1/payouts?currency=eur"))
            .header("content-type", "application/json")
            .body(BODY.as_bytes().to_vec())?)
    };
    let field = |request: &http::Request<Vec<u8>>, name: &str| -> Result<String> {
        Ok(request
            .headers()
            .get(name)
            .with_context(|| format!("no {name}"))?
            .to_str()?
            .to_owned())
    };

    let mut request = build()?;
    signer.sign_request(&mut request).await?;
    let input = field(&request, "signature-input")?;
    let statement = field(&request, "x-hws-delegation")?;
    ensure!(
        input.contains("\"x-hws-delegation\"")
            && !input.contains(&key_id)
            && !request.headers().contains_key("authorization"),
        "{input}"
    );
    let json = expect_ok(&send(&server, &request).await?)?;
    ensure!(
        json["key_id"] == key_id.as_str() && json["delegated"] == true,
        "{json}"
    );
    expect_refusal(&send(&server, &request).await?, 401, "replayed_nonce")?;

    let mut tampered = build()?;
    signer.sign_request(&mut tampered).await?;
    ensure!(
        field(&tampered, "x-hws-delegation")? == statement,
        "the session (and its statement) is reused"
    );
    *tampered.body_mut() = b"{}".to_vec();
    expect_refusal(&send(&server, &tampered).await?, 401, "body_hash_mismatch")?;

    // Another statement of the same device key for the same session key would verify on its own;
    // here the signature covers the first one. A second session (another audience) supplies a
    // genuine statement that does not name this request's session key.
    let other =
        Signer::new(agent.client(), key_id.clone(), "billing").with_encoding(SignEncoding::Rfc9421);
    let mut elsewhere = build()?;
    other.sign_request(&mut elsewhere).await?;
    let foreign = field(&elsewhere, "x-hws-delegation")?;
    ensure!(foreign != statement);
    let mut swapped = build()?;
    signer.sign_request(&mut swapped).await?;
    swapped
        .headers_mut()
        .insert("x-hws-delegation", foreign.parse()?);
    expect_refusal(&send(&server, &swapped).await?, 401, "delegation_invalid")?;
    // The request signed for "billing" is refused here for its audience.
    expect_refusal(&send(&server, &elsewhere).await?, 401, "wrong_audience")?;

    let mut stripped = build()?;
    signer.sign_request(&mut stripped).await?;
    stripped.headers_mut().remove("x-hws-delegation");
    // The signature covers a field the request no longer has.
    expect_refusal(&send(&server, &stripped).await?, 400, "malformed_request")?;
    Ok(())
}
