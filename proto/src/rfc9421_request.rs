//! hwsign's RFC 9421 encoding of a signed request: the same material as HWS1 (method, authority,
//! path, query, body digest, nonce, creation time, key id, audience), carried as
//! `Signature-Input` / `Signature` with `Content-Digest` (RFC 9530), algorithm `ecdsa-p256-sha256`.
//!
//! The profile (docs/PROTOCOL.md "RFC 9421 encoding"):
//! - exactly one signature, label [`LABEL`] when hwsign signs (any label is read);
//! - covered, in this order: `@method`, `@authority`, `@path`, `@query`, `content-digest`, then
//!   `content-type` when the request has one, `x-hws-delegation` when present, then any header the
//!   caller names; a verifier refuses a signature that leaves out any of the first five, or
//!   `content-type` / `x-hws-delegation` when the request carries them;
//! - parameters `created` (integer), `nonce` (an HWS1 nonce), `keyid` (an hwsign key id), `alg`
//!   = `ecdsa-p256-sha256`, `tag` = `hws1:<audience>`, optionally `expires` (no later than created
//!   plus the verifier's window); no other parameter;
//! - `Content-Digest` carries `sha-256`; the signature is raw `r ‖ s` (64 bytes), as RFC 9421
//!   §3.3.4 says for this algorithm.

use crate::authorization::Authorization;
use crate::canonical::{CanonicalRequest, RequestParts, SignedHeaders};
use crate::error::ProtoError;
use crate::nonce::Nonce;
use crate::profile::HWS1;
use crate::rfc9421::{
    ParamValue, Rfc9421Error, SignatureParams, combine_field_lines, parse_content_digest_sha256,
    parse_signature, parse_signature_input, signature_base,
};
use crate::scope::Scope;
use crate::string_to_sign::StringToSign;
use crate::time::SigningTime;
use crate::verify_input::ClaimedSignature;
use thiserror::Error;

/// The label hwsign signs under.
pub const LABEL: &str = "hws";
/// The algorithm.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";
/// `tag` = this prefix followed by the audience.
pub const TAG_PREFIX: &str = "hws1:";
/// The components every hwsign RFC 9421 signature covers, in signing order.
pub const REQUIRED_COMPONENTS: [&str; 5] =
    ["@method", "@authority", "@path", "@query", "content-digest"];
/// The parameters the profile knows.
const KNOWN_PARAMS: [&str; 6] = ["created", "expires", "nonce", "keyid", "alg", "tag"];

