//! TPM enrollment (design brief §5; docs/ATTESTATION.md): an administrator issues a one-time
//! token; the device's agent presents it with a key id and receives a nonce; sends evidence made
//! over it (EK certificate, AK, TPM2_Certify of the key, TPM2_Quote); receives a credential only
//! its TPM can open (MakeCredential over the AK name); returns the secret it holds. The device
//! and its key (level `tpm`) then enter the [`KeyRegistry`](crate::KeyRegistry).
//!
//! ```no_run
//! use std::sync::Arc;
//! use hwsign_verifier::SqliteRegistry;
//! use hwsign_verifier::enrollment::{Enrollment, EnrollmentConfig, EnrollmentStore, router};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = std::path::Path::new("keys.db");
//! let registry = Arc::new(SqliteRegistry::open(db)?);
//! let config = EnrollmentConfig::new(vec!["tpm-roots.pem".into()], vec![]);
//! let enrollment = Enrollment::new(
//!     EnrollmentStore::open(db)?,
//!     registry,
//!     config.trust_anchors()?,
//!     config,
//! );
//! // Outside the HwsignLayer: the device has no registered key yet.
//! let app: axum::Router = router(Arc::new(enrollment));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

mod ceremony;
mod config;
mod error;
pub(crate) mod http;
#[cfg(feature = "postgres")]
mod postgres_store;
mod store;
pub mod token;

pub use ceremony::{Enrollment, device_id_for};
pub use config::{
    DEFAULT_CHALLENGE_TTL_SECS, DEFAULT_MAX_PENDING, DEFAULT_TOKEN_TTL_SECS, EnrollmentConfig,
    EnrollmentConfigError, MAX_CHALLENGE_TTL_SECS, MAX_TOKEN_TTL_SECS,
};
pub use error::{EnrollmentError, evidence_reason};
pub use http::{MAX_ACTIVATE_BODY, MAX_EVIDENCE_BODY, MAX_START_BODY, error_response, router};
pub use store::{Challenge, ChallengeState, EnrollmentStore, NONCE_LEN, TokenInfo};

use std::time::SystemTime;

/// Opens the enrollment store named by `url`: `sqlite:PATH` (the file, usually the key
/// registry's) or `postgres://…` (cargo feature `postgres`; a fleet's replicas then share every
/// ceremony, whichever replica each step reaches).
pub fn open_enrollment_store(url: &str) -> Result<EnrollmentStore, EnrollmentError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(EnrollmentError::Store("sqlite: needs a file path".into()));
        }
        return EnrollmentStore::open(std::path::Path::new(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return EnrollmentStore::connect(url);
        #[cfg(not(feature = "postgres"))]
        return Err(EnrollmentError::Store(
            "postgres:// enrollment stores need the `postgres` cargo feature".into(),
        ));
    }
    Err(EnrollmentError::Store(
        "expected an enrollment store URL sqlite:PATH or postgres://…".into(),
    ))
}

/// Issues a token valid for `ttl_secs` from `now` and stores its hash; returns the token text
/// (shown once: only its hash is kept) and its id.
pub fn create_token(
    store: &EnrollmentStore,
    label: &str,
    ttl_secs: u64,
    now: SystemTime,
) -> Result<(String, zeroize::Zeroizing<String>), EnrollmentError> {
    if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(EnrollmentError::Malformed(format!(
            "token lifetime must be 1..={MAX_TOKEN_TTL_SECS} seconds"
        )));
    }
    let count = label.chars().count();
    if count == 0 || count > crate::registry::MAX_LABEL_CHARS || label.chars().any(char::is_control)
    {
        return Err(EnrollmentError::Malformed(
            "label must be 1-64 characters without control characters".into(),
        ));
    }
    let issued = token::issue()?;
    let created = crate::unix_time::seconds_or_zero(now);
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
    store.add_token(&issued, label, created, created.saturating_add(ttl))?;
    Ok((issued.id.clone(), issued.token))
}
