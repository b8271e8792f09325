//! The client library against the real agent (in-process, software backend, real Unix socket),
//! with signatures checked by a server that verifies through hwsign-proto's pipeline.

use crate::support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hwsign_client::{AgentErrorCode, ClientError, KeyLevel, Signer};
use hwsign_proto::PublicKey;
use hwsign_proto::attestation::ActivateCredentialRequest;
use hyper_util::rt::TokioIo;
use support::real_agent::RealAgent;
use support::verifying_server::VerifyingServer;

/// Sends a request (absolute http:// URI) over a fresh TCP connection; returns status and body.
async fn send(request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, String)> {
    let authority = request
        .uri()
        .authority()
        .ok_or_else(|| anyhow::anyhow!("no authority"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(http::header::HOST) {
        parts
            .headers
            .insert(http::header::HOST, authority.as_str().parse()?);
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()?;
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn full(request: Request<Vec<u8>>) -> Request<Full<Bytes>> {
    request.map(|b| Full::new(Bytes::from(b)))
}

#[tokio::test]
async fn keys_status_and_agent_errors() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let client = agent.client();

    let created = client.create_key("software", "laptop").await?;
    assert_eq!(created.level, KeyLevel::Software);
    assert_eq!(created.backend, "software");
    assert_eq!(created.label, "laptop");
    assert_eq!(
        PublicKey::from_spki_pem(&created.public_key_pem)?.key_id(),
        created.id
    );

    let listed = client.list_keys().await?;
    assert!(listed.iter().any(|k| k == &created), "{listed:?}");
    let status = client.status().await?;
    assert!(!status.version.is_empty());
    assert_eq!(status.keys, listed.len());
    assert!(
        status
            .backends
            .iter()
            .any(|b| b.name == "software" && b.available)
    );

    let err = client.create_key("no-such-backend", "x").await.err();
    assert_eq!(
        err.as_ref().and_then(ClientError::agent_code),
        Some(AgentErrorCode::UnknownBackend),
        "{err:?}"
    );

    let unknown = Signer::new(
        client.clone(),
        "hk1_00000000000000000000000000000000",
        "payments",
    );
    let mut request = Request::get("http://api.example/").body(Vec::<u8>::new())?;
    let err = unknown.sign_request(&mut request).await.err();
    assert_eq!(
        err.as_ref().and_then(ClientError::agent_code),
        Some(AgentErrorCode::UnknownKey),
        "{err:?}"
    );

    // A software key has no attestation.
    let err = client
        .attestation(&created.id, "AAAAAAAAAAAAAAAAAAAAAA")
        .await
        .err();
    assert_eq!(
        err.as_ref().and_then(ClientError::agent_code),
        Some(AgentErrorCode::Unsupported),
        "{err:?}"
    );
    let err = client
        .activate_credential(
            &created.id,
            &ActivateCredentialRequest {
                credential_blob: "AAAA".into(),
                encrypted_secret: "AAAA".into(),
            },
        )
        .await
        .err();
    assert_eq!(
        err.as_ref().and_then(ClientError::agent_code),
        Some(AgentErrorCode::Unsupported),
        "{err:?}"
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn signed_requests_verify_end_to_end() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("e2e").await?;
    let server = VerifyingServer::start("payments", &[&key.public_key_pem]).await?;
    let signer = Signer::new(agent.client(), &key.id, "payments");

    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let cases: Vec<(Method, &str, Vec<u8>)> = vec![
        (Method::GET, "/v1/accounts?limit=10&after=a%2Fb", Vec::new()),
        (
            Method::POST,
            "/v1/transfers?currency=EUR",
            br#"{"amount":100}"#.to_vec(),
        ),
        (
            Method::PUT,
            "/v1/files/caf%C3%A9%20cr%C3%A8me.txt",
            big.clone(),
        ),
        (
            Method::DELETE,
            "/v1/items/42?hard=true&note=a+b",
            Vec::new(),
        ),
        (
            Method::GET,
            "/v1/%E6%97%A5%E6%9C%AC/~user/a-b_c.d",
            Vec::new(),
        ),
    ];
    for (method, path, body) in &cases {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(server.url(path))
            .header("content-type", "application/octet-stream")
            .body(body.clone())?;
        signer.sign_request(&mut request).await?;
        let (status, answer) = send(full(request)).await?;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
    }
    let accepted = server.accepted();
    assert_eq!(accepted.len(), cases.len());
    for ((method, path, body), seen) in cases.iter().zip(&accepted) {
        assert_eq!(&seen.method, method.as_str());
        assert_eq!(
            format!(
                "{}{}",
                seen.path,
                if seen.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", seen.query)
                }
            ),
            *path
        );
        assert_eq!(seen.body_len, body.len());
        assert_eq!(seen.key_id, key.id);
        assert!(
            seen.signed_headers.contains("content-type"),
            "{}",
            seen.signed_headers
        );
    }
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_retried_request_is_signed_again_and_a_replay_is_refused() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("retry").await?;
    let server = VerifyingServer::start("payments", &[&key.public_key_pem]).await?;
    let signer = Signer::new(agent.client(), &key.id, "payments");

    let mut request = Request::post(server.url("/v1/transfers")).body(b"pay".to_vec())?;
    signer.sign_request(&mut request).await?;
    let first = request.headers().clone();
    let copy = |r: &Request<Vec<u8>>| -> anyhow::Result<Request<Vec<u8>>> {
        let mut c = Request::builder()
            .method(r.method())
            .uri(r.uri())
            .body(r.body().clone())?;
        *c.headers_mut() = r.headers().clone();
        Ok(c)
    };
    let (status, _) = send(full(copy(&request)?)).await?;
    assert_eq!(status, StatusCode::OK);

    // Sending the same signed bytes again is a replay.
    let (status, reason) = send(full(copy(&request)?)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reason, "replayed_nonce");

    // Signing the already signed request again replaces the signature: fresh nonce, accepted.
    signer.sign_request(&mut request).await?;
    assert_ne!(request.headers()["x-hws-nonce"], first["x-hws-nonce"]);
    assert_eq!(request.headers().get_all("authorization").iter().count(), 1);
    let (status, answer) = send(full(request)).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(server.accepted().len(), 2);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn named_headers_are_signed_and_tampering_is_caught() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("headers").await?;
    let server = VerifyingServer::start("payments", &[&key.public_key_pem]).await?;
    let signer =
        Signer::new(agent.client(), &key.id, "payments").with_signed_headers(["X-Request-Id"]);

    let mut request = Request::post(server.url("/v1/transfers"))
        .header("x-request-id", "r-42")
        .body(b"original".to_vec())?;
    signer.sign_request(&mut request).await?;
    let mut tampered = Request::post(server.url("/v1/transfers")).body(b"original".to_vec())?;
    *tampered.headers_mut() = request.headers().clone();
    tampered
        .headers_mut()
        .insert("x-request-id", "r-43".parse()?);
    let (status, reason) = send(full(tampered)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reason, "signature_invalid");

    let mut request2 = Request::post(server.url("/v1/transfers"))
        .header("x-request-id", "r-44")
        .body(b"original".to_vec())?;
    signer.sign_request(&mut request2).await?;
    *request2.body_mut() = b"changed!".to_vec();
    let (status, reason) = send(full(request2)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reason, "body_hash_mismatch");

    let (status, answer) = send(full(request)).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let accepted = server.accepted();
    assert_eq!(accepted.len(), 1);
    assert!(
        accepted[0]
            .signed_headers
            .split(';')
            .any(|h| h == "x-request-id")
    );
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_streamed_file_body_is_signed_without_loading_it() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("upload").await?;
    let server = VerifyingServer::start("files", &[&key.public_key_pem]).await?;
    let signer = Signer::new(agent.client(), &key.id, "files");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("upload.bin");
    let content: Vec<u8> = (0..5 * 1024 * 1024 + 3)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    std::fs::write(&path, &content)?;

    let (mut parts, ()) = Request::put(server.url("/v1/upload"))
        .body(())?
        .into_parts();
    signer
        .sign_reader(&mut parts, tokio::fs::File::open(&path).await?)
        .await?;
    let (status, answer) =
        send(Request::from_parts(parts, Full::new(Bytes::from(content)))).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_client_reconnects_after_the_agent_restarts() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("restart").await?;
    let client = agent.client();
    assert_eq!(client.list_keys().await?.len(), 1);

    let dir = agent.stop().await?;
    let err = client.status().await.err();
    assert!(
        matches!(
            err,
            Some(ClientError::Connect { .. }) | Some(ClientError::Io(_))
        ),
        "{err:?}"
    );

    let agent = RealAgent::start_in(dir).await?;
    // The same client, whose pooled connection died with the old agent, just works.
    let keys = client.list_keys().await?;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, key.id);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn presigned_urls_verify_with_the_protocol_pipeline() -> anyhow::Result<()> {
    use hwsign_proto::verify_input::parse_presigned;
    use hwsign_proto::{HWS1, RequestParts};

    let agent = RealAgent::start().await?;
    let key = agent.software_key("presign").await?;
    let signer = Signer::new(agent.client(), &key.id, "reports");
    let uri: http::Uri = "https://files.example.com/v1/reports/2026-11.pdf?download=1".parse()?;
    let presigned = signer
        .presign(&Method::GET, &uri, &http::HeaderMap::new(), 3600)
        .await?;
    let query = presigned.query().unwrap_or("");
    assert!(
        query.starts_with("download=1&X-Hws-Algorithm=HWS1-ECDSA-P256-SHA256&"),
        "{query}"
    );
    assert_eq!(presigned.path(), "/v1/reports/2026-11.pdf");

    let headers = [("host", "files.example.com")];
    let parts = RequestParts {
        method: "GET",
        path: presigned.path(),
        query,
        headers: &headers,
    };
    let claimed = parse_presigned(&HWS1, &parts)?;
    assert_eq!(claimed.expires_secs, Some(3600));
    assert_eq!(claimed.authorization.credential, key.id);
    let public = PublicKey::from_spki_pem(&key.public_key_pem)?;
    assert!(public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));

    // The same URL for another method does not verify.
    let parts = RequestParts {
        method: "DELETE",
        ..parts
    };
    let claimed = parse_presigned(&HWS1, &parts)?;
    assert!(!public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));
    agent.stop().await?;
    Ok(())
}

/// A process of another uid listening where the agent's socket should be: it prints
/// `listening`, then for each of `connections` connections how many bytes it received.
const FAKE_AGENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(4)
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    conn, _ = s.accept()
    conn.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    print("received", len(data), flush=True)
    conn.close()
"#;

/// The next line the fake agent printed.
async fn next_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<String> {
    tokio::time::timeout(std::time::Duration::from_secs(30), lines.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("the fake agent said nothing"))
}

/// The uid the fake agent runs as (`nobody`).
const OTHER_UID: u32 = 65534;

#[tokio::test(flavor = "multi_thread")]
async fn hardening_the_client_refuses_a_socket_another_uid_listens_on() -> anyhow::Result<()> {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;

    anyhow::ensure!(
        hwsign_agent::config::own_uid() == 0,
        "this test needs root to start a listener as another uid"
    );
    // The attacker's directory and socket: what a group member could put in place of the
    // agent's socket when the agent's directory was writable.
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let run = dir.path().join("run");
    std::fs::create_dir(&run)?;
    std::os::unix::fs::chown(&run, Some(OTHER_UID), Some(OTHER_UID))?;
    let socket = run.join("agent.sock");
    let mut fake = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(FAKE_AGENT)
        .arg(&socket)
        .arg("2")
        .uid(OTHER_UID)
        .gid(OTHER_UID)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = fake
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let result = async {
        anyhow::ensure!(next_line(&mut lines).await? == "listening");

        // An SDK asks for a signature over a request carrying a session cookie.
        let request = hwsign_client::SignRequest {
            key_id: format!("hk1_{}", "0".repeat(32)),
            audience: "payments".into(),
            method: "GET".into(),
            authority: "api.example.com".into(),
            path: "/account".into(),
            query: String::new(),
            headers: vec![hwsign_proto::api::HeaderField {
                name: "cookie".into(),
                value: "session=secret-session-token".into(),
            }],
            body_sha256: hwsign_proto::keys::EMPTY_SHA256.into(),
            signed_headers: vec!["cookie".into()],
            presign_expires_secs: None,
            encoding: Default::default(),
        };
        let client = hwsign_client::AgentClient::builder(&socket)
            .timeout(std::time::Duration::from_secs(10))
            .build();
        match client.sign(&request).await {
            Err(ClientError::UntrustedAgent { uid, trusted, .. }) => {
                anyhow::ensure!(uid == OTHER_UID, "{uid}");
                anyhow::ensure!(trusted.contains(&0) && !trusted.contains(&OTHER_UID));
            }
            other => anyhow::bail!("the client talked to the fake agent: {other:?}"),
        }
        anyhow::ensure!(
            next_line(&mut lines).await? == "received 0",
            "the fake agent received the request"
        );

        // An operator who names the agent's uid gets a client that talks to it.
        let trusting = hwsign_client::AgentClient::builder(&socket)
            .timeout(std::time::Duration::from_secs(10))
            .agent_uid(OTHER_UID)
            .build();
        let error = trusting.sign(&request).await.err();
        anyhow::ensure!(
            !matches!(error, Some(ClientError::UntrustedAgent { .. })),
            "{error:?}"
        );
        let received = next_line(&mut lines).await?;
        anyhow::ensure!(received != "received 0", "{received}");
        Ok(())
    }
    .await;
    let _ = fake.kill();
    let _ = fake.wait();
    result
}
