//! `HWS1-WEBAUTHN-ES256` through the real verifier: requests signed in the test by a software
//! P-256 authenticator (a signer that builds authenticator data and client data exactly as a
//! FIDO2 authenticator and a browser do — not a mock of the verifier), and every refusal.

use std::sync::Arc;

use anyhow::{Result, bail, ensure};
use hwsign_proto::delegation::DelegationStatement;
use hwsign_proto::keys::sha256_hex;
use hwsign_proto::sign::prepare_headers;
use hwsign_proto::webauthn::{
    Assertion, AuthenticatorData, AuthenticatorFlags, HWS1_WEBAUTHN, TYPE_GET, WebAuthnDelegation,
    client_data_json, request_challenge, rp_id_hash,
};
use hwsign_proto::{HeaderSelection, SigningParams, SigningTime};
use hwsign_verifier::webauthn::{StepUp, WebAuthnSettings};
use hwsign_verifier::{
    Fido2Credential, KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RejectCode,
    Rejection, RouteRule, SqliteRegistry, VerifiedPrincipal, Verifier, VerifierConfig,
    rejection_response,
};

use crate::verify_support::{
    AUDIENCE, SignOptions, T0, TestKey, TestRequest, at, delegation_header, sign,
};

const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://app.example.com";
const HOST: &str = "api.example.com";
const UP: u8 = AuthenticatorFlags::UP;
const UV: u8 = AuthenticatorFlags::UV;

/// What the software authenticator and "browser" put in the assertion.
#[derive(Debug, Clone)]
struct Assert {
    flags: u8,
    sign_count: u32,
    origin: String,
    rp_id: String,
    cross_origin: bool,
}

impl Assert {
    fn new(sign_count: u32) -> Self {
        Self {
            flags: UP,
            sign_count,
            origin: ORIGIN.into(),
            rp_id: RP_ID.into(),
            cross_origin: false,
        }
    }
    fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }
}

/// Signs `request` with the WebAuthn profile: the challenge is the string to sign's, the
/// signature ES256 over `authenticatorData ‖ SHA-256(clientDataJSON)`.
fn webauthn_sign(
    key: &TestKey,
    request: &TestRequest,
    options: &SignOptions,
    assert: &Assert,
) -> Result<TestRequest> {
    let prepared = request.with_parts(|parts| {
        prepare_headers(
            &SigningParams {
                profile: &HWS1_WEBAUTHN,
                credential: &key.id,
                audience: &options.audience,
                time: SigningTime::from_unix(options.time),
                nonce: Some(&options.nonce),
                added_headers: &[],
            },
            parts,
            &sha256_hex(&request.body),
            HeaderSelection::ProfileWith(&options.extra_signed),
        )
    })?;
    let challenge = request_challenge(prepared.string_to_sign());
    let mut client_data = client_data_json(TYPE_GET, &challenge, &assert.origin);
    if assert.cross_origin {
        client_data = client_data.replace("\"crossOrigin\":false", "\"crossOrigin\":true");
    }
    let assertion = Assertion {
        authenticator_data: AuthenticatorData {
            rp_id_hash: rp_id_hash(&assert.rp_id),
            flags: AuthenticatorFlags(assert.flags),
            sign_count: assert.sign_count,
            attested_credential: None,
        }
        .to_bytes(),
        client_data_json: client_data.into_bytes(),
    };
    let signature = key.sign_digest(&assertion.digest())?;
    let mut signed = request.clone();
    signed
        .headers
        .extend(prepared.finish(&HWS1_WEBAUTHN, &signature));
    signed
        .headers
        .push(("x-hws-webauthn".into(), assertion.to_header_value()));
    Ok(signed)
}

struct Fixture {
    verifier: Verifier,
    registry: Arc<dyn KeyRegistry>,
    passkey: TestKey,
    tpm: TestKey,
}

