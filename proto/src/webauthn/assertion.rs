//! The `X-Hws-WebAuthn` header and the stateless checks of an assertion.
//!
//! `X-Hws-WebAuthn: ad=<base64url-no-pad authenticatorData>, cd=<base64url-no-pad
//! clientDataJSON>`: exactly this spelling, no padding, no extra fields.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::authenticator_data::AuthenticatorData;
use super::client_data::{ClientData, TYPE_GET};
use super::error::WebAuthnError;
use super::rp_id_hash;

/// Longest authenticator data accepted (decoded).
pub const MAX_AUTHENTICATOR_DATA_LEN: usize = 1024;
/// Longest client data accepted (decoded).
pub const MAX_CLIENT_DATA_LEN: usize = 2048;
/// Longest `X-Hws-WebAuthn` header value: both parts at their bounds, base64url, and the names.
pub const MAX_WEBAUTHN_HEADER_LEN: usize = "ad=, cd=".len()
    + (MAX_AUTHENTICATOR_DATA_LEN * 4).div_ceil(3)
    + (MAX_CLIENT_DATA_LEN * 4).div_ceil(3);

/// An assertion's authenticator data and client data, as sent (the signature travels in
/// `Authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// `authenticatorData` bytes.
    pub authenticator_data: Vec<u8>,
    /// `clientDataJSON` bytes.
    pub client_data_json: Vec<u8>,
}

/// What an assertion must match, from the verifier's configuration and the request.
#[derive(Debug, Clone, Copy)]
pub struct AssertionExpectations<'a> {
    /// The challenge computed from the string to sign (or statement).
    pub challenge: &'a str,
    /// The RP ID the credential was registered for.
    pub rp_id: &'a str,
    /// Origins accepted for that RP.
    pub origins: &'a [String],
    /// Whether the UV flag is required.
    pub user_verification: bool,
}

/// An assertion that passed the stateless checks; its signature and counter remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAssertion {
    /// The parsed authenticator data.
    pub authenticator_data: AuthenticatorData,
    /// SHA-256(authenticatorData ‖ SHA-256(clientDataJSON)): the digest ES256 signed.
    pub digest: [u8; 32],
}

/// SHA-256(authenticatorData ‖ SHA-256(clientDataJSON)): what the ES256 signature covers (as a
/// prehash).
pub fn assertion_digest(authenticator_data: &[u8], client_data_json: &[u8]) -> [u8; 32] {
    let client_hash = Sha256::digest(client_data_json);
    let mut hasher = Sha256::new();
    hasher.update(authenticator_data);
    hasher.update(client_hash);
    hasher.finalize().into()
}

/// The counter rule of W3C WebAuthn L3 §7.2 step 21: when either counter is non-zero, the new
/// one must be greater than the stored one; otherwise the credential may have been cloned.
pub fn check_sign_count(stored: u32, new: u32) -> Result<(), WebAuthnError> {
    if (stored > 0 || new > 0) && new <= stored {
        return Err(WebAuthnError::CounterRegressed { stored, new });
    }
    Ok(())
}

fn decode_bounded(text: &str, what: &'static str, limit: usize) -> Result<Vec<u8>, WebAuthnError> {
    if text.len() > (limit * 4).div_ceil(3) {
        return Err(WebAuthnError::TooLarge { what, limit });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| WebAuthnError::Malformed(what))?;
    if bytes.is_empty() {
        return Err(WebAuthnError::Malformed(what));
    }
    Ok(bytes)
}

impl Assertion {
    /// The header value.
    pub fn to_header_value(&self) -> String {
        format!(
            "ad={}, cd={}",
            URL_SAFE_NO_PAD.encode(&self.authenticator_data),
            URL_SAFE_NO_PAD.encode(&self.client_data_json)
        )
    }

    /// Parses the header value strictly and within bounds.
    pub fn parse_header_value(value: &str) -> Result<Self, WebAuthnError> {
        use WebAuthnError::Malformed as Bad;
        if value.len() > MAX_WEBAUTHN_HEADER_LEN {
            return Err(WebAuthnError::TooLarge {
                what: "X-Hws-WebAuthn header",
                limit: MAX_WEBAUTHN_HEADER_LEN,
            });
        }
        let (ad_field, cd_field) = value.split_once(", ").ok_or(Bad("expected ad=…, cd=…"))?;
        let ad = ad_field
            .strip_prefix("ad=")
            .ok_or(Bad("expected ad= first"))?;
        let cd = cd_field
            .strip_prefix("cd=")
            .ok_or(Bad("expected cd= second"))?;
        Ok(Self {
            authenticator_data: decode_bounded(
                ad,
                "authenticator data",
                MAX_AUTHENTICATOR_DATA_LEN,
            )?,
            client_data_json: decode_bounded(cd, "client data", MAX_CLIENT_DATA_LEN)?,
        })
    }

    /// The digest the ES256 signature covers.
    pub fn digest(&self) -> [u8; 32] {
        assertion_digest(&self.authenticator_data, &self.client_data_json)
    }

    /// The stateless checks of W3C WebAuthn L3 §7.2: client data (type `webauthn.get`,
    /// challenge, origin, not cross-origin), then authenticator data (`rpIdHash`, UP always, UV
    /// when asked). UP is required on every assertion: an assertion without it proves only that
    /// some process could talk to the authenticator, not that a person touched it (Go's
    /// `x/crypto/ssh` accepted such security-key signatures: CVE-2026-39831,
    /// GHSA-89gr-r52h-f8rx, golang/go#79566; OpenSSH checks the flag unless the key is marked
    /// `no-touch-required`, see its PROTOCOL.u2f). Signature and counter are the caller's (they
    /// need the stored key).
    pub fn check(
        &self,
        expected: &AssertionExpectations<'_>,
    ) -> Result<CheckedAssertion, WebAuthnError> {
        for (bytes, what, limit) in [
            (
                &self.authenticator_data,
                "authenticator data",
                MAX_AUTHENTICATOR_DATA_LEN,
            ),
            (&self.client_data_json, "client data", MAX_CLIENT_DATA_LEN),
        ] {
            if bytes.len() > limit {
                return Err(WebAuthnError::TooLarge { what, limit });
            }
        }
        let client = ClientData::parse(&self.client_data_json)?;
        client.check(TYPE_GET, expected.challenge, expected.origins)?;
        let authenticator_data = AuthenticatorData::parse(&self.authenticator_data)?;
        if authenticator_data.attested_credential.is_some() {
            return Err(WebAuthnError::Malformed(
                "attested credential data in an assertion",
            ));
        }
        let expected_hash = rp_id_hash(expected.rp_id);
        if !bool::from(authenticator_data.rp_id_hash.ct_eq(&expected_hash)) {
            return Err(WebAuthnError::RpIdMismatch);
        }
        if !authenticator_data.flags.user_present() {
            return Err(WebAuthnError::UserPresence);
        }
        if expected.user_verification && !authenticator_data.flags.user_verified() {
            return Err(WebAuthnError::UserVerification);
        }
        Ok(CheckedAssertion {
            authenticator_data,
            digest: self.digest(),
        })
    }
}
