//! Why the verifier refused a request: one typed error that keeps its cause, and the one place
//! where a refusal becomes a wire code (docs/PROTOCOL.md §7).
//!
//! Like rustls' `Error`, the variants say which layer refused; [`Rejection::code`] maps every
//! variant to its [`RejectCode`], and [`Rejection::detail`] is the text that may be sent to the
//! client. Internal causes (a registry or replay cache failure) are kept as
//! [`std::error::Error::source`] for the operator's log and never reach the client.

use std::borrow::Cow;

use hwsign_proto::webauthn::WebAuthnError;
use hwsign_proto::{ProtoError, RejectCode};
use thiserror::Error;

use crate::registry::RegistryError;
use crate::replay::ReplayError;

/// Why a request was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The request, its `Authorization` header or its presigned parameters do not parse; the
    /// cause says which rule was broken.
    #[error("the request does not follow the HWS1 wire format")]
    Parse(#[source] ProtoError),
    /// The key registry could not answer; the verifier fails closed (`verifier_unavailable`).
    #[error("the key registry is unavailable")]
    Registry(#[source] RegistryError),
    /// The replay cache could not answer; the verifier fails closed (`verifier_unavailable`).
    #[error("replay protection is unavailable")]
    Replay(#[source] ReplayError),
    /// The device policy needs fresher TPM evidence: the device attests over `nonce` at the
    /// attest endpoint and signs the request again (`attestation_required`).
    #[error("the device policy needs a fresher attestation of this device")]
    AttestationRequired {
        /// The re-attestation nonce issued for the device, base64url.
        nonce: String,
    },
    /// A WebAuthn assertion (`HWS1-WEBAUTHN-ES256`, or an assertion-signed delegation) failed a
    /// check; the cause names it and maps to its `webauthn_*` code.
    #[error("the WebAuthn assertion is refused")]
    WebAuthn(#[source] WebAuthnError),
    /// The route demands a fresh strict WebAuthn signature with user presence
    /// (`step_up_required`).
    #[error("this route needs a fresh touch of a security key or passkey")]
    StepUpRequired {
        /// Whether the step-up must also carry user verification.
        user_verification: bool,
    },
    /// A rule of the protocol or of this verifier's configuration refused the request.
    #[error("{detail}")]
    Refused {
        /// The wire code.
        code: RejectCode,
        /// A human explanation, safe to send to the client.
        detail: String,
    },
}

impl Rejection {
    /// A refusal by rule: `code` with a human `detail` (safe to send to the client).
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Self::Refused {
            code,
            detail: detail.into(),
        }
    }

    /// The wire code: the one mapping from a refusal to PROTOCOL.md §7.
    pub fn code(&self) -> RejectCode {
        match self {
            Self::Parse(error) => parse_code(error),
            Self::Registry(_) | Self::Replay(_) => RejectCode::VerifierUnavailable,
            Self::AttestationRequired { .. } => RejectCode::AttestationRequired,
            Self::WebAuthn(error) => error.code(),
            Self::StepUpRequired { .. } => RejectCode::StepUpRequired,
            Self::Refused { code, .. } => *code,
        }
    }

    /// The explanation sent to the client: for a parse error the broken rule, for an internal
    /// failure only that the verifier is unavailable (its cause stays in [`source`]).
    ///
    /// [`source`]: std::error::Error::source
    pub fn detail(&self) -> Cow<'_, str> {
        match self {
            Self::Parse(error) => Cow::Owned(error.to_string()),
            Self::WebAuthn(error) => Cow::Owned(error.to_string()),
            Self::Refused { detail, .. } => Cow::Borrowed(detail),
            Self::Registry(_)
            | Self::Replay(_)
            | Self::AttestationRequired { .. }
            | Self::StepUpRequired { .. } => Cow::Owned(self.to_string()),
        }
    }

    /// The re-attestation nonce an `attestation_required` refusal carries.
    pub fn attestation_nonce(&self) -> Option<&str> {
        match self {
            Self::AttestationRequired { nonce } => Some(nonce),
            _ => None,
        }
    }

    /// For `step_up_required`: whether user verification is required (the
    /// `user_verification="required|preferred"` parameter).
    pub fn step_up_user_verification(&self) -> Option<bool> {
        match self {
            Self::StepUpRequired { user_verification } => Some(*user_verification),
            _ => None,
        }
    }
}

/// Grammar errors in the credential, scope or signature container are `malformed_authorization`;
/// everything about the request itself is `malformed_request`.
fn parse_code(error: &ProtoError) -> RejectCode {
    match error {
        ProtoError::MalformedAuthorization(_)
        | ProtoError::MalformedPresign(_)
        | ProtoError::InvalidKeyId
        | ProtoError::InvalidAudience
        | ProtoError::MalformedSignature => RejectCode::MalformedAuthorization,
        ProtoError::TooLarge {
            what: "Authorization header",
            ..
        } => RejectCode::MalformedAuthorization,
        ProtoError::UnsignedPayloadNotAllowed => RejectCode::UnsignedPayloadNotAllowed,
        _ => RejectCode::MalformedRequest,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn internal_causes_stay_out_of_the_detail_and_in_the_source() {
        let rejection = Rejection::Replay(ReplayError::Poisoned);
        assert_eq!(rejection.code(), RejectCode::VerifierUnavailable);
        assert_eq!(rejection.detail(), "replay protection is unavailable");
        let cause = rejection.source().map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("replay cache lock poisoned"));
        // The message does not repeat the cause that source() returns.
        assert!(!rejection.to_string().contains("poisoned"));
    }

    #[test]
    fn parse_errors_map_to_their_codes_in_one_place() {
        let bad_signature = Rejection::Parse(ProtoError::MalformedSignature);
        assert_eq!(bad_signature.code(), RejectCode::MalformedAuthorization);
        assert_eq!(
            bad_signature.detail(),
            ProtoError::MalformedSignature.to_string()
        );
        assert!(bad_signature.source().is_some());
        let unsigned = Rejection::Parse(ProtoError::UnsignedPayloadNotAllowed);
        assert_eq!(unsigned.code(), RejectCode::UnsignedPayloadNotAllowed);
    }
}
