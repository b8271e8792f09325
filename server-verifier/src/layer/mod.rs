//! tower middleware: verifies every request before the inner service sees it.
//!
//! The body is read once, under the configured limit (413 past it: the declared Content-Length is
//! checked before reading, and the bytes are counted as they stream in), hashed while read, and
//! handed to the inner service as a complete body. The signature is checked and the nonce
//! reserved before the body is read, so a forged request costs one ECDSA verify, not a body
//! upload, and a second copy of a signed request is refused at once. The body must be complete
//! before the request's window closes ([`Reserved::deadline`](crate::Reserved::deadline)): a
//! body, or a chunked terminator, held back past it is refused with `stale_date`. The final
//! decision (window, revocation, route rule) is made with the clock read after the body arrived.
//! On success the [`VerifiedPrincipal`] is put in the request's
//! extensions (read it with the [`VerifiedDevice`] extractor); on failure the inner service is not
//! called.
//!
//! The body deadline uses tokio's timer: run the service on a runtime with timers enabled
//! (`#[tokio::main]`, or `Builder::enable_all`/`enable_time`).
//!
//! Verification runs on the calling task: it is CPU work of tens of microseconds plus a local
//! registry lookup, cheaper than a hop to a blocking thread.

mod body;
mod parts;
mod response;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::Request;
use hwsign_proto::{RejectCode, RequestParts};
use tower_layer::Layer;
use tower_service::Service;

use crate::audit::DecisionContext;
use crate::rejection::Rejection;
use crate::verify::{VerifiedPrincipal, Verifier};

pub use response::{NotVerified, VerifiedDevice, rejection_response};

/// Wraps services with HWS1 verification by a shared [`Verifier`].
#[derive(Debug, Clone)]
pub struct HwsignLayer {
    verifier: Arc<Verifier>,
}

impl HwsignLayer {
    /// A layer verifying with `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for HwsignLayer {
    type Service = HwsignService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HwsignService {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// The service [`HwsignLayer`] produces.
#[derive(Debug, Clone)]
pub struct HwsignService<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for HwsignService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is fresh and may not be ready; the instance polled ready is the one called.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let verifier = Arc::clone(&self.verifier);
        Box::pin(async move {
            let (mut head, body) = request.into_parts();
            match authenticate(&verifier, &head, body).await {
                Ok((principal, bytes)) => {
                    head.extensions.insert(principal);
                    inner
                        .call(Request::from_parts(head, Body::from(bytes)))
                        .await
                }
                Err(rejection) => {
                    tracing::info!(
                        code = %rejection.code(),
                        detail = %rejection.detail(),
                        method = %head.method,
                        path = head.uri.path(),
                        "request refused"
                    );
                    Ok(rejection_response(&rejection))
                }
            }
        })
    }
}

/// The client's address as the server resolved it; put it in the request's extensions and the
/// device policy sees it as `context.source_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Verifies one request the way [`HwsignLayer`] does, for servers that are not tower services
/// (`hwsign-verifier serve`): the declared length against the body limit, the signature and the
/// nonce before the body, the body read under the limit and the request's deadline, then
/// [`Verifier::finish`]. Returns the principal and the complete body; answer a refusal with
/// [`rejection_response`].
///
/// The decision is recorded in the verifier's decision log, if it has one
/// ([`Verifier::record_decision`]), with the peer address of an
/// [`axum::extract::ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) extension.
pub async fn authenticate<B>(
    verifier: &Verifier,
    head: &http::request::Parts,
    body: B,
) -> Result<(VerifiedPrincipal, Bytes), Rejection>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if verifier.audit_log().is_none() {
        return authenticate_unrecorded(verifier, head, body).await;
    }
    let (result, bytes) = match authenticate_unrecorded(verifier, head, body).await {
        Ok((principal, bytes)) => (Ok(principal), bytes),
        Err(rejection) => (Err(rejection), Bytes::new()),
    };
    let header = |name| {
        head.headers
            .get(name)
            .and_then(|value: &http::HeaderValue| value.to_str().ok())
    };
    let context = DecisionContext {
        method: head.method.as_str(),
        path: head.uri.path(),
        query: head.uri.query().unwrap_or(""),
        authorization: header(http::header::AUTHORIZATION),
        user_agent: header(http::header::USER_AGENT),
        source: head
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip()),
    };
    let principal = verifier.record_decision(&context, result)?;
    Ok((principal, bytes))
}

async fn authenticate_unrecorded<B>(
    verifier: &Verifier,
    head: &http::request::Parts,
    body: B,
) -> Result<(VerifiedPrincipal, Bytes), Rejection>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    // Validated by VerifierConfig::validate to fit usize.
    let limit = usize::try_from(verifier.config().max_body_bytes).unwrap_or(usize::MAX);
    body::check_content_length(&head.headers, limit)?;
    let fields = parts::HeaderFields::collect(head)?;
    let request_parts = RequestParts {
        method: head.method.as_str(),
        path: head.uri.path(),
        query: head.uri.query().unwrap_or(""),
        headers: &fields.fields,
    };
    let mut checked = verifier.check_signature(&request_parts, verifier.now())?;
    if let Some(ClientAddr(ip)) = head.extensions.get::<ClientAddr>() {
        checked.set_client_addr(*ip);
    }
    fields.check_signed(&checked)?;
    let mut reserved = verifier.reserve(checked, verifier.now())?;
    if let Some(client) = head.extensions.get::<crate::directory::SessionClient>() {
        reserved.set_client(*client);
    }
    let remaining = reserved
        .deadline()
        .duration_since(verifier.now())
        .map_err(|_| body_too_late())?;
    let read = tokio::time::timeout(remaining, body::read_bounded(body, limit))
        .await
        .map_err(|_| body_too_late())??;
    // finish() reads the clock again: the decision is made with the time after the body.
    let principal = verifier.finish(reserved, &read.sha256)?;
    Ok((principal, read.bytes))
}

fn body_too_late() -> Rejection {
    Rejection::new(
        RejectCode::StaleDate,
        "the body was not complete before the request's window closed",
    )
}