fn credential(key: &TestKey, id: u8) -> Fido2Credential {
    Fido2Credential {
        key_id: key.id.clone(),
        credential_id: vec![id; 16],
        rp_id: RP_ID.into(),
        aaguid: [0; 16],
        sign_count: 0,
        backup_eligible: false,
        backed_up: false,
        possibly_cloned: false,
    }
}

fn settings() -> WebAuthnSettings {
    WebAuthnSettings {
        rp_id: RP_ID.into(),
        origins: vec![ORIGIN.into()],
        require_user_verification: false,
        attestation_roots: Vec::new(),
        aaguids: Vec::new(),
    }
}

fn fixture_with(registry: Arc<dyn KeyRegistry>, webauthn: bool) -> Result<Fixture> {
    fixture_configured(registry, webauthn, |_| {})
}

fn fixture_configured(
    registry: Arc<dyn KeyRegistry>,
    webauthn: bool,
    adjust: impl FnOnce(&mut VerifierConfig),
) -> Result<Fixture> {
    let passkey = TestKey::from_seed("webauthn passkey")?;
    let tpm = TestKey::from_seed("webauthn tpm")?;
    registry.add_fido2_credential(
        passkey.registered("security key", KeyLevel::Fido2),
        credential(&passkey, 1),
    )?;
    registry.add(tpm.registered("laptop tpm", KeyLevel::Tpm))?;
    let mut config = VerifierConfig::new(AUDIENCE, [HOST]);
    config.webauthn = webauthn.then(settings);
    config.route_rules = vec![
        RouteRule {
            step_up: Some(StepUp {
                max_age_secs: 60,
                user_verification: false,
            }),
            ..RouteRule::new("/admin/", KeyLevel::Software)
        },
        RouteRule {
            step_up: Some(StepUp {
                max_age_secs: 60,
                user_verification: true,
            }),
            ..RouteRule::new("/admin/keys/", KeyLevel::Software)
        },
        RouteRule::new("/tpm-only/", KeyLevel::Tpm),
    ];
    adjust(&mut config);
    let verifier = Verifier::new(
        config,
        Arc::clone(&registry),
        Arc::new(MemoryReplayCache::new(10_000)),
    )?;
    Ok(Fixture {
        verifier,
        registry,
        passkey,
        tpm,
    })
}

fn fixture() -> Result<Fixture> {
    fixture_with(Arc::new(MemoryRegistry::new()), true)
}

