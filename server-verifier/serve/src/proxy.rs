//! One request through the proxy: enrollment paths to the enrollment router, re-attestation
//! paths to the re-attestation router (each when configured); everything else
//! verified (the library's [`authenticate`], so the body limit, deadlines and refusals are the
//! middleware's), then forwarded to the upstream with the identity headers, and the upstream's
//! response streamed back as it arrives.
//!
//! # The nonce when the upstream is down
//! A verified request's nonce was reserved before its body was read, and stays used when the
//! upstream cannot be reached (502 `upstream_unavailable`): a retry is a new request, signed
//! again with a fresh nonce, and is accepted once the upstream is back. Releasing the nonce would
//! be unsafe even when no byte reached the upstream: the client, told 502, signs and sends a
//! fresh request; a copy of the first one (captured on the way, or resent by a client library)
//! would then be accepted too, and the upstream would act twice. It would also let a replica
//! whose upstream is down turn one captured request into a retry budget across the fleet.
//! PROTOCOL.md §6 step 7: a reservation is never released.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use http_body_util::Full;
use hwsign_proto::enrollment::{ACTIVATE_PATH, EVIDENCE_PATH, START_PATH};
use hwsign_proto::reattestation::{ATTEST_PATH, CHALLENGE_PATH};
use hwsign_verifier::layer::authenticate;
use hwsign_verifier::{RejectCode, Rejection, Verifier, rejection_response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt as _;

use crate::forwarded::{self, TrustedProxies};
use crate::headers;
use crate::metrics::{Metrics, Outcome};

/// Idle upstream connections kept per host.
const UPSTREAM_IDLE_PER_HOST: usize = 256;
/// How long an idle upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Who sent a request, as this hop saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The TCP peer.
    pub(crate) addr: SocketAddr,
    /// `https` when this listener terminated TLS, else `http`.
    pub(crate) scheme: &'static str,
}

/// Where verified requests go, and how.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) connect_timeout: Duration,
    /// The upstream's time to a response head.
    pub(crate) timeout: Duration,
}

/// The proxy's request handler, shared by every connection.
#[derive(Debug)]
pub(crate) struct Proxy {
    verifier: Arc<Verifier>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: Upstream,
    trusted: TrustedProxies,
    metrics: Arc<Metrics>,
    enrollment: Option<axum::Router>,
    reattestation: Option<axum::Router>,
    webauthn_registration: Option<axum::Router>,
}

impl Proxy {
    pub(crate) fn new(
        verifier: Arc<Verifier>,
        upstream: Upstream,
        trusted: TrustedProxies,
        metrics: Arc<Metrics>,
        enrollment: Option<axum::Router>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(UPSTREAM_IDLE_PER_HOST)
            .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
            .build(connector);
        Self {
            verifier,
            client,
            upstream,
            trusted,
            metrics,
            enrollment,
            reattestation: None,
            webauthn_registration: None,
        }
    }

    /// Answers the re-attestation paths with `router` (outside verification: the evidence
    /// authenticates itself, and a device asked to attest again must reach them).
    pub(crate) fn with_reattestation(mut self, router: axum::Router) -> Self {
        self.reattestation = Some(router);
        self
    }

    /// Answers the FIDO2 registration paths with `router` (outside verification: the credential
    /// is not registered yet; the enrollment token authorizes them).
    pub(crate) fn with_webauthn_registration(mut self, router: axum::Router) -> Self {
        self.webauthn_registration = Some(router);
        self
    }

