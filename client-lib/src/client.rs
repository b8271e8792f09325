//! [`AgentClient`]: the agent API v1 as async methods.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use hwsign_proto::api::{
    CreateKeyRequest, ErrorResponse, KeyInfo, KeyList, SignRequest, SignResponse, StatusResponse,
    StepUpSignRequest,
};
use hwsign_proto::attestation::{
    ActivateCredentialRequest, ActivateCredentialResponse, KeyAttestation,
};
use hwsign_proto::encoding;
use hwsign_proto::keys::check_key_id;
use hwsign_proto::posture::{POSTURE_PATH, Posture};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ClientError;
use crate::transport::{Call, Transport, TransportConfig};

/// Environment variable naming the agent socket.
pub const SOCKET_ENV: &str = "HWSIGN_AGENT_SOCK";
/// Environment variable naming the uid the agent runs as, when it is neither the caller's own
/// nor root (a system agent running as its own user that binds its socket itself).
pub const AGENT_UID_ENV: &str = "HWSIGN_AGENT_UID";
/// Default deadline of one call, connection included. Generous because a TPM signature on a slow
/// chip plus a queue of callers can take seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on an answer's body; attestation evidence is the largest answer, a few KiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Default number of idle keep-alive connections kept for reuse.
pub const DEFAULT_MAX_IDLE_CONNECTIONS: usize = 4;

/// The agent socket a user agent listens on by default, as the agent computes it:
/// `$HWSIGN_AGENT_SOCK`, else `$XDG_RUNTIME_DIR/hwsign/agent.sock`, else (no runtime directory: a
/// root shell, a container) beside the agent's keys in `$XDG_STATE_HOME/hwsign/agent.sock`
/// (`~/.local/state/hwsign/agent.sock`).
pub fn default_socket_path() -> Result<PathBuf, ClientError> {
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(dir) = env_path("XDG_RUNTIME_DIR") {
        return Ok(dir.join("hwsign").join("agent.sock"));
    }
    let state_home = env_path("XDG_STATE_HOME")
        .or_else(|| env_path("HOME").map(|home| home.join(".local").join("state")))
        .ok_or(ClientError::NoSocketPath)?;
    Ok(state_home.join("hwsign").join("agent.sock"))
}

/// A non-empty, absolute path from the environment (XDG says to ignore relative ones).
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// An async client of the local hwsign agent.
///
/// Cheap to clone; clones share the idle keep-alive connections. A call takes an idle connection
/// (or opens one), and gives it back once the answer is read, so sequential calls reuse one
/// connection and concurrent calls each get their own. If a reused connection was closed by the
/// agent meanwhile, the call reconnects once, transparently.
#[derive(Debug, Clone)]
pub struct AgentClient {
    transport: Arc<Transport>,
}

/// Builds an [`AgentClient`] with non-default limits.
#[derive(Debug, Clone)]
pub struct AgentClientBuilder {
    config: TransportConfig,
}

impl AgentClientBuilder {
    /// Deadline of one call, from connecting to the last byte of the answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Largest answer body accepted.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.config.max_response_bytes = limit;
        self
    }

    /// Idle keep-alive connections kept for reuse (0: a new connection per call).
    pub fn max_idle_connections(mut self, count: usize) -> Self {
        self.config.max_idle_connections = count;
        self
    }

    /// Trusts `uid` as the agent's uid, besides the client's own and root. Before sending
    /// anything on a new connection the client reads the listening process's uid (SO_PEERCRED)
    /// and refuses any other with [`ClientError::UntrustedAgent`].
    pub fn agent_uid(mut self, uid: u32) -> Self {
        self.config.agent_uid = Some(uid);
        self
    }

    /// The client.
    pub fn build(self) -> AgentClient {
        AgentClient {
            transport: Arc::new(Transport::new(self.config)),
        }
    }
}