fn post(path: &str) -> TestRequest {
    TestRequest::new("POST", path, "", HOST)
        .header("content-type", "application/json")
        .body(br#"{"amount":100}"#)
}

fn verify(fx: &Fixture, request: &TestRequest, now: i64) -> Result<VerifiedPrincipal, Rejection> {
    request.with_parts(|parts| fx.verifier.verify(parts, &request.body_sha256(), at(now)))
}

fn code(result: Result<VerifiedPrincipal, Rejection>) -> Result<RejectCode> {
    match result {
        Ok(principal) => bail!("accepted: {principal:?}"),
        Err(rejection) => Ok(rejection.code()),
    }
}

#[test]
fn webauthn_signed_request_is_accepted_with_its_level() -> Result<()> {
    let fx = fixture()?;
    let signed = webauthn_sign(
        &fx.passkey,
        &post("/v1/pay"),
        &SignOptions::default(),
        &Assert::new(1),
    )?;
    let principal = verify(&fx, &signed, 0)?;
    ensure!(principal.key_id == fx.passkey.id && principal.level == KeyLevel::Fido2);
    ensure!(!principal.delegated);
    // The counter was stored.
    let stored = fx.registry.fido2_credential(&fx.passkey.id)?;
    ensure!(stored.map(|c| c.sign_count) == Some(1));
    // The X-Hws-WebAuthn header is not signed (it is the signature).
    ensure!(!principal.signs_header("x-hws-webauthn"));
    Ok(())
}

#[test]
fn webauthn_assertion_without_user_presence_is_refused() -> Result<()> {
    // The Go x/crypto/ssh flaw (CVE-2026-39831, GHSA-89gr-r52h-f8rx): security-key signatures
    // made without a touch (UP clear) were accepted. Here the signature is valid and fresh, UV
    // is even set, and the verifier refuses it for the missing UP flag.
    let fx = fixture()?;
    let signed = webauthn_sign(
        &fx.passkey,
        &post("/v1/pay"),
        &SignOptions::default(),
        &Assert::new(1).flags(UV),
    )?;
    ensure!(code(verify(&fx, &signed, 0))? == RejectCode::WebauthnUserPresence);
    Ok(())
}

#[test]
fn webauthn_counter_regression_is_refused_and_flags_the_credential() -> Result<()> {
    let fx = fixture()?;
    let sign_with = |count| {
        webauthn_sign(
            &fx.passkey,
            &post("/v1/pay"),
            &SignOptions::default(),
            &Assert::new(count),
        )
    };
    verify(&fx, &sign_with(5)?, 0)?;
    verify(&fx, &sign_with(6)?, 0)?;
    // Same counter again (a clone that is one step behind): refused, credential flagged.
    ensure!(code(verify(&fx, &sign_with(6)?, 0))? == RejectCode::WebauthnCounterRegressed);
    let stored = fx.registry.fido2_credential(&fx.passkey.id)?;
    ensure!(stored.is_some_and(|c| c.possibly_cloned && c.sign_count == 6));
    // Flagged: even a higher counter is refused from now on.
    ensure!(code(verify(&fx, &sign_with(100)?, 0))? == RejectCode::WebauthnCounterRegressed);
    Ok(())
}

#[test]
fn webauthn_replayed_request_is_a_replay_not_a_clone() -> Result<()> {
    let fx = fixture()?;
    let signed = webauthn_sign(
        &fx.passkey,
        &post("/v1/pay"),
        &SignOptions::default(),
        &Assert::new(3),
    )?;
    verify(&fx, &signed, 0)?;
    ensure!(code(verify(&fx, &signed, 1))? == RejectCode::ReplayedNonce);
    let stored = fx.registry.fido2_credential(&fx.passkey.id)?;
    ensure!(stored.is_some_and(|c| !c.possibly_cloned));
    Ok(())
}

#[test]
fn webauthn_refusals_have_their_codes() -> Result<()> {
    let fx = fixture()?;
    let options = SignOptions::default;
    let other_origin = Assert {
        origin: "https://evil.example".into(),
        ..Assert::new(1)
    };
    let other_rp = Assert {
        rp_id: "evil.example".into(),
        ..Assert::new(1)
    };
    let cross = Assert {
        cross_origin: true,
        ..Assert::new(1)
    };
    let cases: Vec<(&str, TestRequest, RejectCode)> = vec![
        (
            "wrong origin",
            webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &other_origin)?,
            RejectCode::WebauthnOrigin,
        ),
        (
            "wrong rpIdHash",
            webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &other_rp)?,
            RejectCode::WebauthnOrigin,
        ),
        (
            "cross-origin frame",
            webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &cross)?,
            RejectCode::WebauthnOrigin,
        ),
        (
            "challenge of another request",
            {
                let mut moved =
                    webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &Assert::new(1))?;
                moved.path = "/v1/refund".into();
                moved
            },
            RejectCode::SignatureInvalid,
        ),
        (
            "tampered body",
            webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &Assert::new(1))?
                .body(br#"{"amount":100000}"#),
            RejectCode::BodyHashMismatch,
        ),
        (
            "missing X-Hws-WebAuthn",
            {
                let mut bare =
                    webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &Assert::new(1))?;
                bare.remove_header("x-hws-webauthn");
                bare
            },
            RejectCode::WebauthnInvalid,
        ),
        (
            "oversized X-Hws-WebAuthn",
            {
                let mut big =
                    webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &Assert::new(1))?;
                big.set_header(
                    "x-hws-webauthn",
                    &format!("ad={}, cd=e30", "A".repeat(1400)),
                );
                big
            },
            RejectCode::WebauthnInvalid,
        ),
        (
            "a TPM key cannot use the WebAuthn profile",
            webauthn_sign(&fx.tpm, &post("/v1/pay"), &options(), &Assert::new(1))?,
            RejectCode::UnknownKey,
        ),
        (
            "UV demanded by the route",
            webauthn_sign(
                &fx.passkey,
                &post("/admin/keys/new"),
                &options(),
                &Assert::new(1),
            )?,
            RejectCode::WebauthnUserVerification,
        ),
        (
            "signature by another key",
            {
                let other = TestKey::from_seed("someone else")?;
                let mut forged =
                    webauthn_sign(&other, &post("/v1/pay"), &options(), &Assert::new(1))?;
                let real =
                    webauthn_sign(&fx.passkey, &post("/v1/pay"), &options(), &Assert::new(1))?;
                forged.set_header(
                    "authorization",
                    &real
                        .get_header("authorization")
                        .unwrap_or_default()
                        .replace(
                            real.get_header("authorization")
                                .unwrap_or_default()
                                .rsplit_once("Signature=")
                                .map_or("", |(_, s)| s),
                            forged
                                .get_header("authorization")
                                .unwrap_or_default()
                                .rsplit_once("Signature=")
                                .map_or("", |(_, s)| s),
                        ),
                );
                forged
            },
            RejectCode::SignatureInvalid,
        ),
    ];
    for (name, request, expected) in cases {
        let got = code(verify(&fx, &request, 0))?;
        ensure!(got == expected, "{name}: {got:?} instead of {expected:?}");
    }
    // Only the authentic assertion (the tampered body: its nonce and counter are used before
    // the body is read) advanced the counter; none flagged it.
    let stored = fx.registry.fido2_credential(&fx.passkey.id)?;
    ensure!(stored.is_some_and(|c| c.sign_count == 1 && !c.possibly_cloned));
    Ok(())
}

