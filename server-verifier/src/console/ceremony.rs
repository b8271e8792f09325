//! The WebAuthn ceremonies of the console, verified by the verifier's own WebAuthn code
//! ([`hwsign_proto::webauthn`] for assertions, [`crate::webauthn::registration`] for
//! registrations): pending challenges (one use, two minutes, bounded) and one-time registration
//! tokens (the bootstrap token from the configuration, or a link an admin issued).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::ConsoleError;
use super::sessions::random_token;

/// How long a challenge lives, seconds.
pub(crate) const CHALLENGE_TTL_SECS: i64 = 120;
/// Most challenges pending at once (past it the oldest is dropped).
pub(crate) const MAX_PENDING: usize = 256;
/// How long a registration link lives, seconds.
pub(crate) const LINK_TTL_SECS: i64 = 900;
/// Most registration links outstanding.
pub(crate) const MAX_LINKS: usize = 64;

/// What a challenge is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Sign-in with any registered passkey.
    SignIn,
    /// Registering a passkey for this user; `bootstrap`: with the bootstrap token (only while
    /// no passkey exists).
    Register { user_name: String, bootstrap: bool },
}

#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The challenge bytes' base64url (what client data must carry).
    pub(crate) challenge: String,
    pub(crate) purpose: Purpose,
    expires_unix: i64,
}

#[derive(Debug, Clone)]
struct Link {
    user_name: String,
    expires_unix: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Ceremonies {
    pending: Mutex<HashMap<String, Pending>>,
    links: Mutex<HashMap<[u8; 32], Link>>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Ceremonies {
    /// A fresh challenge for `purpose`: `(challenge id, challenge)`.
    pub(crate) fn begin(
        &self,
        purpose: Purpose,
        now: i64,
    ) -> Result<(String, String), ConsoleError> {
        let id = random_token()?;
        let challenge = random_token()?;
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, p| p.expires_unix > now);
        while pending.len() >= MAX_PENDING {
            let oldest = pending
                .iter()
                .min_by_key(|(_, p)| p.expires_unix)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            id.clone(),
            Pending {
                challenge: challenge.clone(),
                purpose,
                expires_unix: now.saturating_add(CHALLENGE_TTL_SECS),
            },
        );
        Ok((id, challenge))
    }

    /// Takes the challenge `id` (one use), if it is live.
    pub(crate) fn take(&self, id: &str, now: i64) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .filter(|p| p.expires_unix > now)
    }

    /// Issues a one-time registration link token for `user_name`.
    pub(crate) fn issue_link(&self, user_name: &str, now: i64) -> Result<String, ConsoleError> {
        let token = format!("crl_{}", random_token()?);
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|_, l| l.expires_unix > now);
        if links.len() >= MAX_LINKS {
            return Err(ConsoleError::Refused(
                "too many registration links outstanding",
            ));
        }
        links.insert(
            hash(&token),
            Link {
                user_name: user_name.to_owned(),
                expires_unix: now.saturating_add(LINK_TTL_SECS),
            },
        );
        Ok(token)
    }

    /// Spends a registration link token: the user it registers for.
    pub(crate) fn spend_link(&self, token: &str, now: i64) -> Option<String> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash(token))
            .filter(|l| l.expires_unix > now)
            .map(|l| l.user_name)
    }
}

/// Whether `token` hashes to `expected_hex` (SHA-256, lower-case hex), in constant time.
pub(crate) fn token_matches(token: &str, expected_hex: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let actual = hex::encode(Sha256::digest(token.as_bytes()));
    actual.len() == expected_hex.len()
        && bool::from(actual.as_bytes().ct_eq(expected_hex.as_bytes()))
}

/// Decodes a base64url field of a ceremony body, bounded.
pub(crate) fn decode(text: &str, limit: usize) -> Result<Vec<u8>, ConsoleError> {
    if text.len() > limit.div_ceil(3) * 4 {
        return Err(ConsoleError::Refused("a field is too long"));
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| ConsoleError::Refused("a field is not base64url"))
}
