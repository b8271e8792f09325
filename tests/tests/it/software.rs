//! End to end with the software backend: the real `hwsign-agent` binary signs through the client
//! library, a real axum API verifies. Every acceptance and every refusal of issue #2 §8.

use anyhow::{Context, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::{
    AUDIENCE, AgentProcess, ApiServer, create_key, expect_refusal, refusal_code, send, send_raw,
    signed, to_raw,
};
use hwsign_proto::api::KeyLevel;
use hwsign_verifier::KeyRegistry;

struct Setup {
    agent: AgentProcess,
    server: ApiServer,
    signer: Signer,
    key_id: String,
}

async fn setup() -> Result<Setup> {
    setup_with_env(&[]).await
}

async fn setup_with_env(env: &[(&str, &str)]) -> Result<Setup> {
    let agent = AgentProcess::start_with("[backends.software]\nenabled = true\n", env)?;
    let server = ApiServer::start().await?;
    let (key_id, public) = create_key(&agent.client(), "software", "e2e").await?;
    server.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    Ok(Setup {
        agent,
        server,
        signer,
        key_id,
    })
}

fn build(method: &str, url: &str, body: Vec<u8>) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/octet-stream")
        .body(body)?)
}

async fn accepted(s: &Setup, request: http::Request<Vec<u8>>) -> Result<serde_json::Value> {
    let request = signed(&s.signer, request).await?;
    let response = send(&s.server, &request).await?;
    ensure!(
        response.status == 200,
        "refused {} {}: {} {}",
        request.method(),
        request.uri(),
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    let json = response.json()?;
    ensure!(
        json["key_id"] == s.key_id.as_str(),
        "wrong principal: {json}"
    );
    ensure!(json["level"] == "software");
    Ok(json)
}

#[tokio::test(flavor = "multi_thread")]
async fn software_methods_queries_and_paths_are_accepted() -> Result<()> {
    let s = setup().await?;
    for method in ["GET", "POST", "PUT", "DELETE"] {
        let url = s.server.url("/v1/items/42?b=2&a=1&c=0&empty=&flag");
        let json = accepted(&s, build(method, &url, b"payload".to_vec())?).await?;
        ensure!(json["method"] == method);
        ensure!(json["query"] == "b=2&a=1&c=0&empty=&flag");
    }
    for path in [
        "/files/a%20b/c%2Fd",
        "/caf%C3%A9/%E6%97%A5%E6%9C%AC",
        "/~user/-._/",
        "/a%252Fb",
    ] {
        let json = accepted(&s, build("GET", &s.server.url(path), Vec::new())?).await?;
        ensure!(json["path"] == path, "path changed on the way: {json}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn software_empty_and_5_mib_bodies_are_accepted() -> Result<()> {
    let s = setup().await?;
    let json = accepted(&s, build("POST", &s.server.url("/upload"), Vec::new())?).await?;
    ensure!(json["body_len"] == 0);
    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let json = accepted(&s, build("PUT", &s.server.url("/upload"), big.clone())?).await?;
    ensure!(json["body_len"] == big.len());
    ensure!(json["body_sha256"] == hwsign_proto::keys::sha256_hex(&big).as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn software_tampering_is_refused() -> Result<()> {
    let s = setup().await?;
    let fresh = || async {
        signed(
            &s.signer,
            build(
                "POST",
                &s.server.url("/v1/pay?amount=10"),
                b"{\"to\":1}".to_vec(),
            )?,
        )
        .await
    };

    let mut body_changed = fresh().await?;
    *body_changed.body_mut() = b"{\"to\":2}".to_vec();
    expect_refusal(
        &send(&s.server, &body_changed).await?,
        401,
        "body_hash_mismatch",
    )?;

    let mut path_changed = fresh().await?;
    *path_changed.uri_mut() = s.server.url("/v1/PAY?amount=10").parse()?;
    expect_refusal(
        &send(&s.server, &path_changed).await?,
        401,
        "signature_invalid",
    )?;

    let mut query_changed = fresh().await?;
    *query_changed.uri_mut() = s.server.url("/v1/pay?amount=1000").parse()?;
    expect_refusal(
        &send(&s.server, &query_changed).await?,
        401,
        "signature_invalid",
    )?;

    let mut method_changed = fresh().await?;
    *method_changed.method_mut() = http::Method::PUT;
    expect_refusal(
        &send(&s.server, &method_changed).await?,
        401,
        "signature_invalid",
    )?;

    let mut header_changed = fresh().await?;
    header_changed
        .headers_mut()
        .insert("content-type", "text/plain".parse()?);
    expect_refusal(
        &send(&s.server, &header_changed).await?,
        401,
        "signature_invalid",
    )?;

    // The untouched request still passes, so the refusals above are about the changes.
    let untouched = fresh().await?;
    ensure!(send(&s.server, &untouched).await?.status == 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn software_replay_is_refused() -> Result<()> {
    let s = setup().await?;
    let request = signed(&s.signer, build("GET", &s.server.url("/once"), Vec::new())?).await?;
    ensure!(send(&s.server, &request).await?.status == 200);
    expect_refusal(&send(&s.server, &request).await?, 401, "replayed_nonce")?;
    Ok(())
}

/// The agent runs under libfaketime with its clock 10 minutes off: its signatures are genuine,
/// only their dates are outside the verifier's ±300 s window.
async fn skewed_agent_is_refused(offset: &str) -> Result<()> {
    let preload = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    ensure!(
        std::path::Path::new(preload).exists(),
        "libfaketime missing: scripts/test installs the faketime package"
    );
    let s = setup_with_env(&[
        ("LD_PRELOAD", preload),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ])
    .await?;
    let request = signed(
        &s.signer,
        build("GET", &s.server.url("/clock"), Vec::new())?,
    )
    .await?;
    let date = request
        .headers()
        .get("x-hws-date")
        .context("no date")?
        .to_str()?
        .to_owned();
    let now = hwsign_proto::SigningTime::from_unix(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?);
    let signed_at = hwsign_proto::SigningTime::parse_amz_date(&date)?;
    ensure!(
        (signed_at.unix() - now.unix()).abs() >= 590,
        "faketime did not shift the agent's clock: {date}"
    );
    expect_refusal(&send(&s.server, &request).await?, 401, "stale_date")?;
    drop(s.agent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn software_date_too_old_is_refused() -> Result<()> {
    skewed_agent_is_refused("-10m").await
}

#[tokio::test(flavor = "multi_thread")]
async fn software_date_too_far_ahead_is_refused() -> Result<()> {
    skewed_agent_is_refused("+10m").await
}

#[tokio::test(flavor = "multi_thread")]
async fn software_unknown_and_revoked_keys_are_refused() -> Result<()> {
    let s = setup().await?;
    let (other_id, _) = create_key(&s.agent.client(), "software", "unregistered").await?;
    let other = Signer::new(s.agent.client(), other_id, AUDIENCE);
    let request = signed(&other, build("GET", &s.server.url("/x"), Vec::new())?).await?;
    expect_refusal(&send(&s.server, &request).await?, 401, "unknown_key")?;

    s.server.registry.revoke(&s.key_id)?;
    let request = signed(&s.signer, build("GET", &s.server.url("/x"), Vec::new())?).await?;
    expect_refusal(&send(&s.server, &request).await?, 403, "device_revoked")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn software_malformed_authorization_is_refused() -> Result<()> {
    let s = setup().await?;
    let template = signed(&s.signer, build("GET", &s.server.url("/m"), Vec::new())?).await?;
    let good = template
        .headers()
        .get("authorization")
        .context("no authorization")?
        .to_str()?
        .to_owned();
    let variants = [
        good.replacen("HWS1-ECDSA-P256-SHA256", "AWS4-ECDSA-P256-SHA256", 1),
        good.replacen("HWS1-ECDSA-P256-SHA256 ", "HWS1-ECDSA-P256-SHA256  ", 1),
        good.replacen(", SignedHeaders=", ",SignedHeaders=", 1),
        good.replacen("Credential=", "Credentials=", 1),
        good.replacen("hws1_request", "aws4_request", 1),
        good.replacen("SignedHeaders=", "SignedHeaders=zzz;", 1),
        good.replacen(
            "SignedHeaders=content-type;host;",
            "SignedHeaders=host;content-type;",
            1,
        ),
        good.replacen("Signature=", "Signature=XYZ", 1),
        format!("{good}, Signature=00"),
        good.split(", Signature=")
            .next()
            .unwrap_or_default()
            .to_owned(),
        "HWS1-ECDSA-P256-SHA256".to_owned(),
        "Bearer abc.def.ghi".to_owned(),
        format!("{good}{}", "a".repeat(5000)),
        good.replacen("/e2e-api/", "//", 1),
    ];
    for (i, variant) in variants.iter().enumerate() {
        ensure!(*variant != good, "variant {i} does not change the header");
        let mut bad = template.clone();
        bad.headers_mut()
            .insert("authorization", variant.parse().context("header value")?);
        let response = send(&s.server, &bad).await?;
        ensure!(
            response.status == 401
                && refusal_code(&response).as_deref() == Some("malformed_authorization"),
            "variant {i} ({variant:.80}): {} {:?}",
            response.status,
            refusal_code(&response)
        );
    }
    // Two Authorization headers are ambiguous, not "take the first".
    let raw = String::from_utf8(to_raw(&template)?)?;
    let doubled = raw.replacen(
        "authorization:",
        &format!("authorization: {good}\r\nauthorization:"),
        1,
    );
    let response = send_raw(s.server.addr, doubled.as_bytes()).await?;
    expect_refusal(&response, 401, "malformed_authorization")?;
    // No Authorization at all.
    let mut missing = template.clone();
    missing.headers_mut().remove("authorization");
    expect_refusal(
        &send(&s.server, &missing).await?,
        401,
        "missing_authorization",
    )?;
    Ok(())
}

/// A process running as `nobody` cannot use the agent: with the default modes it cannot even
/// connect; with the directory and socket opened to everyone, the agent's SO_PEERCRED check
/// refuses it with `permission_denied`.
#[tokio::test(flavor = "multi_thread")]
async fn software_other_uid_is_refused_on_agent_socket() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    ensure!(
        nix::unistd::Uid::effective().is_root(),
        "this test switches to uid nobody and must run as root (scripts/test does)"
    );
    let agent = AgentProcess::start()?;
    let cli = hwsign_test_support::binaries::bin_path("hwsign")?;
    let as_nobody = || {
        std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&cli)
            .arg("status")
            .arg("--socket")
            .arg(agent.socket())
            .output()
    };
    let denied_by_mode = as_nobody()?;
    ensure!(
        !denied_by_mode.status.success(),
        "nobody reached a 0600 socket"
    );

    let dir = agent.socket().parent().context("socket dir")?;
    let mut opened = vec![agent.dir().to_path_buf(), dir.to_path_buf()];
    opened.push(agent.socket().to_path_buf());
    for path in &opened {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    }
    let denied_by_peer = as_nobody()?;
    let stderr = String::from_utf8_lossy(&denied_by_peer.stderr).into_owned();
    ensure!(!denied_by_peer.status.success(), "nobody was served");
    ensure!(
        stderr.contains("permission_denied"),
        "expected the agent's permission_denied, got: {stderr}"
    );
    // The agent's own user is still served.
    agent.client().status().await?;
    Ok(())
}
