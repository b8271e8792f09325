//! `[reattestation]`: how long a re-attestation nonce lives, how many may be pending, and the
//! golden PCR values a quote may match instead of the device's own baseline.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::attestation::checks::QUOTED_PCRS;

/// Default lifetime of a re-attestation nonce.
pub const DEFAULT_NONCE_TTL_SECS: u64 = 300;
/// Longest nonce lifetime accepted.
pub const MAX_NONCE_TTL_SECS: u64 = 3600;
/// Default bound on nonces pending at once.
pub const DEFAULT_MAX_PENDING: usize = 4096;
/// Default bound on the nonces one device has pending; a new one replaces its oldest.
pub const DEFAULT_MAX_PENDING_PER_DEVICE: usize = 4;
/// Most golden PCR sets accepted.
pub const MAX_GOLDEN_SETS: usize = 256;

/// Re-attestation settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReattestationConfig {
    /// Seconds a nonce stays redeemable.
    #[serde(default = "default_ttl")]
    pub nonce_ttl_secs: u64,
    /// Most nonces pending at once; more are refused with `too_many_challenges`.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Most nonces one device has pending; a new one replaces its oldest, so one device cannot
    /// hold every slot against the others.
    #[serde(default = "default_max_pending_per_device")]
    pub max_pending_per_device: usize,
    /// Golden boot chains: each entry is the eight sha256 PCR values 0–7 (hex) of a boot chain
    /// the administrator approves for every device (a firmware or boot loader update rolled out
    /// to the fleet). A quote equal to the device's baseline or to one of these is
    /// `boot_state == "unchanged"`.
    #[serde(default)]
    pub golden_pcrs: Vec<Vec<String>>,
    /// Revoke a device whose enrolled attestation key proves its TPM clock went backwards.
    #[serde(default = "default_true")]
    pub revoke_on_rollback: bool,
}

fn default_ttl() -> u64 {
    DEFAULT_NONCE_TTL_SECS
}

fn default_max_pending() -> usize {
    DEFAULT_MAX_PENDING
}

fn default_max_pending_per_device() -> usize {
    DEFAULT_MAX_PENDING_PER_DEVICE
}

fn default_true() -> bool {
    true
}

impl Default for ReattestationConfig {
    fn default() -> Self {
        Self {
            nonce_ttl_secs: DEFAULT_NONCE_TTL_SECS,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_device: DEFAULT_MAX_PENDING_PER_DEVICE,
            golden_pcrs: Vec::new(),
            revoke_on_rollback: true,
        }
    }
}

/// An unusable re-attestation configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReattestationConfigError {
    /// `nonce_ttl_secs` is 0 or above [`MAX_NONCE_TTL_SECS`].
    #[error("nonce_ttl_secs must be 1..={MAX_NONCE_TTL_SECS}")]
    Ttl,
    /// A bound on pending nonces is 0.
    #[error("max_pending and max_pending_per_device must be at least 1")]
    Bounds,
    /// A golden set is not eight 64-digit hex values, or there are too many sets.
    #[error(
        "golden_pcrs entry {0} must be eight sha256 values (hex), at most {MAX_GOLDEN_SETS} entries"
    )]
    Golden(usize),
}

impl ReattestationConfig {
    /// Checks the bounds and parses the golden values.
    pub fn golden(&self) -> Result<Vec<Vec<[u8; 32]>>, ReattestationConfigError> {
        if !(1..=MAX_NONCE_TTL_SECS).contains(&self.nonce_ttl_secs) {
            return Err(ReattestationConfigError::Ttl);
        }
        if self.max_pending == 0 || self.max_pending_per_device == 0 {
            return Err(ReattestationConfigError::Bounds);
        }
        if self.golden_pcrs.len() > MAX_GOLDEN_SETS {
            return Err(ReattestationConfigError::Golden(MAX_GOLDEN_SETS));
        }
        self.golden_pcrs
            .iter()
            .enumerate()
            .map(|(index, set)| {
                if set.len() != QUOTED_PCRS {
                    return Err(ReattestationConfigError::Golden(index));
                }
                set.iter()
                    .map(|text| {
                        let mut pcr = [0u8; 32];
                        hex::decode_to_slice(text, &mut pcr)
                            .map_err(|_| ReattestationConfigError::Golden(index))?;
                        Ok(pcr)
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_sets_must_be_eight_sha256_values() {
        let mut config = ReattestationConfig::default();
        assert_eq!(config.golden(), Ok(vec![]));
        config.golden_pcrs = vec![vec!["00".repeat(32); 8]];
        assert_eq!(config.golden(), Ok(vec![vec![[0u8; 32]; 8]]));
        config.golden_pcrs.push(vec!["00".repeat(32); 7]);
        assert_eq!(config.golden(), Err(ReattestationConfigError::Golden(1)));
        config.golden_pcrs = vec![vec!["zz".repeat(32); 8]];
        assert_eq!(config.golden(), Err(ReattestationConfigError::Golden(0)));
        config.golden_pcrs.clear();
        config.nonce_ttl_secs = 0;
        assert_eq!(config.golden(), Err(ReattestationConfigError::Ttl));
    }
}
