//! `hwsign-verifier serve` end to end (issue 11): the real agent signs, real `serve` processes
//! verify and forward to a real Python upstream, nginx terminates TLS in front.
//!
//! The replay cache is a parameter of the harness ([`REPLAY_CACHE`]). With `memory`, each replica
//! has its own cache, so a request replayed to *another* replica is not refused: the tests here
//! replay to the same replica. The cross-replica tests of issue 11 item 5 run the same harness
//! with the shared Redis URL once the fleet stores land.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::fleet::{
    FLEET_HOST, Fleet, PythonUpstream, ServeProcess, ServeSettings, TlsFiles, send_raw_tls,
};
use hwsign_e2e::{
    AUDIENCE, AgentProcess, RawResponse, create_key, expect_refusal, send_raw, signed, to_raw,
};
use hwsign_proto::api::KeyLevel;
use hwsign_test_support::nginx::{Nginx, SelfSignedCert};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The replay cache every replica uses.
const REPLAY_CACHE: &str = "memory";

struct Setup {
    _agent: AgentProcess,
    upstream: PythonUpstream,
    fleet: Fleet,
    signer: Signer,
    key_id: String,
}

async fn setup(replicas: usize, adjust: impl Fn(&mut ServeSettings)) -> Result<Setup> {
    let agent = AgentProcess::start()?;
    let upstream = PythonUpstream::start()?;
    let fleet = Fleet::start(replicas, REPLAY_CACHE, upstream.addr(), adjust).await?;
    let (key_id, public) = create_key(&agent.client(), "software", "fleet").await?;
    fleet.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    Ok(Setup {
        _agent: agent,
        upstream,
        fleet,
        signer,
        key_id,
    })
}

fn request(method: &str, url: &str, body: &[u8]) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.to_vec())?)
}

fn url(path: &str) -> String {
    format!("http://{FLEET_HOST}{path}")
}

/// Signs `method url body` and returns the raw bytes to send.
async fn signed_raw(signer: &Signer, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>> {
    to_raw(&signed(signer, request(method, &url(path), body)?).await?)
}

/// Sends freshly signed `GET path` requests to `addr` until one is refused (a revocation made
/// elsewhere takes effect within the registry's change signal: SQLite's check interval,
/// PostgreSQL's notification), then checks the refusal is `status code`. Accepted requests before
/// that are the propagation delay; the guard is far above it (the benchmark measures it).
pub(crate) async fn refused_soon(
    signer: &Signer,
    addr: std::net::SocketAddr,
    path: &str,
    status: u16,
    code: &str,
) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let raw = signed_raw(signer, "GET", path, b"").await?;
        let response = send_raw(addr, &raw).await?;
        if response.status == 200 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        return expect_refusal(&response, status, code);
    }
}

/// The upstream's echo, with header names lower-cased.
struct Echo {
    json: serde_json::Value,
}

