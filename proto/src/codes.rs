//! Wire error codes. These strings are the stable, documented contract (docs/PROTOCOL.md §Errors);
//! internal error types map onto them and keep their causes for logs.

use serde::{Deserialize, Serialize};

/// Why a verifier refused a request (`WWW-Authenticate: HWS1 error="<code>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCode {
    /// No `Authorization` header (401).
    MissingAuthorization,
    /// `Authorization` does not follow the grammar, or is repeated (401).
    MalformedAuthorization,
    /// The request cannot be canonicalized: bad path escape, control characters, a required
    /// header missing or repeated, SignedHeaders not covering what the profile demands (400).
    MalformedRequest,
    /// The credential names no registered key (401).
    UnknownKey,
    /// The signature does not verify (401).
    SignatureInvalid,
    /// The date is outside the allowed clock skew, or a presigned URL has expired (401).
    StaleDate,
    /// The nonce was already used by this key within the window (401).
    ReplayedNonce,
    /// The body does not hash to the signed body hash (401).
    BodyHashMismatch,
    /// `UNSIGNED-PAYLOAD` outside a presigned URL (400).
    UnsignedPayloadNotAllowed,
    /// The body exceeds the configured limit (413).
    BodyTooLarge,
    /// The audience in the scope is not this API's (401).
    WrongAudience,
    /// The key or its device has been revoked (403).
    DeviceRevoked,
    /// The key is known but its level or mode does not satisfy the route's rule (403).
    PolicyDenied,
    /// The delegation statement is malformed, expired, for another audience, or not signed by
    /// the enrolled device key (401).
    DelegationInvalid,
    /// The verifier could not reach its registry or replay cache; it fails closed (503).
    VerifierUnavailable,
    /// The signed `host` is not one of the authorities the verifier serves (401).
    WrongHost,
    /// The key holds its quota of live nonces in the replay cache; retry later (429).
    RateLimited,
    /// A verifying proxy (`hwsign-verifier serve`) accepted the request but could not get an
    /// answer from its upstream (502). The nonce stays used: sign again to retry.
    UpstreamUnavailable,
    /// The device policy needs fresher TPM evidence than the device's last attestation: the
    /// answer carries a nonce (`WWW-Authenticate: HWS1 error="attestation_required",
    /// nonce="…"`); the device attests over it at the verifier's attest endpoint
    /// ([`crate::reattestation::ATTEST_PATH`]) and signs the request again (401).
    AttestationRequired,
    /// `HWS1-WEBAUTHN-ES256`: the `X-Hws-WebAuthn` header, client data or authenticator data is
    /// malformed, over its bound, or of the wrong type (401).
    WebauthnInvalid,
    /// `HWS1-WEBAUTHN-ES256`: the client data's origin is not one the verifier accepts for the
    /// credential's RP, the assertion was made cross-origin, or `rpIdHash` is another RP's (401).
    WebauthnOrigin,
    /// `HWS1-WEBAUTHN-ES256`: the assertion does not have the user-present flag (401).
    WebauthnUserPresence,
    /// `HWS1-WEBAUTHN-ES256`: the route or key demands user verification and the assertion does
    /// not have the user-verified flag (401).
    WebauthnUserVerification,
    /// `HWS1-WEBAUTHN-ES256`: the sign counter did not increase; the credential may have been
    /// cloned and is flagged (401).
    WebauthnCounterRegressed,
    /// The route demands a fresh strict WebAuthn signature with user presence (and
    /// verification when asked): `WWW-Authenticate: HWS1 error="step_up_required",
    /// user_verification="required|preferred"` (401).
    StepUpRequired,
    /// The delegated session (or strict-key activity) was ended by an administrator (force
    /// logout): the device key itself may still be allowed; the client starts a new session only
    /// if so (401).
    SessionRevoked,
}

