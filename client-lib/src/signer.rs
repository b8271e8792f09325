//! [`Signer`]: signs outgoing `http` requests with one agent key for one audience.
//!
//! # Retries
//! Every signature carries a fresh `X-Hws-Date` and a fresh `X-Hws-Nonce`, and a verifier refuses
//! a nonce it has seen (`replayed_nonce`). A retried request must therefore be signed again, once
//! per attempt. Signing an already signed request is the supported way to do that: the signer
//! first removes `Authorization` and every `X-Hws-*` header, then signs anew. The tower and
//! reqwest adapters sign inside the retry loop, so each attempt is signed.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Uri};
use hwsign_proto::api::{SignEncoding, SignRequest, SignResponse, StepUpSignRequest};
use hwsign_proto::posture::bound_nonce;
use tokio::io::AsyncRead;

use crate::client::AgentClient;
use crate::describe::{self, SigningIdentity, Target};
use crate::digest::{BodyDigest, body_sha256_from_reader};
use crate::error::ClientError;
use crate::reattest::{AttestRequest, AttestationChallenge};
use crate::step_up::StepUpChallenge;

/// Which key signs, for which API, covering which optional headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerConfig {
    /// The agent key id (`hk1_…`).
    pub key_id: String,
    /// The API's name, the scope audience the verifier expects.
    pub audience: String,
    /// Header names to sign beyond those HWS1 always signs (host, date, body hash, nonce, and
    /// content-type when present). A named header the request lacks makes the agent refuse.
    pub signed_headers: Vec<String>,
}

/// Signs requests through the agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Signer {
    agent: AgentClient,
    config: Arc<SignerConfig>,
    encoding: SignEncoding,
}

impl Signer {
    /// A signer using `key_id` for `audience`.
    pub fn new(agent: AgentClient, key_id: impl Into<String>, audience: impl Into<String>) -> Self {
        Self::from_config(
            agent,
            SignerConfig {
                key_id: key_id.into(),
                audience: audience.into(),
                signed_headers: Vec::new(),
            },
        )
    }

    /// A signer from a full configuration.
    pub fn from_config(agent: AgentClient, config: SignerConfig) -> Self {
        Self {
            agent,
            config: Arc::new(config),
            encoding: SignEncoding::Hws1,
        }
    }

    /// Signs in `encoding`: HWS1 (the default) or RFC 9421's `Signature-Input`/`Signature` with
    /// `Content-Digest` (docs/PROTOCOL.md §13), for servers and gateways that speak RFC 9421.
    /// The agent signs either with the same key.
    pub fn with_encoding(mut self, encoding: SignEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Also signs these headers (lower or mixed case) on every request.
    pub fn with_signed_headers<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = (*self.config).clone();
        config
            .signed_headers
            .extend(names.into_iter().map(Into::into));
        Self::from_config(self.agent, config)
    }

    /// The configuration.
    pub fn config(&self) -> &SignerConfig {
        &self.config
    }

    /// The agent client.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// Signs a request whose body is in memory (`Vec<u8>`, `Bytes`, `String`, `&[u8]`, …): hashes
    /// the body, asks the agent, and adds the `X-Hws-*` and `Authorization` headers. Call it again
    /// for every attempt of a retried request.
    pub async fn sign_request<B: AsRef<[u8]>>(
        &self,
        request: &mut Request<B>,
    ) -> Result<SignResponse, ClientError> {
        let digest = BodyDigest::of_bytes(request.body().as_ref());
        let method = request.method().clone();
        let uri = request.uri().clone();
        self.sign_headers(&method, &uri, request.headers_mut(), &digest)
            .await
    }

    /// Signs request `parts` whose body is `body`.
    pub async fn sign_bytes(
        &self,
        parts: &mut Parts,
        body: &[u8],
    ) -> Result<SignResponse, ClientError> {
        self.sign_parts(parts, &BodyDigest::of_bytes(body)).await
    }

    /// Signs request `parts` whose body hashes to `body` — for bodies too large to hold in
    /// memory: hash them with [`body_sha256_from_reader`] or
    /// [`crate::body_sha256_of_file`], then stream them to the server unchanged.
    pub async fn sign_parts(
        &self,
        parts: &mut Parts,
        body: &BodyDigest,
    ) -> Result<SignResponse, ClientError> {
        self.sign_headers(&parts.method, &parts.uri, &mut parts.headers, body)
            .await
    }

    /// Hashes `reader` in chunks (no buffering of the whole body) and signs `parts` with that
    /// digest. The caller then sends the same bytes again, e.g. by reopening the file.
    pub async fn sign_reader<R: AsyncRead + Unpin>(
        &self,
        parts: &mut Parts,
        reader: R,
    ) -> Result<SignResponse, ClientError> {
        let (digest, _len) = body_sha256_from_reader(reader).await?;
        self.sign_parts(parts, &digest).await
    }

    /// Signs a request given as method, URI and headers; adds the signature to `headers`.
    pub async fn sign_headers(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &BodyDigest,
    ) -> Result<SignResponse, ClientError> {
        let target = Target::from_uri(uri)?;
        self.sign_target(method, target, headers, body).await
    }

