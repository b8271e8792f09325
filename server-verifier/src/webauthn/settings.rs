//! `[webauthn]`: which RP this verifier answers for and which origins may sign.

use serde::{Deserialize, Serialize};

/// Most origins in `[webauthn].origins`.
pub const MAX_ORIGINS: usize = 32;

/// The verifier's WebAuthn relying party.
///
/// ```toml
/// [webauthn]
/// rp_id = "example.com"
/// origins = ["https://app.example.com"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAuthnSettings {
    /// The RP ID credentials are registered for (a domain: `example.com`, `localhost`).
    /// Assertions must carry `rpIdHash = SHA-256(rp_id)` and come from a credential registered
    /// for this RP ID.
    pub rp_id: String,
    /// The exact origins (`scheme://host[:port]`) whose client data is accepted. The agent's
    /// default origin is `https://<rp_id>`.
    pub origins: Vec<String>,
    /// Demand the user-verified flag on every WebAuthn-signed request (default: only where a
    /// route's `step_up.user_verification` asks).
    #[serde(default)]
    pub require_user_verification: bool,
    /// Roots (PEM or DER files) that `packed` attestation chains must reach for a credential to
    /// rank `fido2` at registration (the vendor's FIDO attestation root, e.g. Yubico's). Empty:
    /// every registration ranks `fido2-unattested`.
    #[serde(default)]
    pub attestation_roots: Vec<std::path::PathBuf>,
    /// AAGUIDs (32 hex digits, dashes allowed) allowed to rank `fido2`; empty allows any whose
    /// chain reaches a root.
    #[serde(default)]
    pub aaguids: Vec<String>,
}

impl WebAuthnSettings {
    /// Checks bounds: an RP ID that is a domain, 1–32 origins of the form `scheme://host[:port]`.
    pub fn validate(&self) -> Result<(), String> {
        let rp_ok = !self.rp_id.is_empty()
            && self.rp_id.len() <= crate::registry::MAX_RP_ID_LEN
            && self
                .rp_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !rp_ok {
            return Err(format!("rp_id {:?} is not a domain name", self.rp_id));
        }
        if self.origins.is_empty() || self.origins.len() > MAX_ORIGINS {
            return Err(format!("origins must list 1 to {MAX_ORIGINS} origins"));
        }
        for origin in &self.origins {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let ok = rest.is_some_and(|host| {
                !host.is_empty()
                    && host.len() <= 261
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
            });
            if !ok {
                return Err(format!(
                    "origin {origin:?} is not scheme://host[:port] (no path, no trailing slash)"
                ));
            }
        }
        self.aaguid_list()?;
        Ok(())
    }

    /// The allowed AAGUIDs, parsed.
    pub fn aaguid_list(&self) -> Result<Vec<[u8; 16]>, String> {
        self.aaguids
            .iter()
            .map(|text| {
                let digits: String = text.chars().filter(|c| *c != '-').collect();
                hex::decode(&digits)
                    .ok()
                    .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                    .ok_or_else(|| format!("aaguid {text:?} is not 16 bytes of hex"))
            })
            .collect()
    }

    /// The attestation trust of registrations: `attestation_roots` loaded, `aaguids` parsed.
    pub fn attestation_trust(
        &self,
    ) -> Result<super::registration::AttestationTrust, Box<dyn std::error::Error + Send + Sync>>
    {
        let anchors = if self.attestation_roots.is_empty() {
            None
        } else {
            let none: &[std::path::PathBuf] = &[];
            Some(crate::attestation::chain::TrustAnchors::from_pem_files(
                &self.attestation_roots,
                none,
            )?)
        };
        Ok(super::registration::AttestationTrust {
            anchors,
            aaguids: self.aaguid_list()?,
        })
    }
}