impl RejectCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingAuthorization => "missing_authorization",
            Self::MalformedAuthorization => "malformed_authorization",
            Self::MalformedRequest => "malformed_request",
            Self::UnknownKey => "unknown_key",
            Self::SignatureInvalid => "signature_invalid",
            Self::StaleDate => "stale_date",
            Self::ReplayedNonce => "replayed_nonce",
            Self::BodyHashMismatch => "body_hash_mismatch",
            Self::UnsignedPayloadNotAllowed => "unsigned_payload_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::WrongAudience => "wrong_audience",
            Self::DeviceRevoked => "device_revoked",
            Self::PolicyDenied => "policy_denied",
            Self::DelegationInvalid => "delegation_invalid",
            Self::VerifierUnavailable => "verifier_unavailable",
            Self::WrongHost => "wrong_host",
            Self::RateLimited => "rate_limited",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::AttestationRequired => "attestation_required",
            Self::WebauthnInvalid => "webauthn_invalid",
            Self::WebauthnOrigin => "webauthn_origin",
            Self::WebauthnUserPresence => "webauthn_user_presence",
            Self::WebauthnUserVerification => "webauthn_user_verification",
            Self::WebauthnCounterRegressed => "webauthn_counter_regressed",
            Self::StepUpRequired => "step_up_required",
            Self::SessionRevoked => "session_revoked",
        }
    }

    /// The HTTP status a verifier answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MalformedRequest | Self::UnsignedPayloadNotAllowed => 400,
            Self::BodyTooLarge => 413,
            Self::RateLimited => 429,
            Self::DeviceRevoked | Self::PolicyDenied => 403,
            Self::VerifierUnavailable => 503,
            Self::UpstreamUnavailable => 502,
            _ => 401,
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the agent refused an API call (`{"error":{"code":"<code>",...}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentErrorCode {
    /// The body is not valid JSON of the expected shape, or has unknown fields (400).
    MalformedJson,
    /// A field is present but invalid: bad method, path, header, audience, hash (400).
    InvalidRequest,
    /// Request line, headers or body exceed the agent's bounds (413 / 431).
    TooLarge,
    /// No route for this method and path (404).
    NotFound,
    /// Method not allowed on this route (405).
    MethodNotAllowed,
    /// The caller's uid is not permitted on this socket (403).
    PermissionDenied,
    /// No key with this id (404).
    UnknownKey,
    /// The agent's rules forbid this key for this caller, audience or host (403).
    KeyNotPermitted,
    /// The named backend is not compiled in or not configured (400).
    UnknownBackend,
    /// The backend cannot do this (e.g. attestation of a software key) (501).
    Unsupported,
    /// The backend (TPM, token) cannot be reached now; retry later (503).
    BackendUnavailable,
    /// The backend failed the operation (500).
    BackendError,
    /// The token refused the PIN; the agent does not retry on its own (403).
    PinIncorrect,
    /// The token's PIN is locked (403).
    PinLocked,
    /// The agent is shutting down or over its connection limit (503).
    Unavailable,
    /// The caller's uid already holds its share of the agent's connections (429); other
    /// callers are still served.
    TooManyConnections,
    /// The request body did not arrive within the agent's body deadline (408); the connection
    /// is closed.
    RequestTimeout,
    /// A bug or an unexpected state; details are in the agent's log (500).
    Internal,
    /// No FIDO2 security key is present (plugged in, or reachable) (503).
    NoSecurityKey,
    /// Nobody touched the security key within the agent's touch timeout (408).
    TouchTimeout,
    /// The security key or its user refused the operation (403).
    OperationDenied,
    /// FIDO2 registration: the security key already holds a credential the verifier listed in
    /// its exclude list (already registered) (409).
    CredentialExcluded,
}

impl AgentErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidRequest => "invalid_request",
            Self::TooLarge => "too_large",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PermissionDenied => "permission_denied",
            Self::UnknownKey => "unknown_key",
            Self::KeyNotPermitted => "key_not_permitted",
            Self::UnknownBackend => "unknown_backend",
            Self::Unsupported => "unsupported",
            Self::BackendUnavailable => "backend_unavailable",
            Self::BackendError => "backend_error",
            Self::PinIncorrect => "pin_incorrect",
            Self::PinLocked => "pin_locked",
            Self::Unavailable => "unavailable",
            Self::TooManyConnections => "too_many_connections",
            Self::RequestTimeout => "request_timeout",
            Self::Internal => "internal",
            Self::NoSecurityKey => "no_security_key",
            Self::TouchTimeout => "touch_timeout",
            Self::OperationDenied => "operation_denied",
            Self::CredentialExcluded => "credential_excluded",
        }
    }

    /// The HTTP status the agent answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MalformedJson | Self::InvalidRequest | Self::UnknownBackend => 400,
            Self::TooLarge => 413,
            Self::NotFound | Self::UnknownKey => 404,
            Self::MethodNotAllowed => 405,
            Self::PermissionDenied
            | Self::KeyNotPermitted
            | Self::PinIncorrect
            | Self::PinLocked
            | Self::OperationDenied => 403,
            Self::RequestTimeout | Self::TouchTimeout => 408,
            Self::TooManyConnections => 429,
            Self::Unsupported => 501,
            Self::BackendUnavailable | Self::Unavailable | Self::NoSecurityKey => 503,
            Self::BackendError | Self::Internal => 500,
            Self::CredentialExcluded => 409,
        }
    }
}

impl std::fmt::Display for AgentErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
