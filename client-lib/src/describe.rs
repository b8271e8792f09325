//! Turning an outgoing HTTP request into the agent's [`SignRequest`], and the agent's answer back
//! into headers. The description must match what the HTTP client will put on the wire, so the
//! signed authority is derived by the protocol's one rule ([`hwsign_proto::host::signed_host`]:
//! lower case, the scheme's default port left out, as HTTP clients write `Host`) from the `Host`
//! header when there is one, and otherwise from the URI's authority; a `Host` header spelled
//! otherwise is rewritten to the signed spelling, so what is sent is what is signed.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use hwsign_proto::api::{HeaderField, SignRequest, SignResponse};
use hwsign_proto::host::signed_host;

use crate::digest::BodyDigest;
use crate::error::RequestError;

/// Prefix of every header hwsign adds.
const HWS_HEADER_PREFIX: &str = "x-hws-";

/// Where a request goes: what the URI (or URL) says, before the `Host` header is consulted.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    /// `host[:port]` from the URI; `None` for origin-form URIs.
    pub authority: Option<&'a str>,
    /// Percent-encoded path, as it will be sent.
    pub path: &'a str,
    /// Raw query without `?`.
    pub query: &'a str,
    /// The URI's scheme; `None` (origin form) is taken as `https`.
    pub scheme: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// From an `http::Uri` (absolute or origin form).
    pub(crate) fn from_uri(uri: &'a Uri) -> Result<Self, RequestError> {
        let authority = match uri.authority() {
            Some(authority) if authority.as_str().contains('@') => {
                return Err(RequestError::UserInfo);
            }
            Some(authority) => Some(authority.as_str()),
            None => None,
        };
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        Ok(Self {
            authority,
            path,
            query: uri.query().unwrap_or(""),
            scheme: uri.scheme_str(),
        })
    }
}

/// Removes `Authorization` and every `X-Hws-*` header: they belong to a previous signature (a
/// retried request) and would otherwise make the new one ambiguous.
pub(crate) fn strip_signature_headers(headers: &mut HeaderMap) {
    let stale: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            *name == header::AUTHORIZATION || name.as_str().starts_with(HWS_HEADER_PREFIX)
        })
        .cloned()
        .collect();
    for name in stale {
        headers.remove(name);
    }
}

/// Removes the fields an RFC 9421 signature adds (`Signature`, `Signature-Input`,
/// `Content-Digest`), so a retried request is signed afresh rather than with stale fields.
pub(crate) fn strip_rfc9421_headers(headers: &mut HeaderMap) {
    for name in ["signature", "signature-input", "content-digest"] {
        headers.remove(name);
    }
}

/// What the caller wants signed, besides the request itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigningIdentity<'a> {
    pub key_id: &'a str,
    pub audience: &'a str,
    pub signed_headers: &'a [String],
}

/// Builds the agent's signing request. `headers` must already be stripped of old signatures.
pub(crate) fn describe(
    identity: SigningIdentity<'_>,
    method: &Method,
    target: Target<'_>,
    headers: &mut HeaderMap,
    body: &BodyDigest,
) -> Result<SignRequest, RequestError> {
    let authority = resolve_authority(&target, headers)?;
    let mut fields = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if name == header::HOST {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| RequestError::HeaderNotText(name.as_str().to_owned()))?;
        fields.push(HeaderField {
            name: name.as_str().to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(SignRequest {
        key_id: identity.key_id.to_owned(),
        audience: identity.audience.to_owned(),
        method: method.as_str().to_owned(),
        authority,
        path: target.path.to_owned(),
        query: target.query.to_owned(),
        headers: fields,
        body_sha256: body.to_hex(),
        signed_headers: identity.signed_headers.to_vec(),
        presign_expires_secs: None,
        encoding: Default::default(),
    })
}

/// The signed host, from the `Host` header or the URI (which must then name the same server).
/// A `Host` header spelled otherwise than the signed host (`API.example.com:443`) is rewritten.
fn resolve_authority(target: &Target<'_>, headers: &mut HeaderMap) -> Result<String, RequestError> {
    let derive = |authority: &str| {
        signed_host(target.scheme, authority).map_err(RequestError::InvalidAuthority)
    };
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::DuplicateHost);
    }
    let host = host
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| RequestError::HeaderNotText("host".to_owned()))
        })
        .transpose()?;
    let signed = match (target.authority, host.as_deref()) {
        (Some(uri), Some(host)) => {
            // Same server once both are in signed form (`h:443` is `h` over https); every
            // other difference is not.
            let from_uri = derive(uri)?;
            if derive(host).ok().as_deref() != Some(from_uri.as_str()) {
                return Err(RequestError::AuthorityMismatch {
                    uri: from_uri,
                    host: host.to_owned(),
                });
            }
            from_uri
        }
        (Some(uri), None) => derive(uri)?,
        (None, Some(host)) => derive(host)?,
        (None, None) => return Err(RequestError::MissingAuthority),
    };
    if host.is_some_and(|host| host != signed) {
        let value = HeaderValue::from_str(&signed)
            .map_err(|_| RequestError::HeaderNotText("host".to_owned()))?;
        headers.insert(header::HOST, value);
    }
    Ok(signed)
}

/// Adds the agent's headers to the request, in the order given (`authorization` last).
pub(crate) fn apply(headers: &mut HeaderMap, response: &SignResponse) -> Result<(), RequestError> {
    for field in &response.headers {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| RequestError::InvalidSignatureHeader(field.name.clone()))?;
        let value = HeaderValue::from_str(&field.value)
            .map_err(|_| RequestError::InvalidSignatureHeader(field.name.clone()))?;
        headers.insert(name, value);
    }
    Ok(())
}

/// `uri` with the agent's presigned query parameters appended (they come already encoded).
pub(crate) fn append_query(uri: &Uri, response: &SignResponse) -> Result<Uri, RequestError> {
    let mut query = uri.query().unwrap_or("").to_owned();
    for field in &response.query_params {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&field.name);
        query.push('=');
        query.push_str(&field.value);
    }
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        format!("{path}?{query}")
            .parse()
            .map_err(|_| RequestError::InvalidUrl("presigned query".to_owned()))?,
    );
    Uri::from_parts(parts).map_err(|e| RequestError::InvalidUrl(e.to_string()))
}
