//! hwsign's RFC 9421 encoding through `Verifier::verify`: a request signed with
//! `Signature-Input`/`Signature`/`Content-Digest` (ecdsa-p256-sha256) is accepted under the same
//! rules as HWS1 — key, window (`created` ± skew, and the signer's `expires`), nonce, audience
//! (`tag`), host, body digest, route rules — and each of those refuses it with HWS1's codes.

use crate::verify_support;

use std::sync::Arc;

use anyhow::Result;
use hwsign_proto::rfc9421::{ParamValue, content_digest_sha256, signature_member};
use hwsign_proto::rfc9421_request::{
    LABEL, components_for, request_signature_base, signing_params,
};
use hwsign_verifier::{
    KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RejectCode, RouteRule, Verifier,
    VerifierConfig,
};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Signer as _;
use verify_support::{
    AUDIENCE, T0, TestKey, TestRequest, at, delegation_header, delegation_header_for, fresh_nonce,
};

/// How to sign: audience, `created`, an optional `expires`.
struct Rfc9421Options {
    audience: String,
    created: i64,
    expires: Option<i64>,
}

impl Default for Rfc9421Options {
    fn default() -> Self {
        Self {
            audience: AUDIENCE.into(),
            created: T0,
            expires: None,
        }
    }
}

/// Signs `request` in hwsign's RFC 9421 encoding with `key` (raw r‖s over the signature base).
fn sign_rfc9421(
    key: &TestKey,
    request: &TestRequest,
    options: &Rfc9421Options,
) -> Result<TestRequest> {
    let signed = request.clone().header(
        "content-digest",
        &content_digest_sha256(&request.body_sha256()),
    );
    let (params, base) = signed.with_parts(|parts| {
        let mut params = signing_params(
            components_for(parts, &[]),
            options.created,
            &fresh_nonce(),
            &key.id,
            &options.audience,
        );
        if let Some(expires) = options.expires {
            params
                .params
                .push(("expires".into(), ParamValue::Integer(expires)));
        }
        let base = request_signature_base(parts, &params);
        (params, base)
    });
    let base = base?;
    let signature: Signature = key.signing.sign(base.as_bytes());
    Ok(signed
        .header(
            "signature-input",
            &format!("{LABEL}={}", params.serialize()),
        )
        .header("signature", &signature_member(LABEL, &signature.to_bytes())))
}

fn verifier(key: &TestKey) -> Result<Verifier> {
    let registry = Arc::new(MemoryRegistry::new());
    registry.add(key.registered("laptop", KeyLevel::Software))?;
    let mut config = VerifierConfig::new(AUDIENCE, ["api.example.com", "api.example.org"]);
    config.route_rules = vec![RouteRule::new("/admin/", KeyLevel::Tpm)];
    Ok(Verifier::new(
        config,
        registry as Arc<dyn KeyRegistry>,
        Arc::new(MemoryReplayCache::new(10_000)),
    )?)
}

fn verdict(
    verifier: &Verifier,
    request: &TestRequest,
    body: &[u8],
    now: i64,
) -> Result<String, RejectCode> {
    let digest: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(body).into()
    };
    request
        .with_parts(|parts| verifier.verify(parts, &digest, at(now - T0)))
        .map(|principal| principal.key_id)
        .map_err(|rejection| rejection.code())
}

