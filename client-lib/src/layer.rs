//! A tower [`Layer`] that signs every request passing through it (feature `tower`).
//!
//! The body is collected (up to a bound), hashed, the request signed, and forwarded with the
//! collected body as `Full<Bytes>`. Put retries *outside* this layer
//! (`ServiceBuilder::new().retry(policy).layer(SigningLayer::new(signer))`), so that every
//! attempt passes through it and gets a fresh date and nonce.
//!
//! A `401 session_revoked` answer (an administrator ended the delegated session the request was
//! signed with) is handled here: the agent forgets that session ([`Signer::end_session`]) and the
//! request — its body is already in memory — is signed again by a new session, which the
//! verifier accepts only while the device itself is allowed, and sent once more.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::digest::BodyDigest;
use crate::error::ClientError;
use crate::revoked_session::session_revoked;
use crate::signer::Signer;

/// Largest body the layer buffers by default.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request through [`SigningService`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SigningServiceError<E> {
    /// Reading, hashing or signing failed; the request was not sent.
    Sign(ClientError),
    /// The inner service failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for SigningServiceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sign(e) => write!(f, "signing the request failed: {e}"),
            Self::Inner(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SigningServiceError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Sign(e) => Some(e),
            Self::Inner(e) => Some(e),
        }
    }
}

/// Signs each request with a [`Signer`].
#[derive(Debug, Clone)]
pub struct SigningLayer {
    signer: Signer,
    max_body: usize,
}

impl SigningLayer {
    /// Buffers bodies up to [`DEFAULT_MAX_BODY`].
    pub fn new(signer: Signer) -> Self {
        Self {
            signer,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Changes the body bound; larger bodies fail with [`ClientError::BodyTooLarge`] unsent.
    pub fn max_body(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }
}

impl<S> Layer<S> for SigningLayer {
    type Service = SigningService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SigningService {
            inner,
            signer: self.signer.clone(),
            max_body: self.max_body,
        }
    }
}

/// The service made by [`SigningLayer`].
#[derive(Debug, Clone)]
pub struct SigningService<S> {
    inner: S,
    signer: Signer,
    max_body: usize,
}

impl<S, B, RB> Service<Request<B>> for SigningService<S>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    RB: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = SigningServiceError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(SigningServiceError::Inner)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let signer = self.signer.clone();
        let max_body = self.max_body;
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let body = collect_bounded(body, max_body)
                .await
                .map_err(SigningServiceError::Sign)?;
            let digest = BodyDigest::of_bytes(&body);
            // What the request was before signing, to sign it again after `session_revoked`.
            let unsigned = (
                parts.method.clone(),
                parts.uri.clone(),
                parts.version,
                parts.headers.clone(),
            );
            let signed = signer
                .sign_parts(&mut parts, &digest)
                .await
                .map_err(SigningServiceError::Sign)?;
            let response = inner
                .call(Request::from_parts(parts, Full::new(body.clone())))
                .await
                .map_err(SigningServiceError::Inner)?;
            if !session_revoked(response.status(), response.headers())
                || !signer
                    .end_session(&signed)
                    .await
                    .map_err(SigningServiceError::Sign)?
            {
                return Ok(response);
            }
            let (method, uri, version, headers) = unsigned;
            let mut again = Request::new(Full::new(body));
            *again.method_mut() = method;
            *again.uri_mut() = uri;
            *again.version_mut() = version;
            *again.headers_mut() = headers;
            let (mut parts, body) = again.into_parts();
            signer
                .sign_parts(&mut parts, &digest)
                .await
                .map_err(SigningServiceError::Sign)?;
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(SigningServiceError::Inner)?;
            inner
                .call(Request::from_parts(parts, body))
                .await
                .map_err(SigningServiceError::Inner)
        })
    }
}

async fn collect_bounded<B>(body: B, limit: usize) -> Result<Bytes, ClientError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ClientError::BodyTooLarge { limit }),
        Err(e) => Err(ClientError::Body(std::io::Error::other(e))),
    }
}