    /// Answers one request.
    pub(crate) async fn handle(&self, request: Request<Incoming>, peer: Peer) -> Response {
        let path = request.uri().path();
        let unverified = match (&self.enrollment, &self.reattestation) {
            (Some(router), _) if is_enrollment_path(path) => Some(router),
            (_, Some(router)) if is_reattestation_path(path) => Some(router),
            _ => match &self.webauthn_registration {
                Some(router) if is_webauthn_registration_path(path) => Some(router),
                _ => None,
            },
        };
        if let Some(router) = unverified {
            return match router.clone().oneshot(request.map(Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        let started = Instant::now();
        let (mut head, body) = request.into_parts();
        // The client's address: for the device policy (`context.source_ip`) and the session
        // record (force logout lists it).
        let client = forwarded::client_addr(
            &head.headers,
            peer.addr.ip(),
            self.trusted.trusts(peer.addr.ip()),
        );
        head.extensions
            .insert(hwsign_verifier::layer::ClientAddr(client));
        head.extensions
            .insert(hwsign_verifier::directory::SessionClient(client));
        head.extensions
            .insert(axum::extract::ConnectInfo(peer.addr));
        let verified = authenticate(&self.verifier, &head, body).await;
        self.metrics.observe_verify(started.elapsed());
        match verified {
            Ok((principal, body)) => {
                let mut head = head;
                headers::for_upstream(&mut head.headers, &principal);
                self.forward(head, body, peer).await
            }
            Err(rejection) => {
                tracing::info!(
                    code = %rejection.code(),
                    detail = %rejection.detail(),
                    method = %head.method,
                    path = head.uri.path(),
                    peer = %peer.addr,
                    "request refused"
                );
                self.metrics.count(Outcome::Refused, Some(rejection.code()));
                rejection_response(&rejection)
            }
        }
    }

    /// Sends a verified request (identity headers already set) upstream and streams the answer.
    async fn forward(&self, mut head: http::request::Parts, body: Bytes, peer: Peer) -> Response {
        let trusted = self.trusted.trusts(peer.addr.ip());
        forwarded::rewrite(&mut head.headers, peer.addr.ip(), peer.scheme, trusted);
        head.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        let mut uri = Uri::builder()
            .scheme(self.upstream.scheme.clone())
            .authority(self.upstream.authority.clone());
        if let Some(path_and_query) = head.uri.path_and_query() {
            uri = uri.path_and_query(path_and_query.clone());
        } else {
            uri = uri.path_and_query(PathAndQuery::from_static("/"));
        }
        let uri = match uri.build() {
            Ok(uri) => uri,
            Err(error) => {
                tracing::error!(%error, "cannot build the upstream URI");
                return self.upstream_failed();
            }
        };
        head.uri = uri;
        head.version = Version::HTTP_11;
        let request = Request::from_parts(head, Full::new(body));
        let sent = Instant::now();
        let answer =
            tokio::time::timeout(self.upstream.timeout, self.client.request(request)).await;
        self.metrics.observe_upstream(sent.elapsed());
        match answer {
            Ok(Ok(response)) => {
                self.metrics.count(Outcome::Accepted, None);
                let (mut parts, body) = response.into_parts();
                headers::remove_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error_chain(&error), "upstream request failed");
                self.upstream_failed()
            }
            Err(_) => {
                tracing::warn!(
                    timeout_secs = self.upstream.timeout.as_secs(),
                    "upstream did not answer in time"
                );
                self.upstream_failed()
            }
        }
    }

    fn upstream_failed(&self) -> Response {
        self.metrics.count(
            Outcome::UpstreamFailed,
            Some(RejectCode::UpstreamUnavailable),
        );
        rejection_response(&Rejection::new(
            RejectCode::UpstreamUnavailable,
            "the API behind this proxy did not answer; sign the request again to retry",
        ))
    }
}

fn is_enrollment_path(path: &str) -> bool {
    [START_PATH, EVIDENCE_PATH, ACTIVATE_PATH].contains(&path)
}

fn is_webauthn_registration_path(path: &str) -> bool {
    use hwsign_verifier::webauthn::registration::{REGISTER_OPTIONS_PATH, REGISTER_PATH};
    [REGISTER_OPTIONS_PATH, REGISTER_PATH].contains(&path)
}

fn is_reattestation_path(path: &str) -> bool {
    [CHALLENGE_PATH, ATTEST_PATH].contains(&path)
}

/// `error` and its sources, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}
