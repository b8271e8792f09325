//! Agent API v1 types (JSON over HTTP/1.1 on the agent's Unix socket). Unknown fields are refused
//! so that a typo in a client is an error, not a silently ignored option.

use serde::{Deserialize, Serialize};

use crate::codes::AgentErrorCode;

/// Path prefix of API v1.
pub const API_PREFIX: &str = "/v1";
/// Largest request body the agent reads.
pub const MAX_API_BODY: usize = 64 * 1024;

/// How much a verifier may trust where a key lives. Ordered: `Software < Fido2Unattested < Fido2 <
/// HardwareUnattested < Tpm`. FIDO2 credentials rank below PKCS#11 tokens: a WebAuthn
/// authenticator signs only the WebAuthn structure (never a raw digest), its attestation proves a
/// model, not a device, and a passkey may be synced to other devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyLevel {
    /// A key file on disk.
    Software,
    /// A FIDO2 credential without verified attestation (`none`, self attestation, an unknown
    /// format or AAGUID), or a backup-eligible one (a synced passkey): `fido2-unattested`.
    #[serde(rename = "fido2-unattested")]
    Fido2Unattested,
    /// A device-bound FIDO2 credential whose `packed` attestation chains to a configured root and
    /// whose AAGUID is allowed: `fido2`.
    #[serde(rename = "fido2")]
    Fido2,
    /// A hardware token that does not prove where the key was made.
    HardwareUnattested,
    /// A TPM key proven by attestation.
    Tpm,
}

impl KeyLevel {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Fido2Unattested => "fido2-unattested",
            Self::Fido2 => "fido2",
            Self::HardwareUnattested => "hardware-unattested",
            Self::Tpm => "tpm",
        }
    }
}

impl std::str::FromStr for KeyLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "software" => Ok(Self::Software),
            "fido2-unattested" => Ok(Self::Fido2Unattested),
            "fido2" => Ok(Self::Fido2),
            "hardware-unattested" => Ok(Self::HardwareUnattested),
            "tpm" => Ok(Self::Tpm),
            other => Err(format!("unknown key level {other:?}")),
        }
    }
}

/// A header field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderField {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusResponse {
    /// Agent version.
    pub version: String,
    /// Backends compiled in and whether each is reachable.
    pub backends: Vec<BackendStatus>,
    /// Number of keys.
    pub keys: usize,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
}

/// One backend in [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendStatus {
    /// `software`, `tpm`, `pkcs11`.
    pub name: String,
    /// Whether it answered at the last check.
    pub available: bool,
    /// Why not, when unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A key as listed by `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// Key id (`hk1_…`).
    pub id: String,
    /// Human label.
    pub label: String,
    /// Backend name.
    pub backend: String,
    /// Attestation level.
    pub level: KeyLevel,
    /// SubjectPublicKeyInfo, PEM.
    pub public_key_pem: String,
    /// Creation time, seconds since the epoch.
    pub created_unix: i64,
}

/// `GET /v1/keys` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<KeyInfo>,
}

/// `POST /v1/keys` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Backend name.
    pub backend: String,
    /// Human label: 1–64 printable characters.
    pub label: String,
}

/// `POST /v1/sign` body: the parts of the request to sign, never a bare digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Key id.
    pub key_id: String,
    /// The API's name (scope audience).
    pub audience: String,
    /// HTTP method.
    pub method: String,
    /// `host[:port]` of the (https) URL the request goes to. The signed `host` header is derived
    /// from it by [`crate::host::signed_host`]: lower case, `:443` left out.
    pub authority: String,
    /// Path, percent-encoded.
    pub path: String,
    /// Raw query without `?`.
    #[serde(default)]
    pub query: String,
    /// Header fields of the request, excluding `host` (taken from `authority`).
    #[serde(default)]
    pub headers: Vec<HeaderField>,
    /// Lower-case hex SHA-256 of the body.
    pub body_sha256: String,
    /// Extra header names to sign, beyond those the protocol always signs.
    #[serde(default)]
    pub signed_headers: Vec<String>,
    /// Presigned URL: seconds of validity (≤ 7 days); the answer is query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presign_expires_secs: Option<u64>,
    /// The signature encoding (docs/PROTOCOL.md §13): HWS1's `Authorization` header (default) or
    /// RFC 9421's `Signature-Input`/`Signature`/`Content-Digest`.
    #[serde(default, skip_serializing_if = "SignEncoding::is_hws1")]
    pub encoding: SignEncoding,
}