#[test]
fn webauthn_is_refused_by_a_verifier_without_webauthn_settings() -> Result<()> {
    let fx = fixture_with(Arc::new(MemoryRegistry::new()), false)?;
    let signed = webauthn_sign(
        &fx.passkey,
        &post("/v1/pay"),
        &SignOptions::default(),
        &Assert::new(1),
    )?;
    ensure!(code(verify(&fx, &signed, 0))? == RejectCode::PolicyDenied);
    Ok(())
}

#[test]
fn webauthn_step_up_accepts_only_a_fresh_strict_touch() -> Result<()> {
    let fx = fixture()?;
    let admin = post("/admin/users/7/delete");
    // A fresh WebAuthn request with UP: accepted.
    let touched = webauthn_sign(
        &fx.passkey,
        &admin,
        &SignOptions::default(),
        &Assert::new(1),
    )?;
    verify(&fx, &touched, 0)?;
    // Older than max_age_secs (60) by the verifier's clock, still inside the ±300 s window.
    let stale = webauthn_sign(
        &fx.passkey,
        &admin,
        &SignOptions::default(),
        &Assert::new(2),
    )?;
    let refused = verify(&fx, &stale, 90).err();
    ensure!(refused.as_ref().map(Rejection::code) == Some(RejectCode::StepUpRequired));
    // The answer names the code and whether UV is needed.
    let response = rejection_response(refused.as_ref().ok_or_else(|| anyhow::anyhow!("none"))?);
    ensure!(response.status() == 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ensure!(
        challenge == "HWS1 error=\"step_up_required\", user_verification=\"preferred\"",
        "{challenge}"
    );
    // A TPM signature never satisfies step-up: it cannot prove a person was there.
    let tpm = sign(&fx.tpm, &admin, &SignOptions::default())?;
    ensure!(code(verify(&fx, &tpm, 0))? == RejectCode::StepUpRequired);
    // Nor does a delegated session key, even one authorized by the TPM key a second ago.
    let session = TestKey::from_seed("session")?;
    let delegated = sign(
        &session,
        &admin.clone().header(
            "x-hws-delegation",
            &delegation_header(&fx.tpm, &session, T0 - 1, T0 + 600)?,
        ),
        &SignOptions::default(),
    )?;
    ensure!(code(verify(&fx, &delegated, 0))? == RejectCode::StepUpRequired);
    // The UV route: UP alone is refused at the assertion, UP+UV accepted.
    let keys = post("/admin/keys/new");
    let up_only = webauthn_sign(&fx.passkey, &keys, &SignOptions::default(), &Assert::new(3))?;
    ensure!(code(verify(&fx, &up_only, 0))? == RejectCode::WebauthnUserVerification);
    let verified = webauthn_sign(
        &fx.passkey,
        &keys,
        &SignOptions::default(),
        &Assert::new(4).flags(UP | UV),
    )?;
    verify(&fx, &verified, 0)?;
    // TPM on the UV route: step-up, with user_verification="required".
    let tpm_keys = sign(&fx.tpm, &keys, &SignOptions::default())?;
    let refused = verify(&fx, &tpm_keys, 0).err();
    ensure!(
        refused
            .as_ref()
            .and_then(Rejection::step_up_user_verification)
            == Some(true)
    );
    Ok(())
}

#[test]
fn webauthn_credential_ranks_below_pkcs11_on_route_rules() -> Result<()> {
    let fx = fixture()?;
    let signed = webauthn_sign(
        &fx.passkey,
        &post("/tpm-only/x"),
        &SignOptions::default(),
        &Assert::new(1),
    )?;
    ensure!(code(verify(&fx, &signed, 0))? == RejectCode::PolicyDenied);
    ensure!(KeyLevel::Fido2Unattested < KeyLevel::Fido2);
    ensure!(KeyLevel::Fido2 < KeyLevel::HardwareUnattested);
    ensure!(KeyLevel::Software < KeyLevel::Fido2Unattested);
    Ok(())
}

#[test]
fn webauthn_sqlite_registry_stores_credentials_and_compares_and_sets_the_counter() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("registry.db");
    let registry: Arc<dyn KeyRegistry> = Arc::new(SqliteRegistry::open(&path)?);
    let fx = fixture_with(Arc::clone(&registry), true)?;
    let signed = webauthn_sign(
        &fx.passkey,
        &post("/v1/pay"),
        &SignOptions::default(),
        &Assert::new(9),
    )?;
    verify(&fx, &signed, 0)?;
    drop(fx);
    drop(registry);
    // Reopened: the credential, its level and its counter persisted.
    let registry = SqliteRegistry::open(&path)?;
    let passkey = TestKey::from_seed("webauthn passkey")?;
    let key = registry.lookup(&passkey.id)?;
    ensure!(key.is_some_and(|k| k.level == KeyLevel::Fido2));
    ensure!(
        registry
            .fido2_credential(&passkey.id)?
            .is_some_and(|c| c.sign_count == 9)
    );
    // Compare-and-set: only a higher counter advances; a lower or equal one flags.
    ensure!(registry.advance_sign_count(&passkey.id, 10)?);
    ensure!(!registry.advance_sign_count(&passkey.id, 10)?);
    let stored = registry.fido2_credential(&passkey.id)?;
    ensure!(stored.is_some_and(|c| c.possibly_cloned && c.sign_count == 10));
    ensure!(
        !registry.advance_sign_count(&passkey.id, 11)?,
        "flagged credentials stay refused"
    );
    // A credential id is registered once.
    let other = TestKey::from_seed("other passkey")?;
    let mut duplicate = credential(&other, 1);
    duplicate.key_id = other.id.clone();
    ensure!(
        registry
            .add_fido2_credential(
                other.registered("dup", KeyLevel::Fido2Unattested),
                duplicate
            )
            .is_err()
    );
    ensure!(
        registry.lookup(&other.id)?.is_none(),
        "the key was not stored either"
    );
    Ok(())
}

