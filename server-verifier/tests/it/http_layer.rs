//! `HwsignLayer` in a real axum server on 127.0.0.1, called over real TCP by a hyper client with
//! requests signed by a real P-256 signer.

use crate::verify_support;

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
use hwsign_verifier::registry::{DeviceFacts, Fact, PostureReport};
use hwsign_verifier::{
    DeviceClock, DeviceRecord, HwsignLayer, KeyLevel, KeyRegistry, MemoryRegistry,
    MemoryReplayCache, PolicySettings, PresignPolicy, RouteRule, VerifiedDevice, Verifier,
    VerifierConfig,
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

/// An `Authorization` header whose value is not UTF-8 is a malformed request (400), not a
/// missing signature: the header is there, and the verifier says so.
#[tokio::test]
async fn a_non_utf8_authorization_is_malformed_not_missing() -> Result<()> {
    let server = start(1024).await?;
    let signed = sign(&server.key, &server.request("GET", "/v1/a", ""), &opts())?;
    let mut request = to_http(&signed)?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_bytes(b"HWS1-ECDSA-P256-SHA256 Credential=\xff")?,
    );
    let reply = send(server.addr, request).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::BAD_REQUEST, "malformed_request".into())
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

// --- Hardening (issue 9): time of check vs time of use, replay quotas, signed host. ---

/// The clock skew of the time-of-use tests: small, so that a window closes in seconds.
const SHORT_SKEW: u64 = 2;
/// Longer than any window of [`SHORT_SKEW`] (date + 2 s, measured from a whole second).
const PAST_THE_WINDOW: Duration = Duration::from_millis(3_500);

/// A server with a ±2 s window.
async fn start_short_window() -> Result<Server> {
    start_with(10_000, |config| config.clock_skew_secs = SHORT_SKEW).await
}

/// The request head as HTTP/1.1 text, with `framing` (`Content-Length: n` or
/// `Transfer-Encoding: chunked`) added.
fn raw_head(request: &TestRequest, framing: &str) -> String {
    let target = if request.query.is_empty() {
        request.path.clone()
    } else {
        format!("{}?{}", request.path, request.query)
    };
    let mut head = format!("{} {target} HTTP/1.1\r\n", request.method);
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(framing);
    head.push_str("\r\n\r\n");
    head
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_reply(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Result<Reply> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before a response");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end])?.to_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').context("bad header line")?;
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    let length: usize = headers
        .get(CONTENT_LENGTH)
        .context("no Content-Length")?
        .to_str()?
        .parse()?;
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Reply {
        status: StatusCode::from_u16(status)?,
        headers,
        body: Bytes::from(body),
    })
}

/// Sends `head` and `first`, holds `rest` back for `hold`, then sends it; returns the response
/// and how long after the head it arrived. A verifier that waits for the body answers after
/// `hold`; one with a body deadline may answer before.
async fn stalled(
    addr: SocketAddr,
    head: &str,
    first: &[u8],
    rest: &[u8],
    hold: Duration,
) -> Result<(Reply, Duration)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    write.write_all(head.as_bytes()).await?;
    write.write_all(first).await?;
    let rest = rest.to_vec();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        // The verifier may have answered and closed already.
        let _ = write.write_all(&rest).await;
        write
    });
    let reply = tokio::time::timeout(hold + Duration::from_secs(10), read_reply(&mut read))
        .await
        .context("no response")??;
    let elapsed = started.elapsed();
    writer.abort();
    Ok((reply, elapsed))
}

