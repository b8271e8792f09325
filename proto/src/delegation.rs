//! Delegation statements (delegated session keys). The hardware key signs a short statement that
//! authorizes an in-memory session key for one audience and at most 15 minutes; requests are then
//! signed by the session key and carry the statement in `X-Hws-Delegation` (always signed).
//!
//! Wire form: `<base64url(statement text)>.<base64url(DER signature)>`, where the statement text
//! is these lines joined by `\n` (no trailing newline), and the signature is ECDSA P-256 by the
//! device key over SHA-256 of the statement text:
//!
//! ```text
//! HWS1-DELEGATION
//! <device key id>
//! <session key id>
//! <session public key: base64url of the uncompressed SEC1 point>
//! <audience>
//! <not-before YYYYMMDDTHHMMSSZ>
//! <not-after YYYYMMDDTHHMMSSZ>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::ProtoError;
use crate::keys::{PublicKey, check_key_id};
use crate::scope::check_audience;
use crate::time::SigningTime;

/// First line of every statement.
pub const DELEGATION_MAGIC: &str = "HWS1-DELEGATION";
/// Longest lifetime of a statement.
pub const MAX_DELEGATION_SECS: i64 = 15 * 60;
/// Longest header value.
pub const MAX_DELEGATION_HEADER_LEN: usize = 1024;

/// A delegation statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationStatement {
    /// The hardware (device) key that signs the statement.
    pub device_key_id: String,
    /// The session key it authorizes.
    pub session_key: PublicKey,
    /// The audience the session key may sign for.
    pub audience: String,
    /// Start of validity.
    pub not_before: SigningTime,
    /// End of validity (at most 15 minutes after `not_before`).
    pub not_after: SigningTime,
}

impl DelegationStatement {
    /// The exact text that is signed.
    pub fn to_text(&self) -> String {
        self.text_with_magic(DELEGATION_MAGIC)
    }

    /// The statement text under another first line (a statement signed by a WebAuthn assertion
    /// starts with the profile's name, see `webauthn::WEBAUTHN_DELEGATION_MAGIC`).
    pub fn text_with_magic(&self, magic: &str) -> String {
        [
            magic,
            &self.device_key_id,
            &self.session_key.key_id(),
            &URL_SAFE_NO_PAD.encode(self.session_key.sec1_uncompressed()),
            &self.audience,
            &self.not_before.to_amz_date(),
            &self.not_after.to_amz_date(),
        ]
        .join("\n")
    }

    /// SHA-256 of [`Self::to_text`]: what the device key signs.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_text().as_bytes()).into()
    }

    /// Checks field syntax and the lifetime bound.
    pub fn check(&self) -> Result<(), ProtoError> {
        use ProtoError::MalformedDelegation as Bad;
        check_key_id(&self.device_key_id).map_err(|_| Bad("device key id"))?;
        check_audience(&self.audience).map_err(|_| Bad("audience"))?;
        let lifetime = self.not_after.unix() - self.not_before.unix();
        if lifetime <= 0 || lifetime > MAX_DELEGATION_SECS {
            return Err(Bad("lifetime must be 1 s to 15 min"));
        }
        Ok(())
    }

    /// The header value: statement and the device key's DER signature.
    pub fn to_header_value(&self, der_signature: &[u8]) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(self.to_text()),
            URL_SAFE_NO_PAD.encode(der_signature)
        )
    }

    /// Parses a header value strictly; returns the statement and the device key's signature.
    /// The signature is not checked here (that needs the registered device key).
    pub fn parse_header_value(value: &str) -> Result<(Self, Vec<u8>), ProtoError> {
        use ProtoError::MalformedDelegation as Bad;
        if value.len() > MAX_DELEGATION_HEADER_LEN {
            return Err(ProtoError::TooLarge {
                what: "delegation header",
                limit: MAX_DELEGATION_HEADER_LEN,
            });
        }
        let (text_b64, signature_b64) = value.split_once('.').ok_or(Bad("expected two parts"))?;
        let text = URL_SAFE_NO_PAD
            .decode(text_b64)
            .map_err(|_| Bad("statement is not base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| Bad("signature is not base64url"))?;
        let statement = Self::parse_text(&text, DELEGATION_MAGIC)?;
        Ok((statement, signature))
    }

    /// Parses statement text whose first line must be `magic`, strictly (one spelling only).
    pub fn parse_text(text: &[u8], magic: &str) -> Result<Self, ProtoError> {
        use ProtoError::MalformedDelegation as Bad;
        let text = std::str::from_utf8(text).map_err(|_| Bad("statement is not UTF-8"))?;
        let lines: Vec<&str> = text.split('\n').collect();
        let [
            first,
            device,
            session_id,
            session_point,
            audience,
            not_before,
            not_after,
        ] = lines.as_slice()
        else {
            return Err(Bad("expected seven lines"));
        };
        if *first != magic {
            return Err(Bad("unknown statement type"));
        }
        let point = URL_SAFE_NO_PAD
            .decode(session_point)
            .map_err(|_| Bad("session key is not base64url"))?;
        let session_key = PublicKey::from_sec1(&point).map_err(|_| Bad("session key"))?;
        if session_key.key_id() != *session_id {
            return Err(Bad("session key id does not match the key"));
        }
        let statement = Self {
            device_key_id: (*device).to_owned(),
            session_key,
            audience: (*audience).to_owned(),
            not_before: SigningTime::parse_amz_date(not_before).map_err(|_| Bad("not-before"))?,
            not_after: SigningTime::parse_amz_date(not_after).map_err(|_| Bad("not-after"))?,
        };
        statement.check()?;
        // Re-encoding must give back the same bytes: one statement, one spelling.
        if statement.text_with_magic(magic) != text {
            return Err(Bad("non-canonical statement"));
        }
        Ok(statement)
    }
}
