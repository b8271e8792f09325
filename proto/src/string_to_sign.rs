//! The string to sign: `algorithm \n date \n scope \n hex(sha256(canonical request))`, and the
//! digest a key signs.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::canonical::CanonicalRequest;
use crate::scope::Scope;
use crate::time::SigningTime;

/// `algorithm \n date \n scope \n hex(sha256(canonical request))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringToSign {
    text: String,
}

impl StringToSign {
    /// An RFC 9421 signature base in the place of HWS1's string to sign: what the signature of a
    /// request in hwsign's RFC 9421 encoding covers ([`crate::rfc9421_request`]).
    pub fn from_signature_base(base: String) -> Self {
        Self { text: base }
    }

    /// Builds the string to sign.
    pub fn new(
        algorithm: &str,
        time: SigningTime,
        scope: &Scope,
        canonical: &CanonicalRequest,
    ) -> Self {
        // Built in one allocation: this runs for every request signed and every one verified.
        let parts = [
            "\n",
            &scope.date,
            "/",
            &scope.audience,
            "/",
            &scope.terminator,
            "\n",
        ];
        let mut text = String::with_capacity(
            algorithm.len() + 1 + 16 + parts.iter().map(|p| p.len()).sum::<usize>() + 64,
        );
        text.push_str(algorithm);
        text.push('\n');
        time.push_amz_date(&mut text);
        parts.iter().for_each(|part| text.push_str(part));
        push_lower_hex(&mut text, &canonical.sha256());
        Self { text }
    }

    /// The exact bytes that are signed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the string to sign: the digest a key backend signs with ECDSA.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
}

/// Appends `bytes` as lower-case hex (what `hex::encode` produces), without a temporary string.
fn push_lower_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

impl fmt::Display for StringToSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
