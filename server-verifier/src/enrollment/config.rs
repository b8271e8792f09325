//! What a verifier needs to run enrollment: the TPM manufacturer roots its EK certificates must
//! chain to, and the ceremony's bounds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::attestation::chain::ChainError;
use crate::attestation::{RegisteredEks, TrustAnchors, manufacturer_roots};

/// Default lifetime of a challenge: long enough for a slow TPM and a human, short enough that a
/// stolen nonce is soon worthless.
pub const DEFAULT_CHALLENGE_TTL_SECS: u64 = 300;
/// Longest challenge lifetime accepted.
pub const MAX_CHALLENGE_TTL_SECS: u64 = 3600;
/// Default bound on ceremonies in flight.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// Default bound on the ceremonies one token has in flight.
pub(super) const DEFAULT_MAX_PENDING_PER_TOKEN: usize = 3;
/// Largest `max_pending_per_token` accepted.
pub(super) const MAX_PENDING_PER_TOKEN: usize = 64;
/// Default lifetime of an enrollment token (`hwsign-verifier tokens create`).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Longest token lifetime accepted.
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

/// Enrollment settings (a `[enrollment]` section a server may embed in its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// Files of TPM manufacturer root CAs: PEM bundles or DER certificates. May be empty when
    /// `builtin_ek_roots` is on.
    #[serde(default)]
    pub ek_roots: Vec<PathBuf>,
    /// Files of intermediate CAs between the roots and EK certificates (PEM or DER).
    #[serde(default)]
    pub ek_intermediates: Vec<PathBuf>,
    /// Also trust the TPM manufacturers' EK CAs shipped with the verifier
    /// (`server-verifier/ek-roots/MANIFEST.toml`: Infineon, Nuvoton, STMicroelectronics, Intel,
    /// Nationz, Alibaba Cloud vTPM). Off by default: a deployment names what it trusts.
    #[serde(default)]
    pub builtin_ek_roots: bool,
    /// Accept chain links signed with SHA-1 (sha1WithRSAEncryption), as many real EK chains
    /// are (docs/ATTESTATION.md, field guide). Off by default. Attestation signatures made by
    /// TPM keys never accept SHA-1, whatever this says.
    #[serde(default)]
    pub ek_sha1_links: bool,
    /// Directory of EK public keys registered with `hwsign-verifier ek add`, for TPMs that carry
    /// no EK certificate (many firmware TPMs, Azure and Amazon vTPMs). Unset: evidence without an
    /// EK certificate is refused (`evidence_invalid:ek_unregistered`).
    #[serde(default)]
    pub registered_eks: Option<PathBuf>,
    /// Seconds a ceremony may take from start to activation.
    #[serde(default = "default_ttl")]
    pub challenge_ttl_secs: u64,
    /// Most ceremonies in flight; more are refused with `too_many_challenges`.
    #[serde(default = "default_max_pending")]
    pub max_pending_challenges: usize,
    /// Most ceremonies one token has in flight; a new start with the token replaces its oldest
    /// pending challenge, so one token cannot hold every slot against other devices.
    #[serde(default = "default_max_pending_per_token")]
    pub max_pending_per_token: usize,
    /// Revoke a device (and its keys) whose TPM proves, by a completed credential activation,
    /// that its clock went backwards from a recorded state.
    #[serde(default = "default_true")]
    pub revoke_on_rollback: bool,
}

fn default_ttl() -> u64 {
    DEFAULT_CHALLENGE_TTL_SECS
}

fn default_max_pending() -> usize {
    DEFAULT_MAX_PENDING
}

fn default_max_pending_per_token() -> usize {
    DEFAULT_MAX_PENDING_PER_TOKEN
}

fn default_true() -> bool {
    true
}

/// An unusable enrollment configuration.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrollmentConfigError {
    /// No root configured: no EK certificate could ever be trusted.
    #[error(
        "ek_roots is empty, builtin_ek_roots is off and no registered_eks directory is set: \
         configure the TPM manufacturers' root certificates"
    )]
    NoRoots,
    /// `challenge_ttl_secs` is 0 or above [`MAX_CHALLENGE_TTL_SECS`].
    #[error("challenge_ttl_secs must be 1..={MAX_CHALLENGE_TTL_SECS}")]
    Ttl,
    /// `max_pending_challenges` is 0.
    #[error("max_pending_challenges must be at least 1")]
    MaxPending,
    /// `max_pending_per_token` is 0 or above [`MAX_PENDING_PER_TOKEN`].
    #[error("max_pending_per_token must be 1..={MAX_PENDING_PER_TOKEN}")]
    MaxPendingPerToken,
    /// The trust anchors cannot be read or parsed.
    #[error("EK trust anchors")]
    Anchors(#[from] ChainError),
}

impl EnrollmentConfig {
    /// Defaults with these roots and intermediates.
    pub fn new(ek_roots: Vec<PathBuf>, ek_intermediates: Vec<PathBuf>) -> Self {
        Self {
            ek_roots,
            ek_intermediates,
            builtin_ek_roots: false,
            ek_sha1_links: false,
            registered_eks: None,
            challenge_ttl_secs: DEFAULT_CHALLENGE_TTL_SECS,
            max_pending_challenges: DEFAULT_MAX_PENDING,
            max_pending_per_token: DEFAULT_MAX_PENDING_PER_TOKEN,
            revoke_on_rollback: true,
        }
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), EnrollmentConfigError> {
        if self.ek_roots.is_empty() && !self.builtin_ek_roots && self.registered_eks.is_none() {
            return Err(EnrollmentConfigError::NoRoots);
        }
        if !(1..=MAX_CHALLENGE_TTL_SECS).contains(&self.challenge_ttl_secs) {
            return Err(EnrollmentConfigError::Ttl);
        }
        if self.max_pending_challenges == 0 {
            return Err(EnrollmentConfigError::MaxPending);
        }
        if !(1..=MAX_PENDING_PER_TOKEN).contains(&self.max_pending_per_token) {
            return Err(EnrollmentConfigError::MaxPendingPerToken);
        }
        Ok(())
    }

    /// Reads the configured certificate files, adds the shipped set when asked, and applies the
    /// SHA-1 setting.
    pub fn trust_anchors(&self) -> Result<TrustAnchors, EnrollmentConfigError> {
        self.validate()?;
        let mut anchors = TrustAnchors::load_files(&self.ek_roots, &self.ek_intermediates)?;
        if self.builtin_ek_roots {
            let (roots, intermediates) =
                manufacturer_roots().map_err(|e| EnrollmentConfigError::Anchors(e.into()))?;
            anchors.extend(roots, intermediates);
        }
        if anchors.roots().is_empty() && self.registered_eks.is_none() {
            return Err(EnrollmentConfigError::NoRoots);
        }
        Ok(anchors
            .with_sha1_links(self.ek_sha1_links)
            .with_registered_eks(self.registered_eks.clone().map(RegisteredEks::new)))
    }
}
