//! Which requests the verifier takes for presigned URLs: exactly those whose query carries an
//! `X-Hws-Signature` parameter (any case, with or without a value). Look-alike parameter names
//! leave a header-signed request header-signed, and a name that is not ASCII where the prefix
//! ends is an ordinary parameter, not a crash.

use crate::verify_support;

use std::sync::Arc;

use anyhow::Result;
use hwsign_verifier::{
    KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RejectCode, Verifier, VerifierConfig,
};
use verify_support::{SignOptions, TestKey, TestRequest, at, sign};

const HOST: &str = "api.example.com";

fn verifier(key: &TestKey) -> Result<Verifier> {
    let registry = Arc::new(MemoryRegistry::new());
    registry.add(key.registered("laptop", KeyLevel::Software))?;
    let config = VerifierConfig::new(verify_support::AUDIENCE, [HOST]);
    Ok(Verifier::new(
        config,
        registry,
        Arc::new(MemoryReplayCache::new(1_000)),
    )?)
}

fn verdict(verifier: &Verifier, request: &TestRequest) -> Result<String, RejectCode> {
    request.with_parts(|parts| {
        verifier
            .verify(parts, &request.body_sha256(), at(0))
            .map(|principal| principal.key_id)
            .map_err(|rejection| rejection.code())
    })
}

#[test]
fn look_alike_parameters_leave_a_header_signed_request_header_signed() -> Result<()> {
    let key = TestKey::from_seed("presigned-detection")?;
    let verifier = verifier(&key)?;
    for query in [
        "X-Hws-Signatures=1",
        "X-Hws-Signatur=1",
        "Y-Hws-Signature=1",
        "X-Hws-SignatureX",
        "a=X-Hws-Signature",
        "X-Hws-Signature-Extra=1&b=2",
    ] {
        let request = sign(
            &key,
            &TestRequest::new("GET", "/v1/items", query, HOST),
            &SignOptions::default(),
        )?;
        assert_eq!(verdict(&verifier, &request), Ok(key.id.clone()), "{query}");
    }
    Ok(())
}

#[test]
fn the_presigned_signature_parameter_is_recognized_in_any_case() -> Result<()> {
    let key = TestKey::from_seed("presigned-detection")?;
    let verifier = verifier(&key)?;
    let signed = sign(
        &key,
        &TestRequest::new("GET", "/v1/items", "", HOST),
        &SignOptions::default(),
    )?;
    // A header-signed request that also carries the parameter is refused as carrying both.
    for query in [
        "X-Hws-Signature=00",
        "x-hws-signature=00",
        "X-HWS-SIGNATURE",
        "a=1&X-Hws-Signature=00",
    ] {
        let mut request = signed.clone();
        request.query = query.into();
        assert_eq!(
            verdict(&verifier, &request),
            Err(RejectCode::MalformedRequest),
            "{query}"
        );
    }
    Ok(())
}

#[test]
fn a_non_ascii_parameter_name_is_not_a_presigned_signature() -> Result<()> {
    let key = TestKey::from_seed("presigned-detection")?;
    let verifier = verifier(&key)?;
    // 15 bytes, as long as `X-Hws-Signature`, with a two-byte character across byte 6.
    for name in ["X-Hws\u{e9}ignature", "X-H\u{e9}\u{e9}ignature"] {
        let request = TestRequest::new("GET", "/v1/items", &format!("{name}=1"), HOST);
        assert_eq!(
            verdict(&verifier, &request),
            Err(RejectCode::MissingAuthorization),
            "{name}"
        );
    }
    Ok(())
}