impl AgentClient {
    /// A client of the agent listening on `socket_path`, with default limits.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self::builder(socket_path).build()
    }

    /// A client of the agent at [`default_socket_path`], trusting the agent uid in
    /// `HWSIGN_AGENT_UID` if set (besides the caller's own and root).
    pub fn from_env() -> Result<Self, ClientError> {
        let mut builder = Self::builder(default_socket_path()?);
        if let Some(text) = std::env::var_os(AGENT_UID_ENV).filter(|v| !v.is_empty()) {
            let text = text.to_string_lossy();
            let uid = text
                .trim()
                .parse::<u32>()
                .map_err(|_| ClientError::InvalidAgentUid(text.chars().take(32).collect()))?;
            builder = builder.agent_uid(uid);
        }
        Ok(builder.build())
    }

    /// A builder for a client of the agent listening on `socket_path`.
    pub fn builder(socket_path: impl Into<PathBuf>) -> AgentClientBuilder {
        AgentClientBuilder {
            config: TransportConfig {
                socket_path: socket_path.into(),
                timeout: DEFAULT_TIMEOUT,
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
                max_idle_connections: DEFAULT_MAX_IDLE_CONNECTIONS,
                agent_uid: None,
            },
        }
    }

    /// The socket this client talks to.
    pub fn socket_path(&self) -> &Path {
        self.transport.socket_path()
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /v1/keys`.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let list: KeyList = self.get("/v1/keys").await?;
        Ok(list.keys)
    }

    /// `POST /v1/keys`: creates a key in `backend` (e.g. `software`) labelled `label`.
    pub async fn create_key(&self, backend: &str, label: &str) -> Result<KeyInfo, ClientError> {
        let body = CreateKeyRequest {
            backend: backend.to_owned(),
            label: label.to_owned(),
        };
        // Not replay-safe: a second attempt after a lost answer could create a second key.
        self.post("/v1/keys", &body, false).await
    }

    /// `POST /v1/keys/fido2/register`: the agent's security key creates a credential over a
    /// verifier's registration challenge (one touch) and the agent keeps it under
    /// `request.label`; the answer carries what the verifier's registration step takes.
    pub async fn register_fido2(
        &self,
        request: &hwsign_proto::api::Fido2RegisterRequest,
    ) -> Result<hwsign_proto::api::Fido2RegisterResponse, ClientError> {
        // Not replay-safe: a second attempt would create a second credential.
        self.post(hwsign_proto::api::FIDO2_REGISTER_PATH, request, false)
            .await
    }

    /// `POST /v1/sign`: the agent canonicalizes the described request, signs it and returns the
    /// headers to add. Most callers use [`crate::Signer`], which builds `request` from an
    /// `http::Request`.
    pub async fn sign(&self, request: &SignRequest) -> Result<SignResponse, ClientError> {
        // Signing changes no state: repeating it after a lost answer only yields a fresh signature.
        self.post("/v1/sign", request, true).await
    }

    /// `POST /v1/sessions/end`: the agent forgets a delegated session a verifier ended
    /// (`session_revoked`); its next signature starts a new session.
    pub async fn end_session(
        &self,
        request: &hwsign_proto::api::EndSessionRequest,
    ) -> Result<hwsign_proto::api::EndSessionResponse, ClientError> {
        // Forgetting twice is forgetting once.
        self.post(hwsign_proto::api::END_SESSION_PATH, request, true)
            .await
    }

    /// `POST /v1/sign/step-up`: a strict signature by a FIDO2 key — a fresh assertion with a
    /// touch (and user verification when asked), never a delegated session key — for a
    /// verifier's `step_up_required`. Not repeated on a lost answer: each call is a touch.
    pub async fn sign_step_up(
        &self,
        request: &StepUpSignRequest,
    ) -> Result<SignResponse, ClientError> {
        self.post("/v1/sign/step-up", request, false).await
    }

    /// `GET /v1/keys/{id}/attestation?nonce=`: attestation evidence for `key_id`, bound to the
    /// verifier's `nonce` (base64url).
    pub async fn attestation(
        &self,
        key_id: &str,
        nonce: &str,
    ) -> Result<KeyAttestation, ClientError> {
        check_key_id(key_id).map_err(|e| ClientError::Protocol(format!("key id: {e}")))?;
        let path = format!(
            "/v1/keys/{key_id}/attestation?nonce={}",
            encoding::encode(nonce.as_bytes())
        );
        self.get(&path).await
    }

    /// `GET /v1/posture`: the device's posture as the agent reads it now (unknown facts left
    /// out).
    pub async fn posture(&self) -> Result<Posture, ClientError> {
        self.get(POSTURE_PATH).await
    }

    /// `POST /v1/keys/{id}/activate-credential` (TPM enrollment): the TPM decrypts the
    /// verifier's credential if and only if the attestation key lives beside its EK.
    pub async fn activate_credential(
        &self,
        key_id: &str,
        request: &ActivateCredentialRequest,
    ) -> Result<ActivateCredentialResponse, ClientError> {
        check_key_id(key_id).map_err(|e| ClientError::Protocol(format!("key id: {e}")))?;
        // Not replay-safe: the TPM may refuse a second activation of the same credential.
        self.post(
            &format!("/v1/keys/{key_id}/activate-credential"),
            request,
            false,
        )
        .await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let call = Call {
            method: Method::GET,
            path,
            body: None,
            replay_safe: true,
        };
        decode(self.transport.exchange(call).await?)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        replay_safe: bool,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
        let call = Call {
            method: Method::POST,
            path,
            body: Some(Bytes::from(body)),
            replay_safe,
        };
        decode(self.transport.exchange(call).await?)
    }
}

fn decode<T: DeserializeOwned>((status, body): (StatusCode, Bytes)) -> Result<T, ClientError> {
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!(
                "HTTP {status} with a body that is not the expected JSON: {e}"
            ))
        });
    }
    match serde_json::from_slice::<ErrorResponse>(&body) {
        Ok(error) => Err(ClientError::Agent {
            code: error.error.code,
            message: error.error.message,
            status: status.as_u16(),
        }),
        Err(_) => Err(ClientError::Protocol(format!(
            "HTTP {status} without an agent error body: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))),
    }
}
