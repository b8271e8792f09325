//! Internal TPM errors, the classification of TSS response codes, and the mapping to
//! [`BackendError`]. The classes decide what the worker does: retry the command, reconnect, or
//! give up.

use std::thread;
use std::time::Duration;

use thiserror::Error;
use tss_esapi::constants::response_code::Tss2ResponseCode;

use crate::backends::BackendError;

/// How often one TPM command is re-sent after RETRY / YIELDED / TESTING.
const MAX_BUSY_ATTEMPTS: u32 = 8;
/// First back-off; doubles each attempt (10, 20, 40, … ms; about 2.5 s in total).
const BUSY_BACKOFF: Duration = Duration::from_millis(10);

/// TSS layer of a response code (bits 16–23).
const LAYER_SHIFT: u32 = 16;
const LAYER_TPM: u32 = 0;
const LAYER_TCTI: u32 = 10;
const LAYER_RESMGR_TPM: u32 = 12;

/// TPM2_RC_WARN + 0x08 / 0x0A / 0x22: the TPM asks the caller to send the command again.
const RC_YIELDED: u32 = 0x908;
const RC_TESTING: u32 = 0x90A;
const RC_RETRY: u32 = 0x922;

/// Errors of the TPM worker.
#[derive(Debug, Error)]
pub(crate) enum TpmError {
    /// The TCTI could not connect or lost the connection.
    #[error("TPM not reachable ({op})")]
    Connection {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// A handle the worker holds (the storage root key) no longer exists in the TPM, e.g. after
    /// the TPM was reset behind a resource manager's back.
    #[error("TPM lost a loaded object ({op})")]
    StaleHandle {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// The TPM stayed busy (RETRY / YIELDED / TESTING) for every attempt.
    #[error("TPM busy ({op}) after {MAX_BUSY_ATTEMPTS} attempts")]
    Busy {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// Any other failed command.
    #[error("TPM command {op} failed")]
    Command {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// The TPM answered something this backend does not accept (wrong key type, missing field).
    #[error("unexpected TPM output: {0}")]
    Unexpected(String),
    /// The caller's input does not fit the TPM structure.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend's state directory.
    #[error("TPM state file")]
    Io(#[from] std::io::Error),
}

impl TpmError {
    /// Whether the connection to the TPM must be re-established before the next command.
    pub(crate) fn needs_reconnect(&self) -> bool {
        matches!(self, Self::Connection { .. } | Self::StaleHandle { .. })
    }

    /// Reclassifies a command failure as a lost object when the TPM said the handle is unknown.
    pub(crate) fn stale_if_handle_missing(self) -> Self {
        match self {
            Self::Command { op, source } if is_missing_handle(&source) => {
                Self::StaleHandle { op, source }
            }
            other => other,
        }
    }
}

impl From<TpmError> for BackendError {
    fn from(err: TpmError) -> Self {
        match err {
            TpmError::Connection { .. } | TpmError::Busy { .. } => {
                BackendError::Unavailable(Box::new(err))
            }
            TpmError::InvalidInput(msg) => BackendError::InvalidInput(msg),
            TpmError::Io(io) => BackendError::Io(io),
            TpmError::StaleHandle { .. } | TpmError::Command { .. } | TpmError::Unexpected(_) => {
                BackendError::Failed(Box::new(err))
            }
        }
    }
}

/// What to do about a TSS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Send the same command again after a pause.
    Busy,
    /// The transport is broken.
    Connection,
    /// Anything else: report it.
    Other,
}

/// The raw `TSS2_RC` of an error. tss-esapi 7 keeps the number private but prints it in the
/// format-zero/one `Display` ("Response code value: 0x…"); reading it back is the only way to
/// learn the TSS layer, which `Tss2ResponseCode::kind` ignores.
fn raw_rc(err: &tss_esapi::Error) -> Option<u32> {
    let tss_esapi::Error::Tss2Error(code) = err else {
        return None;
    };
    let text = match code {
        Tss2ResponseCode::Success => return Some(0),
        Tss2ResponseCode::FormatZero(rc) => rc.to_string(),
        Tss2ResponseCode::FormatOne(rc) => rc.to_string(),
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

fn classify(err: &tss_esapi::Error) -> Class {
    let Some(rc) = raw_rc(err) else {
        return Class::Other;
    };
    let layer = (rc >> LAYER_SHIFT) & 0xff;
    let code = rc & 0xffff;
    match layer {
        LAYER_TCTI => Class::Connection,
        LAYER_TPM | LAYER_RESMGR_TPM if matches!(code, RC_RETRY | RC_YIELDED | RC_TESTING) => {
            Class::Busy
        }
        _ => Class::Other,
    }
}

/// TPM_RC_HANDLE on handle 1 (format one) or TPM_RC_REFERENCE_H0 (format zero warning).
fn is_missing_handle(err: &tss_esapi::Error) -> bool {
    const RC_REFERENCE_H0: u32 = 0x910;
    const RC_FMT1_HANDLE: u32 = 0x08b;
    const RC_FMT1_HANDLE_1: u32 = 0x100;
    let Some(rc) = raw_rc(err) else {
        return false;
    };
    let layer = (rc >> LAYER_SHIFT) & 0xff;
    let code = rc & 0xffff;
    (layer == LAYER_TPM || layer == LAYER_RESMGR_TPM)
        && (code == RC_REFERENCE_H0 || code == (RC_FMT1_HANDLE | RC_FMT1_HANDLE_1))
}

/// A format-one TPM error about a command parameter (not a handle or session): the input was
/// refused, e.g. TPM_RC_INTEGRITY or TPM_RC_SIZE on a credential blob.
pub(crate) fn is_parameter_error(err: &tss_esapi::Error) -> bool {
    const RC_FMT1: u32 = 0x080;
    const RC_P: u32 = 0x040;
    let Some(rc) = raw_rc(err) else {
        return false;
    };
    let layer = (rc >> LAYER_SHIFT) & 0xff;
    (layer == LAYER_TPM || layer == LAYER_RESMGR_TPM) && rc & RC_FMT1 != 0 && rc & RC_P != 0
}

/// Runs one TPM command, re-sending it while the TPM asks for a retry (bounded), and classifies
/// the final error.
pub(crate) fn tpm<T>(
    op: &'static str,
    mut command: impl FnMut() -> tss_esapi::Result<T>,
) -> Result<T, TpmError> {
    let mut backoff = BUSY_BACKOFF;
    let mut attempt = 1;
    loop {
        match command() {
            Ok(value) => return Ok(value),
            Err(source) => match classify(&source) {
                Class::Busy if attempt < MAX_BUSY_ATTEMPTS => {
                    tracing::debug!(op, attempt, "TPM busy, retrying");
                    thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Class::Busy => return Err(TpmError::Busy { op, source }),
                Class::Connection => return Err(TpmError::Connection { op, source }),
                Class::Other => return Err(TpmError::Command { op, source }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_classified() {
        let tcti_io = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x000a_000a));
        assert_eq!(classify(&tcti_io), Class::Connection);
        let retry = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(RC_RETRY));
        assert_eq!(classify(&retry), Class::Busy);
        let testing = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(RC_TESTING));
        assert_eq!(classify(&testing), Class::Busy);
        let auth_fail = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x98e));
        assert_eq!(classify(&auth_fail), Class::Other);
        // An ESYS-layer error with the same low bits as RETRY is not a TPM warning.
        let esys = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x0007_0922));
        assert_eq!(classify(&esys), Class::Other);
    }

    #[test]
    fn missing_handle_is_recognised() {
        let h0 = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x910));
        assert!(is_missing_handle(&h0));
        let handle1 = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x18b));
        assert!(is_missing_handle(&handle1));
        let value = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(0x84));
        assert!(!is_missing_handle(&value));
    }

    #[test]
    fn busy_commands_are_retried_then_succeed() {
        let mut calls = 0;
        let result = tpm("test", || {
            calls += 1;
            if calls < 3 {
                Err(tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(
                    RC_YIELDED,
                )))
            } else {
                Ok(calls)
            }
        });
        assert!(matches!(result, Ok(3)));
    }

    #[test]
    fn busy_retry_is_bounded() {
        let mut calls = 0;
        let result: Result<(), TpmError> = tpm("test", || {
            calls += 1;
            Err(tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(
                RC_RETRY,
            )))
        });
        assert!(matches!(result, Err(TpmError::Busy { .. })));
        assert_eq!(calls, MAX_BUSY_ATTEMPTS);
    }
}
