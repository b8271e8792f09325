//! The request nonce.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ProtoError;

/// A request nonce: 16 random bytes, unpadded base64url on the wire (22 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nonce(String);

impl Nonce {
    /// From 16 bytes the caller drew from a CSPRNG.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses the wire form strictly.
    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        if text.len() != 22 {
            return Err(ProtoError::InvalidNonce);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| ProtoError::InvalidNonce)?;
        if bytes.len() != 16 || URL_SAFE_NO_PAD.encode(&bytes) != text {
            return Err(ProtoError::InvalidNonce);
        }
        Ok(Self(text.to_owned()))
    }

    /// The wire form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
