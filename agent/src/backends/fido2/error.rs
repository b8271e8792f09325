//! Errors of the FIDO2 stack, and how they map onto [`BackendError`].

use std::io;

use thiserror::Error;

use crate::backends::BackendError;

/// Why a FIDO2 operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Fido2Error {
    /// No security key: no hidraw node with the FIDO usage page, the configured node is absent,
    /// or nothing listens on the test seam.
    #[error("no security key present")]
    NoDevice(#[source] Option<io::Error>),
    /// Reading or writing HID reports failed.
    #[error("HID transport")]
    Transport(#[source] io::Error),
    /// The authenticator answered something CTAPHID/CTAP2 does not allow.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A CTAPHID-level error (`CTAPHID_ERROR`).
    #[error("CTAPHID error {0:#04x}")]
    Hid(u8),
    /// A CTAP2 status other than the ones below.
    #[error("CTAP2 status {0:#04x}")]
    Ctap(u8),
    /// Nobody touched the key before the configured timeout.
    #[error("no touch within {0} s")]
    TouchTimeout(u64),
    /// The user or the authenticator refused the operation.
    #[error("operation denied by the authenticator")]
    Denied,
    /// The key holds a credential of the registration's exclude list
    /// (`CTAP2_ERR_CREDENTIAL_EXCLUDED`).
    #[error("the key holds an excluded credential")]
    CredentialExcluded,
    /// A registration for a relying party other than the configured `rp_id`.
    #[error("the registration's rp_id is not this agent's [backends.fido2] rp_id")]
    RpIdMismatch,
    /// The credential is not on this security key.
    #[error("the credential is not on the security key present")]
    NoCredential,
    /// The PIN was wrong.
    #[error("PIN incorrect")]
    PinIncorrect {
        /// Retries the key still allows, when it said.
        retries: Option<u8>,
    },
    /// The key's PIN is blocked (too many wrong PINs); only a reset helps.
    #[error("PIN blocked")]
    PinBlocked,
    /// User verification was asked for but the key has no PIN set or no PIN protocol.
    #[error("user verification unavailable: {0}")]
    NoUserVerification(&'static str),
    /// The askpass program failed or gave nothing.
    #[error("askpass program")]
    Askpass(#[source] io::Error),
    /// CBOR encoding or decoding failed.
    #[error("CBOR")]
    Cbor(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The key's public key is not a P-256 point.
    #[error("credential public key")]
    PublicKey(#[source] hwsign_proto::ProtoError),
    /// The worker thread is gone.
    #[error("FIDO2 worker stopped")]
    WorkerGone,
}

impl From<Fido2Error> for BackendError {
    fn from(e: Fido2Error) -> Self {
        match e {
            Fido2Error::NoDevice(_) => BackendError::NoDevice(Box::new(e)),
            Fido2Error::TouchTimeout(_) => BackendError::TouchTimeout(Box::new(e)),
            Fido2Error::Denied => BackendError::Denied(Box::new(e)),
            Fido2Error::CredentialExcluded => BackendError::CredentialExcluded(Box::new(e)),
            Fido2Error::PinIncorrect { retries } => BackendError::PinRejected { retries },
            Fido2Error::PinBlocked => BackendError::PinLocked,
            Fido2Error::NoCredential => BackendError::UnknownKey,
            Fido2Error::RpIdMismatch => BackendError::InvalidInput(e.to_string()),
            Fido2Error::Transport(_) | Fido2Error::WorkerGone => {
                BackendError::Unavailable(Box::new(e))
            }
            other => BackendError::failed(other),
        }
    }
}
