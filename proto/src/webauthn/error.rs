//! Why a WebAuthn assertion or registration is refused.

use thiserror::Error;

use crate::codes::RejectCode;

/// Why an assertion, client data, authenticator data or attestation object is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WebAuthnError {
    /// Malformed header, client data, authenticator data, COSE key or attestation object.
    #[error("malformed WebAuthn data: {0}")]
    Malformed(&'static str),
    /// A bound was exceeded.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// `clientDataJSON.type` is not the one this ceremony expects.
    #[error("client data type {0:?} is not the expected one")]
    WrongType(String),
    /// `clientDataJSON.challenge` is not the challenge of this request (or statement).
    #[error("the assertion was made for another challenge")]
    ChallengeMismatch,
    /// `clientDataJSON.origin` is not one the verifier accepts for this RP.
    #[error("origin {0:?} is not accepted")]
    Origin(String),
    /// The assertion was made in a cross-origin frame.
    #[error("cross-origin assertions are refused")]
    CrossOrigin,
    /// `rpIdHash` is not SHA-256 of the configured RP ID.
    #[error("the authenticator data is for another RP ID")]
    RpIdMismatch,
    /// The user-present flag is not set.
    #[error("the authenticator did not assert user presence")]
    UserPresence,
    /// The user-verified flag is not set where the route or key asks for it.
    #[error("the authenticator did not assert user verification")]
    UserVerification,
    /// The sign counter did not increase: the credential may have been cloned.
    #[error("sign counter {new} does not exceed the stored {stored}: possibly cloned credential")]
    CounterRegressed {
        /// Counter the verifier holds.
        stored: u32,
        /// Counter in the assertion.
        new: u32,
    },
}

impl WebAuthnError {
    /// The wire code a verifier answers with.
    pub fn code(&self) -> RejectCode {
        match self {
            Self::Malformed(_) | Self::TooLarge { .. } | Self::WrongType(_) => {
                RejectCode::WebauthnInvalid
            }
            // The assertion is authentic only for another string to sign.
            Self::ChallengeMismatch => RejectCode::SignatureInvalid,
            Self::Origin(_) | Self::CrossOrigin | Self::RpIdMismatch => RejectCode::WebauthnOrigin,
            Self::UserPresence => RejectCode::WebauthnUserPresence,
            Self::UserVerification => RejectCode::WebauthnUserVerification,
            Self::CounterRegressed { .. } => RejectCode::WebauthnCounterRegressed,
        }
    }
}