impl Echo {
    fn parse(response: &RawResponse) -> Result<Self> {
        ensure!(
            response.status == 200,
            "expected 200 from the upstream, got {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        Ok(Self {
            json: response.json()?,
        })
    }

    fn headers(&self, name: &str) -> Vec<String> {
        self.json["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|pair| {
                pair[0]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .filter_map(|pair| pair[1].as_str().map(str::to_owned))
            .collect()
    }

    fn header(&self, name: &str) -> Option<String> {
        let values = self.headers(name);
        (values.len() == 1).then(|| values[0].clone())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_identity_headers_reach_the_python_upstream() -> Result<()> {
    let s = setup(1, |_| {}).await?;
    let replica = &s.fleet.replicas[0];
    let body = br#"{"amount":10}"#;
    let raw = signed_raw(&s.signer, "POST", "/v1/pay?x=1", body).await?;
    let echo = Echo::parse(&send_raw(replica.addr, &raw).await?)?;
    ensure!(echo.json["method"] == "POST" && echo.json["target"] == "/v1/pay?x=1");
    ensure!(echo.json["body_len"] == body.len());
    ensure!(echo.json["body_sha256"] == hwsign_proto::keys::sha256_hex(body).as_str());
    ensure!(echo.header("x-hws-verified-key") == Some(s.key_id.clone()));
    ensure!(echo.header("x-hws-verified-level").as_deref() == Some("software"));
    ensure!(echo.header("x-hws-verified-delegated").as_deref() == Some("false"));
    let signed_headers = echo
        .header("x-hws-verified-signed-headers")
        .context("no signed headers")?;
    let names: Vec<&str> = signed_headers.split(';').collect();
    for name in ["host", "x-hws-date", "x-hws-nonce", "x-hws-content-sha256"] {
        ensure!(
            names.contains(&name),
            "{name} missing from {signed_headers}"
        );
    }
    // A key without a device: no device header; no users yet: no user header.
    ensure!(echo.headers("x-hws-verified-device").is_empty());
    ensure!(echo.headers("x-hws-verified-user").is_empty());
    // The signed host reaches the upstream; so does who connected, and over what.
    ensure!(echo.header("host").as_deref() == Some(FLEET_HOST));
    ensure!(echo.header("x-forwarded-for").as_deref() == Some("127.0.0.1"));
    ensure!(echo.header("x-forwarded-proto").as_deref() == Some("http"));
    ensure!(
        echo.header("authorization")
            .is_some_and(|a| a.starts_with("HWS1-"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_incoming_identity_headers_are_stripped() -> Result<()> {
    let s = setup(1, |_| {}).await?;
    let replica = &s.fleet.replicas[0];
    // Forged identity headers, added by the client (the client library itself never signs
    // X-Hws-* names it did not set): none reaches the upstream.
    let mut forged = signed(&s.signer, request("GET", &url("/whoami"), b"")?).await?;
    for (name, value) in [
        ("x-hws-verified-key", "hk1_forged"),
        ("X-Hws-Verified-Device", "forged-device"),
        ("x-hws-verified-level", "tpm"),
        ("x-hws-verified-delegated", "true"),
        ("x-hws-verified-anything", "x"),
        ("x-hws-verified-user", "root"),
    ] {
        forged.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes())?,
            value.parse()?,
        );
    }
    let echo = Echo::parse(&send_raw(replica.addr, &to_raw(&forged)?).await?)?;
    ensure!(echo.headers("x-hws-verified-key") == vec![s.key_id.clone()]);
    ensure!(echo.headers("x-hws-verified-level") == vec!["software".to_owned()]);
    ensure!(echo.headers("x-hws-verified-delegated") == vec!["false".to_owned()]);
    for gone in [
        "x-hws-verified-device",
        "x-hws-verified-user",
        "x-hws-verified-anything",
    ] {
        ensure!(echo.headers(gone).is_empty(), "{gone} reached the upstream");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_refusals_are_answered_by_the_proxy_with_their_codes() -> Result<()> {
    let s = setup(1, |settings| {
        settings.extra_sections =
            "[[verifier.route_rules]]\npath_prefix = \"/admin/\"\nmin_level = \"tpm\"\n".into();
    })
    .await?;
    let addr = s.fleet.replicas[0].addr;

    let unsigned = to_raw(&request("GET", &url("/v1/items"), b"")?)?;
    expect_refusal(
        &send_raw(addr, &unsigned).await?,
        401,
        "missing_authorization",
    )?;

    let mut tampered = signed(&s.signer, request("POST", &url("/v1/pay"), b"{\"to\":1}")?).await?;
    *tampered.body_mut() = b"{\"to\":2}".to_vec();
    expect_refusal(
        &send_raw(addr, &to_raw(&tampered)?).await?,
        401,
        "body_hash_mismatch",
    )?;

    let once = signed_raw(&s.signer, "GET", "/once", b"").await?;
    Echo::parse(&send_raw(addr, &once).await?)?;
    expect_refusal(&send_raw(addr, &once).await?, 401, "replayed_nonce")?;

    let other_host = signed(
        &s.signer,
        request("GET", "http://staging.fleet.test/x", b"")?,
    )
    .await?;
    expect_refusal(
        &send_raw(addr, &to_raw(&other_host)?).await?,
        401,
        "wrong_host",
    )?;

    let big = vec![b'a'; 65_537];
    let too_large = signed_raw(&s.signer, "PUT", "/upload", &big).await?;
    expect_refusal(&send_raw(addr, &too_large).await?, 413, "body_too_large")?;

    let admin = signed_raw(&s.signer, "GET", "/admin/users", b"").await?;
    expect_refusal(&send_raw(addr, &admin).await?, 403, "policy_denied")?;

    let (unknown_id, _) = create_key(s.signer.agent(), "software", "unregistered").await?;
    let unknown = Signer::new(s.signer.agent().clone(), unknown_id, AUDIENCE);
    let raw = signed_raw(&unknown, "GET", "/v1/items", b"").await?;
    expect_refusal(&send_raw(addr, &raw).await?, 401, "unknown_key")?;

    // Revoked in the shared registry with the administration command: refused within the
    // registry's change-check interval.
    let output =
        std::process::Command::new(hwsign_test_support::binaries::bin_path("hwsign-verifier")?)
            .args(["keys", "revoke", "--db"])
            .arg(s.fleet.registry_path())
            .arg(&s.key_id)
            .output()?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    refused_soon(&s.signer, addr, "/v1/items", 403, "device_revoked").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_quota_and_full_cache_are_429_and_503_and_readiness_follows() -> Result<()> {
    let s = setup(1, |settings| {
        settings.verifier_extra = "replay_quota_per_key = 2\n".into();
    })
    .await?;
    let addr = s.fleet.replicas[0].addr;
    for _ in 0..2 {
        Echo::parse(&send_raw(addr, &signed_raw(&s.signer, "GET", "/q", b"").await?).await?)?;
    }
    let third = signed_raw(&s.signer, "GET", "/q", b"").await?;
    expect_refusal(&send_raw(addr, &third).await?, 429, "rate_limited")?;

    // A replay cache with room for one live nonce: the second request cannot be remembered
    // without forgetting the first, so it is refused (fail closed), and the replica says it is
    // not ready.
    let mut settings = ServeSettings::new(
        &format!("sqlite:{}", s.fleet.registry_path().display()),
        REPLAY_CACHE,
        s.upstream.addr(),
    );
    settings.top_extra = "replay_cache_capacity = 1\n".into();
    let tiny = ServeProcess::start(&settings).await?;
    Echo::parse(&send_raw(tiny.addr, &signed_raw(&s.signer, "GET", "/c", b"").await?).await?)?;
    let second = signed_raw(&s.signer, "GET", "/c", b"").await?;
    expect_refusal(
        &send_raw(tiny.addr, &second).await?,
        503,
        "verifier_unavailable",
    )?;
    let ready = tiny.admin_get("/readyz").await?;
    ensure!(
        ready.status == 503 && String::from_utf8_lossy(&ready.body).contains("replay_cache"),
        "readyz: {} {}",
        ready.status,
        String::from_utf8_lossy(&ready.body)
    );
    // The other replica, with room, is ready and healthy.
    let replica = &s.fleet.replicas[0];
    ensure!(replica.admin_get("/readyz").await?.status == 200);
    ensure!(replica.admin_get("/healthz").await?.status == 200);
    ensure!(replica.admin_get("/nothing").await?.status == 404);
    // The main listener serves no admin paths: /healthz there is an API path, verified.
    let probe = hwsign_e2e::fleet::http_get(replica.addr, "/healthz").await?;
    expect_refusal(&probe, 401, "missing_authorization")?;
    Ok(())
}

/// Reads from `stream` until `needle` has arrived (or the stream ends).
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
    needle: &[u8],
) -> Result<bool> {
    let mut chunk = [0u8; 4096];
    loop {
        if buffer.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .context("stream stalled")??;
        if read == 0 {
            return Ok(false);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Starts a signed SSE request through `addr`; returns the stream once event `one` arrived.
async fn open_sse(
    signer: &Signer,
    addr: std::net::SocketAddr,
    gate: &str,
) -> Result<(tokio::net::TcpStream, Vec<u8>)> {
    let raw = signed_raw(signer, "GET", &format!("/sse?gate={gate}"), b"").await?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&raw).await?;
    let mut buffer = Vec::new();
    ensure!(
        read_until(&mut stream, &mut buffer, b"data: first").await?,
        "the stream ended before the first event: {}",
        String::from_utf8_lossy(&buffer)
    );
    Ok((stream, buffer))
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_sse_streams_event_by_event() -> Result<()> {
    let s = setup(1, |_| {}).await?;
    let addr = s.fleet.replicas[0].addr;
    // The first event arrives while the upstream is still holding the second back: it waits
    // for the gate, which only this test opens, after reading the first.
    let (mut stream, mut buffer) = open_sse(&s.signer, addr, "sse1").await?;
    let head = String::from_utf8_lossy(&buffer).to_ascii_lowercase();
    ensure!(head.starts_with("http/1.1 200"), "{head}");
    ensure!(head.contains("content-type: text/event-stream"), "{head}");
    ensure!(!head.contains("data: second"), "{head}");
    s.upstream.release("sse1").await?;
    ensure!(read_until(&mut stream, &mut buffer, b"data: second").await?);
    ensure!(read_until(&mut stream, &mut buffer, b"0\r\n\r\n").await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_upstream_down_is_502_and_a_fresh_signature_succeeds_after() -> Result<()> {
    let mut s = setup(1, |_| {}).await?;
    let replica = &s.fleet.replicas[0];
    let port = s.upstream.port();
    s.upstream.kill()?;
    let attempt = signed_raw(&s.signer, "POST", "/v1/orders", b"{}").await?;
    expect_refusal(
        &send_raw(replica.addr, &attempt).await?,
        502,
        "upstream_unavailable",
    )?;
    // The nonce stays used (PROTOCOL.md §6 step 7): the same bytes are a replay...
    expect_refusal(
        &send_raw(replica.addr, &attempt).await?,
        401,
        "replayed_nonce",
    )?;
    // ...and once the upstream is back, the retry signed afresh is accepted.
    let upstream = PythonUpstream::start_on(port)?;
    let retry = signed_raw(&s.signer, "POST", "/v1/orders", b"{}").await?;
    let echo = Echo::parse(&send_raw(replica.addr, &retry).await?)?;
    ensure!(echo.header("x-hws-verified-key") == Some(s.key_id.clone()));
    ensure!(
        replica
            .metric("hws_requests_total{outcome=\"upstream_failed\",code=\"upstream_unavailable\"}")
            .await?
            == 1.0
    );
    drop(upstream);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_metrics_count_accepted_and_refused_by_code() -> Result<()> {
    let s = setup(1, |_| {}).await?;
    let replica = &s.fleet.replicas[0];
    for _ in 0..3 {
        Echo::parse(
            &send_raw(
                replica.addr,
                &signed_raw(&s.signer, "GET", "/m", b"").await?,
            )
            .await?,
        )?;
    }
    let once = signed_raw(&s.signer, "GET", "/m", b"").await?;
    Echo::parse(&send_raw(replica.addr, &once).await?)?;
    for _ in 0..2 {
        expect_refusal(&send_raw(replica.addr, &once).await?, 401, "replayed_nonce")?;
    }
    let unsigned = to_raw(&request("GET", &url("/m"), b"")?)?;
    expect_refusal(
        &send_raw(replica.addr, &unsigned).await?,
        401,
        "missing_authorization",
    )?;
    for (series, expected) in [
        ("hws_requests_total{outcome=\"accepted\",code=\"ok\"}", 4.0),
        (
            "hws_requests_total{outcome=\"refused\",code=\"replayed_nonce\"}",
            2.0,
        ),
        (
            "hws_requests_total{outcome=\"refused\",code=\"missing_authorization\"}",
            1.0,
        ),
        (
            "hws_requests_total{outcome=\"refused\",code=\"signature_invalid\"}",
            0.0,
        ),
        ("hws_verify_duration_seconds_count", 7.0),
        ("hws_upstream_duration_seconds_count", 4.0),
        ("hws_verify_duration_seconds_bucket{le=\"+Inf\"}", 7.0),
    ] {
        let value = replica.metric(series).await?;
        ensure!(value == expected, "{series} = {value}, expected {expected}");
    }
    let metrics = replica.admin_get("/metrics").await?;
    ensure!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_replicas_share_the_registry_and_refuse_a_replay() -> Result<()> {
    let s = setup(3, |_| {}).await?;
    // One registration in the shared registry: every replica accepts the key.
    for replica in &s.fleet.replicas {
        let raw = signed_raw(&s.signer, "GET", "/v1/r", b"").await?;
        let echo = Echo::parse(&send_raw(replica.addr, &raw).await?)?;
        ensure!(echo.header("x-hws-verified-key") == Some(s.key_id.clone()));
        // A replay to the replica that accepted it is refused.
        expect_refusal(&send_raw(replica.addr, &raw).await?, 401, "replayed_nonce")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_untrusted_peers_cannot_forge_forwarded_headers() -> Result<()> {
    let s = setup(1, |settings| settings.trusted_proxies = Vec::new()).await?;
    let mut forged = signed(&s.signer, request("GET", &url("/fwd"), b"")?).await?;
    for (name, value) in [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=203.0.113.7;proto=https"),
    ] {
        forged.headers_mut().insert(name, value.parse()?);
    }
    let echo = Echo::parse(&send_raw(s.fleet.replicas[0].addr, &to_raw(&forged)?).await?)?;
    ensure!(echo.header("x-forwarded-proto").as_deref() == Some("http"));
    ensure!(echo.header("x-forwarded-for").as_deref() == Some("127.0.0.1"));
    ensure!(echo.header("x-forwarded-host").as_deref() == Some(FLEET_HOST));
    ensure!(echo.headers("forwarded").is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_tls_via_nginx_keeps_the_signed_host_and_scheme() -> Result<()> {
    let s = setup(1, |_| {}).await?;
    let cert = SelfSignedCert::generate(FLEET_HOST)?;
    // The documented nginx settings: the Host as the client sent it (the signed host), and the
    // scheme and client address for a serve that trusts this nginx (127.0.0.1/32).
    let nginx = Nginx::start_tls_proxy(
        &cert,
        s.fleet.replicas[0].addr,
        "            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    )?;
    let request = signed(
        &s.signer,
        request(
            "POST",
            &format!("https://{FLEET_HOST}/v1/tls?q=1"),
            b"{\"a\":1}",
        )?,
    )
    .await?;
    let response = send_raw_tls(nginx.addr(), FLEET_HOST, &cert.cert(), &to_raw(&request)?)
        .await
        .with_context(|| nginx.log())?;
    let echo = Echo::parse(&response)?;
    ensure!(echo.header("host").as_deref() == Some(FLEET_HOST));
    ensure!(echo.header("x-forwarded-proto").as_deref() == Some("https"));
    ensure!(echo.header("x-forwarded-for").as_deref() == Some("127.0.0.1, 127.0.0.1"));
    ensure!(echo.header("x-hws-verified-key") == Some(s.key_id.clone()));
    ensure!(echo.json["target"] == "/v1/tls?q=1");
    // Through nginx too, a replay is refused by the proxy with its code.
    let replay = send_raw_tls(nginx.addr(), FLEET_HOST, &cert.cert(), &to_raw(&request)?).await?;
    expect_refusal(&replay, 401, "replayed_nonce")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_serve_terminates_tls_itself() -> Result<()> {
    let cert = SelfSignedCert::generate(FLEET_HOST)?;
    let files = TlsFiles {
        cert: cert.cert(),
        key: cert.key(),
    };
    let s = setup(1, move |settings| settings.tls = Some(files.clone())).await?;
    let request = signed(
        &s.signer,
        request("GET", &format!("https://{FLEET_HOST}/direct"), b"")?,
    )
    .await?;
    let response = send_raw_tls(
        s.fleet.replicas[0].addr,
        FLEET_HOST,
        &cert.cert(),
        &to_raw(&request)?,
    )
    .await?;
    let echo = Echo::parse(&response)?;
    ensure!(echo.header("x-forwarded-proto").as_deref() == Some("https"));
    ensure!(echo.header("x-hws-verified-key") == Some(s.key_id.clone()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_shutdown_finishes_the_request_in_flight() -> Result<()> {
    let mut s = setup(1, |_| {}).await?;
    let addr = s.fleet.replicas[0].addr;
    let (mut stream, mut buffer) = open_sse(&s.signer, addr, "drain").await?;
    s.fleet.replicas[0].terminate()?;
    // Stopped accepting: a new connection is refused (or closed unanswered).
    let mut refused = false;
    for _ in 0..500 {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    ensure!(refused, "still accepting after SIGTERM");
    // The stream in flight still completes, then the process exits cleanly.
    s.upstream.release("drain").await?;
    ensure!(read_until(&mut stream, &mut buffer, b"data: second").await?);
    let replica = &mut s.fleet.replicas[0];
    hwsign_e2e::wait::until(
        "serve to exit",
        || matches!(replica.exit_status(), Ok(Some(_))),
        String::new,
    )
    .await?;
    ensure!(
        replica
            .exit_status()?
            .is_some_and(|status| status.success()),
        "{}",
        replica.log()
    );
    Ok(())
}