/// A captured request whose body (Content-Length, body held back) or chunked terminator (a GET)
/// arrives only after its window closed must not run: the verifier stops waiting at the window's
/// end and refuses `stale_date`; the handler never sees it. Before the fix the verifier judged
/// the date with the clock read before the body, so the late request was executed.
#[tokio::test]
async fn hardening_body_held_back_past_the_window_is_refused() -> Result<()> {
    let server = start_short_window().await?;
    let body = b"{\"amount\":500}";
    let post = sign(
        &server.key,
        &server.request("POST", "/v1/transfers", "").body(body),
        &opts(),
    )?;
    let post_head = raw_head(&post, &format!("Content-Length: {}", body.len()));
    let get = sign(
        &server.key,
        &server.request("GET", "/v1/items", ""),
        &opts(),
    )?;
    let get_head = raw_head(&get, "Transfer-Encoding: chunked");
    let (post_reply, get_reply) = tokio::join!(
        stalled(
            server.addr,
            &post_head,
            &body[..4],
            &body[4..],
            PAST_THE_WINDOW
        ),
        // No chunk at all, then the terminator only after the window.
        stalled(server.addr, &get_head, b"", b"0\r\n\r\n", PAST_THE_WINDOW),
    );
    for (what, (reply, elapsed)) in [("body", post_reply?), ("chunked terminator", get_reply?)] {
        assert_eq!(
            (reply.status, reply.refusal()?),
            (StatusCode::UNAUTHORIZED, "stale_date".into()),
            "{what}"
        );
        // Refused when the window closed (≤ 3 s after signing), not when the body came.
        assert!(
            elapsed < PAST_THE_WINDOW,
            "{what}: answered after {elapsed:?}"
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0, "a handler ran");
    Ok(())
}

/// The nonce is reserved before the body is read: while the first copy's body is still held
/// back, a second copy (complete) is refused `replayed_nonce` at once, and the first copy, once
/// its body arrives in time, is the one accepted. Before the fix the second copy was accepted
/// (the nonce was recorded only after the body), and so could the first be, later.
#[tokio::test]
async fn hardening_second_copy_while_the_first_is_stalled_is_a_replay() -> Result<()> {
    let server = start_with(10_000, |config| config.clock_skew_secs = 10).await?;
    let body = b"{\"amount\":500}";
    let signed = sign(
        &server.key,
        &server.request("POST", "/v1/transfers", "").body(body),
        &opts(),
    )?;
    let head = raw_head(&signed, &format!("Content-Length: {}", body.len()));
    let hold = Duration::from_millis(1_500);
    let first = tokio::spawn({
        let (addr, head) = (server.addr, head.clone());
        async move { stalled(addr, &head, &body[..4], &body[4..], hold).await }
    });
    // Let the first copy's head reach the verifier.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let second = send_signed(&server, &signed).await?;
    assert_eq!(
        (second.status, second.refusal()?),
        (StatusCode::UNAUTHORIZED, "replayed_nonce".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not refused at once"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    let (first, _) = first.await??;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.json()?["body_len"], body.len());
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    Ok(())
}

/// A key revoked while its request's body is held back: the revocation is checked again once
/// the body is complete (`device_revoked`, 403). Before the fix the registry was consulted only
/// before the body, so the request of a key revoked meanwhile was executed.
#[tokio::test]
async fn hardening_key_revoked_while_the_body_is_stalled_is_refused() -> Result<()> {
    let server = start_with(10_000, |config| config.clock_skew_secs = 10).await?;
    let body = b"{\"amount\":500}";
    let signed = sign(
        &server.key,
        &server.request("POST", "/v1/transfers", "").body(body),
        &opts(),
    )?;
    let head = raw_head(&signed, &format!("Content-Length: {}", body.len()));
    let hold = Duration::from_millis(1_000);
    let exchange = tokio::spawn({
        let addr = server.addr;
        async move { stalled(addr, &head, &body[..4], &body[4..], hold).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.registry.revoke(&server.key.id)?;
    let (reply, _) = exchange.await??;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::FORBIDDEN, "device_revoked".into())
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    // A delegated request whose device key is revoked while its body is held back, likewise.
    let server = start_with(10_000, |config| config.clock_skew_secs = 10).await?;
    let session = TestKey::from_seed("http-session-revoked")?;
    let now = opts().time;
    let statement = delegation_header(&server.device_key, &session, now - 5, now + 60)?;
    let signed = sign(
        &session,
        &server
            .request("POST", "/v1/transfers", "")
            .header("x-hws-delegation", &statement)
            .body(body),
        &opts(),
    )?;
    let head = raw_head(&signed, &format!("Content-Length: {}", body.len()));
    let exchange = tokio::spawn({
        let addr = server.addr;
        async move { stalled(addr, &head, &body[..4], &body[4..], hold).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.registry.revoke(&server.device_key.id)?;
    let (reply, _) = exchange.await??;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::FORBIDDEN, "device_revoked".into())
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    Ok(())
}

/// A presigned URL that expires, and a delegation statement that expires, while the request's
/// body (a chunked GET's terminator) is held back: refused, the handler never runs. Before the
/// fix both were judged with the clock read before the body and executed.
#[tokio::test]
async fn hardening_presigned_url_and_delegation_expiring_while_stalled_are_refused() -> Result<()> {
    let server = start_short_window().await?;
    let url = presign(
        &server.key,
        &server.request("GET", "/v1/download", "file=a.txt"),
        &opts(),
        1,
    )?;
    let url_head = raw_head(&url, "Transfer-Encoding: chunked");

    let session = TestKey::from_seed("http-session-expiring")?;
    let now = opts().time;
    // The statement ends at the request's own date: usable until date + skew.
    let statement = delegation_header(&server.device_key, &session, now - 5, now)?;
    let delegated = sign(
        &session,
        &server
            .request("GET", "/v1/items", "")
            .header("x-hws-delegation", &statement),
        &opts(),
    )?;
    let delegated_head = raw_head(&delegated, "Transfer-Encoding: chunked");

    let (url_reply, delegated_reply) = tokio::join!(
        stalled(server.addr, &url_head, b"", b"0\r\n\r\n", PAST_THE_WINDOW),
        stalled(
            server.addr,
            &delegated_head,
            b"",
            b"0\r\n\r\n",
            PAST_THE_WINDOW
        ),
    );
    for (what, (reply, elapsed)) in [("presigned", url_reply?), ("delegated", delegated_reply?)] {
        assert_eq!(
            (reply.status, reply.refusal()?),
            (StatusCode::UNAUTHORIZED, "stale_date".into()),
            "{what}"
        );
        assert!(
            elapsed < PAST_THE_WINDOW,
            "{what}: answered after {elapsed:?}"
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    // The same shapes, not held back, are accepted (so the refusals above are about time).
    let url = presign(
        &server.key,
        &server.request("GET", "/v1/download", "file=a.txt"),
        &opts(),
        1,
    )?;
    assert_eq!(send_signed(&server, &url).await?.status, StatusCode::OK);
    let now = opts().time;
    let statement = delegation_header(&server.device_key, &session, now - 5, now)?;
    let delegated = sign(
        &session,
        &server
            .request("GET", "/v1/items", "")
            .header("x-hws-delegation", &statement),
        &opts(),
    )?;
    let reply = send_signed(&server, &delegated).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()?["delegated"], true);
    Ok(())
}

/// One key cannot fill the shared replay cache: past its quota of live nonces it gets 429
/// `rate_limited`, another key still gets in; only a cache full across keys is 503
/// `verifier_unavailable`. Before the fix the first key's presigned URLs filled the cache and
/// every client got 503.
#[tokio::test]
async fn hardening_one_key_over_its_replay_quota_is_rate_limited() -> Result<()> {
    let server = start_with(5, |config| config.replay_quota_per_key = 3).await?;
    for i in 0..3 {
        let url = presign(
            &server.key,
            &server.request("GET", "/v1/download", &format!("file={i}")),
            &opts(),
            900,
        )?;
        assert_eq!(send_signed(&server, &url).await?.status, StatusCode::OK);
    }
    let over = presign(
        &server.key,
        &server.request("GET", "/v1/download", "file=3"),
        &opts(),
        900,
    )?;
    let reply = send_signed(&server, &over).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    let header_signed = sign(&server.key, &server.request("GET", "/v1/a", ""), &opts())?;
    assert_eq!(
        send_signed(&server, &header_signed).await?.refusal()?,
        "rate_limited"
    );
    // Another key is not affected...
    for path in ["/v1/b", "/v1/c"] {
        let other = sign(&server.tpm_key, &server.request("GET", path, ""), &opts())?;
        assert_eq!(send_signed(&server, &other).await?.status, StatusCode::OK);
    }
    // ...until the whole cache (5) is full of live nonces: then 503, fail closed.
    let full = sign(
        &server.tpm_key,
        &server.request("GET", "/v1/d", ""),
        &opts(),
    )?;
    let reply = send_signed(&server, &full).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "verifier_unavailable".into()
        )
    );
    Ok(())
}

/// Presigned URLs are bounded: longer than `max_presign_expiry_secs` (default 15 minutes) is
/// refused `policy_denied`; a route rule can refuse them (`deny`) or allow them for GET/HEAD
/// only. Before the fix a registered key could presign 7-day URLs for any method and route.
#[tokio::test]
async fn hardening_presigned_urls_are_limited_by_lifetime_and_route() -> Result<()> {
    let server = start_with(10_000, |config| {
        config.route_rules = vec![
            RouteRule {
                presigned: PresignPolicy::Deny,
                ..RouteRule::new("/admin/", KeyLevel::Tpm)
            },
            RouteRule {
                presigned: PresignPolicy::GetHeadOnly,
                ..RouteRule::new("/v1/files/", KeyLevel::Software)
            },
        ];
    })
    .await?;
    let presigned = |key: &TestKey, method: &str, path: &str, expires: u64| {
        presign(key, &server.request(method, path, ""), &opts(), expires)
    };
    let week = presigned(&server.key, "GET", "/v1/download", 604_800)?;
    let reply = send_signed(&server, &week).await?;
    assert_eq!(
        (reply.status, reply.refusal()?),
        (StatusCode::FORBIDDEN, "policy_denied".into())
    );
    let quarter = presigned(&server.key, "GET", "/v1/download", 900)?;
    assert_eq!(send_signed(&server, &quarter).await?.status, StatusCode::OK);

    for (key, method, path) in [
        (&server.tpm_key, "GET", "/admin/keys"),
        (&server.key, "PUT", "/v1/files/a"),
        (&server.key, "DELETE", "/v1/files/a"),
    ] {
        let url = presigned(key, method, path, 60)?;
        let reply = send_signed(&server, &url).await?;
        assert_eq!(
            (reply.status, reply.refusal()?),
            (StatusCode::FORBIDDEN, "policy_denied".into()),
            "{method} {path}"
        );
    }
    for method in ["GET", "HEAD"] {
        let url = presigned(&server.key, method, "/v1/files/a", 60)?;
        assert_eq!(
            send_signed(&server, &url).await?.status,
            StatusCode::OK,
            "{method}"
        );
    }
    // Header-signed requests are not affected by the presign rule.
    let admin = sign(
        &server.tpm_key,
        &server.request("GET", "/admin/keys", ""),
        &opts(),
    )?;
    assert_eq!(send_signed(&server, &admin).await?.status, StatusCode::OK);
    let put = sign(
        &server.key,
        &server.request("PUT", "/v1/files/a", ""),
        &opts(),
    )?;
    assert_eq!(send_signed(&server, &put).await?.status, StatusCode::OK);
    Ok(())
}

/// The signed Host must be one the verifier serves: a request signed for staging is refused
/// `wrong_host` by production even with the same audience. Case and default ports do not
/// matter; `*.example.com` is one label. Before the fix any signed host was accepted.
#[tokio::test]
async fn hardening_signed_host_must_be_served() -> Result<()> {
    let server = start_with(10_000, |config| {
        config
            .hosts
            .extend(["api.example.com".to_owned(), "*.example.net".to_owned()]);
    })
    .await?;
    for (host, expected) in [
        ("api.example.com", None),
        ("API.Example.COM:443", None),
        ("api.example.com:80", None),
        ("eu.example.net", None),
        ("staging.example.org", Some("wrong_host")),
        ("api.example.com:8443", Some("wrong_host")),
        ("a.eu.example.net", Some("wrong_host")),
        ("example.net", Some("wrong_host")),
    ] {
        let request = TestRequest::new("GET", "/v1/a", "", host);
        let signed = sign(&server.key, &request, &opts())?;
        let reply = send_signed(&server, &signed).await?;
        match expected {
            None => assert_eq!(reply.status, StatusCode::OK, "{host}: {:?}", reply.body),
            Some(code) => assert_eq!(
                (reply.status, reply.refusal()?),
                (StatusCode::UNAUTHORIZED, code.into()),
                "{host}"
            ),
        }
    }
    // A presigned URL for another host likewise.
    let url = presign(
        &server.key,
        &TestRequest::new("GET", "/v1/download", "", "staging.example.org"),
        &opts(),
        60,
    )?;
    assert_eq!(send_signed(&server, &url).await?.refusal()?, "wrong_host");
    Ok(())
}

/// The handler can tell which headers the signature covers: a signed `X-Forwarded-Host` is
/// listed, an `X-HTTP-Method-Override` added on the way is not.
#[tokio::test]
async fn hardening_handler_sees_which_headers_are_signed() -> Result<()> {
    let server = start(1024).await?;
    let request = server
        .request("GET", "/v1/a", "")
        .header("x-forwarded-host", "shop.example.com");
    let signed = sign(
        &server.key,
        &request,
        &SignOptions {
            extra_signed: vec!["x-forwarded-host".into()],
            ..opts()
        },
    )?
    .header("x-http-method-override", "DELETE");
    let reply = send_signed(&server, &signed).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let seen = reply.json()?;
    assert_eq!(seen["signs_x_forwarded_host"], true);
    assert_eq!(seen["signs_x_http_method_override"], false);
    let names: Vec<&str> = seen["signed_headers"]
        .as_array()
        .context("no signed_headers")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"host") && names.contains(&"x-forwarded-host"));
    assert!(!names.contains(&"x-http-method-override"));
    Ok(())
}

// ---- Device policy (Cedar, docs/POLICY.md) ----

/// Writes `files` into a fresh policy directory.
fn policy_dir(files: &[(&str, &str)]) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text)?;
    }
    Ok(dir)
}

/// A server whose verifier loads the policies in `files` (covering every route).
async fn start_with_policies(
    files: &[(&str, &str)],
    settings: impl FnOnce(&mut PolicySettings),
) -> Result<Server> {
    let dir = policy_dir(files)?;
    let mut policy = PolicySettings::new(dir.path());
    settings(&mut policy);
    // The policies are loaded when the verifier is built; the directory may go after that.
    start_with(10_000, |config| config.policy = Some(policy)).await
}

const BASELINE: &str = r#"
@id("baseline")
permit(principal, action, resource);
"#;

const ADMIN_TPM_ONLY: &str = r#"
// Only TPM-level keys under /v1/admin.
@id("admin-tpm-only")
forbid(principal, action, resource in Hws::Route::"/v1/admin")
unless { context.level == "tpm" };
"#;

/// A route whose policy allows only `tpm`-level keys refuses a software key (403
/// `policy_denied`, the handler never runs) under every spelling of the path, and lets a
/// tpm-level key through; other routes stay open under the baseline permit. Before the policy
/// hook the software key reached the handler (no route rule covers /v1/admin).
#[tokio::test]
async fn policy_tpm_only_route_refuses_a_software_key_and_allows_a_tpm_key() -> Result<()> {
    let server = start_with_policies(
        &[
            ("00-baseline.cedar", BASELINE),
            ("admin.cedar", ADMIN_TPM_ONLY),
        ],
        |_| {},
    )
    .await?;
    for path in [
        "/v1/admin/keys",
        "/v1/%61dmin/keys",
        "/v1//admin/keys",
        "/v1/x/../admin/keys",
    ] {
        let request = sign(&server.key, &server.request("POST", path, ""), &opts())?;
        let reply = send_signed(&server, &request).await?;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {:?}",
            reply.body
        );
        assert_eq!(reply.refusal()?, "policy_denied");
        // Reasons stay in the log unless the setting says otherwise.
        assert!(!String::from_utf8_lossy(&reply.body).contains("admin-tpm-only"));
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    let request = sign(
        &server.tpm_key,
        &server.request("POST", "/v1/admin/keys", ""),
        &opts(),
    )?;
    let reply = send_signed(&server, &request).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()?["level"], "tpm");

    let request = sign(
        &server.key,
        &server.request("GET", "/v1/items", ""),
        &opts(),
    )?;
    assert_eq!(send_signed(&server, &request).await?.status, StatusCode::OK);

    // A path deeper than the policy models is refused, not cut short (cutting would drop
    // /v1/admin from its ancestors), whatever the key.
    let deep = format!(
        "/v1/admin{}",
        "/x".repeat(hwsign_verifier::policy::MAX_ROUTE_DEPTH)
    );
    for key in [&server.key, &server.tpm_key] {
        let request = sign(key, &server.request("GET", &deep, ""), &opts())?;
        let reply = send_signed(&server, &request).await?;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
        assert_eq!(reply.refusal()?, "policy_denied");
    }
    Ok(())
}

