//! The signer's side of the pipeline: from request parts to the headers (or query parameters) to
//! add. The ECDSA signature itself comes from outside (a key backend signs
//! [`PreparedSignature::digest`]); this module never sees a private key.

use crate::authorization::Authorization;
use crate::canonical::{CanonicalRequest, RequestParts, SignedHeaders};
use crate::encoding;
use crate::error::ProtoError;
use crate::keys::check_payload_hash;
use crate::limits::{
    MAX_AUTHORIZATION_LEN, MAX_HEADERS, MAX_PRESIGN_EXPIRES_SECS, MAX_QUERY_LEN, MAX_SIGNATURE_LEN,
};
use crate::nonce::Nonce;
use crate::profile::{Profile, query_param_name};
use crate::scope::check_credential;
use crate::scope::{Scope, check_audience};
use crate::string_to_sign::StringToSign;
use crate::time::SigningTime;

/// Payload literal allowed only in presigned URLs.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Who signs, for what, and when.
#[derive(Debug, Clone, Copy)]
pub struct SigningParams<'a> {
    /// The profile.
    pub profile: &'a Profile,
    /// Key id (HWS1) or access key id (AWS).
    pub credential: &'a str,
    /// Audience (SigV4: service).
    pub audience: &'a str,
    /// Signing time.
    pub time: SigningTime,
    /// The request nonce; required by profiles that have a nonce header.
    pub nonce: Option<&'a Nonce>,
    /// Further headers the signer adds and signs (AWS: `x-amz-region-set`; HWS1:
    /// `x-hws-delegation`), lower-case names.
    pub added_headers: &'a [(&'a str, &'a str)],
}

/// Which headers to sign.
#[derive(Debug, Clone, Copy)]
pub enum HeaderSelection<'a> {
    /// The profile's mandatory headers plus these names.
    ProfileWith(&'a [String]),
    /// Every header of the request (the AWS test suite's rule).
    All,
}

/// A request ready for its signature.
#[derive(Debug, Clone)]
pub struct PreparedSignature {
    credential: String,
    scope: Scope,
    signed_headers: SignedHeaders,
    canonical: CanonicalRequest,
    string_to_sign: StringToSign,
    additions: Vec<(String, String)>,
    presigned: bool,
}

impl PreparedSignature {
    /// The canonical request.
    pub fn canonical_request(&self) -> &CanonicalRequest {
        &self.canonical
    }

    /// The string to sign.
    pub fn string_to_sign(&self) -> &StringToSign {
        &self.string_to_sign
    }

    /// SHA-256 of the string to sign: what the key backend signs.
    pub fn digest(&self) -> [u8; 32] {
        self.string_to_sign.digest()
    }

    /// The signed headers.
    pub fn signed_headers(&self) -> &SignedHeaders {
        &self.signed_headers
    }

    /// Header mode: the headers to add to the request, `authorization` last. Presigned mode: the
    /// query parameters to append (already percent-encoded), `X-...-Signature` last.
    pub fn finish(mut self, profile: &Profile, der_signature: &[u8]) -> Vec<(String, String)> {
        let authorization = Authorization {
            credential: self.credential,
            scope: self.scope,
            signed_headers: self.signed_headers,
            signature: der_signature.to_vec(),
        };
        if self.presigned {
            self.additions.push((
                format!("{}Signature", profile.query_prefix),
                hex::encode(&authorization.signature),
            ));
        } else {
            self.additions.push((
                "authorization".to_owned(),
                authorization.to_header_value(profile),
            ));
        }
        self.additions
    }
}

fn check_params(params: &SigningParams<'_>) -> Result<(), ProtoError> {
    check_credential(params.credential)?;
    check_audience(params.audience)?;
    if params.profile.nonce_header.is_some() && params.nonce.is_none() {
        return Err(ProtoError::InvalidNonce);
    }
    Ok(())
}

