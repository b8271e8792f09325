//! The `Authorization` header: format and strict parse.
//!
//! `HWS1-ECDSA-P256-SHA256 Credential=<key-id>/<yyyymmdd>/<audience>/hws1_request,
//! SignedHeaders=<a;b;c>, Signature=<hex DER>` (one line, `, ` between fields). The parser accepts
//! exactly this spelling and nothing looser: no reordered fields, no extra spaces, no repeated
//! fields, no upper-case hex.

use std::fmt;

use crate::canonical::SignedHeaders;
use crate::error::ProtoError;
use crate::limits::{MAX_AUTHORIZATION_LEN, MAX_SIGNATURE_LEN};
use crate::profile::Profile;
pub use crate::scope::check_credential;
use crate::scope::{Scope, parse_credential};

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The credential (key id for HWS1, access key id for AWS).
    pub credential: String,
    /// The credential scope.
    pub scope: Scope,
    /// The signed headers.
    pub signed_headers: SignedHeaders,
    /// The DER signature.
    pub signature: Vec<u8>,
}

impl Authorization {
    /// Formats the header value for `profile`.
    pub fn to_header_value(&self, profile: &Profile) -> String {
        format!("{} {self}", profile.algorithm)
    }

    /// Parses a header value strictly under `profile`.
    pub fn parse(value: &str, profile: &Profile) -> Result<Self, ProtoError> {
        use ProtoError::MalformedAuthorization as Bad;
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Err(ProtoError::TooLarge {
                what: "Authorization header",
                limit: MAX_AUTHORIZATION_LEN,
            });
        }
        let rest = value
            .strip_prefix(profile.algorithm)
            .ok_or(Bad("unknown algorithm"))?
            .strip_prefix(' ')
            .ok_or(Bad("expected one space after the algorithm"))?;
        let mut fields = rest.split(", ");
        let credential_field = fields.next().ok_or(Bad("missing Credential"))?;
        let signed_field = fields.next().ok_or(Bad("missing SignedHeaders"))?;
        let signature_field = fields.next().ok_or(Bad("missing Signature"))?;
        if fields.next().is_some() {
            return Err(Bad("unexpected extra field"));
        }
        let credential_value = credential_field
            .strip_prefix("Credential=")
            .ok_or(Bad("expected Credential first"))?;
        let signed_value = signed_field
            .strip_prefix("SignedHeaders=")
            .ok_or(Bad("expected SignedHeaders second"))?;
        let signature_hex = signature_field
            .strip_prefix("Signature=")
            .ok_or(Bad("expected Signature third"))?;

        let (credential, scope) = parse_credential(credential_value, profile.scope_terminator)
            .map_err(|e| Bad(e.message()))?;
        let signed_headers =
            SignedHeaders::parse(signed_value).map_err(|_| Bad("invalid SignedHeaders"))?;
        if signature_hex.is_empty()
            || signature_hex.len() > 2 * MAX_SIGNATURE_LEN
            || !signature_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Bad("Signature must be lower-case hex"));
        }
        let signature = hex::decode(signature_hex).map_err(|_| Bad("Signature must be hex"))?;
        Ok(Self {
            credential: credential.to_owned(),
            scope,
            signed_headers,
            signature,
        })
    }
}

impl fmt::Display for Authorization {
    /// Everything after the algorithm token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential={}/{}, SignedHeaders={}, Signature={}",
            self.credential,
            self.scope,
            self.signed_headers,
            hex::encode(&self.signature)
        )
    }
}
