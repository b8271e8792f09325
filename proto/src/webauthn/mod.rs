//! The `HWS1-WEBAUTHN-ES256` profile: HWS1 requests signed by a WebAuthn assertion (a FIDO2
//! security key or a passkey) instead of a plain ECDSA signature.
//!
//! The canonical request and string to sign are HWS1's, with the algorithm line
//! [`WEBAUTHN_ALGORITHM`]. The authenticator is asked for an assertion whose
//! `clientDataJSON.challenge` is [`challenge`] of the string to sign; it signs
//! `authenticatorData ‖ SHA-256(clientDataJSON)` with ES256. The DER signature travels in
//! `Authorization` (same grammar as HWS1), authenticator data and client data in
//! [`WEBAUTHN_HEADER`] (see [`Assertion`]), which is not a signed header: it is part of the
//! signature.
//!
//! Everything here is pure (no I/O, no clock, no randomness): parsing with bounds, the checks of
//! W3C WebAuthn Level 3 §7.2 that need no stored state, and the encodings both sides build.
//! The signature itself and the sign counter (stored state) are checked by the verifier.

mod assertion;
mod attestation_object;
mod authenticator_data;
mod client_data;
mod cose_key;
mod delegation;
mod error;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

pub use assertion::{
    Assertion, AssertionExpectations, CheckedAssertion, MAX_AUTHENTICATOR_DATA_LEN,
    MAX_CLIENT_DATA_LEN, MAX_WEBAUTHN_HEADER_LEN, assertion_digest, check_sign_count,
};
pub use attestation_object::{AttestationObject, AttestationStatement, MAX_ATTESTATION_OBJECT_LEN};
pub use authenticator_data::{
    AttestedCredential, AuthenticatorData, AuthenticatorFlags, MAX_CREDENTIAL_ID_LEN,
};
pub use client_data::{ClientData, TYPE_CREATE, TYPE_GET, client_data_json};
pub use cose_key::{COSE_ALG_ES256, cose_key_from_public_key, public_key_from_cose};
pub use delegation::{
    MAX_WEBAUTHN_DELEGATION_HEADER_LEN, WEBAUTHN_DELEGATION_MAGIC, WebAuthnDelegation,
    is_webauthn_delegation,
};
pub use error::WebAuthnError;

use crate::profile::{HWS1, Profile};
use crate::string_to_sign::StringToSign;

/// The `Authorization` scheme and first line of the string to sign.
pub const WEBAUTHN_ALGORITHM: &str = "HWS1-WEBAUTHN-ES256";

/// Lower-case name of the header carrying authenticator data and client data.
pub const WEBAUTHN_HEADER: &str = "x-hws-webauthn";

/// HWS1 with the WebAuthn algorithm name: same headers, same canonicalization, same scope.
pub const HWS1_WEBAUTHN: Profile = Profile {
    algorithm: WEBAUTHN_ALGORITHM,
    ..HWS1
};

/// `base64url-no-pad(SHA-256(bytes))`: the WebAuthn challenge for `bytes` (a string to sign, or
/// a delegation statement).
pub fn challenge(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// The challenge of a request: [`challenge`] of its string to sign.
pub fn request_challenge(string_to_sign: &StringToSign) -> String {
    challenge(string_to_sign.as_str().as_bytes())
}

/// SHA-256 of an RP ID: what `rpIdHash` in authenticator data must equal.
pub fn rp_id_hash(rp_id: &str) -> [u8; 32] {
    Sha256::digest(rp_id.as_bytes()).into()
}
