//! Delegation by a FIDO2 credential ("one touch per session"): the delegation statement of
//! [`crate::delegation`] signed by a WebAuthn assertion instead of a plain ECDSA signature.
//!
//! The statement's first line names the profile ([`WEBAUTHN_DELEGATION_MAGIC`]), so an ECDSA
//! statement and an assertion-signed one can never be taken for each other. The assertion's
//! challenge is [`super::challenge`] of the statement text. `X-Hws-Delegation` carries four
//! base64url-no-pad parts joined by `.`: statement text, DER signature, authenticator data,
//! client data (the ECDSA form has the first two only).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::delegation::DelegationStatement;
use crate::error::ProtoError;
use crate::limits::MAX_SIGNATURE_LEN;

use super::assertion::{Assertion, MAX_AUTHENTICATOR_DATA_LEN, MAX_CLIENT_DATA_LEN};

/// First line of a statement signed by a WebAuthn assertion.
pub const WEBAUTHN_DELEGATION_MAGIC: &str = "HWS1-DELEGATION-WEBAUTHN-ES256";

/// Longest `X-Hws-Delegation` value in the assertion form (statement, signature and both
/// assertion parts at their bounds, base64url).
pub const MAX_WEBAUTHN_DELEGATION_HEADER_LEN: usize = 6 * 1024;

/// A statement signed by a WebAuthn assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebAuthnDelegation {
    /// The statement (device key id = the FIDO2 credential's key id).
    pub statement: DelegationStatement,
    /// The assertion's DER ES256 signature.
    pub signature: Vec<u8>,
    /// The assertion's authenticator data and client data.
    pub assertion: Assertion,
}

/// Whether a delegation header value has the assertion form (four parts).
pub fn is_webauthn_delegation(value: &str) -> bool {
    value.split('.').count() == 4
}

impl WebAuthnDelegation {
    /// The statement text the assertion covers.
    pub fn statement_text(statement: &DelegationStatement) -> String {
        statement.text_with_magic(WEBAUTHN_DELEGATION_MAGIC)
    }

    /// The challenge the authenticator must be asked to sign for `statement`.
    pub fn challenge_for(statement: &DelegationStatement) -> String {
        super::challenge(Self::statement_text(statement).as_bytes())
    }

    /// The challenge of this delegation's statement.
    pub fn challenge(&self) -> String {
        Self::challenge_for(&self.statement)
    }

    /// The header value.
    pub fn to_header_value(&self) -> String {
        [
            Self::statement_text(&self.statement).as_bytes(),
            &self.signature,
            &self.assertion.authenticator_data,
            &self.assertion.client_data_json,
        ]
        .map(|part| URL_SAFE_NO_PAD.encode(part))
        .join(".")
    }

    /// Parses the four-part header value strictly and within bounds. Neither the assertion nor
    /// its signature is checked here (that needs the registered credential).
    pub fn parse_header_value(value: &str) -> Result<Self, ProtoError> {
        use ProtoError::MalformedDelegation as Bad;
        if value.len() > MAX_WEBAUTHN_DELEGATION_HEADER_LEN {
            return Err(ProtoError::TooLarge {
                what: "delegation header",
                limit: MAX_WEBAUTHN_DELEGATION_HEADER_LEN,
            });
        }
        let parts: Vec<&str> = value.split('.').collect();
        let [text, signature, authenticator_data, client_data] = parts.as_slice() else {
            return Err(Bad("expected four parts"));
        };
        let decode = |part: &str, what: &'static str, limit: usize| {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| Bad(what))?;
            if bytes.is_empty() || bytes.len() > limit {
                return Err(Bad(what));
            }
            Ok(bytes)
        };
        let text = decode(text, "statement", MAX_WEBAUTHN_DELEGATION_HEADER_LEN)?;
        let statement = DelegationStatement::parse_text(&text, WEBAUTHN_DELEGATION_MAGIC)?;
        Ok(Self {
            statement,
            signature: decode(signature, "signature", MAX_SIGNATURE_LEN)?,
            assertion: Assertion {
                authenticator_data: decode(
                    authenticator_data,
                    "authenticator data",
                    MAX_AUTHENTICATOR_DATA_LEN,
                )?,
                client_data_json: decode(client_data, "client data", MAX_CLIENT_DATA_LEN)?,
            },
        })
    }
}
