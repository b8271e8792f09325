//! A `reqwest-middleware` [`Middleware`] that signs every attempt (feature `reqwest`).
//!
//! Attach it *after* any retry middleware
//! (`ClientBuilder::new(client).with(retry).with(SigningMiddleware::new(signer))`): middlewares
//! after a retry middleware run once per attempt, so each attempt gets a fresh date and nonce.
//! Bodies must be in memory (`.body(Vec<u8>)`, `.json(..)`); a streaming body cannot be hashed
//! without consuming it and is refused with [`RequestError::StreamingBody`] — sign such requests
//! with [`Signer::sign_parts`] and a digest from [`crate::body_sha256_from_reader`].

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::describe::Target;
use crate::digest::BodyDigest;
use crate::error::{ClientError, RequestError};
use crate::signer::Signer;

/// Signs each request (and each retry) with a [`Signer`].
#[derive(Debug, Clone)]
pub struct SigningMiddleware {
    signer: Signer,
}

impl SigningMiddleware {
    /// Signs with `signer`.
    pub fn new(signer: Signer) -> Self {
        Self { signer }
    }

    /// Signs `request` in place.
    pub async fn sign(&self, request: &mut Request) -> Result<(), ClientError> {
        let digest = match request.body() {
            None => BodyDigest::empty(),
            Some(body) => BodyDigest::of_bytes(body.as_bytes().ok_or(RequestError::StreamingBody)?),
        };
        let url = request.url().clone();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RequestError::UserInfo.into());
        }
        let host = url
            .host_str()
            .ok_or_else(|| RequestError::InvalidUrl("no host".to_owned()))?;
        // `Url::port` is `None` for the scheme's default port, as reqwest writes `Host`.
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = Target {
            authority: Some(&authority),
            path: url.path(),
            query: url.query().unwrap_or(""),
            scheme: Some(url.scheme()),
        };
        let method = request.method().clone();
        self.signer
            .sign_target(&method, target, request.headers_mut(), &digest)
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Middleware for SigningMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.sign(&mut request)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        next.run(request, extensions).await
    }
}
