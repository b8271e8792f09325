//! `HwsignLayer` in a real axum server on 127.0.0.1, called over real TCP by a hyper client with
//! requests signed by a real P-256 signer.

mod verify_support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{any, get};
use http::header::{CONTENT_LENGTH, HOST, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hwsign_verifier::{
    HwsignLayer, KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RouteRule,
    VerifiedDevice, Verifier, VerifierConfig,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use verify_support::{SignOptions, TestKey, TestRequest, delegation_header, presign, sign};

/// Signing options dated now: the layer reads the system clock.
fn opts() -> SignOptions {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    SignOptions {
        time: now,
        ..SignOptions::default()
    }
}

struct Server {
    addr: SocketAddr,
    key: TestKey,
    tpm_key: TestKey,
    /// A device key (level tpm) that may delegate to session keys.
    device_key: TestKey,
    registry: Arc<MemoryRegistry>,
    /// Requests that reached a handler.
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    State(hits): State<Arc<AtomicUsize>>,
    VerifiedDevice(who): VerifiedDevice,
    request: Request<axum::body::Body>,
) -> axum::Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    axum::Json(json!({
        "key_id": who.key_id,
        "label": who.label,
        "level": who.level.as_str(),
        "method": method,
        "path": path,
        "body_len": body.len(),
        "body_sha256": hex::encode(Sha256::digest(&body)),
        "delegated": who.delegated,
        "signed_headers": who.signed_headers,
        "signs_x_forwarded_host": who.signs_header("X-Forwarded-Host"),
        "signs_x_http_method_override": who.signs_header("x-http-method-override"),
    }))
}

async fn start(max_body_bytes: u64) -> Result<Server> {
    start_with(10_000, |config| config.max_body_bytes = max_body_bytes).await
}

/// A server whose verifier serves its own address and has a replay cache of `replay_capacity`;
/// `configure` adjusts the rest.
async fn start_with(
    replay_capacity: usize,
    configure: impl FnOnce(&mut VerifierConfig),
) -> Result<Server> {
    let key = TestKey::from_seed("http-software")?;
    let tpm_key = TestKey::from_seed("http-tpm")?;
    let device_key = TestKey::from_seed("http-device")?;
    let revoked = TestKey::from_seed("http-revoked")?;
    let registry = Arc::new(MemoryRegistry::new());
    registry.add(key.registered("laptop", KeyLevel::Software))?;
    registry.add(tpm_key.registered("tpm", KeyLevel::Tpm))?;
    registry.add(device_key.registered("device", KeyLevel::Tpm))?;
    registry.add(revoked.registered("stolen", KeyLevel::Software))?;
    registry.revoke(&revoked.id)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = VerifierConfig::new(verify_support::AUDIENCE, [addr.to_string()]);
    config.route_rules = vec![RouteRule::new("/admin/", KeyLevel::Tpm)];
    configure(&mut config);
    let verifier = Arc::new(Verifier::new(
        config,
        Arc::clone(&registry) as Arc<dyn KeyRegistry>,
        Arc::new(MemoryReplayCache::new(replay_capacity)),
    )?);
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/v1/{*rest}", any(echo))
        .route("/admin/{*rest}", any(echo))
        .with_state(Arc::clone(&hits))
        .layer(HwsignLayer::new(verifier))
        .merge(Router::new().route(
            "/unprotected",
            get(|VerifiedDevice(who): VerifiedDevice| async move { who.key_id }),
        ));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server {
        addr,
        key,
        tpm_key,
        device_key,
        registry,
        hits,
        task,
    })
}

impl Server {
    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn request(&self, method: &str, path: &str, query: &str) -> TestRequest {
        TestRequest::new(method, path, query, &self.host())
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("body {:?}", self.body))
    }

    /// Asserts a refusal in the documented shape and returns its code.
    fn refusal(&self) -> Result<String> {
        let code = self.json()?["error"]["code"]
            .as_str()
            .context("no error.code")?
            .to_owned();
        assert!(self.json()?["error"]["message"].is_string());
        let challenge = self
            .headers
            .get(WWW_AUTHENTICATE)
            .context("no WWW-Authenticate")?;
        assert_eq!(challenge.to_str()?, format!("HWS1 error=\"{code}\""));
        assert_eq!(
            self.headers
                .get(http::header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        Ok(code)
    }
}

async fn send<B>(addr: SocketAddr, request: Request<B>) -> Result<Reply>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn to_http(request: &TestRequest) -> Result<Request<Full<Bytes>>> {
    let uri = if request.query.is_empty() {
        request.path.clone()
    } else {
        format!("{}?{}", request.path, request.query)
    };
    let mut builder = Request::builder().method(request.method.as_str()).uri(uri);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Full::new(Bytes::from(request.body.clone())))?)
}

