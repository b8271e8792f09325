//! Device posture as the agent reports it (`GET /v1/posture`; design brief §8, docs/POLICY.md):
//! disk encryption of `/`, screen lock, firmware Host Security ID, OS and kernel, managed
//! configuration. Every value is software's claim; a source that cannot be read is `None`
//! (unknown), never guessed. A verifier binds the report to the device and the time by having
//! the TPM quote over [`bound_nonce`] instead of its bare nonce.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `GET /v1/posture` on the agent.
pub const POSTURE_PATH: &str = "/v1/posture";
/// Largest posture report (JSON) a verifier accepts.
pub const MAX_POSTURE_JSON: usize = 4096;
/// Longest string value in a report.
pub const MAX_POSTURE_STRING: usize = 256;

/// The agent's posture report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Posture {
    /// The filesystem mounted at `/` sits on an encrypted block device (UDisks2:
    /// `Block.CryptoBackingDevice` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_encrypted: Option<bool>,
    /// The user's session is locked (logind `Session.LockedHint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_lock: Option<bool>,
    /// fwupd's Host Security ID level (`HSI:<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_hsi: Option<i64>,
    /// The agent runs under a managed configuration (`[posture] managed = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    /// hostname1 `OperatingSystemPrettyName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// `VERSION_ID` of os-release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// hostname1 `KernelRelease`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// The qualifying data a TPM quotes over for a nonce and a posture report:
/// `SHA-256(nonce ‖ SHA-256(posture JSON))`, so the report cannot be replayed from another
/// device (another AK's quote) or another time (another nonce).
pub fn bound_nonce(nonce: &[u8], posture_json: &[u8]) -> [u8; 32] {
    let report: [u8; 32] = Sha256::digest(posture_json).into();
    let mut hasher = Sha256::new();
    hasher.update(nonce);
    hasher.update(report);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_nonce_depends_on_both_parts() {
        let a = bound_nonce(b"nonce-1", b"{}");
        assert_ne!(a, bound_nonce(b"nonce-2", b"{}"));
        assert_ne!(a, bound_nonce(b"nonce-1", b"{\"managed\":true}"));
        assert_eq!(a, bound_nonce(b"nonce-1", b"{}"));
    }
}
