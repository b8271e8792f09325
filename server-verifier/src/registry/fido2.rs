//! FIDO2 credentials (WebAuthn, docs/WEBAUTHN.md): what the verifier keeps beside a credential's
//! key — credential id, RP ID, authenticator model, backup flags, and the sign counter that a
//! cloned authenticator would betray.

use hwsign_proto::webauthn::MAX_CREDENTIAL_ID_LEN;

use hwsign_proto::api::KeyLevel;

use super::{RegisteredKey, RegistryError};

/// Longest RP ID (a domain name).
pub const MAX_RP_ID_LEN: usize = 253;

/// A FIDO2 credential registered through WebAuthn. Its public key and level are the
/// [`RegisteredKey`](super::RegisteredKey) with the same key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fido2Credential {
    /// The key id of the credential's public key (`hk1_…`).
    pub key_id: String,
    /// The credential id (what `allowCredentials` names), 1–1023 bytes.
    pub credential_id: Vec<u8>,
    /// The RP ID the credential is scoped to.
    pub rp_id: String,
    /// The authenticator model's AAGUID (zeros when the attestation was `none`).
    pub aaguid: [u8; 16],
    /// The highest sign counter seen.
    pub sign_count: u32,
    /// Backup eligible at registration (a passkey that may be synced).
    pub backup_eligible: bool,
    /// Backed up at registration.
    pub backed_up: bool,
    /// Set when an assertion's counter did not increase: the credential may have been cloned,
    /// and every later assertion is refused (`webauthn_counter_regressed`) until an
    /// administrator registers the credential again.
    pub possibly_cloned: bool,
}

impl Fido2Credential {
    /// Checks bounds before storing.
    pub fn validate(&self) -> Result<(), RegistryError> {
        if self.credential_id.is_empty() || self.credential_id.len() > MAX_CREDENTIAL_ID_LEN {
            return Err(RegistryError::Invalid("credential id must be 1-1023 bytes"));
        }
        if self.rp_id.is_empty()
            || self.rp_id.len() > MAX_RP_ID_LEN
            || !self
                .rp_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        {
            return Err(RegistryError::Invalid("RP ID must be a domain name"));
        }
        Ok(())
    }

    /// Checks what every registry checks before storing a credential with `key`: both in
    /// bounds, the same key id, and a FIDO2 level.
    pub fn validate_with(&self, key: &RegisteredKey) -> Result<(), RegistryError> {
        key.validate()?;
        self.validate()?;
        if self.key_id != key.key_id {
            return Err(RegistryError::KeyIdMismatch);
        }
        if !matches!(key.level, KeyLevel::Fido2 | KeyLevel::Fido2Unattested) {
            return Err(RegistryError::Invalid(
                "a FIDO2 credential's level is fido2 or fido2-unattested",
            ));
        }
        Ok(())
    }
}