/// With `reveal_reasons`, the refusal names the determining policy; a route outside `covers`
/// is decided by the route rules alone (today's behaviour), while a covered route that no
/// `permit` matches is refused (Cedar's default deny).
#[tokio::test]
async fn policy_covers_and_reveal_reasons() -> Result<()> {
    let server = start_with_policies(&[("admin.cedar", ADMIN_TPM_ONLY)], |settings| {
        settings.covers = vec!["/v1/admin/".into()];
        settings.reveal_reasons = true;
    })
    .await?;
    let request = sign(
        &server.key,
        &server.request("GET", "/v1/items", ""),
        &opts(),
    )?;
    assert_eq!(send_signed(&server, &request).await?.status, StatusCode::OK);

    let request = sign(
        &server.key,
        &server.request("GET", "/v1/admin/keys", ""),
        &opts(),
    )?;
    let reply = send_signed(&server, &request).await?;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.refusal()?, "policy_denied");
    let message = reply.json()?["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("admin-tpm-only"), "{message}");

    // No permit at all for the tpm key: default deny, named as such.
    let request = sign(
        &server.tpm_key,
        &server.request("GET", "/v1/admin/keys", ""),
        &opts(),
    )?;
    let reply = send_signed(&server, &request).await?;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let message = reply.json()?["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("default-deny"), "{message}");
    Ok(())
}

/// A policy forbidding delegated requests on /v1/payouts refuses a request signed by a
/// delegated session key, and accepts the device key itself (strict) and delegated requests
/// elsewhere.
#[tokio::test]
async fn policy_forbids_delegated_requests_on_payouts() -> Result<()> {
    const NO_DELEGATED_PAYOUTS: &str = r#"
@id("payouts-strict")
forbid(principal, action in Hws::Action::"write", resource in Hws::Route::"/v1/payouts")
when { context.delegated };
"#;
    let server = start_with_policies(
        &[
            ("baseline.cedar", BASELINE),
            ("payouts.cedar", NO_DELEGATED_PAYOUTS),
        ],
        |_| {},
    )
    .await?;
    let session = TestKey::from_seed("policy-session")?;
    let now = opts().time;
    let statement = delegation_header(&server.device_key, &session, now - 5, now + 60)?;
    let delegated = |method: &str, path: &str| {
        sign(
            &session,
            &server
                .request(method, path, "")
                .header("x-hws-delegation", &statement),
            &opts(),
        )
    };

    let reply = send_signed(&server, &delegated("POST", "/v1/payouts/7")?).await?;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_eq!(reply.refusal()?, "policy_denied");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    let strict = sign(
        &server.device_key,
        &server.request("POST", "/v1/payouts/7", ""),
        &opts(),
    )?;
    let reply = send_signed(&server, &strict).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()?["delegated"], false);

    for (method, path) in [("GET", "/v1/payouts/7"), ("POST", "/v1/items")] {
        let reply = send_signed(&server, &delegated(method, path)?).await?;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{method} {path}: {:?}",
            reply.body
        );
        assert_eq!(reply.json()?["delegated"], true);
    }
    Ok(())
}

