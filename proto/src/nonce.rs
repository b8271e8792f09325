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
        // Decoded and re-encoded on the stack: only the one spelling of 16 bytes is accepted.
        let mut bytes = [0u8; 18];
        let decoded = URL_SAFE_NO_PAD
            .decode_slice(text, &mut bytes)
            .map_err(|_| ProtoError::InvalidNonce)?;
        let mut spelled = [0u8; 24];
        let written = URL_SAFE_NO_PAD
            .encode_slice(
                bytes.get(..16).ok_or(ProtoError::InvalidNonce)?,
                &mut spelled,
            )
            .map_err(|_| ProtoError::InvalidNonce)?;
        if decoded != 16 || spelled.get(..written) != Some(text.as_bytes()) {
            return Err(ProtoError::InvalidNonce);
        }
        Ok(Self(text.to_owned()))
    }

    /// The wire form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