/// A delegation statement for `session`, signed by an assertion of `device` with `flags`.
fn assertion_delegation(
    device: &TestKey,
    session: &TestKey,
    flags: u8,
    count: u32,
) -> Result<String> {
    let statement = DelegationStatement {
        device_key_id: device.id.clone(),
        session_key: session.public.clone(),
        audience: AUDIENCE.into(),
        not_before: SigningTime::from_unix(T0 - 10),
        not_after: SigningTime::from_unix(T0 + 600),
    };
    let challenge = WebAuthnDelegation::challenge_for(&statement);
    let assertion = Assertion {
        authenticator_data: AuthenticatorData {
            rp_id_hash: rp_id_hash(RP_ID),
            flags: AuthenticatorFlags(flags),
            sign_count: count,
            attested_credential: None,
        }
        .to_bytes(),
        client_data_json: client_data_json(TYPE_GET, &challenge, ORIGIN).into_bytes(),
    };
    Ok(WebAuthnDelegation {
        signature: device.sign_digest(&assertion.digest())?,
        statement,
        assertion,
    }
    .to_header_value())
}

#[test]
fn webauthn_one_touch_authorizes_a_session_key() -> Result<()> {
    let fx = fixture()?;
    let session = TestKey::from_seed("webauthn session")?;
    let header = assertion_delegation(&fx.passkey, &session, UP, 50)?;
    // Many requests, one touch: every request carries the same assertion-signed statement.
    for path in ["/v1/a", "/v1/b", "/v1/c"] {
        let request = sign(
            &session,
            &post(path).header("x-hws-delegation", &header),
            &SignOptions::default(),
        )?;
        let principal = verify(&fx, &request, 0)?;
        ensure!(principal.delegated && principal.key_id == fx.passkey.id);
        ensure!(principal.level == KeyLevel::Fido2);
    }
    // A delegated session never satisfies step-up.
    let admin = sign(
        &session,
        &post("/admin/users/1").header("x-hws-delegation", &header),
        &SignOptions::default(),
    )?;
    ensure!(code(verify(&fx, &admin, 0))? == RejectCode::StepUpRequired);
    // A statement whose assertion lacks UP is refused like a request's.
    let untouched = assertion_delegation(&fx.passkey, &session, UV, 51)?;
    let request = sign(
        &session,
        &post("/v1/a").header("x-hws-delegation", &untouched),
        &SignOptions::default(),
    )?;
    ensure!(code(verify(&fx, &request, 0))? == RejectCode::WebauthnUserPresence);
    // A FIDO2 credential's statement must be assertion-signed; its key never signs bare ECDSA.
    let bare = delegation_header(&fx.passkey, &session, T0 - 10, T0 + 600)?;
    let request = sign(
        &session,
        &post("/v1/a").header("x-hws-delegation", &bare),
        &SignOptions::default(),
    )?;
    ensure!(code(verify(&fx, &request, 0))? == RejectCode::DelegationInvalid);
    let direct = sign(&fx.passkey, &post("/v1/a"), &SignOptions::default())?;
    ensure!(code(verify(&fx, &direct, 0))? == RejectCode::UnknownKey);
    Ok(())
}

