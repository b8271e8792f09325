//! A `reqwest-middleware` [`Middleware`] that signs every attempt (feature `reqwest`).
//!
//! Attach it *after* any retry middleware
//! (`ClientBuilder::new(client).with(retry).with(SigningMiddleware::new(signer))`): middlewares
//! after a retry middleware run once per attempt, so each attempt gets a fresh date and nonce.
//! Bodies must be in memory (`.body(Vec<u8>)`, `.json(..)`); a streaming body cannot be hashed
//! without consuming it and is refused with [`RequestError::StreamingBody`] — sign such requests
//! with [`Signer::sign_parts`] and a digest from [`crate::body_sha256_from_reader`].
//!
//! With [`SigningMiddleware::with_reattestation`], a `401 attestation_required` answer is
//! handled here: the agent's evidence over the answer's nonce is posted to the verifier's attest
//! endpoint on the same origin, and the request is signed again and sent once more.
//!
//! A `401 session_revoked` answer to a request signed with a delegated session key is always
//! handled here (requests whose body can be cloned): the agent forgets that session, and the
//! request is signed again — by a new session, which the verifier accepts only while the device
//! itself is allowed — and sent once more ([`Signer::end_session`]).
//!
//! A `401 step_up_required` answer is always handled here (requests whose body can be cloned):
//! the agent signs the request again strictly with its FIDO2 key — a touch — and it is sent once
//! more ([`crate::step_up`]).

use http::header::CONTENT_TYPE;
use http::{Extensions, HeaderValue, Method};
use hwsign_proto::reattestation::ATTEST_PATH;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::describe::Target;
use crate::digest::BodyDigest;
use crate::error::{ClientError, RequestError};
use crate::reattest::{AttestationChallenge, attestation_challenge};
use crate::signer::Signer;
use crate::step_up::{StepUpChallenge, step_up_challenge};

pub use crate::revoked_session::session_revoked;

/// Longest attest endpoint answer read for its error code.
const MAX_ATTEST_ERROR_BODY: usize = 4096;

/// Signs each request (and each retry) with a [`Signer`].
#[derive(Debug, Clone)]
pub struct SigningMiddleware {
    signer: Signer,
    /// The attest endpoint's path, when `attestation_required` is answered here.
    attest_path: Option<String>,
}

impl SigningMiddleware {
    /// Signs with `signer`.
    pub fn new(signer: Signer) -> Self {
        Self {
            signer,
            attest_path: None,
        }
    }

    /// Also answers `401 attestation_required`: posts the agent's evidence over the answer's
    /// nonce to [`ATTEST_PATH`] on the request's origin, then signs the request again and sends
    /// it once more (only requests whose body can be cloned; others get the 401 back).
    pub fn with_reattestation(self) -> Self {
        self.with_attest_path(ATTEST_PATH)
    }

    /// [`Self::with_reattestation`] with the attest endpoint at `path` on the request's origin
    /// (a verifier mounted under a prefix).
    pub fn with_attest_path(mut self, path: impl Into<String>) -> Self {
        self.attest_path = Some(path.into());
        self
    }

    /// Posts evidence over `challenge` to the attest endpoint on `origin`'s origin.
    async fn reattest(
        &self,
        origin: &Request,
        path: &str,
        challenge: &AttestationChallenge,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<()> {
        let evidence = self
            .signer
            .attest_request(challenge)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let body = serde_json::to_vec(&evidence).map_err(|e| {
            reqwest_middleware::Error::middleware(ClientError::Protocol(format!(
                "cannot encode the evidence: {e}"
            )))
        })?;
        let mut url = origin.url().clone();
        url.set_path(path);
        url.set_query(None);
        url.set_fragment(None);
        let mut post = Request::new(Method::POST, url);
        post.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        *post.body_mut() = Some(body.into());
        let mut answer = next.run(post, extensions).await?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        // At most MAX_ATTEST_ERROR_BODY bytes of the refusal are read.
        let mut bytes = Vec::new();
        while bytes.len() < MAX_ATTEST_ERROR_BODY {
            match answer.chunk().await {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(reqwest_middleware::Error::middleware(
            ClientError::AttestationRefused {
                status: status.as_u16(),
                code,
            },
        ))
    }

    /// Signs `request` in place.
    pub async fn sign(&self, request: &mut Request) -> Result<(), ClientError> {
        self.sign_as(request, None).await.map(|_| ())
    }

    /// Signs `request` in place; with `step_up`, strictly by the FIDO2 key. The agent's answer.
    async fn sign_as(
        &self,
        request: &mut Request,
        step_up: Option<StepUpChallenge>,
    ) -> Result<hwsign_proto::api::SignResponse, ClientError> {
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
        match step_up {
            None => {
                self.signer
                    .sign_target(&method, target, request.headers_mut(), &digest)
                    .await
            }
            Some(challenge) => {
                self.signer
                    .sign_target_step_up(&method, target, request.headers_mut(), &digest, challenge)
                    .await
            }
        }
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
        let again = request.try_clone();
        let signed = self
            .sign_as(&mut request, None)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let response = next.clone().run(request, extensions).await?;
        let Some(mut again) = again else {
            return Ok(response);
        };
        if session_revoked(response.status(), response.headers())
            && self
                .signer
                .end_session(&signed)
                .await
                .map_err(reqwest_middleware::Error::middleware)?
        {
            self.sign(&mut again)
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            return next.run(again, extensions).await;
        }
        if let Some(step_up) = step_up_challenge(response.status(), response.headers()) {
            self.sign_as(&mut again, Some(step_up))
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            return next.run(again, extensions).await;
        }
        let Some(path) = self.attest_path.as_ref() else {
            return Ok(response);
        };
        let Some(challenge) = attestation_challenge(response.status(), response.headers()) else {
            return Ok(response);
        };
        self.reattest(&again, path, &challenge, extensions, next.clone())
            .await?;
        self.sign(&mut again)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        next.run(again, extensions).await
    }
}