fn post() -> TestRequest {
    TestRequest::new("POST", "/v1/payouts", "currency=eur", "api.example.com")
        .header("content-type", "application/json")
        .body(br#"{"amount":100}"#)
}

#[test]
fn rfc9421_signed_request_is_accepted_and_judged_by_hws1_rules() -> Result<()> {
    let key = TestKey::from_seed("rfc9421")?;
    let verifier = verifier(&key)?;
    let body = post().body.clone();

    let signed = sign_rfc9421(&key, &post(), &Rfc9421Options::default())?;
    assert_eq!(verdict(&verifier, &signed, &body, T0), Ok(key.id.clone()));
    // The same request again: its nonce is spent.
    assert_eq!(
        verdict(&verifier, &signed, &body, T0 + 1),
        Err(RejectCode::ReplayedNonce)
    );
    // Another body than the digest says.
    let signed = sign_rfc9421(&key, &post(), &Rfc9421Options::default())?;
    assert_eq!(
        verdict(&verifier, &signed, br#"{"amount":999}"#, T0),
        Err(RejectCode::BodyHashMismatch)
    );
    // Outside the window, judged on `created`.
    let signed = sign_rfc9421(&key, &post(), &Rfc9421Options::default())?;
    assert_eq!(
        verdict(&verifier, &signed, &body, T0 + 301),
        Err(RejectCode::StaleDate)
    );
    // The signer's `expires` holds inside the window.
    let options = Rfc9421Options {
        expires: Some(T0 + 10),
        ..Rfc9421Options::default()
    };
    let signed = sign_rfc9421(&key, &post(), &options)?;
    assert_eq!(
        verdict(&verifier, &signed, &body, T0 + 11),
        Err(RejectCode::StaleDate)
    );
    let signed = sign_rfc9421(&key, &post(), &options)?;
    assert_eq!(
        verdict(&verifier, &signed, &body, T0 + 9),
        Ok(key.id.clone())
    );
    // Another audience in `tag`.
    let other = Rfc9421Options {
        audience: "billing".into(),
        ..Rfc9421Options::default()
    };
    let signed = sign_rfc9421(&key, &post(), &other)?;
    assert_eq!(
        verdict(&verifier, &signed, &body, T0),
        Err(RejectCode::WrongAudience)
    );
    // Moved to the other served host: @authority is signed.
    let mut moved = sign_rfc9421(&key, &post(), &Rfc9421Options::default())?;
    moved.set_header("host", "api.example.org");
    assert_eq!(
        verdict(&verifier, &moved, &body, T0),
        Err(RejectCode::SignatureInvalid)
    );
    // A changed query.
    let mut changed = sign_rfc9421(&key, &post(), &Rfc9421Options::default())?;
    changed.query = "currency=usd".into();
    assert_eq!(
        verdict(&verifier, &changed, &body, T0),
        Err(RejectCode::SignatureInvalid)
    );
    // A software key on a route that demands a TPM.
    let admin = TestRequest::new("POST", "/admin/keys", "", "api.example.com").body(b"{}");
    let signed = sign_rfc9421(&key, &admin, &Rfc9421Options::default())?;
    assert_eq!(
        verdict(&verifier, &signed, b"{}", T0),
        Err(RejectCode::PolicyDenied)
    );
    // An unknown key.
    let stranger = TestKey::from_seed("stranger")?;
    let signed = sign_rfc9421(&stranger, &post(), &Rfc9421Options::default())?;
    assert_eq!(
        verdict(&verifier, &signed, &body, T0),
        Err(RejectCode::UnknownKey)
    );
    // Beside an HWS1 Authorization header: ambiguous, refused.
    let both = sign_rfc9421(&key, &post(), &Rfc9421Options::default())?
        .header("authorization", "HWS1-ECDSA-P256-SHA256 Credential=x");
    assert_eq!(
        verdict(&verifier, &both, &body, T0),
        Err(RejectCode::MalformedRequest)
    );
    // Content-Type present but not covered.
    let mut uncovered = sign_rfc9421(&key, &post(), &Rfc9421Options::default())?;
    let input = uncovered
        .get_header("signature-input")
        .unwrap_or_default()
        .replace(" \"content-type\"", "");
    uncovered.set_header("signature-input", &input);
    assert_eq!(
        verdict(&verifier, &uncovered, &body, T0),
        Err(RejectCode::MalformedRequest)
    );
    Ok(())
}

/// Delegated mode in the RFC 9421 encoding (docs/PROTOCOL.md §13): the session key signs, `keyid`
/// names it, and the statement travels in `x-hws-delegation`, a covered component. Accepted as
/// the device key; a statement for another audience, one left out of the covered components, one
/// swapped after signing, or a `keyid` that is not the statement's session key are refused.
#[test]
fn rfc9421_delegated_request_is_checked_like_hws1() -> Result<()> {
    let device = TestKey::from_seed("rfc9421 device")?;
    let session = TestKey::from_seed("rfc9421 session")?;
    let other_session = TestKey::from_seed("rfc9421 other session")?;
    let verifier = verifier(&device)?;
    let body = post().body.clone();
    let options = Rfc9421Options::default();
    let statement = delegation_header(&device, &session, T0 - 5, T0 + 60)?;
    let delegated = || post().header("x-hws-delegation", &statement);

    let signed = sign_rfc9421(&session, &delegated(), &options)?;
    let input = signed.get_header("signature-input").unwrap_or_default();
    assert!(input.contains("\"x-hws-delegation\""), "{input}");
    assert_eq!(
        verdict(&verifier, &signed, &body, T0),
        Ok(device.id.clone())
    );
    assert_eq!(
        verdict(&verifier, &signed, &body, T0 + 1),
        Err(RejectCode::ReplayedNonce)
    );

    // The device key's statement names another audience than the request's tag (and this API's).
    let elsewhere = delegation_header_for(&device, &session, "billing", T0 - 5, T0 + 60)?;
    let signed = sign_rfc9421(
        &session,
        &post().header("x-hws-delegation", &elsewhere),
        &options,
    )?;
    assert_eq!(
        verdict(&verifier, &signed, &body, T0),
        Err(RejectCode::DelegationInvalid)
    );

    // Signed without the statement, which is added afterwards: not covered.
    let signed = sign_rfc9421(&session, &post(), &options)?.header("x-hws-delegation", &statement);
    assert_eq!(
        verdict(&verifier, &signed, &body, T0),
        Err(RejectCode::MalformedRequest)
    );

    // The statement swapped for another one (valid, same device key) after signing.
    let mut signed = sign_rfc9421(&session, &delegated(), &options)?;
    let swapped = delegation_header(&device, &session, T0 - 5, T0 + 50)?;
    signed.set_header("x-hws-delegation", &swapped);
    assert_eq!(
        verdict(&verifier, &signed, &body, T0),
        Err(RejectCode::SignatureInvalid)
    );

    // Another key signs under the statement: keyid is not its session key.
    let signed = sign_rfc9421(&other_session, &delegated(), &options)?;
    assert_eq!(
        verdict(&verifier, &signed, &body, T0),
        Err(RejectCode::DelegationInvalid)
    );
    Ok(())
}
