//! `[backends.fido2]`: which security key, for which relying party, and how to ask the user.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Default time to wait for a touch.
pub const DEFAULT_TOUCH_TIMEOUT_SECS: u64 = 30;
/// Longest accepted touch timeout.
const MAX_TOUCH_TIMEOUT_SECS: u64 = 600;
/// Longest RP ID (a DNS name).
const MAX_RP_ID_LEN: usize = 253;

/// Configuration of the FIDO2 backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fido2Config {
    /// The WebAuthn relying party id credentials are made for (the verifier's `rp_id`), e.g.
    /// `api.example.com`.
    pub rp_id: String,
    /// `origin` written into the agent's clientDataJSON (default `https://<rp_id>`).
    #[serde(default)]
    pub origin: Option<String>,
    /// The key's hidraw node. Without it (and without `seam_socket`) the first hidraw node with
    /// the FIDO usage page (0xF1D0) is used, found again for every operation.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// TEST SEAM, a stand-in for the USB link: a `SOCK_SEQPACKET` socket carrying 64-byte
    /// CTAPHID reports to a software authenticator (test-support's `fido2_authenticator`).
    /// Exclusive with `device`; not for production.
    #[serde(default)]
    pub seam_socket: Option<PathBuf>,
    /// Seconds to wait for a touch before cancelling (default 30).
    #[serde(default = "default_touch_timeout")]
    pub touch_timeout_secs: u64,
    /// Program that prints the key's PIN on its standard output (an askpass or pinentry
    /// wrapper), run without a shell when a key rule asks for user verification. The PIN never
    /// comes from an API request. Without it, user verification is asked of the key itself
    /// (built-in biometrics or on-key PIN entry).
    #[serde(default)]
    pub askpass: Option<PathBuf>,
    /// Show a desktop notification ("touch your security key") when a session bus exists
    /// (default true); the agent's log says it in any case.
    #[serde(default = "default_true")]
    pub notify: bool,
}

fn default_touch_timeout() -> u64 {
    DEFAULT_TOUCH_TIMEOUT_SECS
}

fn default_true() -> bool {
    true
}

impl Fido2Config {
    /// Checks the fields that do not need the file system.
    pub fn validate(&self) -> Result<(), String> {
        if self.rp_id.is_empty()
            || self.rp_id.len() > MAX_RP_ID_LEN
            || !self
                .rp_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err("rp_id must be a DNS name".into());
        }
        if self.device.is_some() && self.seam_socket.is_some() {
            return Err("set at most one of device and seam_socket".into());
        }
        if self.touch_timeout_secs == 0 || self.touch_timeout_secs > MAX_TOUCH_TIMEOUT_SECS {
            return Err(format!(
                "touch_timeout_secs must be 1 to {MAX_TOUCH_TIMEOUT_SECS}"
            ));
        }
        if let Some(origin) = &self.origin
            && !(origin.starts_with("https://") || origin.starts_with("http://localhost"))
        {
            return Err("origin must be an https:// origin".into());
        }
        for (name, path) in [("device", &self.device), ("askpass", &self.askpass)] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return Err(format!("{name} must be an absolute path"));
            }
        }
        Ok(())
    }

    /// The origin the agent writes into clientDataJSON.
    pub fn origin(&self) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.rp_id))
    }

    /// The touch timeout.
    pub fn touch_timeout(&self) -> Duration {
        Duration::from_secs(self.touch_timeout_secs)
    }
}