/// Collects what the tracing subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// What the test binary's global tracing subscriber wrote (installed once, on first use). A
/// global subscriber, not a scoped one: tests run in parallel threads, and a callsite first hit
/// by another thread would otherwise stay disabled for the scoped one.
fn global_logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
    .clone()
}

/// Every decision is logged with the ids of the policies that determined it: the forbid that
/// refused, the permit that allowed.
#[tokio::test]
async fn policy_decision_logs_the_determining_policy_id() -> Result<()> {
    let logs = global_logs();
    let server = start_with_policies(
        &[
            ("00-baseline.cedar", BASELINE),
            ("admin.cedar", ADMIN_TPM_ONLY),
        ],
        |_| {},
    )
    .await?;
    // Keys of this test's own, so its log lines are told apart from other tests'.
    let software = TestKey::from_seed("policy-log-software")?;
    let tpm = TestKey::from_seed("policy-log-tpm")?;
    server
        .registry
        .add(software.registered("log-laptop", KeyLevel::Software))?;
    server
        .registry
        .add(tpm.registered("log-tpm", KeyLevel::Tpm))?;
    let request = sign(
        &software,
        &server.request("GET", "/v1/admin/keys", ""),
        &opts(),
    )?;
    assert_eq!(
        send_signed(&server, &request).await?.status,
        StatusCode::FORBIDDEN
    );
    let request = sign(&tpm, &server.request("GET", "/v1/admin/keys", ""), &opts())?;
    assert_eq!(send_signed(&server, &request).await?.status, StatusCode::OK);

    let text = logs.text();
    let decision = |key: &TestKey| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("policy decision") && l.contains(&key.id))
            .map(str::to_owned)
            .collect()
    };
    let refused = decision(&software);
    assert_eq!(refused.len(), 1, "{text}");
    assert!(refused[0].contains("hwsign::policy"), "{text}");
    assert!(
        refused[0].contains("decision=\"deny\"") || refused[0].contains("decision=deny"),
        "{text}"
    );
    assert!(refused[0].contains("policies=admin-tpm-only"), "{text}");
    let allowed = decision(&tpm);
    assert_eq!(allowed.len(), 1, "{text}");
    assert!(allowed[0].contains("allow"), "{text}");
    assert!(allowed[0].contains("policies=baseline"), "{text}");
    Ok(())
}