#[cfg(feature = "postgres")]
#[test]
fn webauthn_postgres_registry_counter_is_one_compare_and_set_across_replicas() -> Result<()> {
    use hwsign_test_support::postgres::Postgres;
    use hwsign_verifier::registry::{PostgresRegistry, open_registry};

    let pg = Postgres::start()?;
    let url = pg.url();
    // A verifier on a cached PostgreSQL registry accepts and stores the counter.
    let fx = fixture_with(open_registry(&url)?, true)?;
    let signed = webauthn_sign(
        &fx.passkey,
        &post("/v1/pay"),
        &SignOptions::default(),
        &Assert::new(7),
    )?;
    let principal = verify(&fx, &signed, 0)?;
    ensure!(principal.level == KeyLevel::Fido2);
    // Two replicas race with the same counter: exactly one advances it.
    let a = PostgresRegistry::connect(&url)?;
    let b = PostgresRegistry::connect(&url)?;
    ensure!(
        a.fido2_credential(&fx.passkey.id)?
            .is_some_and(|c| c.sign_count == 7)
    );
    ensure!(a.advance_sign_count(&fx.passkey.id, 8)?);
    ensure!(!b.advance_sign_count(&fx.passkey.id, 8)?);
    ensure!(
        a.fido2_credential(&fx.passkey.id)?
            .is_some_and(|c| c.possibly_cloned)
    );
    // And the verifier now refuses the flagged credential.
    let later = webauthn_sign(
        &fx.passkey,
        &post("/v1/pay"),
        &SignOptions::default(),
        &Assert::new(50),
    )?;
    ensure!(code(verify(&fx, &later, 0))? == RejectCode::WebauthnCounterRegressed);
    Ok(())
}

