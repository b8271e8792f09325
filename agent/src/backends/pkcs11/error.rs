//! Internal PKCS#11 errors, the classification of `CKR_*` return values, and the mapping to
//! [`BackendError`]. The classes decide what the backend does next: forget the token and look it
//! up again (it was unplugged), remember a rejected PIN, or just report.

use cryptoki::error::{Error as CkError, RvError};
use thiserror::Error;

use crate::backends::BackendError;

/// Errors of the PKCS#11 backend.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The configuration is invalid.
    #[error("pkcs11 configuration: {0}")]
    Config(String),
    /// The module file is missing or not a PKCS#11 module.
    #[error("PKCS#11 module {path}: {reason}")]
    Module {
        /// Configured module path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The module file or its directory could be replaced by someone other than root or us.
    #[error("refusing PKCS#11 module {path}: {reason}")]
    UnsafeModule {
        /// Offending path.
        path: String,
        /// Which permission is wrong.
        reason: String,
    },
    /// No token with the configured label in any slot.
    #[error("no token labelled {label:?} in {module} (tokens present: {present})")]
    TokenAbsent {
        /// Configured label.
        label: String,
        /// Module path.
        module: String,
        /// Labels of the tokens that are present, for the operator.
        present: String,
    },
    /// The PIN source could not be read.
    #[error("user PIN: {0}")]
    Pin(String),
    /// The token rejected the PIN.
    #[error("the token rejected the user PIN")]
    PinIncorrect,
    /// The token's user PIN is locked.
    #[error("the token's user PIN is locked")]
    PinLocked,
    /// The key id is not on the token.
    #[error("no such key on the token")]
    UnknownKey,
    /// The token answered with something that is not a P-256 key or signature.
    #[error("unexpected token data: {0}")]
    Malformed(String),
    /// A PKCS#11 call failed.
    #[error("{op}")]
    Call {
        /// What the backend was doing.
        op: &'static str,
        /// The cryptoki error.
        #[source]
        source: CkError,
    },
}

/// What a failed call means for the backend's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// The token or the session went away: drop the cached slot, find the token again next time.
    TokenGone,
    /// Anything else: report it, keep the state.
    Report,
}

impl Pkcs11Error {
    /// Wraps a cryptoki error, lifting PIN outcomes to their own variants.
    pub(crate) fn call(op: &'static str, source: CkError) -> Self {
        match rv_of(&source) {
            Some(RvError::PinIncorrect) => Self::PinIncorrect,
            Some(RvError::PinLocked) => Self::PinLocked,
            _ => Self::Call { op, source },
        }
    }

    /// How the backend reacts to this error.
    pub(crate) fn disposition(&self) -> Disposition {
        match self {
            Self::Call { source, .. } => match rv_of(source) {
                Some(
                    RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::DeviceRemoved
                    | RvError::DeviceError
                    | RvError::SlotIdInvalid
                    | RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::CryptokiNotInitialized,
                ) => Disposition::TokenGone,
                _ => Disposition::Report,
            },
            Self::TokenAbsent { .. } => Disposition::TokenGone,
            _ => Disposition::Report,
        }
    }
}

/// The `CKR_*` value of a cryptoki error, if it came from the module.
fn rv_of(error: &CkError) -> Option<RvError> {
    match error {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

impl From<Pkcs11Error> for BackendError {
    fn from(error: Pkcs11Error) -> Self {
        match error {
            Pkcs11Error::PinIncorrect => BackendError::PinIncorrect,
            Pkcs11Error::PinLocked => BackendError::PinLocked,
            Pkcs11Error::UnknownKey => BackendError::UnknownKey,
            Pkcs11Error::Config(_)
            | Pkcs11Error::Module { .. }
            | Pkcs11Error::UnsafeModule { .. }
            | Pkcs11Error::TokenAbsent { .. }
            | Pkcs11Error::Pin(_) => BackendError::Unavailable(Box::new(error)),
            Pkcs11Error::Call { .. } if error.disposition() == Disposition::TokenGone => {
                BackendError::Unavailable(Box::new(error))
            }
            Pkcs11Error::Malformed(_) | Pkcs11Error::Call { .. } => {
                BackendError::Failed(Box::new(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

    #[test]
    fn pin_outcomes_map_to_their_own_codes() {
        let incorrect = Pkcs11Error::call(
            "login",
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert!(matches!(
            BackendError::from(incorrect),
            BackendError::PinIncorrect
        ));
        let locked = Pkcs11Error::call(
            "login",
            CkError::Pkcs11(RvError::PinLocked, Function::Login),
        );
        assert!(matches!(
            BackendError::from(locked),
            BackendError::PinLocked
        ));
    }

    #[test]
    fn removed_token_is_unavailable_and_forgotten() {
        let removed = Pkcs11Error::call(
            "sign",
            CkError::Pkcs11(RvError::DeviceRemoved, Function::Sign),
        );
        assert_eq!(removed.disposition(), Disposition::TokenGone);
        assert!(matches!(
            BackendError::from(removed),
            BackendError::Unavailable(_)
        ));
        let other = Pkcs11Error::call(
            "sign",
            CkError::Pkcs11(RvError::MechanismInvalid, Function::Sign),
        );
        assert_eq!(other.disposition(), Disposition::Report);
        assert!(matches!(BackendError::from(other), BackendError::Failed(_)));
    }
}
