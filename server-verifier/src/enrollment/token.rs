//! One-time enrollment tokens: `hwt1_<id>.<secret>`. The id (8 random bytes, hex) finds the
//! stored row; the secret (32 random bytes, base64url) is stored only as its SHA-256 and compared
//! in constant time, so neither the database nor a timing side channel gives a usable token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::error::EnrollmentError;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "hwt1_";
/// Longest token text looked at.
pub const MAX_TOKEN_LEN: usize = 128;
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A token as issued: shown once, then only its hash is kept.
pub struct IssuedToken {
    /// The row id (not secret: lists and logs show it).
    pub id: String,
    /// The whole token text to hand to the device's user.
    pub token: Zeroizing<String>,
    /// SHA-256 of the secret part, what the store keeps.
    pub secret_sha256: [u8; 32],
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A presented token, split.
#[derive(Clone)]
pub struct PresentedToken {
    /// The row id.
    pub id: String,
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Fills `buf` from the system's random generator.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), EnrollmentError> {
    getrandom::fill(buf).map_err(|e| EnrollmentError::Store(format!("random generator: {e}")))
}

/// A fresh token.
pub fn issue() -> Result<IssuedToken, EnrollmentError> {
    let mut id = [0u8; ID_BYTES];
    random(&mut id)?;
    let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
    random(secret.as_mut())?;
    let id = hex::encode(id);
    let token = Zeroizing::new(format!(
        "{TOKEN_PREFIX}{id}.{}",
        URL_SAFE_NO_PAD.encode(secret.as_ref())
    ));
    Ok(IssuedToken {
        id,
        token,
        secret_sha256: Sha256::digest(secret.as_ref()).into(),
    })
}

/// Splits a presented token; anything not shaped like one is [`EnrollmentError::InvalidToken`].
pub fn parse(text: &str) -> Result<PresentedToken, EnrollmentError> {
    if text.len() > MAX_TOKEN_LEN {
        return Err(EnrollmentError::InvalidToken);
    }
    let (id, secret) = text
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .ok_or(EnrollmentError::InvalidToken)?;
    if id.len() != 2 * ID_BYTES || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(EnrollmentError::InvalidToken);
    }
    let secret = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| EnrollmentError::InvalidToken)?,
    );
    if secret.len() != SECRET_BYTES {
        return Err(EnrollmentError::InvalidToken);
    }
    Ok(PresentedToken {
        id: id.to_owned(),
        secret,
    })
}

impl PresentedToken {
    /// True when this token's secret hashes to `stored_sha256` (constant time).
    pub fn matches(&self, stored_sha256: &[u8]) -> bool {
        let digest = Sha256::digest(self.secret.as_slice());
        bool::from(digest.as_slice().ct_eq(stored_sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_and_match_only_their_hash() -> Result<(), EnrollmentError> {
        let issued = issue()?;
        let presented = parse(&issued.token)?;
        assert_eq!(presented.id, issued.id);
        assert!(presented.matches(&issued.secret_sha256));
        let other = issue()?;
        assert!(!presented.matches(&other.secret_sha256));
        assert_ne!(issued.token.as_str(), other.token.as_str());
        Ok(())
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        let good = "0123456789abcdef";
        let secret = URL_SAFE_NO_PAD.encode([1u8; 32]);
        for text in [
            String::new(),
            format!("hwt2_{good}.{secret}"),
            format!("hwt1_{good}{secret}"),
            format!("hwt1_0123456789ABCDEF.{secret}"),
            format!("hwt1_0123.{secret}"),
            format!("hwt1_{good}.{}", URL_SAFE_NO_PAD.encode([1u8; 31])),
            format!("hwt1_{good}.{secret}!"),
            format!("hwt1_{good}.{}", "A".repeat(200)),
        ] {
            assert!(
                matches!(parse(&text), Err(EnrollmentError::InvalidToken)),
                "{text}"
            );
        }
        assert!(parse(&format!("hwt1_{good}.{secret}")).is_ok());
    }
}
