//! One request through the proxy: route by path prefix to a configured upstream, read and hash
//! the body, sign through the agent, send upstream, and stream the answer back unchanged (but for
//! hop-by-hop headers). Refusals the proxy makes itself carry `X-Hwsign-Proxy-Error: <code>` and
//! a JSON body `{"error":{"code","message"}}`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hwsign_client::{ClientError, Signer};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::Proxy;
use super::config::Upstream;
use super::spool::{SpoolError, spool};
use crate::https::{ConnectError, connect};

/// What the proxy answers with: the upstream's body, or its own refusal.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The header naming the proxy's own refusal code.
pub(crate) const ERROR_HEADER: &str = "x-hwsign-proxy-error";

/// A request the proxy refuses or cannot complete; each has its code (docs/OPERATIONS.md).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// An absolute-form or authority-form target (`GET http://other/…`, `CONNECT`): the caller
    /// tried to choose the server.
    #[error("the proxy forwards only to its configured upstreams; send origin-form requests")]
    AbsoluteTarget,
    /// No configured upstream serves this path.
    #[error("no upstream is configured for this path")]
    NoUpstream,
    /// The body is over the bound.
    #[error("the request body is over the proxy's bound")]
    BodyTooLarge(#[source] SpoolError),
    /// The body could not be read or spooled.
    #[error("the request body could not be read")]
    Body(#[source] SpoolError),
    /// The caller's headers cannot be signed (not text, bad Host).
    #[error("the request cannot be signed as sent")]
    Unsignable(#[source] ClientError),
    /// The agent did not sign (down, key unknown, refused).
    #[error("the agent did not sign the request")]
    Signing(#[source] ClientError),
    /// The upstream could not be reached.
    #[error("the upstream could not be reached")]
    Connect(#[source] ConnectError),
    /// The upstream connection failed before an answer.
    #[error("the upstream did not answer")]
    Upstream(#[source] hyper::Error),
}

impl Refusal {
    /// The status and code sent to the caller.
    pub(crate) fn wire(&self) -> (StatusCode, &'static str) {
        match self {
            Self::AbsoluteTarget => (StatusCode::BAD_REQUEST, "proxy_absolute_target"),
            Self::NoUpstream => (StatusCode::NOT_FOUND, "proxy_no_upstream"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "proxy_body_too_large"),
            Self::Body(_) => (StatusCode::BAD_REQUEST, "proxy_body_unreadable"),
            Self::Unsignable(_) => (StatusCode::BAD_REQUEST, "proxy_unsignable_request"),
            Self::Signing(_) => (StatusCode::BAD_GATEWAY, "proxy_signing_failed"),
            Self::Connect(_) => (StatusCode::BAD_GATEWAY, "proxy_upstream_unreachable"),
            Self::Upstream(_) => (StatusCode::BAD_GATEWAY, "proxy_upstream_failed"),
        }
    }

    /// The answer to the caller; the cause chain goes to the log, not to the caller.
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let (status, code) = self.wire();
        let body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        let mut response = Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
        response
    }
}

/// Whether `name` is a hop-by-hop header (RFC 9110 §7.6.1), never forwarded.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// Handles one request; never fails (refusals are answers).
pub(crate) async fn handle(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response<ProxyBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match forward(&proxy, request).await {
        Ok(response) => response,
        Err(refusal) => {
            let (status, code) = refusal.wire();
            eprintln!(
                "hwsign proxy: {method} {path}: {} {code}: {}",
                status.as_u16(),
                crate::error_text(&anyhow::Error::new(refusal_cause(&refusal)))
            );
            refusal.into_response()
        }
    }
}

/// A copy of the refusal's text and causes, for the log.
fn refusal_cause(refusal: &Refusal) -> LoggedError {
    let mut text = refusal.to_string();
    let mut source = std::error::Error::source(refusal);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    LoggedError(text)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LoggedError(String);

async fn forward(
    proxy: &Proxy,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (mut parts, body) = request.into_parts();
    if parts.method == Method::CONNECT
        || parts.uri.scheme().is_some()
        || parts.uri.authority().is_some()
    {
        return Err(Refusal::AbsoluteTarget);
    }
    let upstream = proxy
        .settings
        .route(parts.uri.path())
        .ok_or(Refusal::NoUpstream)?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let max = proxy.settings.max_body_bytes;
    if declared.is_some_and(|length| length > max) {
        return Err(Refusal::BodyTooLarge(SpoolError::TooLarge(max)));
    }
    let had_body = declared.is_some() || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let spooled = spool(body, max, proxy.settings.memory_body_bytes)
        .await
        .map_err(|e| match e {
            SpoolError::TooLarge(_) => Refusal::BodyTooLarge(e),
            other => Refusal::Body(other),
        })?;

    let uri = upstream_uri(upstream, &parts.uri)?;
    let mut headers = std::mem::take(&mut parts.headers);
    let caller_authorization = headers.remove(header::AUTHORIZATION);
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    if let (Some(name), Some(value)) = (&upstream.forward_authorization_as, caller_authorization) {
        headers.insert(name.clone(), value);
    }
    if had_body || spooled.length > 0 {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(spooled.length));
    }
    // The configured authority; the signer rewrites it to the signed spelling (`h:443` → `h`).
    if let Some(authority) = uri.authority() {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(header::HOST, value);
        }
    }
    let signer = Signer::new(proxy.agent.clone(), &upstream.key, &upstream.audience)
        .with_signed_headers(upstream.signed_headers.iter().cloned());
    signer
        .sign_headers(&parts.method, &uri, &mut headers, &spooled.digest)
        .await
        .map_err(|e| match e {
            ClientError::Request(_) => Refusal::Unsignable(e),
            other => Refusal::Signing(other),
        })?;

    let stream = connect(&uri, &proxy.tls).await.map_err(Refusal::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Refusal::Upstream)?;
    tokio::spawn(connection);
    let body = spooled.into_body().await.map_err(Refusal::Body)?;
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|_| Refusal::NoUpstream)?;
    *outgoing.headers_mut() = headers;
    let response = sender
        .send_request(outgoing)
        .await
        .map_err(Refusal::Upstream)?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// The upstream's URI for a caller's origin-form `uri`: the upstream's base path, then the
/// caller's path without the route prefix, then the caller's query.
fn upstream_uri(upstream: &Upstream, uri: &Uri) -> Result<Uri, Refusal> {
    let rest = match upstream.prefix.as_str() {
        "/" => uri.path(),
        prefix => uri.path().strip_prefix(prefix).unwrap_or(uri.path()),
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let mut path_and_query = format!("{}{rest}", upstream.base_path);
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let mut parts = upstream.origin.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| Refusal::NoUpstream)?);
    Uri::from_parts(parts).map_err(|_| Refusal::NoUpstream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::config::{ProxyFile, ProxySettings, UpstreamFile};

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn the_route_prefix_is_replaced_by_the_upstream_base_path()
    -> Result<(), Box<dyn std::error::Error>> {
        let settings = ProxySettings::check(ProxyFile {
            listen: Some("127.0.0.1:1".to_owned()),
            allowed_uids: Vec::new(),
            max_body_bytes: None,
            memory_body_bytes: None,
            max_connections: None,
            cacert: Vec::new(),
            upstreams: vec![UpstreamFile {
                prefix: Some("/openai/".to_owned()),
                url: "https://api.example.com:8443/base".to_owned(),
                key: "hk1_a".to_owned(),
                audience: "a".to_owned(),
                signed_headers: Vec::new(),
                forward_authorization_as: None,
            }],
        })?;
        let caller: Uri = "/openai/v1/chat?x=1".parse()?;
        let upstream = settings.route(caller.path()).ok_or("no route")?;
        let uri = upstream_uri(upstream, &caller).map_err(|e| e.to_string())?;
        assert_eq!(
            uri.to_string(),
            "https://api.example.com:8443/base/v1/chat?x=1"
        );
        assert!(settings.route("/other").is_none());
        Ok(())
    }

    #[test]
    fn refusal_codes_are_documented_in_operations_md() -> Result<(), Box<dyn std::error::Error>> {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/OPERATIONS.md"
        ))?;
        let refusals = [
            Refusal::AbsoluteTarget,
            Refusal::NoUpstream,
            Refusal::BodyTooLarge(SpoolError::TooLarge(1)),
            Refusal::Body(SpoolError::File(std::io::Error::other("x"))),
            Refusal::Unsignable(ClientError::NoSocketPath),
            Refusal::Signing(ClientError::NoSocketPath),
            Refusal::Connect(ConnectError::Url("x".to_owned())),
        ];
        for refusal in refusals {
            let (status, code) = refusal.wire();
            let row = format!("| {} | `{code}` |", status.as_u16());
            assert!(doc.contains(&row), "OPERATIONS.md lacks {row}");
        }
        assert!(doc.contains("| 502 | `proxy_upstream_failed` |"));
        Ok(())
    }
}