async fn send_signed(server: &Server, request: &TestRequest) -> Result<Reply> {
    send(server.addr, to_http(request)?).await
}

#[tokio::test]
async fn signed_requests_reach_the_handler_with_their_principal_and_body() -> Result<()> {
    let server = start(10 * 1024 * 1024).await?;
    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let requests = [
        server.request("GET", "/v1/items", "b=2&a=1&empty="),
        server
            .request("POST", "/v1/items", "")
            .header("content-type", "application/json")
            .body(br#"{"amount":5}"#),
        server.request("PUT", "/v1/items/42", "v=%2Fx").body(&big),
        server.request("DELETE", "/v1/items/42", ""),
        server.request("GET", "/v1/caf%C3%A9/%E2%82%AC%20x", ""),
        server.request("POST", "/v1/empty", ""),
    ];
    for request in requests {
        let signed = sign(&server.key, &request, &opts())?;
        let reply = send_signed(&server, &signed).await?;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{} {}: {:?}",
            request.method,
            request.path,
            reply.body
        );
        let seen = reply.json()?;
        assert_eq!(seen["key_id"], server.key.id.as_str());
        assert_eq!(seen["label"], "laptop");
        assert_eq!(seen["level"], "software");
        assert_eq!(seen["method"], request.method.as_str());
        assert_eq!(seen["path"], request.path.as_str());
        assert_eq!(seen["body_len"], request.body.len());
        assert_eq!(
            seen["body_sha256"],
            hex::encode(Sha256::digest(&request.body))
        );
    }

    // A presigned URL: the signature travels in the query.
    let url = presign(
        &server.key,
        &server.request("GET", "/v1/download", "file=a.txt"),
        &opts(),
        300,
    )?;
    let reply = send_signed(&server, &url).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()?["key_id"], server.key.id.as_str());
    let reused = send_signed(&server, &url).await?;
    assert_eq!(reused.refusal()?, "replayed_nonce");
    Ok(())
}

#[tokio::test]
async fn refusals_carry_status_code_and_challenge() -> Result<()> {
    let server = start(10 * 1024 * 1024).await?;
    let key = &server.key;

    let unsigned = send_signed(&server, &server.request("GET", "/v1/a", "")).await?;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unsigned.refusal()?, "missing_authorization");

    let mut tampered = sign(
        key,
        &server.request("POST", "/v1/a", "").body(b"pay 5"),
        &opts(),
    )?;
    tampered.body = b"pay 500".to_vec();
    let reply = send_signed(&server, &tampered).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::UNAUTHORIZED, "body_hash_mismatch".into())
    );

    let once = sign(key, &server.request("GET", "/v1/a", ""), &opts())?;
    assert_eq!(send_signed(&server, &once).await?.status, StatusCode::OK);
    let replay = send_signed(&server, &once).await?;
    assert_eq!(
        (replay.status, replay.refusal()?),
        (StatusCode::UNAUTHORIZED, "replayed_nonce".into())
    );

    let now = opts().time;
    let fresh = |time| SignOptions { time, ..opts() };
    let current = sign(key, &server.request("GET", "/v1/now", ""), &fresh(now))?;
    assert_eq!(send_signed(&server, &current).await?.status, StatusCode::OK);
    for time in [now - 3600, now + 3600] {
        let stale = sign(key, &server.request("GET", "/v1/a", ""), &fresh(time))?;
        let reply = send_signed(&server, &stale).await?;
        assert_eq!(
            (reply.status, reply.refusal()?),
            (StatusCode::UNAUTHORIZED, "stale_date".into())
        );
    }

    let revoked = TestKey::from_seed("http-revoked")?;
    let reply = send_signed(
        &server,
        &sign(&revoked, &server.request("GET", "/v1/a", ""), &opts())?,
    )
    .await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::FORBIDDEN, "device_revoked".into())
    );

    let unknown = TestKey::from_seed("http-unknown")?;
    let reply = send_signed(
        &server,
        &sign(&unknown, &server.request("GET", "/v1/a", ""), &opts())?,
    )
    .await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::UNAUTHORIZED, "unknown_key".into())
    );

    let admin = server.request("GET", "/admin/keys", "");
    let reply = send_signed(&server, &sign(key, &admin, &opts())?).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::FORBIDDEN, "policy_denied".into())
    );
    let reply = send_signed(&server, &sign(&server.tpm_key, &admin, &opts())?).await?;
    assert_eq!(reply.status, StatusCode::OK);

    let mut garbled = sign(key, &server.request("GET", "/v1/a", ""), &opts())?;
    garbled.set_header("authorization", "HWS1-ECDSA-P256-SHA256 nonsense");
    let reply = send_signed(&server, &garbled).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::UNAUTHORIZED, "malformed_authorization".into())
    );
    Ok(())
}

/// A body that never produces data but declares its length.
struct Stalled(u64);

impl Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0)
    }
}

