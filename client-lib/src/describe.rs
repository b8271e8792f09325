//! Turning an outgoing HTTP request into the agent's [`SignRequest`], and the agent's answer back
//! into headers. The description must match what the HTTP client will put on the wire, so the
//! signed authority is the `Host` header when there is one, and otherwise the URI's authority
//! without the scheme's default port (which HTTP clients leave out of `Host`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use hwsign_proto::api::{HeaderField, SignRequest, SignResponse};

use crate::digest::BodyDigest;
use crate::error::RequestError;

/// Prefix of every header hwsign adds.
const HWS_HEADER_PREFIX: &str = "x-hws-";

/// Where a request goes: what the URI (or URL) says, before the `Host` header is consulted.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    /// `host[:port]` from the URI, default port removed; `None` for origin-form URIs.
    pub authority: Option<String>,
    /// Percent-encoded path, as it will be sent.
    pub path: &'a str,
    /// Raw query without `?`.
    pub query: &'a str,
    /// `:80` or `:443` when the scheme is http or https.
    pub default_port: Option<&'static str>,
}

impl<'a> Target<'a> {
    /// From an `http::Uri` (absolute or origin form).
    pub fn from_uri(uri: &'a Uri) -> Result<Self, RequestError> {
        let authority = match uri.authority() {
            Some(authority) if authority.as_str().contains('@') => {
                return Err(RequestError::UserInfo);
            }
            Some(authority) => Some(without_default_port(authority.as_str(), uri.scheme_str())),
            None => None,
        };
        let default_port = default_port_suffix(uri.scheme_str());
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        Ok(Self {
            authority,
            path,
            query: uri.query().unwrap_or(""),
            default_port,
        })
    }
}

/// `host:80` for http and `host:443` for https become `host`, as HTTP clients write `Host`.
pub(crate) fn without_default_port(authority: &str, scheme: Option<&str>) -> String {
    match default_port_suffix(scheme).and_then(|suffix| authority.strip_suffix(suffix)) {
        Some(stripped) => stripped.to_owned(),
        None => authority.to_owned(),
    }
}

/// The `:port` suffix HTTP clients omit from `Host` for `scheme`.
pub(crate) fn default_port_suffix(scheme: Option<&str>) -> Option<&'static str> {
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(":80"),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(":443"),
        _ => None,
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
    headers: &HeaderMap,
    body: &BodyDigest,
) -> Result<SignRequest, RequestError> {
    let authority = resolve_authority(target.authority, target.default_port, headers)?;
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
    })
}

fn resolve_authority(
    from_uri: Option<String>,
    default_port: Option<&str>,
    headers: &HeaderMap,
) -> Result<String, RequestError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::DuplicateHost);
    }
    let host = host
        .map(|v| {
            v.to_str()
                .map_err(|_| RequestError::HeaderNotText("host".to_owned()))
        })
        .transpose()?;
    match (from_uri, host) {
        (Some(uri), Some(host)) => {
            // The URI's default port is already gone; a Host header spelling it out is the same
            // server, every other difference is not.
            let host_trimmed = default_port
                .and_then(|suffix| host.strip_suffix(suffix))
                .unwrap_or(host);
            if uri.eq_ignore_ascii_case(host) || uri.eq_ignore_ascii_case(host_trimmed) {
                Ok(host.to_owned())
            } else {
                Err(RequestError::AuthorityMismatch {
                    uri,
                    host: host.to_owned(),
                })
            }
        }
        (Some(uri), None) => Ok(uri),
        (None, Some(host)) => Ok(host.to_owned()),
        (None, None) => Err(RequestError::MissingAuthority),
    }
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
