//! A blocking agent client for programs without an async runtime (feature `blocking`).
//!
//! It owns a current-thread tokio runtime and runs each call to completion on it. Keep-alive
//! connections live on that runtime between calls. Calling it from inside an async runtime would
//! block that runtime's thread, so it refuses with [`ClientError::BlockingInsideRuntime`].

use std::future::Future;
use std::path::PathBuf;

use http::Request;
use hwsign_proto::api::{KeyInfo, SignRequest, SignResponse, StatusResponse};
use hwsign_proto::attestation::{
    ActivateCredentialRequest, ActivateCredentialResponse, KeyAttestation,
};

use crate::client::AgentClient;
use crate::digest::BodyDigest;
use crate::error::ClientError;
use crate::signer::{Signer, SignerConfig};

/// The blocking counterpart of [`AgentClient`], plus request signing.
#[derive(Debug)]
pub struct BlockingAgentClient {
    runtime: tokio::runtime::Runtime,
    client: AgentClient,
}

impl BlockingAgentClient {
    /// A client of the agent listening on `socket_path`.
    pub fn new(socket_path: impl Into<PathBuf>) -> Result<Self, ClientError> {
        Self::from_async(AgentClient::new(socket_path))
    }

    /// A client of the agent at [`crate::default_socket_path`].
    pub fn from_env() -> Result<Self, ClientError> {
        Self::from_async(AgentClient::from_env()?)
    }

    /// Wraps a configured async client (see [`AgentClient::builder`]).
    pub fn from_async(client: AgentClient) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ClientError::Io)?;
        Ok(Self { runtime, client })
    }

    fn run<F: Future>(&self, future: F) -> Result<F::Output, ClientError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ClientError::BlockingInsideRuntime);
        }
        Ok(self.runtime.block_on(future))
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.run(self.client.status())?
    }

    /// `GET /v1/keys`.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        self.run(self.client.list_keys())?
    }

    /// `POST /v1/keys`.
    pub fn create_key(&self, backend: &str, label: &str) -> Result<KeyInfo, ClientError> {
        self.run(self.client.create_key(backend, label))?
    }

    /// `POST /v1/sign`.
    pub fn sign(&self, request: &SignRequest) -> Result<SignResponse, ClientError> {
        self.run(self.client.sign(request))?
    }

    /// `GET /v1/keys/{id}/attestation?nonce=`.
    pub fn attestation(&self, key_id: &str, nonce: &str) -> Result<KeyAttestation, ClientError> {
        self.run(self.client.attestation(key_id, nonce))?
    }

    /// `POST /v1/keys/{id}/activate-credential`.
    pub fn activate_credential(
        &self,
        key_id: &str,
        request: &ActivateCredentialRequest,
    ) -> Result<ActivateCredentialResponse, ClientError> {
        self.run(self.client.activate_credential(key_id, request))?
    }

    /// Signs `request` (in-memory body) with `config`, as [`Signer::sign_request`] does. Call it
    /// again for every attempt of a retried request.
    pub fn sign_request<B: AsRef<[u8]>>(
        &self,
        config: &SignerConfig,
        request: &mut Request<B>,
    ) -> Result<SignResponse, ClientError> {
        let signer = Signer::from_config(self.client.clone(), config.clone());
        self.run(signer.sign_request(request))?
    }

    /// Signs request `parts` whose body hashes to `body` (see [`crate::body_sha256_of_file`]
    /// for large bodies; hash them with [`BodyDigest::of_bytes`] otherwise).
    pub fn sign_parts(
        &self,
        config: &SignerConfig,
        parts: &mut http::request::Parts,
        body: &BodyDigest,
    ) -> Result<SignResponse, ClientError> {
        let signer = Signer::from_config(self.client.clone(), config.clone());
        self.run(signer.sign_parts(parts, body))?
    }
}
