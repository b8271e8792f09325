//! What the verifier knows about an enrolled device beyond its [`DeviceRecord`](super::DeviceRecord)
//! (design brief §8): the TPM's identity from its EK certificate, the last attestation and its
//! boot state, and the last posture report. Policies (docs/POLICY.md) read them.
//!
//! Every posture fact says whether the TPM proved it (`attested`) or software reported it
//! (`claimed`). Only code that checked a TPM quote binding the fact may record it as attested.

use serde::{Deserialize, Serialize};

/// Whether the device's boot chain still measures as at enrollment (PCR 0–7 against the
/// baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootState {
    /// The quoted PCRs equal the baseline.
    Unchanged,
    /// At least one quoted PCR differs from the baseline.
    Changed,
}

impl BootState {
    /// The name policies see: `unchanged` or `changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Changed => "changed",
        }
    }

    /// Compares quoted PCR values with a baseline; any difference (or a different count) is
    /// `changed`.
    pub fn compare(baseline: &[[u8; 32]], quoted: &[[u8; 32]]) -> Self {
        if baseline.len() == quoted.len() && baseline.iter().zip(quoted).all(|(a, b)| a == b) {
            Self::Unchanged
        } else {
            Self::Changed
        }
    }
}

/// The outcome of the device's last TPM attestation the verifier checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationRecord {
    /// When the verifier accepted the evidence, seconds since the epoch.
    pub at_unix: i64,
    /// The quoted PCRs against the device's baseline.
    pub boot_state: BootState,
    /// The sha256 PCR values 0.. the quote reported, so an administrator can approve them as
    /// the new baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quoted_pcrs: Vec<[u8; 32]>,
}

/// One posture fact and whether the TPM proved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact<T> {
    /// The reported value.
    pub value: T,
    /// True only when a TPM quote the verifier checked binds this value; false for a value
    /// software reported (`claimed`).
    pub attested: bool,
}

impl<T> Fact<T> {
    /// A fact software reported.
    pub fn claimed(value: T) -> Self {
        Self {
            value,
            attested: false,
        }
    }

    /// A fact bound into a TPM quote the verifier checked.
    pub fn attested(value: T) -> Self {
        Self {
            value,
            attested: true,
        }
    }
}

/// The device's last posture report. A fact the device did not report is `None` (unknown),
/// never guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostureReport {
    /// When the verifier received the report, seconds since the epoch.
    pub received_unix: i64,
    /// Full-disk encryption of the root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_encrypted: Option<Fact<bool>>,
    /// Whether the screen locks (session lock enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_lock: Option<Fact<bool>>,
    /// fwupd Host Security ID level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_hsi: Option<Fact<i64>>,
    /// Whether the agent runs under a managed configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Fact<bool>>,
    /// Operating system name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<Fact<String>>,
    /// Operating system version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<Fact<String>>,
    /// Kernel release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Fact<String>>,
}

/// Longest string posture value kept.
pub const MAX_FACT_STRING_LEN: usize = 256;

impl PostureReport {
    /// Checks bounds before storing.
    pub fn validate(&self) -> Result<(), super::RegistryError> {
        let strings = [&self.os_name, &self.os_version, &self.kernel];
        if strings.iter().any(|fact| {
            fact.as_ref().is_some_and(|f| {
                f.value.len() > MAX_FACT_STRING_LEN || f.value.chars().any(char::is_control)
            })
        }) {
            return Err(super::RegistryError::Invalid(
                "posture strings must be at most 256 bytes without control characters",
            ));
        }
        Ok(())
    }
}

/// Facts about an enrolled device kept beside its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFacts {
    /// TCG manufacturer attribute from the EK certificate (`id:…`), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_manufacturer: Option<String>,
    /// TPM model attribute from the EK certificate, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_model: Option<String>,
    /// The last attestation the verifier accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attestation: Option<AttestationRecord>,
    /// The last posture report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<PostureReport>,
}

impl DeviceFacts {
    /// Checks bounds before storing.
    pub fn validate(&self) -> Result<(), super::RegistryError> {
        for text in [&self.tpm_manufacturer, &self.tpm_model]
            .into_iter()
            .flatten()
        {
            if text.len() > MAX_FACT_STRING_LEN || text.chars().any(char::is_control) {
                return Err(super::RegistryError::Invalid(
                    "TPM identity strings must be at most 256 bytes without control characters",
                ));
            }
        }
        if let Some(posture) = &self.posture {
            posture.validate()?;
        }
        if self
            .last_attestation
            .as_ref()
            .is_some_and(|a| a.quoted_pcrs.len() > super::MAX_BASELINE_PCRS)
        {
            return Err(super::RegistryError::Invalid("too many PCR values"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_state_compares_every_pcr() {
        let baseline = [[1u8; 32], [2u8; 32]];
        assert_eq!(
            BootState::compare(&baseline, &baseline),
            BootState::Unchanged
        );
        assert_eq!(
            BootState::compare(&baseline, &[[1u8; 32], [3u8; 32]]),
            BootState::Changed
        );
        assert_eq!(
            BootState::compare(&baseline, &[[1u8; 32]]),
            BootState::Changed
        );
    }
}
