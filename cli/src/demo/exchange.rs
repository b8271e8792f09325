//! One signed request of the demo: signed once through the client library, and sent (possibly
//! again, possibly with another body) over plain HTTP.

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, header};
use hwsign_client::{BodyDigest, Signer};

use crate::http_send;

/// A request with its signature headers.
pub(super) struct SignedRequest {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    digest: BodyDigest,
}

/// What the API answered.
pub(super) enum Outcome {
    /// 2xx, with the body.
    Accepted(String),
    /// A refusal and its `WWW-Authenticate` error code.
    Refused { status: u16, code: String },
}

impl SignedRequest {
    /// Signs `POST url` with `body` (content-type JSON).
    pub(super) async fn sign(signer: &Signer, url: &str, body: Bytes) -> anyhow::Result<Self> {
        let uri: Uri = url.parse()?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(http_send::bytes_body(Bytes::new()))?;
        http_send::set_host(&mut request)?;
        let digest = BodyDigest::of_bytes(&body);
        let (mut parts, _) = request.into_parts();
        signer.sign_parts(&mut parts, &digest).await?;
        Ok(Self {
            uri,
            headers: parts.headers,
            body,
            digest,
        })
    }

    /// The same signed headers with another body.
    pub(super) fn with_body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    pub(super) fn uri(&self) -> &Uri {
        &self.uri
    }

    pub(super) fn body_digest(&self) -> &BodyDigest {
        &self.digest
    }

    /// Every header as text, `host` included.
    pub(super) fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }

    /// The headers the signature added.
    pub(super) fn hws_headers(&self) -> Vec<(String, String)> {
        self.header_pairs()
            .into_iter()
            .filter(|(n, _)| n.starts_with("x-hws-") || n == "authorization")
            .collect()
    }

    pub(super) async fn send(&self) -> anyhow::Result<Outcome> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .body(http_send::bytes_body(self.body.clone()))?;
        *request.headers_mut() = self.headers.clone();
        let tls = crate::https::client_config(&[])?;
        let response = http_send::send(request, &tls)
            .await
            .context("sending to the demo API")?;
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome::Accepted(
                String::from_utf8_lossy(response.body()).into_owned(),
            ));
        }
        let code = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("HWS1 error=\""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or("(no WWW-Authenticate code)")
            .to_owned();
        Ok(Outcome::Refused {
            status: status.as_u16(),
            code,
        })
    }
}
