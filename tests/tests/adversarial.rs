//! Bad input and attacks at the HTTP level (issue #6 §3), each with its exact expected outcome:
//! against the verifier-protected API and against the agent's socket.

use anyhow::{Context, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::{
    AUDIENCE, AgentProcess, ApiServer, create_key, expect_refusal, send, send_raw, signed, to_raw,
};
use hwsign_proto::api::KeyLevel;
use hwsign_verifier::VerifierConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    _agent: AgentProcess,
    server: ApiServer,
    signer: Signer,
}

async fn setup(config: VerifierConfig) -> Result<Setup> {
    let agent = AgentProcess::start()?;
    let server = ApiServer::start_with(config).await?;
    let (key_id, public) = create_key(&agent.client(), "software", "adversarial").await?;
    server.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id, AUDIENCE);
    Ok(Setup {
        _agent: agent,
        server,
        signer,
    })
}

fn get(url: &str) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(url).body(Vec::new())?)
}

#[tokio::test(flavor = "multi_thread")]
async fn adversarial_ambiguous_hosts_are_refused() -> Result<()> {
    let s = setup(VerifierConfig::any_host(AUDIENCE)).await?;
    let request = signed(&s.signer, get(&s.server.url("/h"))?).await?;
    let raw = String::from_utf8(to_raw(&request)?)?;

    let two_hosts = raw.replacen("\r\n", "\r\nhost: evil.example\r\n", 1);
    expect_refusal(
        &send_raw(s.server.addr, two_hosts.as_bytes()).await?,
        400,
        "malformed_request",
    )?;

    // Absolute-form target naming another authority than the (signed) Host header.
    let absolute = raw.replacen("GET /h ", "GET http://evil.example/h ", 1);
    expect_refusal(
        &send_raw(s.server.addr, absolute.as_bytes()).await?,
        400,
        "malformed_request",
    )?;

    // The original is accepted: the refusals are about the ambiguity.
    ensure!(send_raw(s.server.addr, raw.as_bytes()).await?.status == 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn adversarial_folded_header_never_reaches_the_handler() -> Result<()> {
    let s = setup(VerifierConfig::any_host(AUDIENCE)).await?;
    let request = signed(&s.signer, get(&s.server.url("/fold"))?).await?;
    let raw = String::from_utf8(to_raw(&request)?)?;
    let folded = raw.replacen("\r\n", "\r\nx-note: first\r\n second line\r\n", 1);
    let response = send_raw(s.server.addr, folded.as_bytes()).await?;
    // hyper refuses obsolete line folding outright (RFC 9112 §5.2) before the verifier runs.
    ensure!(
        response.status == 400,
        "folded header got {}",
        response.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn adversarial_encoded_slash_and_double_encoding_are_distinct() -> Result<()> {
    let s = setup(VerifierConfig::any_host(AUDIENCE)).await?;
    for (signed_path, sent_path) in [
        ("/files/a%2Fb", "/files/a/b"),
        ("/files/a/b", "/files/a%2Fb"),
        ("/files/a%252Fb", "/files/a%2Fb"),
        ("/files/a%2Fb", "/files/a%252Fb"),
        ("/admin", "//admin"),
        ("/admin", "/x/../admin"),
    ] {
        let mut request = signed(&s.signer, get(&s.server.url(signed_path))?).await?;
        *request.uri_mut() = s.server.url(sent_path).parse()?;
        expect_refusal(&send(&s.server, &request).await?, 401, "signature_invalid")
            .with_context(|| format!("signed {signed_path}, sent {sent_path}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn adversarial_unsigned_payload_outside_presigned_urls_is_refused() -> Result<()> {
    let s = setup(VerifierConfig::any_host(AUDIENCE)).await?;
    let mut request = signed(&s.signer, get(&s.server.url("/u"))?).await?;
    request
        .headers_mut()
        .insert("x-hws-content-sha256", "UNSIGNED-PAYLOAD".parse()?);
    expect_refusal(
        &send(&s.server, &request).await?,
        400,
        "unsigned_payload_not_allowed",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn adversarial_oversized_body_and_headers_are_refused() -> Result<()> {
    let mut config = VerifierConfig::any_host(AUDIENCE);
    config.max_body_bytes = 1024 * 1024;
    let s = setup(config).await?;
    let body = vec![b'x'; 2 * 1024 * 1024];
    let request = signed(
        &s.signer,
        http::Request::post(s.server.url("/big")).body(body)?,
    )
    .await?;
    expect_refusal(&send(&s.server, &request).await?, 413, "body_too_large")?;

    // A body larger than its Content-Length claims is cut at the claim by HTTP framing; one that
    // claims more than the limit is refused before it is read.
    let mut lying = to_raw(
        &signed(
            &s.signer,
            http::Request::post(s.server.url("/big")).body(b"x".to_vec())?,
        )
        .await?,
    )?;
    let text = String::from_utf8(lying.clone())?;
    lying = text
        .replacen("content-length: 1\r\n", "content-length: 999999999\r\n", 1)
        .into_bytes();
    expect_refusal(
        &send_raw(s.server.addr, &lying).await?,
        413,
        "body_too_large",
    )?;

    let mut huge_header = signed(&s.signer, get(&s.server.url("/hdr"))?).await?;
    huge_header
        .headers_mut()
        .insert("x-padding", "a".repeat(200 * 1024).parse()?);
    let response = send(&s.server, &huge_header).await?;
    ensure!(
        response.status == 431 || response.status == 400,
        "200 KiB header got {}",
        response.status
    );
    Ok(())
}

/// One raw HTTP/1.1 exchange on the agent's socket.
async fn agent_raw(agent: &AgentProcess, request: &[u8]) -> Result<(u16, serde_json::Value)> {
    let mut stream = tokio::net::UnixStream::connect(agent.socket()).await?;
    stream.write_all(request).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split(' ').nth(1).context("no status")?.parse()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

fn agent_post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn adversarial_agent_refuses_module_paths_nesting_and_oversized_json() -> Result<()> {
    let agent = AgentProcess::start()?;

    // A PKCS#11 module path can only come from the agent's config: the API has no such field.
    let (status, json) = agent_raw(
        &agent,
        &agent_post(
            "/v1/keys",
            br#"{"backend":"pkcs11","label":"x","module_path":"/tmp/evil.so"}"#,
        ),
    )
    .await?;
    ensure!(
        status == 400 && json["error"]["code"] == "malformed_json",
        "{status} {json}"
    );

    let nested = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let (status, json) = agent_raw(&agent, &agent_post("/v1/sign", nested.as_bytes())).await?;
    ensure!(
        status == 400 && json["error"]["code"] == "malformed_json",
        "{status} {json}"
    );
    let deep_but_small = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let (status, json) =
        agent_raw(&agent, &agent_post("/v1/sign", deep_but_small.as_bytes())).await?;
    ensure!(
        status == 400 && json["error"]["code"] == "malformed_json",
        "{status} {json}"
    );

    // Over the 64 KiB body bound: refused from Content-Length, before the body is read.
    let head = b"POST /v1/keys HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 102400\r\n\r\n";
    let (status, json) = agent_raw(&agent, head).await?;
    ensure!(
        status == 413 && json["error"]["code"] == "too_large",
        "{status} {json}"
    );

    // Still serving after all of that.
    agent.client().status().await?;
    Ok(())
}

/// A request the real agent signed for another deployment (staging) with the same audience, sent
/// to this API byte for byte: refused `wrong_host` (401), since the API serves only its own
/// address. The same request sent to its own host is accepted, so the host alone decides.
#[tokio::test(flavor = "multi_thread")]
async fn hardening_request_signed_for_another_host_is_refused() -> Result<()> {
    let s = setup(VerifierConfig::any_host(AUDIENCE)).await?;
    let port = s.server.addr.port();
    for host in [
        format!("staging.example.test:{port}"),
        "staging.example.test".to_owned(),
        format!("127.0.0.2:{port}"),
    ] {
        let request = signed(&s.signer, get(&format!("http://{host}/h"))?).await?;
        expect_refusal(
            &send_raw(s.server.addr, &to_raw(&request)?).await?,
            401,
            "wrong_host",
        )?;
    }
    let own = signed(&s.signer, get(&s.server.url("/h"))?).await?;
    let response = send_raw(s.server.addr, &to_raw(&own)?).await?;
    ensure!(response.status == 200, "own host got {}", response.status);
    Ok(())
}
