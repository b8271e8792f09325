//! Key backends behind one synchronous trait. A backend owns its keys' persistence (key files,
//! TPM blobs, token objects); the agent only routes by key id. Methods may block on hardware: the
//! agent calls them from `spawn_blocking` unless [`KeyBackend::is_fast`] says otherwise. A backend
//! that already serves its hardware from a thread of its own (TPM) can also take a signature
//! request without blocking ([`KeyBackend::sign_digest_queued`]): the agent then awaits the
//! answer directly, without a blocking-pool thread in between.

use std::time::Duration;

use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::Evidence;
use thiserror::Error;

#[cfg(feature = "fido2")]
pub mod fido2;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
#[cfg(feature = "software")]
pub mod software;
#[cfg(feature = "tpm")]
pub mod tpm;

/// A key as a backend describes it.
#[derive(Debug, Clone)]
pub struct BackendKey {
    /// Key id derived from the public key (`hk1_…`).
    pub id: String,
    /// Human label.
    pub label: String,
    /// Attestation level this backend can claim for the key.
    pub level: KeyLevel,
    /// The public key.
    pub public_key: PublicKey,
    /// Creation time, seconds since the epoch.
    pub created_unix: i64,
}

/// Whether a backend can serve now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// Reachable at the last check.
    pub available: bool,
    /// Why not.
    pub detail: Option<String>,
}

