//! `Verifier::verify` with requests signed by a real P-256 signer through `hwsign_proto::sign`:
//! every rejection code, the order of checks, and the same verdicts from every backend.

use crate::verify_support;

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use hwsign_verifier::{
    DeviceClock, DeviceRecord, KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache,
    RejectCode, RouteRule, SqliteRegistry, Verifier, VerifierConfig, VerifyBackend,
};
use verify_support::{SignOptions, T0, TestKey, TestRequest, at, presign, sign};

struct Keys {
    software: TestKey,
    high_s: TestKey,
    tpm: TestKey,
    unregistered: TestKey,
    revoked: TestKey,
    on_revoked_device: TestKey,
}

fn keys() -> Result<Keys> {
    let mut high_s = TestKey::from_seed("high-s")?;
    high_s.high_s = true;
    Ok(Keys {
        software: TestKey::from_seed("software")?,
        high_s,
        tpm: TestKey::from_seed("tpm")?,
        unregistered: TestKey::from_seed("unregistered")?,
        revoked: TestKey::from_seed("revoked")?,
        on_revoked_device: TestKey::from_seed("on-revoked-device")?,
    })
}

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        ek_cert_sha256: "ab".repeat(32),
        ak_public: vec![0, 1, 2, 3],
        clock: DeviceClock::default(),
        firmware_version: 7,
        pcr_baseline: vec![[0u8; 32]; 8],
        enrolled_unix: T0,
        revoked: false,
    }
}

fn registry(keys: &Keys) -> Result<Arc<MemoryRegistry>> {
    let registry = Arc::new(MemoryRegistry::new());
    registry.add(keys.software.registered("laptop", KeyLevel::Software))?;
    registry.add(keys.high_s.registered("tpm-like", KeyLevel::Software))?;
    registry.add(keys.tpm.registered("tpm", KeyLevel::Tpm))?;
    registry.add(keys.revoked.registered("stolen", KeyLevel::Software))?;
    registry.revoke(&keys.revoked.id)?;
    registry.add_device(device("dev-1"))?;
    let mut on_device = keys
        .on_revoked_device
        .registered("on device", KeyLevel::Tpm);
    on_device.device_id = Some("dev-1".into());
    registry.add(on_device)?;
    registry.revoke_device("dev-1")?;
    Ok(registry)
}

fn config() -> VerifierConfig {
    // Two served hosts, so that a request moved from one to the other is a signature failure
    // (the host is signed), not just a wrong host.
    let mut config = VerifierConfig::new(
        verify_support::AUDIENCE,
        ["api.example.com", "api.example.org"],
    );
    config.route_rules = vec![RouteRule::new("/admin/", KeyLevel::Tpm)];
    config
}

fn verifier(registry: Arc<dyn KeyRegistry>, backend: VerifyBackend) -> Result<Verifier> {
    Ok(
        Verifier::new(config(), registry, Arc::new(MemoryReplayCache::new(10_000)))?
            .with_backend(backend),
    )
}

/// One request and what the verifier must say about it.
struct Case {
    name: String,
    request: TestRequest,
    /// The body the server received, when it differs from the signed one.
    received_body: Option<Vec<u8>>,
    now: SystemTime,
    expected: Result<String, RejectCode>,
}

fn case(name: &str, request: TestRequest, expected: Result<&str, RejectCode>) -> Case {
    Case {
        name: name.into(),
        request,
        received_body: None,
        now: at(0),
        expected: expected.map(str::to_owned),
    }
}

fn get(path: &str, query: &str) -> TestRequest {
    TestRequest::new("GET", path, query, "api.example.com")
}

fn set_authorization(mut request: TestRequest, value: &str) -> TestRequest {
    request.set_header("authorization", value);
    request
}

fn ok(key: &TestKey) -> Result<&str, RejectCode> {
    Ok(key.id.as_str())
}

