//! The verifier's side of the pipeline, without I/O or keys: from a received request to the
//! claimed credential, time, nonce and the exact string whose signature must be checked.

use crate::authorization::Authorization;
use crate::canonical::{CanonicalRequest, RequestParts, SignedHeaders};
use crate::encoding;
use crate::error::ProtoError;
use crate::keys::check_payload_hash;
use crate::limits::MAX_PRESIGN_EXPIRES_SECS;
use crate::nonce::Nonce;
use crate::profile::{HWS1_DELEGATION_HEADER, Profile, query_param_name};
use crate::scope::parse_credential;
use crate::sign::UNSIGNED_PAYLOAD;
use crate::string_to_sign::StringToSign;
use crate::time::SigningTime;

/// What a signed request claims, and what its signature must cover.
#[derive(Debug, Clone)]
pub struct ClaimedSignature {
    /// Credential, scope, signed headers and signature from the request.
    pub authorization: Authorization,
    /// The signing time from the date header (or `X-...-Date`).
    pub time: SigningTime,
    /// The nonce, when the profile has one.
    pub nonce: Option<Nonce>,
    /// The body hash the signer claims (header mode), or `UNSIGNED-PAYLOAD` (presigned).
    pub payload_hash: String,
    /// The delegation statement header, when present (always signed, see the profile).
    pub delegation: Option<String>,
    /// Presigned URLs only: seconds after `time` at which the URL expires.
    pub expires_secs: Option<u64>,
    /// RFC 9421 encoding only: the signer's `expires` (unix seconds); the request is refused
    /// after it even inside the verifier's window.
    pub not_after_unix: Option<i64>,
    /// The canonical request rebuilt from what was received.
    pub canonical: CanonicalRequest,
    /// The string whose signature must verify.
    pub string_to_sign: StringToSign,
}

fn single<'a>(parts: &'a RequestParts<'a>, name: &str) -> Result<&'a str, ProtoError> {
    parts.single_header(name)
}

/// Header mode: reads `Authorization`, date, nonce and body-hash headers, checks that the signed
/// headers cover what the profile demands, and rebuilds the string to sign.
pub fn parse_header_signed(
    profile: &Profile,
    parts: &RequestParts<'_>,
) -> Result<ClaimedSignature, ProtoError> {
    parts.check_bounds()?;
    let authorization = match parts.single_header("authorization") {
        Ok(value) => Authorization::parse(value, profile)?,
        Err(ProtoError::DuplicateHeader(_)) => {
            return Err(ProtoError::MalformedAuthorization(
                "more than one Authorization header",
            ));
        }
        Err(e) => return Err(e),
    };
    // Host is never joined, even under a profile that joins other repeated headers.
    single(parts, "host")?;
    authorization
        .signed_headers
        .check_coverage(profile, parts)?;

    let time = SigningTime::parse_amz_date(single(parts, profile.date_header)?)?;
    if !time.date_stamp_is(&authorization.scope.date) {
        return Err(ProtoError::MalformedAuthorization(
            "Credential date differs from the date header",
        ));
    }
    let nonce = match profile.nonce_header {
        Some(name) => Some(Nonce::parse(single(parts, name)?)?),
        None => None,
    };
    let payload_hash = if profile.sign_body_hash_header {
        let claimed = single(parts, profile.content_sha256_header)?;
        if claimed == UNSIGNED_PAYLOAD {
            return Err(ProtoError::UnsignedPayloadNotAllowed);
        }
        check_payload_hash(claimed)?;
        claimed.to_owned()
    } else {
        return Err(ProtoError::MissingHeader(
            profile.content_sha256_header.to_owned(),
        ));
    };
    let delegation = match parts.single_header(HWS1_DELEGATION_HEADER) {
        Ok(value) => Some(value.to_owned()),
        Err(ProtoError::MissingHeader(_)) => None,
        Err(e) => return Err(e),
    };
    let canonical =
        CanonicalRequest::new(profile, parts, &authorization.signed_headers, &payload_hash)?;
    let string_to_sign =
        StringToSign::new(profile.algorithm, time, &authorization.scope, &canonical);
    Ok(ClaimedSignature {
        authorization,
        time,
        nonce,
        payload_hash,
        delegation,
        expires_secs: None,
        not_after_unix: None,
        canonical,
        string_to_sign,
    })
}