/// Why an RFC 9421-signed request was refused before any key was consulted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rfc9421RequestError {
    /// The fields do not parse.
    #[error("malformed RFC 9421 fields")]
    Syntax(#[from] Rfc9421Error),
    /// A `Signature-Input` or `Signature` field is missing or repeated.
    #[error("exactly one {0} field is required")]
    Field(&'static str),
    /// Not exactly one signature, or `Signature` and `Signature-Input` name different labels.
    #[error("exactly one signature, with the same label in Signature-Input and Signature")]
    Labels,
    /// A parameter is missing, of the wrong type, or not part of the profile.
    #[error("parameter {0:?} missing, invalid or not allowed")]
    Parameter(&'static str),
    /// A component the profile requires is not covered.
    #[error("the signature must cover {0:?}")]
    Coverage(String),
    /// `Content-Digest` missing or without `sha-256`.
    #[error("a Content-Digest with sha-256 is required")]
    ContentDigest,
    /// The signature is not 64 bytes.
    #[error("an ecdsa-p256-sha256 signature is 64 bytes (r ‖ s)")]
    SignatureLength,
}

/// What an RFC 9421-signed request claims, and the exact bytes its signature must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc9421Claim {
    /// The label.
    pub label: String,
    /// The covered components and parameters as received.
    pub params: SignatureParams,
    /// `keyid`.
    pub key_id: String,
    /// The audience from `tag`.
    pub audience: String,
    /// `created`.
    pub created_unix: i64,
    /// `expires`, if given.
    pub expires_unix: Option<i64>,
    /// `nonce`.
    pub nonce: Nonce,
    /// The SHA-256 body digest `Content-Digest` claims.
    pub body_sha256: [u8; 32],
    /// Whether an `x-hws-delegation` header is covered (the verifier then checks the statement).
    pub delegation: Option<String>,
    /// The signature base (RFC 9421 §2.5).
    pub signature_base: String,
    /// The raw `r ‖ s` signature.
    pub signature: [u8; 64],
}

/// True when the request carries RFC 9421 fields (and so should be verified as such).
pub fn is_rfc9421(parts: &RequestParts<'_>) -> bool {
    parts.header_values("signature-input").next().is_some()
}

/// The value of a covered component of `parts` (RFC 9421 §2.1–§2.2), `None` if absent.
/// `@authority` is the Host header lower-cased; `@query` is `?` and the raw query (`?` alone for
/// none); `@path` is the path as received.
pub fn component_value(parts: &RequestParts<'_>, name: &str) -> Option<String> {
    match name {
        "@method" => Some(parts.method.to_owned()),
        "@authority" => parts
            .single_header("host")
            .ok()
            .map(str::to_ascii_lowercase),
        "@path" => Some(if parts.path.is_empty() {
            "/".to_owned()
        } else {
            parts.path.to_owned()
        }),
        "@query" => Some(format!("?{}", parts.query)),
        derived if derived.starts_with('@') => None,
        field => combine_field_lines(parts.header_values(field)),
    }
}

/// The components a signer covers for `parts`, in order: the required five, `content-type` and
/// `x-hws-delegation` when present, then `extra` header names (lower-cased, deduplicated).
pub fn components_for(parts: &RequestParts<'_>, extra: &[&str]) -> Vec<String> {
    let mut components: Vec<String> = REQUIRED_COMPONENTS
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    for conditional in ["content-type", "x-hws-delegation"] {
        if parts.header_values(conditional).next().is_some() {
            components.push(conditional.to_owned());
        }
    }
    for name in extra {
        let name = name.to_ascii_lowercase();
        if !components.contains(&name) {
            components.push(name);
        }
    }
    components
}

/// The parameters a signer sends.
pub fn signing_params(
    components: Vec<String>,
    created_unix: i64,
    nonce: &Nonce,
    key_id: &str,
    audience: &str,
) -> SignatureParams {
    SignatureParams {
        components,
        params: vec![
            ("created".to_owned(), ParamValue::Integer(created_unix)),
            (
                "nonce".to_owned(),
                ParamValue::String(nonce.as_str().to_owned()),
            ),
            ("keyid".to_owned(), ParamValue::String(key_id.to_owned())),
            ("alg".to_owned(), ParamValue::String(ALGORITHM.to_owned())),
            (
                "tag".to_owned(),
                ParamValue::String(format!("{TAG_PREFIX}{audience}")),
            ),
        ],
    }
}

/// The signature base of `parts` under `params` (the request must already carry the headers it
/// covers, `Content-Digest` included).
pub fn request_signature_base(
    parts: &RequestParts<'_>,
    params: &SignatureParams,
) -> Result<String, Rfc9421Error> {
    signature_base(params, |name| component_value(parts, name))
}

/// Verifier side: reads and checks the RFC 9421 fields of `parts` against the profile and rebuilds
/// the signature base. Keys, time, nonce reuse and the body are the caller's to check.
pub fn parse_rfc9421_request(
    parts: &RequestParts<'_>,
) -> Result<Rfc9421Claim, Rfc9421RequestError> {
    let input = single(parts, "signature-input")?;
    let signature = single(parts, "signature")?;
    let mut inputs = parse_signature_input(input)?;
    let mut signatures = parse_signature(signature)?;
    if inputs.len() != 1 || signatures.len() != 1 {
        return Err(Rfc9421RequestError::Labels);
    }
    let (label, params) = inputs.remove(0);
    let (signed_label, raw) = signatures.remove(0);
    if label != signed_label {
        return Err(Rfc9421RequestError::Labels);
    }
    let signature: [u8; 64] = raw
        .try_into()
        .map_err(|_| Rfc9421RequestError::SignatureLength)?;

    if let Some((unknown, _)) = params
        .params
        .iter()
        .find(|(k, _)| !KNOWN_PARAMS.contains(&k.as_str()))
    {
        return Err(Rfc9421RequestError::Coverage(format!(
            "no parameter {unknown:?}"
        )));
    }
    if params.string("alg") != Some(ALGORITHM) {
        return Err(Rfc9421RequestError::Parameter("alg"));
    }
    let key_id = params
        .string("keyid")
        .ok_or(Rfc9421RequestError::Parameter("keyid"))?
        .to_owned();
    let audience = params
        .string("tag")
        .and_then(|tag| tag.strip_prefix(TAG_PREFIX))
        .filter(|audience| !audience.is_empty())
        .ok_or(Rfc9421RequestError::Parameter("tag"))?
        .to_owned();
    let created_unix = params
        .integer("created")
        .ok_or(Rfc9421RequestError::Parameter("created"))?;
    let expires_unix = match params.param("expires") {
        None => None,
        Some(ParamValue::Integer(expires)) if *expires >= created_unix => Some(*expires),
        Some(_) => return Err(Rfc9421RequestError::Parameter("expires")),
    };
    let nonce = params
        .string("nonce")
        .and_then(|nonce| Nonce::parse(nonce).ok())
        .ok_or(Rfc9421RequestError::Parameter("nonce"))?;

    for required in REQUIRED_COMPONENTS {
        if !params.components.iter().any(|c| c == required) {
            return Err(Rfc9421RequestError::Coverage(required.to_owned()));
        }
    }
    for conditional in ["content-type", "x-hws-delegation"] {
        if parts.header_values(conditional).next().is_some()
            && !params.components.iter().any(|c| c == conditional)
        {
            return Err(Rfc9421RequestError::Coverage(conditional.to_owned()));
        }
    }
    // Host is never joined: two Host fields are ambiguous, not combined.
    parts
        .single_header("host")
        .map_err(|_| Rfc9421RequestError::Coverage("@authority".to_owned()))?;
    let digest = single(parts, "content-digest").map_err(|_| Rfc9421RequestError::ContentDigest)?;
    let body_sha256 =
        parse_content_digest_sha256(digest)?.ok_or(Rfc9421RequestError::ContentDigest)?;
    let delegation = match parts.single_header("x-hws-delegation") {
        Ok(value) => Some(value.to_owned()),
        Err(_) => None,
    };
    let signature_base = request_signature_base(parts, &params)?;
    Ok(Rfc9421Claim {
        label,
        params,
        key_id,
        audience,
        created_unix,
        expires_unix,
        nonce,
        body_sha256,
        delegation,
        signature_base,
        signature,
    })
}

/// Verifier side, in the shape the HWS1 pipeline takes: the claim of [`parse_rfc9421_request`]
/// as a [`ClaimedSignature`] whose string to sign is the RFC 9421 signature base, whose signature
/// is the DER form of the received `r ‖ s`, whose signing time is `created`, whose audience is the
/// `tag`'s, and whose signed headers are the covered header fields (with `host` for
/// `@authority`). The verifier then applies HWS1's rules unchanged: key, window, nonce, audience,
/// host, body digest, delegation, route rules and policy.
pub fn parse_rfc9421_claimed(parts: &RequestParts<'_>) -> Result<ClaimedSignature, ProtoError> {
    parts.check_bounds()?;
    let claim = parse_rfc9421_request(parts)?;
    let time = SigningTime::from_unix(claim.created_unix);
    let mut names: Vec<String> = claim
        .params
        .components
        .iter()
        .filter(|c| !c.starts_with('@'))
        .cloned()
        .collect();
    names.push("host".to_owned());
    names.sort();
    names.dedup();
    let signed_headers = SignedHeaders::parse(&names.join(";"))?;
    let payload_hash = hex::encode(claim.body_sha256);
    let canonical = CanonicalRequest::new(&HWS1, parts, &signed_headers, &payload_hash)?;
    let signature = p256::ecdsa::Signature::from_slice(&claim.signature)
        .map_err(|_| ProtoError::MalformedSignature)?
        .to_der()
        .as_bytes()
        .to_vec();
    Ok(ClaimedSignature {
        authorization: Authorization {
            credential: claim.key_id,
            scope: Scope::new(time, &claim.audience, HWS1.scope_terminator),
            signed_headers,
            signature,
        },
        time,
        nonce: Some(claim.nonce),
        payload_hash,
        delegation: claim.delegation,
        expires_secs: None,
        not_after_unix: claim.expires_unix,
        canonical,
        string_to_sign: StringToSign::from_signature_base(claim.signature_base),
    })
}

fn single<'a>(
    parts: &'a RequestParts<'a>,
    name: &'static str,
) -> Result<&'a str, Rfc9421RequestError> {
    let field = match name {
        "signature-input" => "Signature-Input",
        "signature" => "Signature",
        _ => "Content-Digest",
    };
    let mut values = parts.header_values(name);
    let first = values.next().ok_or(Rfc9421RequestError::Field(field))?;
    if values.next().is_some() {
        return Err(Rfc9421RequestError::Field(field));
    }
    Ok(first)
}