/// How a signed request carries its signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignEncoding {
    /// `Authorization: HWS1-ECDSA-P256-SHA256 …` with the `X-Hws-*` headers.
    #[default]
    Hws1,
    /// RFC 9421 HTTP Message Signatures, `ecdsa-p256-sha256` (PROTOCOL.md §13).
    Rfc9421,
}

impl SignEncoding {
    /// Whether this is the default encoding (left out of serialized requests).
    pub fn is_hws1(&self) -> bool {
        *self == Self::Hws1
    }
}

/// `POST /v1/sign` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignResponse {
    /// Headers to add (header mode), `authorization` last.
    #[serde(default)]
    pub headers: Vec<HeaderField>,
    /// Query parameters to append, already encoded (presigned mode).
    #[serde(default)]
    pub query_params: Vec<HeaderField>,
    /// Key id that signed.
    pub key_id: String,
    /// Signing time, `YYYYMMDDTHHMMSSZ`.
    pub date: String,
}

/// `POST /v1/sign/step-up` body: sign `request` strictly with a FIDO2 key — a fresh
/// HWS1-WEBAUTHN-ES256 assertion with a touch, never a delegated session key — to satisfy a
/// verifier's `step_up_required`. Answered with a [`SignResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpSignRequest {
    /// The request to sign.
    pub request: SignRequest,
    /// Ask the key for user verification (PIN or built-in biometrics) too.
    #[serde(default)]
    pub user_verification: bool,
}

/// Error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// Error detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: AgentErrorCode,
    /// Human explanation; never contains secrets.
    pub message: String,
}

impl ErrorResponse {
    /// Builds an error body.
    pub fn new(code: AgentErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// Where a client ends a delegated session a verifier refused (`session_revoked`).
pub const END_SESSION_PATH: &str = "/v1/sessions/end";

/// `POST /v1/sessions/end` body: forget the delegated session of `key_id` for `audience` whose
/// session key is `session_key_id` — a verifier answered `session_revoked` (an administrator
/// ended it) — so that the next signature starts a new session, which the verifier accepts only
/// while the device itself is allowed. A session with another key (already renewed) is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndSessionRequest {
    /// The hardware key the session belongs to.
    pub key_id: String,
    /// The session's audience.
    pub audience: String,
    /// The session key the refused request was signed with ([`SignResponse::key_id`]).
    pub session_key_id: String,
}

/// `POST /v1/sessions/end` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndSessionResponse {
    /// Whether that session was the current one and is now forgotten.
    pub ended: bool,
}

/// Path of the FIDO2 registration call: the security key creates a credential over a
/// verifier's registration challenge (docs/WEBAUTHN.md, "Onboarding a security key").
pub const FIDO2_REGISTER_PATH: &str = "/v1/keys/fido2/register";
/// Most credential ids in [`Fido2RegisterRequest::exclude_credentials`].
pub const MAX_FIDO2_EXCLUDE: usize = 64;

/// `POST /v1/keys/fido2/register` body: what the agent needs of a verifier's creation options
/// (`publicKey` of `navigator.credentials.create`). Binary fields are base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fido2RegisterRequest {
    /// Label of the new key in the agent: 1–64 printable characters.
    pub label: String,
    /// The relying party id; must be the agent's `[backends.fido2] rp_id`.
    pub rp_id: String,
    /// The verifier's registration challenge (16 to 64 bytes).
    pub challenge: String,
    /// The user handle (1 to 64 bytes).
    pub user_id: String,
    /// The user name (1–64 printable characters).
    pub user_name: String,
    /// Credential ids the verifier already holds for this user: a key holding one refuses
    /// (`credential_excluded`) after a touch.
    #[serde(default)]
    pub exclude_credentials: Vec<String>,
    /// Whether the verifier requires user verification (PIN via the agent's askpass program, or
    /// the key's built-in verification).
    #[serde(default)]
    pub user_verification: bool,
}

/// `POST /v1/keys/fido2/register` answer (`201`): the new key, and what the verifier's
/// registration step takes (binary fields base64url without padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fido2RegisterResponse {
    /// The new key, as `GET /v1/keys` lists it.
    pub key: KeyInfo,
    /// The credential id.
    pub credential_id: String,
    /// `clientDataJSON` (type `webauthn.create`, the verifier's challenge, the agent's origin).
    pub client_data_json: String,
    /// The WebAuthn attestation object (`fmt`, `attStmt`, `authData`) the key made.
    pub attestation_object: String,
}