/// Header mode: adds date, body hash (when the profile signs it), nonce and `added_headers`,
/// selects the signed headers, and builds canonical request and string to sign.
pub fn prepare_headers(
    params: &SigningParams<'_>,
    parts: &RequestParts<'_>,
    payload_hash: &str,
    selection: HeaderSelection<'_>,
) -> Result<PreparedSignature, ProtoError> {
    check_params(params)?;
    check_payload_hash(payload_hash).map_err(|e| {
        if payload_hash == UNSIGNED_PAYLOAD {
            ProtoError::UnsignedPayloadNotAllowed
        } else {
            e
        }
    })?;
    let profile = params.profile;
    let date = params.time.to_amz_date();
    let mut additions: Vec<(String, String)> = vec![(profile.date_header.to_owned(), date)];
    if profile.sign_body_hash_header {
        additions.push((
            profile.content_sha256_header.to_owned(),
            payload_hash.to_owned(),
        ));
    }
    if let (Some(name), Some(nonce)) = (profile.nonce_header, params.nonce) {
        additions.push((name.to_owned(), nonce.as_str().to_owned()));
    }
    for (name, value) in params.added_headers {
        additions.push((name.to_ascii_lowercase(), (*value).to_owned()));
    }
    // The signer owns these headers: a caller-supplied copy would be ambiguous.
    for (name, _) in &additions {
        if parts.header_values(name).next().is_some() {
            return Err(ProtoError::DuplicateHeader(name.clone()));
        }
    }
    if parts.header_values("authorization").next().is_some() {
        return Err(ProtoError::DuplicateHeader("authorization".to_owned()));
    }
    parts.single_header("host")?;

    let mut all_headers: Vec<(&str, &str)> = parts.headers.to_vec();
    all_headers.extend(additions.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let full = RequestParts {
        headers: &all_headers,
        ..*parts
    };
    let signed_headers = match selection {
        HeaderSelection::ProfileWith(extra) => SignedHeaders::for_signing(profile, &full, extra)?,
        HeaderSelection::All => SignedHeaders::all_of(&full)?,
    };
    signed_headers.check_coverage(profile, &full)?;
    let canonical = CanonicalRequest::new(profile, &full, &signed_headers, payload_hash)?;
    let scope = Scope::new(params.time, params.audience, profile.scope_terminator);
    // `finish` appends `authorization`: the request the verifier receives must still fit its
    // bounds with it, or the signer would produce requests no verifier accepts.
    if all_headers.len() >= MAX_HEADERS {
        return Err(ProtoError::TooLarge {
            what: "header count",
            limit: MAX_HEADERS,
        });
    }
    let longest_authorization = Authorization {
        credential: params.credential.to_owned(),
        scope: scope.clone(),
        signed_headers: signed_headers.clone(),
        signature: vec![0; MAX_SIGNATURE_LEN],
    };
    if longest_authorization.to_header_value(profile).len() > MAX_AUTHORIZATION_LEN {
        return Err(ProtoError::TooLarge {
            what: "Authorization header",
            limit: MAX_AUTHORIZATION_LEN,
        });
    }
    let string_to_sign = StringToSign::new(profile.algorithm, params.time, &scope, &canonical);
    Ok(PreparedSignature {
        credential: params.credential.to_owned(),
        scope,
        signed_headers,
        canonical,
        string_to_sign,
        additions,
        presigned: false,
    })
}

/// Presigned-URL mode: the signature travels in `X-...-*` query parameters; headers signed are
/// `host` plus `extra` (or all, for the AWS suite). The payload hash may be `UNSIGNED-PAYLOAD`.
pub fn prepare_presigned(
    params: &SigningParams<'_>,
    parts: &RequestParts<'_>,
    payload_hash: &str,
    expires_secs: u64,
    selection: HeaderSelection<'_>,
) -> Result<PreparedSignature, ProtoError> {
    check_params(params)?;
    if payload_hash != UNSIGNED_PAYLOAD {
        check_payload_hash(payload_hash)?;
    }
    if expires_secs == 0 || expires_secs > MAX_PRESIGN_EXPIRES_SECS {
        return Err(ProtoError::MalformedPresign("expiry must be 1 s to 7 days"));
    }
    let profile = params.profile;
    let prefix = profile.query_prefix;
    parts.single_header("host")?;
    // The signer owns the prefixed parameters: a caller-supplied copy would be ambiguous, and
    // the verifier refuses repeated ones.
    for pair in parts.query.split('&') {
        let raw_key = pair.split_once('=').map_or(pair, |(key, _)| key);
        if encoding::decode(raw_key)?
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
        {
            return Err(ProtoError::MalformedPresign(
                "the query already has presigned-URL parameters",
            ));
        }
    }
    let signed_headers = match selection {
        HeaderSelection::ProfileWith(extra) => {
            let mut names: Vec<String> = vec!["host".to_owned()];
            names.extend(extra.iter().map(|n| n.to_ascii_lowercase()));
            names.sort();
            names.dedup();
            SignedHeaders::parse(&names.join(";"))?
        }
        HeaderSelection::All => SignedHeaders::all_of(parts)?,
    };
    let scope = Scope::new(params.time, params.audience, profile.scope_terminator);
    let mut additions: Vec<(String, String)> = vec![
        (format!("{prefix}Algorithm"), profile.algorithm.to_owned()),
        (
            format!("{prefix}Credential"),
            encoding::encode(format!("{}/{scope}", params.credential).as_bytes()),
        ),
        (format!("{prefix}Date"), params.time.to_amz_date()),
        (
            format!("{prefix}SignedHeaders"),
            encoding::encode(signed_headers.to_string().as_bytes()),
        ),
        (format!("{prefix}Expires"), expires_secs.to_string()),
    ];
    if let (Some(name), Some(nonce)) = (profile.nonce_header, params.nonce) {
        additions.push((query_param_name(name), nonce.as_str().to_owned()));
    }
    for (name, value) in params.added_headers {
        additions.push((query_param_name(name), encoding::encode(value.as_bytes())));
    }
    let mut query = parts.query.to_owned();
    for (name, value) in &additions {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.push_str(value);
    }
    // `finish` appends the signature parameter last; the URL must still fit the query bound.
    let signature_param = "&".len() + prefix.len() + "Signature=".len() + 2 * MAX_SIGNATURE_LEN;
    if query.len() + signature_param > MAX_QUERY_LEN {
        return Err(ProtoError::TooLarge {
            what: "query",
            limit: MAX_QUERY_LEN,
        });
    }
    let full = RequestParts {
        query: &query,
        ..*parts
    };
    let canonical = CanonicalRequest::new(profile, &full, &signed_headers, payload_hash)?;
    let string_to_sign = StringToSign::new(profile.algorithm, params.time, &scope, &canonical);
    Ok(PreparedSignature {
        credential: params.credential.to_owned(),
        scope,
        signed_headers,
        canonical,
        string_to_sign,
        additions,
        presigned: true,
    })
}