/// Presigned mode: reads the `X-...-*` query parameters (each exactly once), removes the signature
/// from the query, and rebuilds the string to sign. The payload is `UNSIGNED-PAYLOAD`.
pub fn parse_presigned(
    profile: &Profile,
    parts: &RequestParts<'_>,
) -> Result<ClaimedSignature, ProtoError> {
    use ProtoError::MalformedPresign as Bad;
    parts.check_bounds()?;
    single(parts, "host")?;
    let prefix = profile.query_prefix;
    let signature_name = format!("{prefix}Signature");
    let mut found: Vec<(String, String)> = Vec::new();
    let mut signature_hex: Option<String> = None;
    let mut remaining: Vec<&str> = Vec::new();
    for pair in parts.query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        // Only our own parameters need to be text; other keys may be any bytes, as signed.
        let key_bytes = encoding::decode(raw_key)?;
        if key_bytes
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
        {
            let key = String::from_utf8(key_bytes).map_err(|_| Bad("non-UTF-8 key"))?;
            let value = String::from_utf8(encoding::decode(raw_value)?)
                .map_err(|_| Bad("non-UTF-8 value"))?;
            if key == signature_name {
                if signature_hex.replace(value).is_some() {
                    return Err(Bad("repeated Signature"));
                }
                continue;
            }
            if found.iter().any(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                return Err(Bad("repeated parameter"));
            }
            found.push((key, value));
        }
        remaining.push(pair);
    }
    let get = |name: &str| -> Result<&str, ProtoError> {
        let full = format!("{prefix}{name}");
        found
            .iter()
            .find(|(k, _)| *k == full)
            .map(|(_, v)| v.as_str())
            .ok_or(Bad("missing parameter"))
    };
    if get("Algorithm")? != profile.algorithm {
        return Err(Bad("unknown algorithm"));
    }
    let time = SigningTime::parse_amz_date(get("Date")?)?;
    let expires_secs: u64 = get("Expires")?
        .parse()
        .map_err(|_| Bad("Expires must be a number"))?;
    if expires_secs == 0 || expires_secs > MAX_PRESIGN_EXPIRES_SECS {
        return Err(Bad("expiry must be 1 s to 7 days"));
    }
    let signed_headers = SignedHeaders::parse(get("SignedHeaders")?)?;
    if !signed_headers.contains("host") {
        return Err(ProtoError::InvalidSignedHeaders(
            "host must be signed".into(),
        ));
    }
    let credential_value = get("Credential")?;
    let (credential, scope) = parse_credential(credential_value, profile.scope_terminator)
        .map_err(|e| Bad(e.message()))?;
    if scope.date != time.date_stamp() {
        return Err(Bad("scope does not match"));
    }
    let nonce = match profile.nonce_header {
        Some(name) => Some(Nonce::parse(get(&query_param_name(name)[prefix.len()..])?)?),
        None => None,
    };
    let signature_hex = signature_hex.ok_or(Bad("missing Signature"))?;
    let signature = hex::decode(&signature_hex).map_err(|_| Bad("Signature must be hex"))?;
    let query = remaining.join("&");
    let unsigned_parts = RequestParts {
        query: &query,
        ..*parts
    };
    let canonical =
        CanonicalRequest::new(profile, &unsigned_parts, &signed_headers, UNSIGNED_PAYLOAD)?;
    let string_to_sign = StringToSign::new(profile.algorithm, time, &scope, &canonical);
    Ok(ClaimedSignature {
        authorization: Authorization {
            credential: credential.to_owned(),
            scope,
            signed_headers,
            signature,
        },
        time,
        nonce,
        payload_hash: UNSIGNED_PAYLOAD.to_owned(),
        delegation: None,
        expires_secs: Some(expires_secs),
        not_after_unix: None,
        canonical,
        string_to_sign,
    })
}
