//! Re-attestation (issue 12, design brief §8; docs/POLICY.md "Re-attestation"): an enrolled
//! device proves its boot state again with a fresh TPM2_Quote over a verifier nonce, signed by
//! the attestation key it enrolled with.
//!
//! - [`Reattestation`] checks the evidence as enrollment does (EK chain, AK = the enrolled AK,
//!   TPM2_Certify of the registered key, quote over PCRs 0–7, clock `safe` and not behind the
//!   device's record) and records the device's last attestation: its time, the quoted PCRs and
//!   `boot_state` (`unchanged` when they equal the baseline or a golden set, else `changed`).
//! - [`router`] serves `POST /hws/v1/attest/challenge` and `POST /hws/v1/attest`.
//! - A [`Verifier`](crate::Verifier) given the service's [`AttestationChallenges`]
//!   ([`Verifier::with_reattestation`](crate::Verifier::with_reattestation)) answers a request
//!   the device policy refuses, and would allow were the device's attestation fresh, with
//!   `401 attestation_required` and a nonce instead of `policy_denied`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use hwsign_verifier::enrollment::{Enrollment, EnrollmentConfig, EnrollmentStore};
//! use hwsign_verifier::reattestation::{Reattestation, ReattestationConfig};
//! use hwsign_verifier::{MemoryReplayCache, SqliteRegistry, Verifier, VerifierConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = std::path::Path::new("keys.db");
//! let registry = Arc::new(SqliteRegistry::open(db)?);
//! let config = EnrollmentConfig::new(vec!["tpm-roots.pem".into()], vec![]);
//! let enrollment = Enrollment::new(
//!     EnrollmentStore::open(db)?, registry.clone(), config.trust_anchors()?, config,
//! );
//! let reattestation = Arc::new(Reattestation::new(&enrollment, &ReattestationConfig::default())?);
//! let verifier = Verifier::new(
//!     VerifierConfig::new("payments", ["api.example.com"]),
//!     registry,
//!     Arc::new(MemoryReplayCache::new(100_000)),
//! )?
//! .with_reattestation(Arc::clone(reattestation.challenges()));
//! let attest: axum::Router = hwsign_verifier::reattestation::router(reattestation);
//! # let _ = (verifier, attest);
//! # Ok(())
//! # }
//! ```

mod attest;
mod challenges;
mod config;
mod http;

pub use attest::Reattestation;
pub use challenges::{AttestationChallenges, IssuedNonce, NonceOrigin, PendingNonce};
pub use config::{
    DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_DEVICE, DEFAULT_NONCE_TTL_SECS, MAX_GOLDEN_SETS,
    MAX_NONCE_TTL_SECS, ReattestationConfig, ReattestationConfigError,
};
pub use http::router;