/// A body of chunks with no declared length (sent chunked).
struct Chunked(VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

fn with_body<B>(request: &TestRequest, body: B) -> Result<Request<B>> {
    let (parts, _) = to_http(request)?.into_parts();
    Ok(Request::from_parts(parts, body))
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() -> Result<()> {
    let server = start(1024).await?;
    let key = &server.key;

    // Declared too large: refused before a byte of the body is sent.
    let declared = sign(
        key,
        &server.request("PUT", "/v1/a", "").body(&[1u8; 2048]),
        &opts(),
    )?;
    let mut request = with_body(&declared, Stalled(2048))?;
    request
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(2048u64));
    let reply = send(server.addr, request).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );

    // No Content-Length: counted while streaming.
    let streamed = sign(
        key,
        &server.request("PUT", "/v1/a", "").body(&[2u8; 1500]),
        &opts(),
    )?;
    let chunks = VecDeque::from(vec![
        Bytes::from(vec![2u8; 700]),
        Bytes::from(vec![2u8; 800]),
    ]);
    let reply = send(server.addr, with_body(&streamed, Chunked(chunks))?).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );

    // Exactly the limit, streamed in pieces, is accepted and reassembled.
    let body: Vec<u8> = (0..1024).map(|i| (i % 7) as u8).collect();
    let at_limit = sign(
        key,
        &server.request("PUT", "/v1/a", "").body(&body),
        &opts(),
    )?;
    let chunks = body.chunks(100).map(Bytes::copy_from_slice).collect();
    let reply = send(server.addr, with_body(&at_limit, Chunked(chunks))?).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        reply.json()?["body_sha256"],
        hex::encode(Sha256::digest(&body))
    );
    Ok(())
}

#[tokio::test]
async fn ambiguous_requests_are_malformed() -> Result<()> {
    let server = start(10 * 1024 * 1024).await?;
    let key = &server.key;
    let signed = sign(key, &server.request("GET", "/v1/a", ""), &opts())?;

    let mut two_hosts = to_http(&signed)?;
    two_hosts
        .headers_mut()
        .append(HOST, HeaderValue::from_static("evil.example.com"));
    let reply = send(server.addr, two_hosts).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::BAD_REQUEST, "malformed_request".into())
    );

    let mut other_authority = to_http(&signed)?;
    *other_authority.uri_mut() = "http://evil.example.com/v1/a".parse()?;
    let reply = send(server.addr, other_authority).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::BAD_REQUEST, "malformed_request".into())
    );

    // Absolute form naming the same authority as Host is fine.
    let same = sign(key, &server.request("GET", "/v1/a", ""), &opts())?;
    let mut same_authority = to_http(&same)?;
    *same_authority.uri_mut() = format!("http://{}/v1/a", server.host()).parse()?;
    assert_eq!(
        send(server.addr, same_authority).await?.status,
        StatusCode::OK
    );

    // A signed header whose value is not UTF-8.
    let purpose = || SignOptions {
        extra_signed: vec!["x-purpose".into()],
        ..opts()
    };
    let with_purpose = sign(
        key,
        &server
            .request("GET", "/v1/a", "")
            .header("x-purpose", "refund"),
        &purpose(),
    )?;
    let mut non_utf8 = to_http(&with_purpose)?;
    non_utf8
        .headers_mut()
        .insert("x-purpose", HeaderValue::from_bytes(b"r\xe9fund")?);
    let reply = send(server.addr, non_utf8).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::BAD_REQUEST, "malformed_request".into())
    );

    // A second, non-UTF-8 copy of a signed header next to the signed one.
    let with_purpose = sign(
        key,
        &server
            .request("GET", "/v1/a", "")
            .header("x-purpose", "refund"),
        &purpose(),
    )?;
    let mut smuggled = to_http(&with_purpose)?;
    smuggled
        .headers_mut()
        .append("x-purpose", HeaderValue::from_bytes(b"payout\xff")?);
    let reply = send(server.addr, smuggled).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::BAD_REQUEST, "malformed_request".into())
    );

    // A non-UTF-8 header that is not signed does not matter to the signature.
    let plain = sign(key, &server.request("GET", "/v1/a", ""), &opts())?;
    let mut unsigned_extra = to_http(&plain)?;
    unsigned_extra
        .headers_mut()
        .insert("x-trace", HeaderValue::from_bytes(b"\xe9t\xe9")?);
    assert_eq!(
        send(server.addr, unsigned_extra).await?.status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn extractor_outside_the_layer_fails_closed() -> Result<()> {
    let server = start(1024).await?;
    let signed = sign(
        &server.key,
        &server.request("GET", "/unprotected", ""),
        &opts(),
    )?;
    let reply = send_signed(&server, &signed).await?;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()?["error"]["code"], "verifier_unavailable");
    Ok(())
}