/// Internal backend errors; the agent maps them to wire codes (`AgentErrorCode`).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend cannot do this at all.
    #[error("operation not supported by the {0} backend")]
    Unsupported(&'static str),
    /// No key with this id in this backend.
    #[error("no such key")]
    UnknownKey,
    /// The label is empty, too long or has control characters.
    #[error("invalid label: {0}")]
    InvalidLabel(&'static str),
    /// An input (nonce, credential blob) is malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Hardware or token not reachable now (TPM gone, token removed, module missing). The
    /// TPM/PKCS#11 error stays reachable as `source()`.
    #[error("backend unavailable")]
    Unavailable(#[source] Cause),
    /// The token refused the PIN.
    #[error("PIN incorrect")]
    PinIncorrect,
    /// The token's PIN is locked.
    #[error("PIN locked")]
    PinLocked,
    /// A file of the backend's state could not be read or written.
    #[error("state I/O")]
    Io(#[from] std::io::Error),
    /// The backend failed the operation; the TPM/PKCS#11/crypto error is `source()`.
    #[error("backend failure")]
    Failed(#[source] Cause),
    /// No security key is present (FIDO2).
    #[error("no security key present")]
    NoDevice(#[source] Cause),
    /// Nobody touched the security key in time (FIDO2).
    #[error("no touch in time")]
    TouchTimeout(#[source] Cause),
    /// The security key or its user refused the operation (FIDO2).
    #[error("operation denied")]
    Denied(#[source] Cause),
    /// The key refused the PIN and says how many tries are left.
    #[error("PIN incorrect ({} retries left)", retries.map_or_else(|| "unknown".to_owned(), |n| n.to_string()))]
    PinRejected {
        /// Retries left, when the key said.
        retries: Option<u8>,
    },
    /// FIDO2 registration: the key holds a credential of the exclude list (already registered).
    #[error("the security key is already registered")]
    CredentialExcluded(#[source] Cause),
}

/// Who a FIDO2 backend's assertions are for: what the agent writes into clientDataJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnClient {
    /// The relying party id.
    pub rp_id: String,
    /// The origin.
    pub origin: String,
}

/// A WebAuthn assertion made by a security key.
#[derive(Debug, Clone)]
pub struct WebauthnAssertion {
    /// The credential that signed.
    pub credential_id: Vec<u8>,
    /// Authenticator data, as the key produced it.
    pub authenticator_data: Vec<u8>,
    /// ES256 signature (DER) over `authenticator_data ‖ SHA-256(clientDataJSON)`.
    pub signature: Vec<u8>,
}

/// A call handed to a backend's own thread ([`KeyBackend::sign_digest_queued`]): its answer
/// arrives on `answer`, which the caller waits on for at most `within`.
#[derive(Debug)]
pub struct Queued<T> {
    /// Where the backend's thread sends the result. Closed without a result: the thread stopped.
    pub answer: tokio::sync::oneshot::Receiver<Result<T, BackendError>>,
    /// How long the caller waits before answering `Unavailable` (the backend's request timeout).
    pub within: Duration,
}

/// The hardware stack's own error behind a [`BackendError`] (a `TpmError`, a `Pkcs11Error`, ...),
/// kept whole so that a logged chain shows every cause once.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl BackendError {
    /// [`BackendError::Unavailable`] with a cause that is only a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into().into())
    }

    /// [`BackendError::Failed`] caused by `cause`.
    pub fn failed(cause: impl Into<Cause>) -> Self {
        Self::Failed(cause.into())
    }
}

/// One kind of key storage.
pub trait KeyBackend: Send + Sync + std::fmt::Debug {
    /// `software`, `tpm`, `pkcs11`.
    fn name(&self) -> &'static str;

    /// Whether calls return in microseconds (no hardware round trip), so the agent may call
    /// them on the async runtime directly.
    fn is_fast(&self) -> bool {
        false
    }

    /// Reachability now.
    fn health(&self) -> BackendHealth;

    /// Every key this backend holds.
    fn list_keys(&self) -> Result<Vec<BackendKey>, BackendError>;

    /// Generates a new non-exportable key.
    fn create_key(&self, label: &str) -> Result<BackendKey, BackendError>;

    /// ECDSA P-256 over a SHA-256 digest; returns a DER signature.
    fn sign_digest(&self, key_id: &str, digest: &[u8; 32]) -> Result<Vec<u8>, BackendError>;

    /// [`Self::sign_digest`] handed to the thread that owns the hardware, returning at once
    /// without waiting for the signature; `None` (the default) for a backend without such a
    /// thread, which the agent then calls from `spawn_blocking`. Saves the hop through tokio's
    /// blocking pool on every signature: async task → hardware thread → async task.
    fn sign_digest_queued(
        &self,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Option<Result<Queued<Vec<u8>>, BackendError>> {
        let _ = (key_id, digest);
        None
    }

    /// Evidence of where the key lives, bound to the verifier's `nonce`.
    fn attest(&self, key_id: &str, nonce: &[u8]) -> Result<Evidence, BackendError> {
        let _ = (key_id, nonce);
        Err(BackendError::Unsupported(self.name()))
    }

    /// TPM2_ActivateCredential with the attestation key: proves to an enrolling verifier that the
    /// AK sits in the same TPM as the EK.
    fn activate_credential(
        &self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let _ = (credential_blob, encrypted_secret);
        Err(BackendError::Unsupported(self.name()))
    }

    /// For a backend whose keys sign WebAuthn assertions (FIDO2): the RP ID and origin.
    fn webauthn_client(&self) -> Option<WebauthnClient> {
        None
    }

    /// A WebAuthn assertion over `client_data_hash` (SHA-256 of the clientDataJSON the caller
    /// built), with user presence always and user verification when asked.
    fn webauthn_assert(
        &self,
        key_id: &str,
        client_data_hash: &[u8; 32],
        user_verification: bool,
    ) -> Result<WebauthnAssertion, BackendError> {
        let _ = (key_id, client_data_hash, user_verification);
        Err(BackendError::Unsupported(self.name()))
    }

    /// FIDO2 registration: the key creates a credential over a verifier's challenge (one
    /// touch), the backend keeps it under `label`, and answers what the verifier's registration
    /// step takes.
    fn fido2_register(
        &self,
        label: &str,
        creation: &Fido2Creation,
    ) -> Result<Fido2Registration, BackendError> {
        let _ = (label, creation);
        Err(BackendError::Unsupported(self.name()))
    }
}

/// What a verifier's creation options ask of a security key (FIDO2 registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fido2Creation {
    /// The relying party id.
    pub rp_id: String,
    /// The verifier's registration challenge.
    pub challenge: Vec<u8>,
    /// The user handle.
    pub user_id: Vec<u8>,
    /// The user name.
    pub user_name: String,
    /// Credential ids the key must not hold (already registered).
    pub exclude: Vec<Vec<u8>>,
    /// Whether user verification is required.
    pub user_verification: bool,
}

/// A credential a security key created for a verifier's registration.
#[derive(Debug, Clone)]
pub struct Fido2Registration {
    /// The new key.
    pub key: BackendKey,
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// The clientDataJSON the key's signature covers.
    pub client_data_json: String,
    /// The WebAuthn attestation object (`fmt`, `attStmt`, `authData`).
    pub attestation_object: Vec<u8>,
}

/// Checks a key label: 1–64 characters, no control characters.
pub fn check_label(label: &str) -> Result<(), BackendError> {
    if label.is_empty() {
        return Err(BackendError::InvalidLabel("empty"));
    }
    if label.chars().count() > 64 {
        return Err(BackendError::InvalidLabel("longer than 64 characters"));
    }
    if label.chars().any(char::is_control) {
        return Err(BackendError::InvalidLabel("control characters"));
    }
    Ok(())
}