/// A fact software reported (`claimed`) cannot satisfy a rule that demands the TPM attested
/// it: the same report marked attested (as a quote-verified report will be) is accepted.
#[tokio::test]
async fn policy_claimed_fact_cannot_satisfy_a_rule_requiring_it_attested() -> Result<()> {
    const VAULT: &str = r#"
@id("vault-needs-attested-disk-encryption")
forbid(principal, action, resource in Hws::Route::"/v1/vault")
unless {
    context.posture has disk_encrypted &&
    context.posture.disk_encrypted.value &&
    context.posture.disk_encrypted.attested
};
"#;
    let server = start_with_policies(
        &[("baseline.cedar", BASELINE), ("vault.cedar", VAULT)],
        |_| {},
    )
    .await?;
    let device_id = "tpm-0123456789abcdef0123456789abcdef";
    server.registry.add_device(DeviceRecord {
        id: device_id.into(),
        ek_cert_sha256: "ab".repeat(32),
        ak_public: vec![1, 2, 3],
        clock: DeviceClock::default(),
        firmware_version: 7,
        pcr_baseline: vec![[0u8; 32]; 8],
        enrolled_unix: opts().time - 100,
        revoked: false,
    })?;
    let key = TestKey::from_seed("policy-enrolled")?;
    let mut registered = key.registered("enrolled", KeyLevel::Tpm);
    registered.device_id = Some(device_id.into());
    server.registry.add(registered)?;

    let vault = || {
        sign(
            &key,
            &server.request("GET", "/v1/vault/secret", ""),
            &opts(),
        )
    };
    // No posture report at all: unknown, refused.
    assert_eq!(
        send_signed(&server, &vault()?).await?.status,
        StatusCode::FORBIDDEN
    );

    let mut facts = DeviceFacts {
        posture: Some(PostureReport {
            received_unix: opts().time - 10,
            disk_encrypted: Some(Fact::claimed(true)),
            ..PostureReport::default()
        }),
        ..DeviceFacts::default()
    };
    server.registry.put_device_facts(device_id, &facts)?;
    let reply = send_signed(&server, &vault()?).await?;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_eq!(reply.refusal()?, "policy_denied");

    facts.posture = Some(PostureReport {
        received_unix: opts().time - 10,
        disk_encrypted: Some(Fact::attested(true)),
        ..PostureReport::default()
    });
    server.registry.put_device_facts(device_id, &facts)?;
    let reply = send_signed(&server, &vault()?).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    Ok(())
}
