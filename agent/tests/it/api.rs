//! API v1 over a real Unix socket against an in-process agent with the software backend: every
//! route, the signatures it returns (checked with the verifier's side of `hwsign-proto`), and
//! every error code the software backend can reach.
#![cfg(feature = "software")]

use crate::support;

use anyhow::{Result, ensure};
use http::Method;
use serde_json::json;

use hwsign_proto::api::{HeaderField, KeyInfo, KeyList, SignRequest, SignResponse, StatusResponse};
use hwsign_proto::keys::{EMPTY_SHA256, sha256_hex};
use hwsign_proto::verify_input::{parse_header_signed, parse_presigned};
use hwsign_proto::{HWS1, PublicKey, RequestParts};

use support::TestAgent;

async fn create_key(agent: &TestAgent, label: &str) -> Result<KeyInfo> {
    let answer = agent
        .post("/v1/keys", &json!({"backend": "software", "label": label}))
        .await?;
    ensure!(answer.status == 201, "create: {answer:?}");
    answer.ok_json()
}

fn sign_request(key_id: &str) -> SignRequest {
    SignRequest {
        key_id: key_id.to_owned(),
        audience: "payments".into(),
        method: "POST".into(),
        authority: "api.example.com:8443".into(),
        path: "/v1/transfers/%C3%A9t%C3%A9".into(),
        query: "currency=EUR&amount=10".into(),
        headers: vec![
            HeaderField {
                name: "Content-Type".into(),
                value: "application/json".into(),
            },
            HeaderField {
                name: "X-Request-Id".into(),
                value: "abc".into(),
            },
        ],
        body_sha256: sha256_hex(br#"{"to":"bob"}"#),
        signed_headers: vec!["x-request-id".into()],
        presign_expires_secs: None,
        encoding: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_the_software_backend() -> Result<()> {
    let agent = TestAgent::start().await?;
    let status: StatusResponse = agent.get_ok("/v1/status").await?;
    ensure!(status.version == env!("CARGO_PKG_VERSION"));
    ensure!(status.keys == 0);
    ensure!(
        status
            .backends
            .iter()
            .any(|b| b.name == "software" && b.available),
        "{status:?}"
    );
    create_key(&agent, "one").await?;
    let status: StatusResponse = agent.get_ok("/v1/status").await?;
    ensure!(status.keys == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn created_keys_are_listed() -> Result<()> {
    let agent = TestAgent::start().await?;
    let created = create_key(&agent, "laptop key").await?;
    ensure!(created.backend == "software");
    ensure!(created.level.as_str() == "software");
    ensure!(created.label == "laptop key");
    let public = PublicKey::from_spki_pem(&created.public_key_pem)?;
    ensure!(
        public.key_id() == created.id,
        "id is derived from the public key"
    );
    let list: KeyList = agent.get_ok("/v1/keys").await?;
    ensure!(list.keys == vec![created]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_headers_verify() -> Result<()> {
    let agent = TestAgent::start().await?;
    let key = create_key(&agent, "k").await?;
    let request = sign_request(&key.id);
    let response: SignResponse = agent.post("/v1/sign", &request).await?.ok_json()?;
    ensure!(response.key_id == key.id);
    ensure!(response.query_params.is_empty());
    let names: Vec<&str> = response.headers.iter().map(|h| h.name.as_str()).collect();
    ensure!(
        names
            == [
                "x-hws-date",
                "x-hws-content-sha256",
                "x-hws-nonce",
                "authorization"
            ],
        "{names:?}"
    );
    ensure!(response.headers[0].value == response.date);

    // Rebuild the request as a server would receive it, and verify it.
    let mut headers: Vec<(&str, &str)> = vec![("host", request.authority.as_str())];
    headers.extend(
        request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str())),
    );
    headers.extend(
        response
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str())),
    );
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &headers,
    };
    let claimed = parse_header_signed(&HWS1, &parts)?;
    ensure!(claimed.authorization.credential == key.id);
    ensure!(claimed.authorization.scope.audience == "payments");
    ensure!(claimed.payload_hash == request.body_sha256);
    for name in ["host", "x-request-id", "content-type", "x-hws-nonce"] {
        ensure!(
            claimed.authorization.signed_headers.contains(name),
            "{name} signed"
        );
    }
    let public = PublicKey::from_spki_pem(&key.public_key_pem)?;
    ensure!(public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));

    // A changed path no longer verifies.
    let tampered = RequestParts {
        path: "/v1/transfers/other",
        ..parts
    };
    let claimed = parse_header_signed(&HWS1, &tampered)?;
    ensure!(!public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));

    // Every signature gets a fresh nonce.
    let again: SignResponse = agent.post("/v1/sign", &request).await?.ok_json()?;
    ensure!(again.headers[2].value != response.headers[2].value);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_url_verifies() -> Result<()> {
    let agent = TestAgent::start().await?;
    let key = create_key(&agent, "k").await?;
    let mut request = sign_request(&key.id);
    request.method = "GET".into();
    request.headers.clear();
    request.signed_headers.clear();
    request.body_sha256 = EMPTY_SHA256.into();
    request.presign_expires_secs = Some(900);
    let response: SignResponse = agent.post("/v1/sign", &request).await?.ok_json()?;
    ensure!(response.headers.is_empty());
    let mut query = request.query.clone();
    for p in &response.query_params {
        query.push_str(&format!("&{}={}", p.name, p.value));
    }
    ensure!(
        response
            .query_params
            .last()
            .is_some_and(|p| p.name == "X-Hws-Signature")
    );
    let headers = [("host", request.authority.as_str())];
    let parts = RequestParts {
        method: "GET",
        path: &request.path,
        query: &query,
        headers: &headers,
    };
    let claimed = parse_presigned(&HWS1, &parts)?;
    ensure!(claimed.expires_secs == Some(900));
    let public = PublicKey::from_spki_pem(&key.public_key_pem)?;
    ensure!(public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));

    request.presign_expires_secs = Some(8 * 24 * 3600);
    agent
        .post("/v1/sign", &request)
        .await?
        .expect_error(400, "invalid_request")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_errors() -> Result<()> {
    let agent = TestAgent::start().await?;
    agent
        .call(Method::GET, "/v1/nothing", None)
        .await?
        .expect_error(404, "not_found")?;
    agent
        .call(Method::GET, "/", None)
        .await?
        .expect_error(404, "not_found")?;
    let answer = agent.call(Method::DELETE, "/v1/keys", None).await?;
    answer.expect_error(405, "method_not_allowed")?;
    ensure!(
        answer
            .headers
            .get("allow")
            .is_some_and(|v| v == "GET, POST")
    );
    agent
        .call(Method::GET, "/v1/sign", None)
        .await?
        .expect_error(405, "method_not_allowed")?;
    agent
        .call(Method::POST, "/v1/status", Some(b"{}".to_vec()))
        .await?
        .expect_error(405, "method_not_allowed")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies() -> Result<()> {
    let agent = TestAgent::start().await?;
    for body in [
        &b"not json"[..],
        b"",
        b"{\"backend\":\"software\"}",
        b"{\"backend\":\"software\",\"label\":\"x\",\"extra\":1}",
        b"[1,2,3]",
        b"{\"backend\":\"software\",\"label\":\"\xff\"}",
    ] {
        agent
            .call(Method::POST, "/v1/keys", Some(body.to_vec()))
            .await?
            .expect_error(400, "malformed_json")?;
        agent
            .call(Method::POST, "/v1/sign", Some(body.to_vec()))
            .await?
            .expect_error(400, "malformed_json")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn key_creation_errors() -> Result<()> {
    let agent = TestAgent::start().await?;
    agent
        .post("/v1/keys", &json!({"backend": "floppy", "label": "x"}))
        .await?
        .expect_error(400, "unknown_backend")?;
    #[cfg(not(feature = "tpm"))]
    agent
        .post("/v1/keys", &json!({"backend": "tpm", "label": "x"}))
        .await?
        .expect_error(400, "unknown_backend")?;
    for label in ["", "a\nb", &"x".repeat(65)] {
        agent
            .post("/v1/keys", &json!({"backend": "software", "label": label}))
            .await?
            .expect_error(400, "invalid_request")?;
    }
    let list: KeyList = agent.get_ok("/v1/keys").await?;
    ensure!(list.keys.is_empty(), "refused creations left no key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_errors() -> Result<()> {
    let agent = TestAgent::start().await?;
    let key = create_key(&agent, "k").await?;
    let unknown = format!("hk1_{}", "ab".repeat(16));
    let mut request = sign_request(&unknown);
    agent
        .post("/v1/sign", &request)
        .await?
        .expect_error(404, "unknown_key")?;

    type Change = Box<dyn Fn(&mut SignRequest)>;
    let cases: Vec<(&str, Change)> = vec![
        ("key id", Box::new(|r| r.key_id = "not-a-key".into())),
        ("method", Box::new(|r| r.method = "GE T".into())),
        ("path", Box::new(|r| r.path = "no-slash".into())),
        ("audience", Box::new(|r| r.audience = "Payments!".into())),
        ("body hash", Box::new(|r| r.body_sha256 = "abc".into())),
        (
            "unsigned payload",
            Box::new(|r| r.body_sha256 = "UNSIGNED-PAYLOAD".into()),
        ),
        ("authority", Box::new(|r| r.authority = "a/b".into())),
        ("empty authority", Box::new(|r| r.authority = String::new())),
        (
            "host header",
            Box::new(|r| {
                r.headers.push(HeaderField {
                    name: "Host".into(),
                    value: "other".into(),
                })
            }),
        ),
        (
            "signer-owned header",
            Box::new(|r| {
                r.headers.push(HeaderField {
                    name: "X-Hws-Nonce".into(),
                    value: "x".into(),
                })
            }),
        ),
        (
            "header value",
            Box::new(|r| {
                r.headers.push(HeaderField {
                    name: "X-Evil".into(),
                    value: "a\r\nb".into(),
                });
                r.signed_headers.push("x-evil".into());
            }),
        ),
        (
            "absent signed header",
            Box::new(|r| r.signed_headers.push("x-absent".into())),
        ),
    ];
    for (what, change) in cases {
        request = sign_request(&key.id);
        change(&mut request);
        let answer = agent.post("/v1/sign", &request).await?;
        answer
            .expect_error(400, "invalid_request")
            .map_err(|e| e.context(what))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn attestation_and_activation_of_software_keys_are_unsupported() -> Result<()> {
    let agent = TestAgent::start().await?;
    let key = create_key(&agent, "k").await?;
    let nonce = "AAECAwQFBgcICQoLDA0ODw";
    agent
        .call(
            Method::GET,
            &format!("/v1/keys/{}/attestation?nonce={nonce}", key.id),
            None,
        )
        .await?
        .expect_error(501, "unsupported")?;
    for query in ["", "?nonce=AAAA", "?nonce=***", "?other=1"] {
        agent
            .call(
                Method::GET,
                &format!("/v1/keys/{}/attestation{query}", key.id),
                None,
            )
            .await?
            .expect_error(400, "invalid_request")?;
    }
    let unknown = format!("hk1_{}", "cd".repeat(16));
    agent
        .call(
            Method::GET,
            &format!("/v1/keys/{unknown}/attestation?nonce={nonce}"),
            None,
        )
        .await?
        .expect_error(404, "unknown_key")?;
    agent
        .call(
            Method::GET,
            &format!("/v1/keys/bogus/attestation?nonce={nonce}"),
            None,
        )
        .await?
        .expect_error(400, "invalid_request")?;

    let path = format!("/v1/keys/{}/activate-credential", key.id);
    agent
        .post(
            &path,
            &json!({"credential_blob": "AAAA", "encrypted_secret": "AAAA"}),
        )
        .await?
        .expect_error(501, "unsupported")?;
    agent
        .post(
            &path,
            &json!({"credential_blob": "!!", "encrypted_secret": "AAAA"}),
        )
        .await?
        .expect_error(400, "invalid_request")?;
    agent
        .post(&path, &json!({"credential_blob": "AAAA"}))
        .await?
        .expect_error(400, "malformed_json")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_serves_many_requests_on_one_connection() -> Result<()> {
    let agent = TestAgent::start().await?;
    let key = create_key(&agent, "k").await?;
    let mut client = agent.connect().await?;
    for _ in 0..20 {
        let body = serde_json::to_vec(&sign_request(&key.id))?;
        let answer = client.call(Method::POST, "/v1/sign", Some(body)).await?;
        ensure!(answer.status == 200, "{answer:?}");
    }
    // An error answer keeps the connection usable too.
    client
        .call(Method::GET, "/v1/nothing", None)
        .await?
        .expect_error(404, "not_found")?;
    let status = client.call(Method::GET, "/v1/status", None).await?;
    ensure!(status.status == 200);
    Ok(())
}
