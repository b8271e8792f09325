//! The one error type of the benchmark library: every cause is a set-up failure (a fixture that
//! does not sign or verify), never a measurement.

use thiserror::Error;

/// Why a benchmark fixture could not be built or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The wire-format pipeline refused the fixture request.
    #[error("hwsign pipeline: {0}")]
    Proto(#[from] hwsign_proto::ProtoError),
    /// A crypto library refused a key or failed to sign.
    #[error("crypto: {0}")]
    Crypto(String),
    /// aws-sigv4 refused the request or the parameters.
    #[error("aws-sigv4: {0}")]
    Sigv4a(String),
    /// The verifier could not be set up.
    #[error("verifier set-up: {0}")]
    Verifier(String),
    /// A fixture request was refused by the verifier (the benchmark would measure rejections).
    #[error("verifier rejected a fixture request")]
    Rejected(#[from] hwsign_verifier::Rejection),
    /// A temporary file or directory could not be made.
    #[error("i/o failed")]
    Io(#[from] std::io::Error),
}
