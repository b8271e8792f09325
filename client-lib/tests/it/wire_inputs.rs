//! What the client puts on the wire, observed through a RECORDING TEST DOUBLE of the agent
//! (`support/recording_agent.rs`: a real socket and HTTP server that records and answers fixed
//! replies). Signatures themselves are tested against the real agent in `real_agent.rs`.

use crate::support;

use std::time::Duration;

use http::{Method, Request, StatusCode};
use hwsign_client::{
    AgentClient, AgentErrorCode, BodyDigest, ClientError, RequestError, Signer,
    body_sha256_from_reader,
};
use hwsign_proto::api::{HeaderField, KeyInfo, KeyLevel, SignRequest, SignResponse};
use sha2::{Digest, Sha256};
use support::recording_agent::{Recorded, RecordingAgent};

const KEY: &str = "hk1_00112233445566778899aabbccddeeff";

/// A fixed, well-formed answer to `/v1/sign` (its signature is not real: the double has no key).
fn fixed_sign_answer(recorded: &Recorded) -> (StatusCode, Vec<u8>) {
    let request: SignRequest = match serde_json::from_slice(&recorded.body) {
        Ok(r) => r,
        Err(_) => return (StatusCode::BAD_REQUEST, b"{}".to_vec()),
    };
    let answer = SignResponse {
        headers: vec![
            field("x-hws-date", "20261123T193000Z"),
            field("x-hws-content-sha256", &request.body_sha256),
            field("x-hws-nonce", "AAAAAAAAAAAAAAAAAAAAAA"),
            field(
                "authorization",
                "HWS1-ECDSA-P256-SHA256 Credential=x, SignedHeaders=host, Signature=00",
            ),
        ],
        query_params: vec![],
        key_id: request.key_id,
        date: "20261123T193000Z".into(),
    };
    (
        StatusCode::OK,
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
}

fn field(name: &str, value: &str) -> HeaderField {
    HeaderField {
        name: name.into(),
        value: value.into(),
    }
}

fn only_sign_request(agent: &RecordingAgent) -> anyhow::Result<SignRequest> {
    let recorded = agent.recorded();
    assert_eq!(recorded.len(), 1, "exactly one call expected: {recorded:?}");
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path_and_query, "/v1/sign");
    assert_eq!(recorded[0].host.as_deref(), Some("localhost"));
    Ok(serde_json::from_slice(&recorded[0].body)?)
}

#[tokio::test]
async fn sign_request_describes_authority_path_query_headers_and_body_hash() -> anyhow::Result<()> {
    let agent = RecordingAgent::start(fixed_sign_answer)?;
    let signer = Signer::new(AgentClient::new(agent.socket_path()), KEY, "payments")
        .with_signed_headers(["X-Request-Id"]);
    let body = br#"{"amount":100}"#.to_vec();
    let mut request = Request::post("http://api.example.com:8080/v1/caf%C3%A9//x?b=2&a=1&a=0")
        .header("content-type", "application/json")
        .header("x-request-id", "r-1")
        .header("accept", "a")
        .header("accept", "b")
        // Leftovers of a previous attempt: stripped before signing again.
        .header("authorization", "HWS1-ECDSA-P256-SHA256 stale")
        .header("x-hws-nonce", "stale-nonce")
        .header("x-hws-date", "20000101T000000Z")
        .body(body.clone())?;

    signer.sign_request(&mut request).await?;

    let sent = only_sign_request(&agent)?;
    assert_eq!(sent.key_id, KEY);
    assert_eq!(sent.audience, "payments");
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.authority, "api.example.com:8080");
    assert_eq!(sent.path, "/v1/caf%C3%A9//x");
    assert_eq!(sent.query, "b=2&a=1&a=0");
    assert_eq!(sent.body_sha256, hex::encode(Sha256::digest(&body)));
    assert_eq!(sent.signed_headers, vec!["X-Request-Id".to_owned()]);
    let mut names: Vec<(&str, &str)> = sent
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("accept", "a"),
            ("accept", "b"),
            ("content-type", "application/json"),
            ("x-request-id", "r-1"),
        ]
    );
    assert_eq!(sent.presign_expires_secs, None);

    // The answer's headers replace the stale ones, each exactly once.
    let headers = request.headers();
    assert_eq!(headers.get_all("authorization").iter().count(), 1);
    assert_eq!(headers.get_all("x-hws-nonce").iter().count(), 1);
    assert_eq!(headers["x-hws-nonce"], "AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(headers["x-hws-date"], "20261123T193000Z");
    assert_eq!(
        headers["x-hws-content-sha256"].to_str()?,
        hex::encode(Sha256::digest(&body))
    );
    assert_eq!(headers["x-request-id"], "r-1");
    Ok(())
}

