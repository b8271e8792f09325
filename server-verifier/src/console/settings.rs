//! `[admin.console]`: where the console is reached, who may register the first passkey, and its
//! session bounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::admin_api::Role;

use super::ConsoleError;

/// Longest idle time accepted in the configuration, seconds.
pub(crate) const MAX_IDLE_TIMEOUT_SECS: u64 = 3600;
/// Longest session lifetime accepted in the configuration, seconds.
pub(crate) const MAX_SESSION_SECS: u64 = 24 * 3600;
/// Most console sessions accepted in the configuration.
pub(crate) const MAX_SESSIONS: usize = 4096;

/// The web console's settings (docs/ADMIN.md, "The console").
///
/// ```toml
/// [admin.console]
/// origin = "https://admin.example.com:9443"
/// bootstrap_user = "alice@example.com"
/// bootstrap_token_sha256 = "…"          # sha256 of a token handed to that user once
/// passkeys = "/var/lib/hwsign/console-passkeys.json"
/// [admin.console.roles]
/// "alice@example.com" = "admin"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The exact origin browsers reach the console at (`https://host[:port]`, no path). Absent:
    /// `http://localhost:<admin port>`, allowed only with `insecure_cookies_on_loopback` on a
    /// loopback admin listener.
    #[serde(default)]
    pub origin: Option<String>,
    /// The WebAuthn RP ID (default: the origin's host).
    #[serde(default)]
    pub rp_id: Option<String>,
    /// The directory user name the bootstrap token registers a passkey for.
    #[serde(default)]
    pub bootstrap_user: Option<String>,
    /// SHA-256 (64 lower-case hex digits) of the bootstrap token: it registers one passkey for
    /// `bootstrap_user` while the console has no passkey at all.
    #[serde(default)]
    pub bootstrap_token_sha256: Option<String>,
    /// Roles given by user name, beside those of `[admin.api] role_groups` (the user's directory
    /// groups); the higher one counts.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Where passkeys are kept (a JSON file, written atomically, mode 0600). Absent: in memory
    /// (lost at restart; tests).
    #[serde(default)]
    pub passkeys: Option<PathBuf>,
    /// A session unused this long ends, seconds.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// A session ends this long after sign-in whatever its use, seconds.
    #[serde(default = "default_lifetime")]
    pub max_session_secs: u64,
    /// Sessions kept at once (past it the least recently used ends).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Demand the user-verified flag at sign-in (default true).
    #[serde(default = "default_true")]
    pub require_user_verification: bool,
    /// Leave `Secure` off the session cookie, for a plain-HTTP admin listener on loopback only
    /// (tests, a local SSH tunnel). Refused on any other listen address.
    #[serde(default)]
    pub insecure_cookies_on_loopback: bool,
}

fn default_idle() -> u64 {
    900
}
fn default_lifetime() -> u64 {
    8 * 3600
}
fn default_max_sessions() -> usize {
    256
}
fn default_true() -> bool {
    true
}

/// The settings checked and completed for one admin listener.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) origin: String,
    pub(crate) rp_id: String,
    pub(crate) secure_cookies: bool,
}

impl ConsoleConfig {
    /// Checks bounds and completes the origin and RP ID for the admin listener at `listen`.
    pub(crate) fn resolve(&self, listen: SocketAddr) -> Result<Resolved, ConsoleError> {
        let invalid = ConsoleError::Invalid;
        if self.insecure_cookies_on_loopback && !listen.ip().is_loopback() {
            return Err(invalid(
                "insecure_cookies_on_loopback needs a loopback admin listener",
            ));
        }
        if self.idle_timeout_secs == 0 || self.idle_timeout_secs > MAX_IDLE_TIMEOUT_SECS {
            return Err(invalid("idle_timeout_secs must be 1..=3600"));
        }
        if self.max_session_secs == 0 || self.max_session_secs > MAX_SESSION_SECS {
            return Err(invalid("max_session_secs must be 1..=86400"));
        }
        if self.max_sessions == 0 || self.max_sessions > MAX_SESSIONS {
            return Err(invalid("max_sessions must be 1..=4096"));
        }
        if let Some(hash) = &self.bootstrap_token_sha256 {
            let hex_ok = hash.len() == 64
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(invalid(
                    "bootstrap_token_sha256 must be 64 lower-case hex digits",
                ));
            }
            if self.bootstrap_user.is_none() {
                return Err(invalid("bootstrap_token_sha256 needs bootstrap_user"));
            }
        }
        let origin = match &self.origin {
            Some(origin) => origin.clone(),
            None if self.insecure_cookies_on_loopback => {
                format!("http://localhost:{}", listen.port())
            }
            None => return Err(invalid("origin is required (https://host[:port])")),
        };
        let host = origin
            .strip_prefix("https://")
            .or_else(|| {
                origin
                    .strip_prefix("http://")
                    .filter(|_| self.insecure_cookies_on_loopback)
            })
            .ok_or(invalid(
                "origin must be https:// (http:// only with insecure_cookies_on_loopback)",
            ))?;
        let host_name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let rp_id = self.rp_id.clone().unwrap_or_else(|| host_name.to_owned());
        let settings = crate::webauthn::WebAuthnSettings {
            rp_id: rp_id.clone(),
            origins: vec![origin.clone()],
            require_user_verification: self.require_user_verification,
            attestation_roots: Vec::new(),
            aaguids: Vec::new(),
        };
        settings
            .validate()
            .map_err(|_| invalid("origin must be scheme://host[:port] and rp_id a domain name"))?;
        Ok(Resolved {
            origin,
            rp_id,
            secure_cookies: !self.insecure_cookies_on_loopback,
        })
    }
}