fn cases(keys: &Keys) -> Result<Vec<Case>> {
    let opts = SignOptions::default;
    let sw = &keys.software;
    let base = get("/v1/items", "b=2&a=1");
    let signed = sign(sw, &base, &opts())?;
    let authorization = signed
        .get_header("authorization")
        .unwrap_or_default()
        .to_owned();
    let mut cases = vec![
        case("get with query", signed.clone(), ok(sw)),
        case(
            "post with body and content-type",
            sign(
                sw,
                &TestRequest::new("POST", "/v1/items", "", "api.example.com")
                    .header("content-type", "application/json")
                    .body(br#"{"amount":5}"#),
                &opts(),
            )?,
            ok(sw),
        ),
        case(
            "percent-encoded non-ASCII path",
            sign(sw, &get("/v1/caf%C3%A9/%E2%82%AC%20x", ""), &opts())?,
            ok(sw),
        ),
        case(
            "high-S signature",
            sign(&keys.high_s, &base, &opts())?,
            ok(&keys.high_s),
        ),
        case(
            "tpm key on tpm route",
            sign(&keys.tpm, &get("/admin/keys", ""), &opts())?,
            ok(&keys.tpm),
        ),
        case(
            "presigned URL",
            presign(sw, &get("/v1/download", "file=a"), &opts(), 600)?,
            ok(sw),
        ),
        case(
            "unsigned",
            base.clone(),
            Err(RejectCode::MissingAuthorization),
        ),
    ];

    // Authorization grammar.
    let (credential_part, rest) = authorization
        .split_once(", ")
        .unwrap_or((authorization.as_str(), ""));
    let signature_hex = authorization
        .rsplit_once("Signature=")
        .map_or("", |(_, s)| s);
    let malformed = [
        ("other scheme", "Bearer abc".to_owned()),
        ("algorithm only", "HWS1-ECDSA-P256-SHA256".to_owned()),
        ("credential only", credential_part.to_owned()),
        (
            "fields reordered",
            format!(
                "HWS1-ECDSA-P256-SHA256 {rest}, {}",
                credential_part.trim_start_matches("HWS1-ECDSA-P256-SHA256 ")
            ),
        ),
        ("extra field", format!("{authorization}, Extra=1")),
        (
            "upper-case signature hex",
            authorization.replace(signature_hex, &signature_hex.to_uppercase()),
        ),
        ("empty signature", authorization.replace(signature_hex, "")),
        ("odd-length signature hex", format!("{authorization}0")),
        (
            "wrong terminator",
            authorization.replace("hws1_request", "aws4_request"),
        ),
        ("bad key id", authorization.replace(&sw.id, "hk1_zz")),
        (
            "scope date differs from date header",
            authorization.replace("/20261123/", "/20261122/"),
        ),
        (
            "two spaces after algorithm",
            authorization.replacen(' ', "  ", 1),
        ),
        (
            "lower-case algorithm",
            authorization.replace("HWS1-ECDSA-P256-SHA256", "hws1-ecdsa-p256-sha256"),
        ),
    ];
    for (name, value) in malformed {
        cases.push(case(
            &format!("malformed Authorization: {name}"),
            set_authorization(signed.clone(), &value),
            Err(RejectCode::MalformedAuthorization),
        ));
    }
    cases.push(case(
        "two Authorization headers",
        signed.clone().header("authorization", &authorization),
        Err(RejectCode::MalformedAuthorization),
    ));

    // The request itself is malformed or ambiguous.
    cases.push(case(
        "two Host headers",
        signed.clone().header("host", "evil.example.com"),
        Err(RejectCode::MalformedRequest),
    ));
    cases.push(case(
        "content-type added after signing",
        signed.clone().header("content-type", "text/plain"),
        Err(RejectCode::MalformedRequest),
    ));
    let mut no_nonce = signed.clone();
    no_nonce.remove_header("x-hws-nonce");
    cases.push(case(
        "nonce header removed",
        no_nonce,
        Err(RejectCode::MalformedRequest),
    ));
    let mut bad_date = signed.clone();
    bad_date.set_header("x-hws-date", "2026-11-23T19:30:00Z");
    cases.push(case(
        "date header not compact ISO 8601",
        bad_date,
        Err(RejectCode::MalformedRequest),
    ));
    let mut both = presign(sw, &get("/v1/download", ""), &opts(), 600)?;
    both.headers
        .push(("authorization".into(), authorization.clone()));
    cases.push(case(
        "presigned and Authorization",
        both,
        Err(RejectCode::MalformedRequest),
    ));
    let mut unsigned_payload = signed.clone();
    unsigned_payload.set_header("x-hws-content-sha256", "UNSIGNED-PAYLOAD");
    cases.push(case(
        "UNSIGNED-PAYLOAD in header mode",
        unsigned_payload,
        Err(RejectCode::UnsignedPayloadNotAllowed),
    ));

    cases.push(case(
        "malformed delegation statement",
        sign(
            sw,
            &base.clone().header("x-hws-delegation", "e30.MEUCIQ"),
            &opts(),
        )?,
        Err(RejectCode::DelegationInvalid),
    ));
    cases.push(case(
        "other audience",
        sign(
            sw,
            &base,
            &SignOptions {
                audience: "billing".into(),
                ..opts()
            },
        )?,
        Err(RejectCode::WrongAudience),
    ));

    // Signed host against the served hosts.
    for (name, host, expected) in [
        (
            "signed for another host",
            "staging.example.com",
            Err(RejectCode::WrongHost),
        ),
        (
            "signed host with another port",
            "api.example.com:8443",
            Err(RejectCode::WrongHost),
        ),
        ("signed host upper case", "API.Example.COM", ok(sw)),
        (
            "signed host with the default port",
            "api.example.com:443",
            ok(sw),
        ),
    ] {
        cases.push(case(
            name,
            sign(sw, &TestRequest::new("GET", "/v1/items", "", host), &opts())?,
            expected,
        ));
    }
    // Presigned lifetimes against max_presign_expiry_secs (900).
    cases.push(case(
        "presigned for the longest lifetime",
        presign(sw, &get("/v1/download", ""), &opts(), 900)?,
        ok(sw),
    ));
    cases.push(case(
        "presigned for longer than the verifier accepts",
        presign(sw, &get("/v1/download", ""), &opts(), 901)?,
        Err(RejectCode::PolicyDenied),
    ));

    // Dates.
    for (name, offset, expected) in [
        ("date 300 s old", 300, ok(sw)),
        ("date 300 s ahead", -300, ok(sw)),
        ("date 301 s old", 301, Err(RejectCode::StaleDate)),
        ("date 301 s ahead", -301, Err(RejectCode::StaleDate)),
        ("date a day old", 86_400, Err(RejectCode::StaleDate)),
    ] {
        let mut c = case(name, sign(sw, &base, &opts())?, expected);
        c.now = at(offset);
        cases.push(c);
    }
    for (name, offset, expected) in [
        ("presigned at its expiry", 600, ok(sw)),
        (
            "presigned after its expiry",
            601,
            Err(RejectCode::StaleDate),
        ),
        ("presigned dated 300 s ahead", -300, ok(sw)),
        (
            "presigned dated 301 s ahead",
            -301,
            Err(RejectCode::StaleDate),
        ),
    ] {
        let mut c = case(
            name,
            presign(sw, &get("/v1/download", ""), &opts(), 600)?,
            expected,
        );
        c.now = at(offset);
        cases.push(c);
    }

    // Registry.
    cases.push(case(
        "unregistered key",
        sign(&keys.unregistered, &base, &opts())?,
        Err(RejectCode::UnknownKey),
    ));
    cases.push(case(
        "revoked key",
        sign(&keys.revoked, &base, &opts())?,
        Err(RejectCode::DeviceRevoked),
    ));
    cases.push(case(
        "key of a revoked device",
        sign(&keys.on_revoked_device, &base, &opts())?,
        Err(RejectCode::DeviceRevoked),
    ));

    // Signature.
    let changed = |f: &dyn Fn(&mut TestRequest)| {
        let mut request = signed.clone();
        f(&mut request);
        request
    };
    let signature_invalid = [
        ("path changed", changed(&|r| r.path = "/v1/other".into())),
        ("query changed", changed(&|r| r.query = "b=2&a=2".into())),
        (
            "query parameter added",
            changed(&|r| r.query.push_str("&c=3")),
        ),
        ("method changed", changed(&|r| r.method = "DELETE".into())),
        (
            "host changed",
            changed(&|r| r.set_header("host", "api.example.org")),
        ),
        (
            "nonce changed",
            changed(&|r| r.set_header("x-hws-nonce", verify_support::fresh_nonce().as_str())),
        ),
        (
            "body hash header changed",
            changed(&|r| r.set_header("x-hws-content-sha256", &"0".repeat(64))),
        ),
        (
            "date changed within the window",
            changed(&|r| r.set_header("x-hws-date", "20261123T193001Z")),
        ),
        (
            "last signature byte flipped",
            changed(&|r| {
                let flipped = match signature_hex.as_bytes().last() {
                    Some(b'0') => "1",
                    _ => "0",
                };
                let new = format!("{}{flipped}", &signature_hex[..signature_hex.len() - 1]);
                r.set_header("authorization", &authorization.replace(signature_hex, &new));
            }),
        ),
        (
            "signature not DER",
            changed(&|r| {
                r.set_header(
                    "authorization",
                    &authorization.replace(signature_hex, "3000"),
                )
            }),
        ),
    ];
    for (name, request) in signature_invalid {
        cases.push(case(name, request, Err(RejectCode::SignatureInvalid)));
    }
    let custom = sign(
        sw,
        &base.clone().header("x-request-purpose", "refund"),
        &SignOptions {
            extra_signed: vec!["x-request-purpose".into()],
            ..opts()
        },
    )?;
    let mut custom_changed = custom.clone();
    custom_changed.set_header("x-request-purpose", "payout");
    cases.push(case("signed custom header", custom, ok(sw)));
    cases.push(case(
        "signed custom header changed",
        custom_changed,
        Err(RejectCode::SignatureInvalid),
    ));
    let other_signed = sign(&keys.unregistered, &base, &opts())?;
    let foreign_signature = other_signed
        .get_header("authorization")
        .unwrap_or_default()
        .replace(&keys.unregistered.id, &sw.id);
    cases.push(case(
        "another key's signature under this key's id",
        set_authorization(other_signed, &foreign_signature),
        Err(RejectCode::SignatureInvalid),
    ));

    // Body.
    let post = sign(
        sw,
        &TestRequest::new("PUT", "/v1/items/1", "", "api.example.com").body(b"amount=5"),
        &opts(),
    )?;
    let mut tampered = case(
        "body changed in transit",
        post,
        Err(RejectCode::BodyHashMismatch),
    );
    tampered.received_body = Some(b"amount=500".to_vec());
    cases.push(tampered);

    // Route rules.
    cases.push(case(
        "software key on tpm route",
        sign(sw, &get("/admin/keys", ""), &opts())?,
        Err(RejectCode::PolicyDenied),
    ));
    cases.push(case(
        "software key on tpm route, percent-encoded",
        sign(sw, &get("/%61dmin/keys", ""), &opts())?,
        Err(RejectCode::PolicyDenied),
    ));
    cases.push(case(
        "software key on tpm route, doubled slash",
        sign(sw, &get("//admin/keys", ""), &opts())?,
        Err(RejectCode::PolicyDenied),
    ));
    Ok(cases)
}

fn run(verifier: &Verifier, case: &Case) -> Result<String, RejectCode> {
    let body_sha256 = match &case.received_body {
        Some(body) => sha2_digest(body),
        None => case.request.body_sha256(),
    };
    case.request
        .with_parts(|parts| verifier.verify(parts, &body_sha256, case.now))
        .map(|principal| principal.key_id)
        .map_err(|rejection| rejection.code())
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

#[test]
fn every_backend_gives_the_expected_verdict_for_every_case() -> Result<()> {
    let keys = keys()?;
    let registry = registry(&keys)?;
    let cases = cases(&keys)?;
    assert!(cases.len() > 50, "only {} cases", cases.len());
    for backend in VerifyBackend::available() {
        // A fresh verifier (and replay cache) per backend: the same requests, the same verdicts.
        let verifier = verifier(registry.clone(), *backend)?;
        let mut failures = Vec::new();
        for case in &cases {
            let verdict = run(&verifier, case);
            if verdict != case.expected {
                failures.push(format!(
                    "{}: expected {:?}, got {verdict:?}",
                    case.name, case.expected
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "backend {}:\n{}",
            backend.name(),
            failures.join("\n")
        );
    }
    Ok(())
}

#[test]
fn default_backend_follows_the_feature() {
    #[cfg(feature = "ring")]
    assert_eq!(VerifyBackend::default(), VerifyBackend::Ring);
    #[cfg(not(feature = "ring"))]
    assert_eq!(VerifyBackend::default(), VerifyBackend::RustCrypto);
    assert!(VerifyBackend::available().contains(&VerifyBackend::RustCrypto));
}

#[test]
fn principal_carries_registry_facts() -> Result<()> {
    let keys = keys()?;
    let registry = registry(&keys)?;
    let verifier = verifier(registry, VerifyBackend::default())?;
    let request = sign(&keys.tpm, &get("/admin/x", ""), &SignOptions::default())?;
    let principal = request.with_parts(|p| verifier.verify(p, &request.body_sha256(), at(0)))?;
    assert_eq!(principal.key_id, keys.tpm.id);
    assert_eq!(principal.label, "tpm");
    assert_eq!(principal.level, KeyLevel::Tpm);
    assert_eq!(principal.device_id, None);
    assert!(!principal.delegated);
    Ok(())
}

#[test]
fn high_s_signatures_really_are_high_s() -> Result<()> {
    // Guards the high-S case above: the signer must produce S > n/2, which p256 normalizes away.
    let keys = keys()?;
    let der = keys.high_s.sign_digest(&[7u8; 32])?;
    let signature = p256::ecdsa::Signature::from_der(&der)?;
    assert!(signature.normalize_s() != signature);
    Ok(())
}

#[test]
fn nonces_are_single_use_per_key_within_the_window() -> Result<()> {
    let keys = keys()?;
    let registry = registry(&keys)?;
    for backend in VerifyBackend::available() {
        let verifier = verifier(registry.clone(), *backend)?;
        let verify = |request: &TestRequest, body: &[u8], now| {
            request
                .with_parts(|p| verifier.verify(p, &sha2_digest(body), now))
                .map(|principal| principal.key_id)
                .map_err(|r| r.code())
        };
        let options = SignOptions::default();
        let request = sign(&keys.software, &get("/v1/a", ""), &options)?;
        assert_eq!(verify(&request, b"", at(0)), Ok(keys.software.id.clone()));
        assert_eq!(
            verify(&request, b"", at(10)),
            Err(RejectCode::ReplayedNonce)
        );
        assert_eq!(
            verify(&request, b"", at(300)),
            Err(RejectCode::ReplayedNonce)
        );
        // Past the window the date check refuses it before the nonce is consulted.
        assert_eq!(verify(&request, b"", at(301)), Err(RejectCode::StaleDate));

        // Another request with the same nonce from the same key is a replay too.
        let same_nonce = sign(&keys.software, &get("/v1/b", ""), &options)?;
        assert_eq!(
            verify(&same_nonce, b"", at(1)),
            Err(RejectCode::ReplayedNonce)
        );
        // The same nonce from another key is not.
        let other_key = sign(&keys.high_s, &get("/v1/a", ""), &options)?;
        assert_eq!(verify(&other_key, b"", at(1)), Ok(keys.high_s.id.clone()));

        // The nonce is reserved before the body is judged: a signed request refused for its body
        // has used its nonce (a genuine client signs again with a fresh one).
        let put = sign(
            &keys.software,
            &TestRequest::new("PUT", "/v1/c", "", "api.example.com").body(b"x"),
            &SignOptions::default(),
        )?;
        assert_eq!(verify(&put, b"y", at(0)), Err(RejectCode::BodyHashMismatch));
        assert_eq!(verify(&put, b"x", at(0)), Err(RejectCode::ReplayedNonce));

        // A presigned URL is single-use until it expires.
        let url = presign(
            &keys.software,
            &get("/v1/dl", ""),
            &SignOptions::default(),
            900,
        )?;
        assert_eq!(verify(&url, b"", at(0)), Ok(keys.software.id.clone()));
        assert_eq!(verify(&url, b"", at(899)), Err(RejectCode::ReplayedNonce));
    }
    Ok(())
}

#[test]
fn a_full_replay_cache_fails_closed() -> Result<()> {
    let keys = keys()?;
    let registry = registry(&keys)?;
    let verifier = Verifier::new(config(), registry, Arc::new(MemoryReplayCache::new(2)))?;
    let verify = |now| {
        let request = sign(&keys.software, &get("/v1/a", ""), &SignOptions::default())?;
        Ok::<_, anyhow::Error>(
            request
                .with_parts(|p| verifier.verify(p, &request.body_sha256(), now))
                .map_err(|r| r.code()),
        )
    };
    assert!(verify(at(0))?.is_ok());
    assert!(verify(at(0))?.is_ok());
    assert_eq!(verify(at(0))?, Err(RejectCode::VerifierUnavailable));
    // Once the first two nonces' window (date + 300 s) has passed, there is room again; the
    // request must itself be dated within the window of the new clock.
    let late = sign(
        &keys.software,
        &get("/v1/a", ""),
        &SignOptions {
            time: T0 + 301,
            ..SignOptions::default()
        },
    )?;
    let verdict = late.with_parts(|p| verifier.verify(p, &late.body_sha256(), at(301)));
    assert_eq!(
        verdict.map(|p| p.key_id).map_err(|r| r.code()),
        Ok(keys.software.id.clone())
    );
    Ok(())
}

#[test]
fn a_failing_registry_fails_closed() -> Result<()> {
    let keys = keys()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    let registry = Arc::new(SqliteRegistry::open(&path)?);
    registry.add(keys.software.registered("laptop", KeyLevel::Software))?;
    let verifier = verifier(registry, VerifyBackend::default())?;
    let request = sign(&keys.software, &get("/v1/a", ""), &SignOptions::default())?;
    // Break the store underneath the running verifier, through a second real connection.
    let saboteur = rusqlite::Connection::open(&path)?;
    saboteur.execute_batch("DROP TABLE keys")?;
    let verdict = request.with_parts(|p| verifier.verify(p, &request.body_sha256(), at(0)));
    assert_eq!(
        verdict.map_err(|r| r.code()),
        Err(RejectCode::VerifierUnavailable)
    );
    Ok(())
}

#[test]
fn rejections_come_in_the_documented_order() -> Result<()> {
    // A request wrong in several ways reports the earliest check that fails.
    let keys = keys()?;
    let registry = registry(&keys)?;
    let verifier = verifier(registry, VerifyBackend::default())?;
    let code = |request: &TestRequest, body: &[u8], now| {
        request
            .with_parts(|p| verifier.verify(p, &sha2_digest(body), now))
            .map(|_| ())
            .map_err(|r| r.code())
    };
    let wrong_audience_and_stale = sign(
        &keys.unregistered,
        &get("/admin/x", ""),
        &SignOptions {
            audience: "billing".into(),
            ..SignOptions::default()
        },
    )?;
    assert_eq!(
        code(&wrong_audience_and_stale, b"", at(9999)),
        Err(RejectCode::WrongAudience)
    );
    let stale_and_unknown = sign(
        &keys.unregistered,
        &get("/v1/x", ""),
        &SignOptions::default(),
    )?;
    assert_eq!(
        code(&stale_and_unknown, b"", at(9999)),
        Err(RejectCode::StaleDate)
    );
    assert_eq!(
        code(&stale_and_unknown, b"", at(0)),
        Err(RejectCode::UnknownKey)
    );
    let mut forged_revoked = sign(&keys.revoked, &get("/v1/x", ""), &SignOptions::default())?;
    forged_revoked.path = "/v1/y".into();
    assert_eq!(
        code(&forged_revoked, b"", at(0)),
        Err(RejectCode::DeviceRevoked)
    );
    let mut forged_body = sign(&keys.software, &get("/v1/x", ""), &SignOptions::default())?;
    forged_body.path = "/v1/y".into();
    assert_eq!(
        code(&forged_body, b"other", at(0)),
        Err(RejectCode::SignatureInvalid)
    );
    let body_and_policy = sign(
        &keys.software,
        &get("/admin/x", ""),
        &SignOptions::default(),
    )?;
    assert_eq!(
        code(&body_and_policy, b"other", at(0)),
        Err(RejectCode::BodyHashMismatch)
    );
    Ok(())
}

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(std::sync::Mutex<SystemTime>);

impl TestClock {
    fn set(&self, now: SystemTime) {
        if let Ok(mut time) = self.0.lock() {
            *time = now;
        }
    }
}

impl hwsign_verifier::Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.0.lock().map_or(SystemTime::UNIX_EPOCH, |time| *time)
    }
}

/// The two-phase API: `finish` reads the verifier's clock itself, after the body, and judges the
/// window, the presigned expiry and revocation with it; the nonce reserved in phase two refuses a
/// second copy while the first is unfinished.
#[test]
fn hardening_finish_judges_with_the_clock_read_after_the_body() -> Result<()> {
    let keys = keys()?;
    let registry = registry(&keys)?;
    let clock = Arc::new(TestClock(std::sync::Mutex::new(at(0))));
    let verifier = Verifier::new(
        config(),
        registry.clone(),
        Arc::new(MemoryReplayCache::new(100)),
    )?
    .with_clock(clock.clone());
    let phase_one = |request: &TestRequest| {
        request
            .with_parts(|p| verifier.check_signature(p, at(0)))
            .and_then(|checked| verifier.reserve(checked, at(0)))
    };
    let code = |r: Result<hwsign_verifier::VerifiedPrincipal, hwsign_verifier::Rejection>| {
        r.map(|p| p.key_id).map_err(|r| r.code())
    };

    // Header mode: the window (date + 300 s) closes while the body is read.
    let late = sign(&keys.software, &get("/v1/a", ""), &SignOptions::default())?;
    let reserved = phase_one(&late)?;
    assert_eq!(reserved.deadline(), at(301));
    // A second copy while the first is unfinished.
    assert_eq!(
        phase_one(&late).map(|_| ()).map_err(|r| r.code()),
        Err(RejectCode::ReplayedNonce)
    );
    clock.set(at(301));
    assert_eq!(
        code(verifier.finish(reserved, &late.body_sha256())),
        Err(RejectCode::StaleDate)
    );
    clock.set(at(0));

    // Presigned: expires (60 s) while the body is read.
    let url = presign(
        &keys.software,
        &get("/v1/dl", ""),
        &SignOptions::default(),
        60,
    )?;
    let reserved = phase_one(&url)?;
    assert_eq!(reserved.deadline(), at(61));
    clock.set(at(61));
    assert_eq!(
        code(verifier.finish(reserved, &[0u8; 32])),
        Err(RejectCode::StaleDate)
    );
    clock.set(at(0));

    // Revoked between the phases.
    let revoked_later = TestKey::from_seed("revoked-later")?;
    registry.add(revoked_later.registered("soon revoked", KeyLevel::Software))?;
    let request = sign(&revoked_later, &get("/v1/a", ""), &SignOptions::default())?;
    let reserved = phase_one(&request)?;
    registry.revoke(&revoked_later.id)?;
    assert_eq!(
        code(verifier.finish(reserved, &request.body_sha256())),
        Err(RejectCode::DeviceRevoked)
    );

    // In time and not revoked: accepted, with the names of the signed headers.
    let fine = sign(&keys.software, &get("/v1/b", ""), &SignOptions::default())?;
    let reserved = phase_one(&fine)?;
    clock.set(at(300));
    let principal = verifier.finish(reserved, &fine.body_sha256())?;
    assert_eq!(principal.key_id, keys.software.id);
    assert!(principal.signs_header("Host") && principal.signs_header("x-hws-nonce"));
    assert!(!principal.signs_header("x-forwarded-host"));
    Ok(())
}