    /// A presigned URL: `uri` with the signature in `X-Hws-*` query parameters, valid for
    /// `expires_secs` (at most 7 days) for `method`. Only `host` and the configured extra headers
    /// are signed, and the body is not (`UNSIGNED-PAYLOAD`): hand such URLs only to parties that
    /// may send any body. The returned URI keeps the original query first.
    pub async fn presign(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        expires_secs: u64,
    ) -> Result<Uri, ClientError> {
        let mut headers = headers.clone();
        describe::strip_signature_headers(&mut headers);
        let target = Target::from_uri(uri)?;
        let mut request = describe::describe(
            self.identity(),
            method,
            target,
            &mut headers,
            &BodyDigest::empty(),
        )?;
        request.presign_expires_secs = Some(expires_secs);
        let response = self.agent.sign(&request).await?;
        if response.query_params.is_empty() {
            return Err(ClientError::Protocol(
                "the agent answered a presign request without query parameters".to_owned(),
            ));
        }
        Ok(describe::append_query(uri, &response)?)
    }

    /// The request the agent would be asked to sign, without asking it: strips old signature
    /// headers from `headers` and describes what remains. Useful for logging and tests.
    pub fn describe(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &BodyDigest,
    ) -> Result<SignRequest, ClientError> {
        describe::strip_signature_headers(headers);
        let target = Target::from_uri(uri)?;
        Ok(describe::describe(
            self.identity(),
            method,
            target,
            headers,
            body,
        )?)
    }

    /// Evidence for the verifier's attest endpoint: the agent's posture report and its
    /// attestation of this signer's key over `SHA-256(nonce ‖ SHA-256(posture JSON))`
    /// ([`hwsign_proto::posture::bound_nonce`]), for the nonce of an `attestation_required`
    /// refusal (or of `POST /hws/v1/attest/challenge`). Post it as JSON to
    /// [`crate::reattest::ATTEST_PATH`] on the verifier, then sign the request again.
    pub async fn attest_request(
        &self,
        challenge: &AttestationChallenge,
    ) -> Result<AttestRequest, ClientError> {
        let nonce = URL_SAFE_NO_PAD
            .decode(&challenge.nonce)
            .map_err(|_| ClientError::Protocol("the verifier's nonce is not base64url".into()))?;
        let posture = serde_json::to_string(&self.agent.posture().await?)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the posture: {e}")))?;
        let bound = bound_nonce(&nonce, posture.as_bytes());
        let evidence = self
            .agent
            .attestation(&self.config.key_id, &URL_SAFE_NO_PAD.encode(bound))
            .await?;
        Ok(AttestRequest {
            nonce: challenge.nonce.clone(),
            evidence,
            posture: Some(posture),
        })
    }

    /// After a verifier answered `session_revoked` to a request this signer signed (`signed`
    /// is the agent's answer for it): has the agent forget that delegated session so the next
    /// signature starts a new one. False when `signed` was not made by a session key (a strict
    /// signature: nothing to renew) or the session was already replaced.
    pub async fn end_session(&self, signed: &SignResponse) -> Result<bool, ClientError> {
        if signed.key_id == self.config.key_id {
            return Ok(false);
        }
        let answer = self
            .agent
            .end_session(&hwsign_proto::api::EndSessionRequest {
                key_id: self.config.key_id.clone(),
                audience: self.config.audience.clone(),
                session_key_id: signed.key_id.clone(),
            })
            .await?;
        Ok(answer.ended)
    }

    pub(crate) async fn sign_target(
        &self,
        method: &Method,
        target: Target<'_>,
        headers: &mut HeaderMap,
        body: &BodyDigest,
    ) -> Result<SignResponse, ClientError> {
        describe::strip_signature_headers(headers);
        if self.encoding == SignEncoding::Rfc9421 {
            describe::strip_rfc9421_headers(headers);
        }
        let mut request = describe::describe(self.identity(), method, target, headers, body)?;
        request.encoding = self.encoding;
        let response = self.agent.sign(&request).await?;
        describe::apply(headers, &response)?;
        Ok(response)
    }

    /// [`Self::sign_headers`] for a verifier's `step_up_required`: a strict signature by the
    /// signer's FIDO2 key (a touch, and user verification when `challenge` asks), never a
    /// delegated session key.
    pub async fn sign_headers_step_up(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &BodyDigest,
        challenge: StepUpChallenge,
    ) -> Result<SignResponse, ClientError> {
        let target = Target::from_uri(uri)?;
        self.sign_target_step_up(method, target, headers, body, challenge)
            .await
    }

    pub(crate) async fn sign_target_step_up(
        &self,
        method: &Method,
        target: Target<'_>,
        headers: &mut HeaderMap,
        body: &BodyDigest,
        challenge: StepUpChallenge,
    ) -> Result<SignResponse, ClientError> {
        describe::strip_signature_headers(headers);
        let request = describe::describe(self.identity(), method, target, headers, body)?;
        let response = self
            .agent
            .sign_step_up(&StepUpSignRequest {
                request,
                user_verification: challenge.user_verification,
            })
            .await?;
        describe::apply(headers, &response)?;
        Ok(response)
    }

    fn identity(&self) -> SigningIdentity<'_> {
        SigningIdentity {
            key_id: &self.config.key_id,
            audience: &self.config.audience,
            signed_headers: &self.config.signed_headers,
        }
    }
}
