//! Canonicalization, signing and the verifier's parsing of arbitrary requests.
//!
//! Invariants:
//! - `CanonicalRequest::new`, `parse_header_signed` and `parse_presigned` never panic on any
//!   request parts, under every profile;
//! - HWS1 canonicalization is idempotent: canonicalizing the canonical path and query again
//!   gives the same canonical request;
//! - whatever `prepare_headers` signs, `parse_header_signed` accepts once the added headers are
//!   appended, and rebuilds the identical canonical request and string to sign (and the same
//!   credential, time, nonce, body hash, delegation and signature);
//! - likewise for `prepare_presigned` and `parse_presigned` with the query parameters appended.
#![no_main]

use hwsign_fuzz::{ProfileChoice, RequestInput};
use hwsign_proto::canonical::{CanonicalRequest, RequestParts, SignedHeaders};
use hwsign_proto::Nonce;
use hwsign_proto::limits::{MAX_PATH_LEN, MAX_QUERY_LEN, MAX_SIGNATURE_LEN};
use hwsign_proto::profile::{HWS1_DELEGATION_HEADER, aws_sigv4a};
use hwsign_proto::sign::{self, HeaderSelection, UNSIGNED_PAYLOAD};
use hwsign_proto::verify_input::{parse_header_signed, parse_presigned};
use hwsign_proto::{HWS1, Profile, SigningParams, SigningTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: RequestInput| {
    let profile = match input.profile_choice() {
        ProfileChoice::Hws1 => HWS1,
        ProfileChoice::AwsNormalized => aws_sigv4a(true),
        ProfileChoice::AwsRaw => aws_sigv4a(false),
    };
    let headers: Vec<(&str, &str)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let parts = RequestParts {
        method: &input.method,
        path: &input.path,
        query: &input.query,
        headers: &headers,
    };
    let body_hash = hex::encode(input.body_sha256);

    canonicalize_raw(&profile, &parts, &body_hash);
    let _ = parse_header_signed(&profile, &parts);
    let _ = parse_presigned(&profile, &parts);

    let nonce = Nonce::from_random(input.nonce);
    let added: Vec<(&str, &str)> = input
        .delegation
        .iter()
        .map(|value| (HWS1_DELEGATION_HEADER, value.as_str()))
        .collect();
    let params = SigningParams {
        profile: &profile,
        credential: &input.credential,
        audience: &input.audience,
        time: SigningTime::from_unix(i64::from(input.time)),
        nonce: Some(&nonce),
        added_headers: &added,
    };
    let mut signature = input.signature.clone();
    signature.truncate(MAX_SIGNATURE_LEN);
    if signature.is_empty() {
        signature.push(0x30);
    }
    if profile.sign_body_hash_header {
        header_round_trip(&input, &params, &parts, &body_hash, &signature);
    }
    presigned_round_trip(&input, &params, &parts, &body_hash, &signature);
});

fn canonicalize_raw(profile: &Profile, parts: &RequestParts<'_>, body_hash: &str) {
    let Ok(signed) = SignedHeaders::all_of(parts) else {
        return;
    };
    let Ok(canonical) = CanonicalRequest::new(profile, parts, &signed, body_hash) else {
        return;
    };
    if profile.normalize_path {
        // SigV4's path normalization runs before percent-decoding, so `%2E%2E` survives one
        // pass as `..` and is removed by a second: not idempotent, by the AWS definition.
        return;
    }
    let mut lines = canonical.as_str().split('\n');
    let (Some(_), Some(path), Some(query)) = (lines.next(), lines.next(), lines.next()) else {
        panic!("canonical request without path and query lines");
    };
    if path.len() > MAX_PATH_LEN || query.len() > MAX_QUERY_LEN {
        // Encoding can triple the length; the bounds apply to what arrives on the wire.
        return;
    }
    let again_parts = RequestParts {
        path,
        query,
        ..*parts
    };
    let again = CanonicalRequest::new(profile, &again_parts, &signed, body_hash);
    assert_eq!(
        again.as_ref(),
        Ok(&canonical),
        "canonicalization is not idempotent"
    );
}

fn header_round_trip(
    input: &RequestInput,
    params: &SigningParams<'_>,
    parts: &RequestParts<'_>,
    body_hash: &str,
    signature: &[u8],
) {
    let profile = params.profile;
    let Ok(prepared) = sign::prepare_headers(
        params,
        parts,
        body_hash,
        HeaderSelection::ProfileWith(&input.extra_signed),
    ) else {
        return;
    };
    let canonical = prepared.canonical_request().clone();
    let string_to_sign = prepared.string_to_sign().clone();
    let signed_headers = prepared.signed_headers().clone();
    let additions = prepared.finish(profile, signature);
    let mut all: Vec<(&str, &str)> = parts.headers.to_vec();
    all.extend(additions.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let signed_parts = RequestParts {
        headers: &all,
        ..*parts
    };
    let claimed = match parse_header_signed(profile, &signed_parts) {
        Ok(claimed) => claimed,
        Err(e) => panic!("the verifier refuses what the signer signed: {e:?}"),
    };
    assert_eq!(claimed.canonical, canonical);
    assert_eq!(claimed.string_to_sign, string_to_sign);
    assert_eq!(claimed.authorization.signed_headers, signed_headers);
    assert_eq!(claimed.authorization.credential, params.credential);
    assert_eq!(claimed.authorization.scope.audience, params.audience);
    assert_eq!(claimed.authorization.signature, signature);
    assert_eq!(claimed.time, params.time);
    assert_eq!(claimed.nonce.as_ref(), params.nonce);
    assert_eq!(claimed.payload_hash, body_hash);
    assert_eq!(claimed.delegation, input.delegation);
}

fn presigned_round_trip(
    input: &RequestInput,
    params: &SigningParams<'_>,
    parts: &RequestParts<'_>,
    body_hash: &str,
    signature: &[u8],
) {
    let profile = params.profile;
    let payload = if input.presign_unsigned_payload() {
        UNSIGNED_PAYLOAD
    } else {
        body_hash
    };
    let Ok(prepared) = sign::prepare_presigned(
        params,
        parts,
        payload,
        u64::from(input.presign_expires),
        HeaderSelection::ProfileWith(&input.extra_signed),
    ) else {
        return;
    };
    let string_to_sign = prepared.string_to_sign().clone();
    let canonical_with_signature_params = prepared.canonical_request().clone();
    let additions = prepared.finish(profile, signature);
    let mut query = parts.query.to_owned();
    for (name, value) in &additions {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.push_str(value);
    }
    let signed_parts = RequestParts {
        query: &query,
        ..*parts
    };
    let claimed = match parse_presigned(profile, &signed_parts) {
        Ok(claimed) => claimed,
        Err(e) => panic!("the verifier refuses the URL the signer presigned: {e:?}"),
    };
    // A presigned URL cannot carry the body digest, so the verifier always rebuilds with
    // UNSIGNED-PAYLOAD: only such URLs can reproduce the signer's string.
    if payload == UNSIGNED_PAYLOAD {
        assert_eq!(claimed.canonical, canonical_with_signature_params);
        assert_eq!(claimed.string_to_sign, string_to_sign);
    }
    assert_eq!(claimed.authorization.credential, params.credential);
    assert_eq!(claimed.authorization.signature, signature);
    assert_eq!(claimed.time, params.time);
    assert_eq!(claimed.expires_secs, Some(u64::from(input.presign_expires)));
}
