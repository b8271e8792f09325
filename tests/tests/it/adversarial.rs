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
    key_id: String,
}

impl Setup {
    fn signer_key_id(&self) -> &str {
        &self.key_id
    }
}

async fn setup(config: VerifierConfig) -> Result<Setup> {
    let agent = AgentProcess::start()?;
    let server = ApiServer::start_with(config).await?;
    let (key_id, public) = create_key(&agent.client(), "software", "adversarial").await?;
    server.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    Ok(Setup {
        _agent: agent,
        server,
        signer,
        key_id,
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

// --- Hardening (issue 9 item 2, item 4): the signed query, header values and host are what the
// application reads. Each attack is a proxy-style rewrite of a request the real agent signed,
// sent to the real `HwsignLayer`.

/// Signs `url` with `signer` and returns the raw request text.
async fn signed_raw(signer: &Signer, url: &str) -> Result<String> {
    Ok(String::from_utf8(to_raw(
        &signed(signer, get(url)?).await?,
    )?)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_plus_and_encoded_plus_are_not_interchangeable() -> Result<()> {
    let s = setup(VerifierConfig::any_host(AUDIENCE)).await?;
    for (signed_query, sent_query) in [("a=1+2", "a=1%2B2"), ("a=1%2B2", "a=1+2")] {
        let raw = signed_raw(&s.signer, &s.server.url(&format!("/q?{signed_query}"))).await?;
        let rewritten = raw.replacen(
            &format!("GET /q?{signed_query} "),
            &format!("GET /q?{sent_query} "),
            1,
        );
        ensure!(rewritten != raw, "rewrite did not apply");
        expect_refusal(
            &send_raw(s.server.addr, rewritten.as_bytes()).await?,
            401,
            "signature_invalid",
        )
        .with_context(|| format!("signed {signed_query}, sent {sent_query}"))?;
        // The request as signed passes: the refusal is about the rewrite.
        let original = send_raw(s.server.addr, raw.as_bytes()).await?;
        ensure!(original.status == 200, "original got {}", original.status);
    }
    // `%20` and `+` are the same space to the application, and to the signature.
    let raw = signed_raw(&s.signer, &s.server.url("/q?a=1+2")).await?;
    let same = raw.replacen("GET /q?a=1+2 ", "GET /q?a=1%202 ", 1);
    ensure!(send_raw(s.server.addr, same.as_bytes()).await?.status == 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_repeated_query_names_are_refused_by_verifier_and_agent() -> Result<()> {
    let s = setup(VerifierConfig::any_host(AUDIENCE)).await?;
    // A proxy appends a second copy of a signed parameter.
    let raw = signed_raw(&s.signer, &s.server.url("/items?id=1")).await?;
    let doubled = raw.replacen("GET /items?id=1 ", "GET /items?id=1&id=2 ", 1);
    expect_refusal(
        &send_raw(s.server.addr, doubled.as_bytes()).await?,
        400,
        "malformed_request",
    )?;
    let encoded = raw.replacen("GET /items?id=1 ", "GET /items?%69d=2&id=1 ", 1);
    expect_refusal(
        &send_raw(s.server.addr, encoded.as_bytes()).await?,
        400,
        "malformed_request",
    )?;

    // The agent refuses to sign such a query at all, through the SDK and on the raw API.
    let err = signed(&s.signer, get(&s.server.url("/items?id=1&id=2"))?)
        .await
        .err()
        .context("the agent signed a repeated query name")?;
    ensure!(format!("{err:#}").contains("invalid_request"), "{err:#}");
    let body = serde_json::json!({
        "key_id": s.signer_key_id(),
        "audience": AUDIENCE,
        "method": "GET",
        "authority": s.server.authority(),
        "path": "/items",
        "query": "id=1&id=2",
        "body_sha256": hwsign_proto::keys::EMPTY_SHA256,
    });
    let (status, json) = agent_raw(
        &s._agent,
        &agent_post("/v1/sign", body.to_string().as_bytes()),
    )
    .await?;
    ensure!(
        status == 400 && json["error"]["code"] == "invalid_request",
        "{status} {json}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_header_whitespace_changed_in_transit_does_not_verify() -> Result<()> {
    let agent = AgentProcess::start()?;
    let server = ApiServer::start().await?;
    let (key_id, public) = create_key(&agent.client(), "software", "whitespace").await?;
    server.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id, AUDIENCE).with_signed_headers(["x-note"]);
    let mut request = get(&server.url("/note"))?;
    request.headers_mut().insert("x-note", "pay  100".parse()?);
    let request = signed(&signer, request).await?;
    let raw = String::from_utf8(to_raw(&request)?)?;
    ensure!(raw.contains("x-note: pay  100\r\n"), "{raw}");
    for changed in [
        "x-note: pay 100\r\n",
        "x-note: pay\t100\r\n",
        "x-note: pay   100\r\n",
    ] {
        let rewritten = raw.replacen("x-note: pay  100\r\n", changed, 1);
        expect_refusal(
            &send_raw(server.addr, rewritten.as_bytes()).await?,
            401,
            "signature_invalid",
        )
        .with_context(|| format!("sent {changed:?}"))?;
    }
    // Surrounding whitespace is not part of the value (HTTP strips it): still the same request.
    let padded = raw.replacen("x-note: pay  100\r\n", "x-note:   pay  100  \r\n", 1);
    ensure!(send_raw(server.addr, padded.as_bytes()).await?.status == 200);
    Ok(())
}

/// Checks that `added` (the headers a signer printed or returned) verify for a GET of `/` whose
/// signed host is exactly `host`: the signature covers `host:<host>` and nothing else.
fn verifies_for_host(
    public: &hwsign_proto::PublicKey,
    host: &str,
    added: &[(String, String)],
) -> Result<()> {
    let mut headers: Vec<(&str, &str)> = vec![("host", host)];
    headers.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let parts = hwsign_proto::RequestParts {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
    };
    let claimed = hwsign_proto::verify_input::parse_header_signed(&hwsign_proto::HWS1, &parts)?;
    ensure!(
        public.verify_digest(
            &claimed.string_to_sign.digest(),
            &claimed.authorization.signature
        ),
        "the signature is not over host {host:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_cli_and_agent_api_sign_the_same_host() -> Result<()> {
    let agent = AgentProcess::start()?;
    let (key_id, public) = create_key(&agent.client(), "software", "host").await?;
    let cli = hwsign_test_support::binaries::bin_path("hwsign")?;
    for url in [
        "https://h.example:443/",
        "https://h.example/",
        "https://H.Example:443/",
    ] {
        let output = std::process::Command::new(&cli)
            .arg("--socket")
            .arg(agent.socket())
            .args([
                "sign",
                "--key",
                &key_id,
                "--audience",
                AUDIENCE,
                "--url",
                url,
            ])
            .output()?;
        ensure!(
            output.status.success(),
            "hwsign sign {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: Vec<(String, String)> = String::from_utf8(output.stdout)?
            .lines()
            .filter_map(|line| line.split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
            .collect();
        verifies_for_host(&public, "h.example", &printed)
            .with_context(|| format!("hwsign sign {url}"))?;
    }
    for authority in ["h.example:443", "h.example", "H.EXAMPLE:443"] {
        let body = serde_json::json!({
            "key_id": key_id,
            "audience": AUDIENCE,
            "method": "GET",
            "authority": authority,
            "path": "/",
            "body_sha256": hwsign_proto::keys::EMPTY_SHA256,
        });
        let (status, json) =
            agent_raw(&agent, &agent_post("/v1/sign", body.to_string().as_bytes())).await?;
        ensure!(status == 200, "{authority}: {status} {json}");
        let answered: Vec<hwsign_proto::api::HeaderField> =
            serde_json::from_value(json["headers"].clone())?;
        let added: Vec<(String, String)> =
            answered.into_iter().map(|h| (h.name, h.value)).collect();
        verifies_for_host(&public, "h.example", &added)
            .with_context(|| format!("agent API authority {authority}"))?;
    }
    // A non-default port stays part of the signed host.
    let body = serde_json::json!({
        "key_id": key_id,
        "audience": AUDIENCE,
        "method": "GET",
        "authority": "h.example:8443",
        "path": "/",
        "body_sha256": hwsign_proto::keys::EMPTY_SHA256,
    });
    let (status, json) =
        agent_raw(&agent, &agent_post("/v1/sign", body.to_string().as_bytes())).await?;
    ensure!(status == 200, "{status} {json}");
    let added: Vec<(String, String)> =
        serde_json::from_value::<Vec<hwsign_proto::api::HeaderField>>(json["headers"].clone())?
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
    ensure!(verifies_for_host(&public, "h.example", &added).is_err());
    verifies_for_host(&public, "h.example:8443", &added)?;
    Ok(())
}