#[tokio::test]
async fn authority_comes_from_the_host_header_or_the_uri_without_default_port() -> anyhow::Result<()>
{
    let agent = RecordingAgent::start(fixed_sign_answer)?;
    let signer = Signer::new(AgentClient::new(agent.socket_path()), KEY, "payments");

    let cases: [(&str, Option<&str>, &str); 6] = [
        ("https://api.example.com:443/a", None, "api.example.com"),
        ("http://api.example.com:80/a", None, "api.example.com"),
        ("https://api.example.com:80/a", None, "api.example.com:80"),
        ("/a", Some("Api.Example.com:9000"), "api.example.com:9000"),
        ("http://[::1]:8080/a", None, "[::1]:8080"),
        // A Host header spelling out the default port is the same server; the signed host is
        // derived by the protocol's rule, and the header is rewritten to match (checked below).
        (
            "https://api.example.com/a",
            Some("api.example.com:443"),
            "api.example.com",
        ),
    ];
    for (uri, host, expected) in cases {
        let mut builder = Request::get(uri);
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        let mut request = builder.body(Vec::<u8>::new())?;
        signer.sign_request(&mut request).await?;
        let recorded = agent.recorded();
        let last: SignRequest = serde_json::from_slice(&recorded[recorded.len() - 1].body)?;
        assert_eq!(last.authority, expected, "for {uri} with Host {host:?}");
        assert_eq!(last.path, "/a");
        assert_eq!(last.body_sha256, BodyDigest::empty().to_hex());
        assert!(last.headers.iter().all(|h| h.name != "host"));
        if host.is_some() {
            // What goes out is what was signed.
            assert_eq!(request.headers()["host"], expected, "for {uri}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn ambiguous_authorities_are_refused_before_the_agent_is_asked() -> anyhow::Result<()> {
    let agent = RecordingAgent::start(fixed_sign_answer)?;
    let signer = Signer::new(AgentClient::new(agent.socket_path()), KEY, "payments");

    let mut mismatch = Request::get("https://api.example.com/a")
        .header("host", "evil.example.com")
        .body(Vec::<u8>::new())?;
    let err = signer.sign_request(&mut mismatch).await.err();
    assert!(
        matches!(
            err,
            Some(ClientError::Request(RequestError::AuthorityMismatch { .. }))
        ),
        "{err:?}"
    );

    let mut other_port = Request::get("https://api.example.com/a")
        .header("host", "api.example.com:8443")
        .body(Vec::<u8>::new())?;
    let err = signer.sign_request(&mut other_port).await.err();
    assert!(
        matches!(
            err,
            Some(ClientError::Request(RequestError::AuthorityMismatch { .. }))
        ),
        "{err:?}"
    );

    let mut two_hosts = Request::get("/a")
        .header("host", "a.example")
        .header("host", "b.example")
        .body(Vec::<u8>::new())?;
    let err = signer.sign_request(&mut two_hosts).await.err();
    assert!(
        matches!(err, Some(ClientError::Request(RequestError::DuplicateHost))),
        "{err:?}"
    );

    let mut nowhere = Request::get("/a").body(Vec::<u8>::new())?;
    let err = signer.sign_request(&mut nowhere).await.err();
    assert!(
        matches!(
            err,
            Some(ClientError::Request(RequestError::MissingAuthority))
        ),
        "{err:?}"
    );

    let mut userinfo = Request::get("https://user:pw@api.example.com/a").body(Vec::<u8>::new())?;
    let err = signer.sign_request(&mut userinfo).await.err();
    assert!(
        matches!(err, Some(ClientError::Request(RequestError::UserInfo))),
        "{err:?}"
    );

    let mut binary = Request::get("https://api.example.com/a")
        .header("x-bin", http::HeaderValue::from_bytes(b"caf\xc3\xa9")?)
        .body(Vec::<u8>::new())?;
    let err = signer.sign_request(&mut binary).await.err();
    assert!(
        matches!(err, Some(ClientError::Request(RequestError::HeaderNotText(ref n))) if n == "x-bin"),
        "{err:?}"
    );

    assert!(agent.recorded().is_empty(), "the agent must not be asked");
    Ok(())
}

#[tokio::test]
async fn large_bodies_are_hashed_as_a_stream() -> anyhow::Result<()> {
    let agent = RecordingAgent::start(fixed_sign_answer)?;
    let signer = Signer::new(AgentClient::new(agent.socket_path()), KEY, "uploads");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("body.bin");
    let content: Vec<u8> = (0..5 * 1024 * 1024 + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(&file, &content)?;
    let expected = hex::encode(Sha256::digest(&content));

    let (digest, length) = hwsign_client::body_sha256_of_file(&file).await?;
    assert_eq!(digest.to_hex(), expected);
    assert_eq!(length, content.len() as u64);
    let (from_reader, _) = body_sha256_from_reader(&content[..]).await?;
    assert_eq!(from_reader, digest);

    let (mut parts, ()) = Request::put("http://files.example/upload/big.bin")
        .body(())?
        .into_parts();
    signer
        .sign_reader(&mut parts, tokio::fs::File::open(&file).await?)
        .await?;
    let sent = only_sign_request(&agent)?;
    assert_eq!(sent.body_sha256, expected);
    assert_eq!(sent.method, "PUT");
    assert_eq!(parts.headers["x-hws-content-sha256"].to_str()?, expected);
    Ok(())
}

#[tokio::test]
async fn sequential_calls_reuse_one_connection() -> anyhow::Result<()> {
    let agent = RecordingAgent::start(fixed_sign_answer)?;
    let client = AgentClient::new(agent.socket_path());
    let signer = Signer::new(client.clone(), KEY, "payments");
    for _ in 0..5 {
        let mut request = Request::get("https://api.example.com/").body(Vec::<u8>::new())?;
        signer.sign_request(&mut request).await?;
    }
    assert_eq!(agent.recorded().len(), 5);
    assert_eq!(agent.connection_count(), 1);

    // Concurrent calls each take their own connection and all succeed.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            let mut request =
                Request::get(format!("https://api.example.com/{i}")).body(Vec::<u8>::new())?;
            signer.sign_request(&mut request).await?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(agent.recorded().len(), 13);
    assert!(agent.connection_count() <= 9);
    Ok(())
}

#[tokio::test]
async fn a_dead_reused_connection_is_replaced_transparently_for_replay_safe_calls()
-> anyhow::Result<()> {
    let agent = RecordingAgent::start_dropping_reused(fixed_sign_answer)?;
    let signer = Signer::new(AgentClient::new(agent.socket_path()), KEY, "payments");
    for _ in 0..3 {
        let mut request = Request::get("https://api.example.com/").body(Vec::<u8>::new())?;
        signer.sign_request(&mut request).await?;
        assert!(request.headers().contains_key("authorization"));
    }
    assert_eq!(agent.recorded().len(), 3);
    assert_eq!(agent.connection_count(), 3);
    Ok(())
}

#[tokio::test]
async fn key_creation_is_not_silently_repeated_on_a_dead_connection() -> anyhow::Result<()> {
    let agent = RecordingAgent::start_dropping_reused(|recorded| {
        if recorded.path_and_query == "/v1/keys" && recorded.method == "POST" {
            return (StatusCode::SERVICE_UNAVAILABLE, b"not json".to_vec());
        }
        fixed_sign_answer(recorded)
    })?;
    let client = AgentClient::new(agent.socket_path());
    let signer = Signer::new(client.clone(), KEY, "payments");
    let mut request = Request::get("https://api.example.com/").body(Vec::<u8>::new())?;
    signer.sign_request(&mut request).await?;
    // The idle connection is dead once the agent reads this request: the agent may have acted
    // on it, so the client reports the failure instead of creating a second key.
    let err = client.create_key("software", "laptop").await.err();
    assert!(matches!(err, Some(ClientError::Io(_))), "{err:?}");
    assert_eq!(agent.recorded().len(), 1);
    Ok(())
}

/// Signs `body` and returns the content hash the (double) agent echoed back for it.
async fn signed_hash(signer: &Signer, body: &[u8]) -> anyhow::Result<String> {
    let mut request = Request::post("https://api.example.com/").body(body.to_vec())?;
    signer.sign_request(&mut request).await?;
    Ok(request.headers()["x-hws-content-sha256"]
        .to_str()?
        .to_owned())
}

#[tokio::test]
async fn a_call_cut_short_leaves_no_half_answered_connection_behind() -> anyhow::Result<()> {
    // `/v1/status` answers after 400 ms, signatures at once.
    let agent =
        RecordingAgent::start_slow("/v1/status", Duration::from_millis(400), fixed_sign_answer)?;
    let client = AgentClient::builder(agent.socket_path())
        .timeout(Duration::from_millis(100))
        .build();
    let signer = Signer::new(client.clone(), KEY, "payments");
    assert_eq!(
        signed_hash(&signer, b"one").await?,
        hex::encode(Sha256::digest(b"one"))
    );
    assert_eq!(agent.connection_count(), 1);

    // A slow agent hits the call's deadline; the call had taken the idle connection.
    let err = client.status().await.err();
    assert!(matches!(err, Some(ClientError::Timeout(_))), "{err:?}");
    // The next call gets its own answer, not the late answer to the abandoned request: the
    // connection that still waits for that answer was dropped with the call.
    assert_eq!(
        signed_hash(&signer, b"two").await?,
        hex::encode(Sha256::digest(b"two"))
    );
    assert_eq!(agent.connection_count(), 2);

    // The same when the caller drops the call future itself (its own timeout, a select).
    let patient = AgentClient::new(agent.socket_path());
    let cut = tokio::time::timeout(Duration::from_millis(50), patient.status()).await;
    assert!(
        cut.is_err(),
        "the slow status call should have been cut: {cut:?}"
    );
    let signer = Signer::new(patient, KEY, "payments");
    for body in [&b"three"[..], b"four"] {
        assert_eq!(
            signed_hash(&signer, body).await?,
            hex::encode(Sha256::digest(body))
        );
    }
    assert_eq!(agent.connection_count(), 4);
    Ok(())
}

#[tokio::test]
async fn a_connection_the_agent_closed_while_idle_is_not_reused() -> anyhow::Result<()> {
    let agent = RecordingAgent::start_closing_after_answer(|recorded| {
        if recorded.path_and_query == "/v1/keys" && recorded.method == "POST" {
            let key = KeyInfo {
                id: KEY.into(),
                label: "laptop".into(),
                backend: "software".into(),
                level: KeyLevel::Software,
                public_key_pem: String::new(),
                created_unix: 0,
            };
            return (StatusCode::OK, serde_json::to_vec(&key).unwrap_or_default());
        }
        fixed_sign_answer(recorded)
    })?;
    let client = AgentClient::new(agent.socket_path());
    let signer = Signer::new(client.clone(), KEY, "payments");
    assert_eq!(
        signed_hash(&signer, b"one").await?,
        hex::encode(Sha256::digest(b"one"))
    );
    // Let the close (30 ms after the answer) arrive while the connection sits idle in the pool.
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Key creation is never repeated on a dead connection, so it only succeeds if the client
    // saw the close before sending and opened a fresh connection.
    let key = client.create_key("software", "laptop").await?;
    assert_eq!(key.id, KEY);
    assert_eq!(agent.recorded().len(), 2);
    assert_eq!(agent.connection_count(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_a_multi_thread_runtime_each_get_their_own_answer() -> anyhow::Result<()>
{
    let agent = RecordingAgent::start(fixed_sign_answer)?;
    let client = AgentClient::builder(agent.socket_path())
        .max_idle_connections(2)
        .build();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16u32 {
        let signer = Signer::new(client.clone(), KEY, "payments");
        tasks.spawn(async move {
            for call in 0..20u32 {
                let body = format!("{task}/{call}");
                let hash = signed_hash(&signer, body.as_bytes()).await?;
                anyhow::ensure!(hash == hex::encode(Sha256::digest(body.as_bytes())));
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    assert_eq!(agent.recorded().len(), 16 * 20);
    // Sequential calls afterwards reuse what the bounded pool kept.
    let before = agent.connection_count();
    let signer = Signer::new(client, KEY, "payments");
    for call in 0..5u32 {
        signed_hash(&signer, &call.to_be_bytes()).await?;
    }
    assert_eq!(agent.connection_count(), before);
    Ok(())
}

#[tokio::test]
async fn agent_errors_are_decoded_into_their_codes() -> anyhow::Result<()> {
    let agent = RecordingAgent::start(|recorded| {
        match recorded.path_and_query.as_str() {
        "/v1/sign" => (
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"unknown_key","message":"no key hk1_00112233445566778899aabbccddeeff"}}"#
                .to_vec(),
        ),
        "/v1/keys" => (StatusCode::BAD_GATEWAY, b"<html>proxy error</html>".to_vec()),
        _ => (StatusCode::OK, b"{\"unexpected\": true}".to_vec()),
    }
    })?;
    let client = AgentClient::new(agent.socket_path());
    let signer = Signer::new(client.clone(), KEY, "payments");
    let mut request = Request::get("https://api.example.com/").body(Vec::<u8>::new())?;
    match signer.sign_request(&mut request).await {
        Err(ClientError::Agent {
            code,
            message,
            status,
        }) => {
            assert_eq!(code, AgentErrorCode::UnknownKey);
            assert_eq!(status, 404);
            assert!(message.contains(KEY));
        }
        other => anyhow::bail!("expected an agent error, got {other:?}"),
    }
    assert!(!request.headers().contains_key("authorization"));

    let err = client.list_keys().await.err();
    assert!(matches!(err, Some(ClientError::Protocol(_))), "{err:?}");
    let err = client.status().await.err();
    assert!(matches!(err, Some(ClientError::Protocol(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn answers_are_bounded_and_calls_have_a_deadline() -> anyhow::Result<()> {
    let agent = RecordingAgent::start(|recorded| {
        let padding = "x".repeat(4096);
        match recorded.path_and_query.as_str() {
            "/v1/status" => (
                StatusCode::OK,
                format!("{{\"pad\":\"{padding}\"}}").into_bytes(),
            ),
            _ => (StatusCode::OK, b"{}".to_vec()),
        }
    })?;
    let client = AgentClient::builder(agent.socket_path())
        .max_response_bytes(1024)
        .build();
    let err = client.status().await.err();
    assert!(
        matches!(err, Some(ClientError::ResponseTooLarge { limit: 1024 })),
        "{err:?}"
    );

    // A listener that accepts connections but never answers.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("silent.sock");
    let _silent = tokio::net::UnixListener::bind(&path)?;
    let client = AgentClient::builder(&path)
        .timeout(Duration::from_millis(200))
        .build();
    let err = client.status().await.err();
    assert!(matches!(err, Some(ClientError::Timeout(_))), "{err:?}");

    let client = AgentClient::new(dir.path().join("absent.sock"));
    let err = client.status().await.err();
    assert!(matches!(err, Some(ClientError::Connect { .. })), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn describe_shows_what_would_be_signed_without_asking() -> anyhow::Result<()> {
    let signer = Signer::new(AgentClient::new("/nonexistent/agent.sock"), KEY, "payments");
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", http::HeaderValue::from_static("old"));
    headers.insert("x-hws-date", http::HeaderValue::from_static("old"));
    let uri: http::Uri = "https://api.example.com/v1/x?q=1".parse()?;
    let described = signer.describe(&Method::DELETE, &uri, &mut headers, &BodyDigest::empty())?;
    assert_eq!(described.method, "DELETE");
    assert_eq!(described.authority, "api.example.com");
    assert_eq!(described.query, "q=1");
    assert!(described.headers.is_empty());
    assert!(headers.is_empty(), "old signature headers are stripped");
    Ok(())
}
