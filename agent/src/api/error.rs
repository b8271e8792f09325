//! Errors of one API call and their explicit mapping to wire codes. The internal cause stays in
//! the log; the caller gets the code and a message that never carries secrets.

use hwsign_proto::{AgentErrorCode, ProtoError};
use thiserror::Error;

use crate::audit::{AuditError, Outcome};
use crate::backends::BackendError;
use crate::config::RuleRefusal;
use crate::keystore::CallError;
use crate::signing::SignError;

/// Why an API call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum ApiError {
    /// The body is not JSON of the expected shape.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A field or parameter is invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request could not be canonicalized or signed as described.
    #[error("invalid request")]
    Proto(#[from] ProtoError),
    /// The body exceeds the limit.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// No route.
    #[error("no such endpoint")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The caller's uid may not use the socket.
    #[error("uid {0} may not use this agent")]
    PermissionDenied(u32),
    /// The key's rule refuses the call.
    #[error("{0}")]
    KeyNotPermitted(RuleRefusal),
    /// The backend named in a request is not open. The second field lists the open ones.
    #[error("backend {0:?} is not available in this agent (it has: {1})")]
    UnknownBackend(String, String),
    /// The backend refused or failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Over the connection limit or shutting down.
    #[error("the agent is busy or shutting down; retry")]
    Unavailable,
    /// The caller's uid holds its share of the connections already.
    #[error("this uid already holds {0} connections to the agent; close one and retry")]
    TooManyConnections(usize),
    /// The request body did not arrive within the body deadline.
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    /// The signing use case refused or failed.
    #[error(transparent)]
    Signing(#[from] SignError),
    /// An operation's record could not be written, so its result was not released.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Backend(b) => Self::Backend(b),
            CallError::Task(t) => Self::Internal(t),
        }
    }
}

impl ApiError {
    /// The wire code.
    pub(crate) fn code(&self) -> AgentErrorCode {
        match self {
            Self::MalformedJson(_) => AgentErrorCode::MalformedJson,
            Self::InvalidRequest(_) | Self::Proto(_) => AgentErrorCode::InvalidRequest,
            Self::BodyTooLarge(_) => AgentErrorCode::TooLarge,
            Self::NotFound => AgentErrorCode::NotFound,
            Self::MethodNotAllowed(_) => AgentErrorCode::MethodNotAllowed,
            Self::PermissionDenied(_) => AgentErrorCode::PermissionDenied,
            Self::KeyNotPermitted(_) => AgentErrorCode::KeyNotPermitted,
            Self::UnknownBackend(..) => AgentErrorCode::UnknownBackend,
            Self::Backend(b) => backend_code(b),
            Self::Unavailable => AgentErrorCode::Unavailable,
            Self::TooManyConnections(_) => AgentErrorCode::TooManyConnections,
            Self::BodyTimeout(_) => AgentErrorCode::RequestTimeout,
            Self::Signing(e) => signing_code(e),
            Self::Internal(_) | Self::Audit(_) => AgentErrorCode::Internal,
        }
    }

    /// What the caller is told. Backend failures and internal errors are summarized: their
    /// details (device paths, token state) go to the log only.
    pub(crate) fn public_message(&self) -> String {
        match self.code() {
            AgentErrorCode::BackendError => {
                "the backend failed the operation; see the agent's log".to_owned()
            }
            AgentErrorCode::Internal => "internal error; see the agent's log".to_owned(),
            _ => match proto_cause(self).and_then(expected_form) {
                Some(form) => format!("{}; {form}", crate::error_chain(self)),
                None => crate::error_chain(self),
            },
        }
    }
}

impl Outcome for ApiError {
    fn outcome(&self) -> &'static str {
        self.code().as_str()
    }
}

impl Outcome for SignError {
    fn outcome(&self) -> &'static str {
        signing_code(self).as_str()
    }
}

/// The canonicalizer's refusal in `error`'s chain, if that is what refused.
fn proto_cause(error: &ApiError) -> Option<&ProtoError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(proto) = e.downcast_ref::<ProtoError>() {
            return Some(proto);
        }
        cause = e.source();
    }
    None
}

fn signing_code(e: &SignError) -> AgentErrorCode {
    match e {
        SignError::Proto(_)
        | SignError::Authority(_)
        | SignError::HostHeader
        | SignError::EncodingUnsupported(_) => AgentErrorCode::InvalidRequest,
        SignError::NotPermitted(_) => AgentErrorCode::KeyNotPermitted,
        SignError::Backend(CallError::Backend(b)) => backend_code(b),
        SignError::Backend(CallError::Task(_))
        | SignError::Session(_)
        | SignError::NoSessionCovers
        | SignError::Random(_)
        | SignError::Clock
        | SignError::Audit(_) => AgentErrorCode::Internal,
    }
}

/// The form an input must have, for the refusals where the caller typed the value.
fn expected_form(e: &ProtoError) -> Option<String> {
    match e {
        ProtoError::InvalidAudience => Some(format!(
            "expected the API's name as its verifier expects it: 1 to {} characters of a-z, \
             0-9, '.', '-' and '_'",
            hwsign_proto::limits::MAX_AUDIENCE_LEN
        )),
        ProtoError::InvalidKeyId => Some(format!(
            "expected a key id: {}, then 32 lowercase hex digits (see `hwsign keys list`)",
            hwsign_proto::keys::KEY_ID_PREFIX
        )),
        _ => None,
    }
}

fn backend_code(e: &BackendError) -> AgentErrorCode {
    match e {
        BackendError::Unsupported(_) => AgentErrorCode::Unsupported,
        BackendError::UnknownKey => AgentErrorCode::UnknownKey,
        BackendError::InvalidLabel(_) | BackendError::InvalidInput(_) => {
            AgentErrorCode::InvalidRequest
        }
        BackendError::Unavailable(_) => AgentErrorCode::BackendUnavailable,
        BackendError::PinIncorrect | BackendError::PinRejected { .. } => {
            AgentErrorCode::PinIncorrect
        }
        BackendError::PinLocked => AgentErrorCode::PinLocked,
        BackendError::Io(_) | BackendError::Failed(_) => AgentErrorCode::BackendError,
        BackendError::NoDevice(_) => AgentErrorCode::NoSecurityKey,
        BackendError::TouchTimeout(_) => AgentErrorCode::TouchTimeout,
        BackendError::Denied(_) => AgentErrorCode::OperationDenied,
        BackendError::CredentialExcluded(_) => AgentErrorCode::CredentialExcluded,
    }
}