/// A device policy demands a fresh touch through `context.signature` (docs/WEBAUTHN.md,
/// "Step-up in a policy"): a FIDO2 request it refuses but would allow after a fresh strict
/// touch is answered `step_up_required` (with `user_verification="required"` when only UV would
/// do), and passes after one; a key that cannot touch (TPM) gets `policy_denied`.
#[test]
fn webauthn_policy_demands_a_fresh_touch_through_context_signature() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("step_up.cedar"),
        r#"permit(principal, action, resource);
forbid(principal, action, resource in Hws::Route::"/payments")
unless { context.signature.user_present && context.signature.age_secs <= 30 };
forbid(principal, action, resource in Hws::Route::"/payments/keys")
unless { context.signature.user_verified };
"#,
    )?;
    let fx = fixture_configured(Arc::new(MemoryRegistry::new()), true, |config| {
        config.policy = Some(hwsign_verifier::PolicySettings::new(dir.path()));
    })?;
    let pay = post("/payments/7");
    // A fresh touch: accepted.
    let fresh = webauthn_sign(&fx.passkey, &pay, &SignOptions::default(), &Assert::new(1))?;
    verify(&fx, &fresh, 0)?;
    // The same kind of request, 45 s old by the verifier's clock (inside the date window, past
    // the policy's 30 s): step-up, a touch without UV will do.
    let old = webauthn_sign(&fx.passkey, &pay, &SignOptions::default(), &Assert::new(2))?;
    let refused = verify(&fx, &old, 45).err();
    ensure!(
        refused.as_ref().map(Rejection::code) == Some(RejectCode::StepUpRequired),
        "{refused:?}"
    );
    ensure!(
        refused
            .as_ref()
            .and_then(Rejection::step_up_user_verification)
            == Some(false)
    );
    // After a fresh touch it passes.
    let again = webauthn_sign(&fx.passkey, &pay, &SignOptions::default(), &Assert::new(3))?;
    verify(&fx, &again, 0)?;
    // A TPM key cannot bring a touch: the policy's refusal stays policy_denied.
    let tpm = sign(&fx.tpm, &pay, &SignOptions::default())?;
    ensure!(code(verify(&fx, &tpm, 0))? == RejectCode::PolicyDenied);
    // The UV route: a fresh touch without UV is answered with user_verification="required".
    let keys = post("/payments/keys/new");
    let up_only = webauthn_sign(&fx.passkey, &keys, &SignOptions::default(), &Assert::new(4))?;
    let refused = verify(&fx, &up_only, 0).err();
    ensure!(
        refused
            .as_ref()
            .and_then(Rejection::step_up_user_verification)
            == Some(true),
        "{refused:?}"
    );
    let verified = webauthn_sign(
        &fx.passkey,
        &keys,
        &SignOptions::default(),
        &Assert::new(5).flags(UP | UV),
    )?;
    verify(&fx, &verified, 0)?;
    Ok(())
}
