//! The checks of an `HWS1-WEBAUTHN-ES256` request that need the registry: the key is a FIDO2
//! credential of this verifier's RP, not flagged as cloned; the `X-Hws-WebAuthn` assertion
//! passes the stateless checks for this request's challenge. The caller then verifies the
//! signature over [`AssertionToVerify::message`] and, once the nonce is reserved, advances the
//! sign counter ([`crate::registry::KeyRegistry::advance_sign_count`]).

use hwsign_proto::api::KeyLevel;
use hwsign_proto::webauthn::{
    Assertion, AssertionExpectations, WEBAUTHN_HEADER, WebAuthnDelegation, WebAuthnError,
    request_challenge,
};
use hwsign_proto::{ClaimedSignature, ProtoError, RejectCode, RequestParts};
use sha2::{Digest, Sha256};

use crate::registry::{KeyRegistry, RegisteredKey};
use crate::rejection::Rejection;

use super::WebAuthnSettings;

/// What a verified assertion proved, kept until the request is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebAuthnUse {
    /// The counter in the assertion.
    pub(crate) sign_count: u32,
    /// The counter stored before this request.
    pub(crate) stored_sign_count: u32,
    /// UP flag.
    pub(crate) user_present: bool,
    /// UV flag.
    pub(crate) user_verified: bool,
    /// Whether the assertion signed a delegation statement rather than this request.
    pub(crate) delegated: bool,
}

/// An assertion whose stateless checks passed; its signature is still to be verified.
#[derive(Debug)]
pub(crate) struct AssertionToVerify {
    /// `authenticatorData ‖ SHA-256(clientDataJSON)`: what ES256 signed.
    pub(crate) message: Vec<u8>,
    /// What it proves once the signature verifies.
    pub(crate) used: WebAuthnUse,
}

fn refused(error: WebAuthnError) -> Rejection {
    Rejection::WebAuthn(error)
}

/// The checks of a strict `HWS1-WEBAUTHN-ES256` request signed by `key`.
pub(crate) fn check_request_assertion(
    settings: Option<&WebAuthnSettings>,
    registry: &dyn KeyRegistry,
    key: &RegisteredKey,
    parts: &RequestParts<'_>,
    claimed: &ClaimedSignature,
    user_verification: bool,
) -> Result<AssertionToVerify, Rejection> {
    let Some(settings) = settings else {
        return Err(Rejection::new(
            RejectCode::PolicyDenied,
            "this verifier accepts no WebAuthn signatures",
        ));
    };
    if claimed.delegation.is_some() {
        return Err(Rejection::new(
            RejectCode::MalformedRequest,
            "a WebAuthn-signed request cannot carry a delegation statement",
        ));
    }
    let header = match parts.single_header(WEBAUTHN_HEADER) {
        Ok(value) => value,
        Err(ProtoError::DuplicateHeader(_)) => {
            return Err(refused(WebAuthnError::Malformed(
                "X-Hws-WebAuthn appears more than once",
            )));
        }
        Err(_) => {
            return Err(refused(WebAuthnError::Malformed(
                "X-Hws-WebAuthn is missing",
            )));
        }
    };
    let assertion = Assertion::parse_header_value(header).map_err(refused)?;
    let challenge = request_challenge(&claimed.string_to_sign);
    check_credential_assertion(
        settings,
        registry,
        key,
        &assertion,
        &challenge,
        user_verification || settings.require_user_verification,
        false,
    )
}

/// The checks of a delegation statement signed by a WebAuthn assertion of `device_key`
/// ("one touch per session"): the same checks as a request's assertion (UP always), with the
/// statement's challenge. Answers the message the ES256 signature covers.
///
/// The sign counter is not advanced here: the statement (and its assertion) is presented with
/// every request of the session, on every replica, for at most 15 minutes; clone detection by
/// counter is done on strict requests.
pub(crate) fn check_delegation_assertion(
    settings: Option<&WebAuthnSettings>,
    registry: &dyn KeyRegistry,
    device_key: &RegisteredKey,
    delegation: &WebAuthnDelegation,
) -> Result<Vec<u8>, Rejection> {
    let Some(settings) = settings else {
        return Err(Rejection::new(
            RejectCode::DelegationInvalid,
            "this verifier accepts no WebAuthn signatures",
        ));
    };
    let checked = check_credential_assertion(
        settings,
        registry,
        device_key,
        &delegation.assertion,
        &delegation.challenge(),
        settings.require_user_verification,
        true,
    )?;
    Ok(checked.message)
}

/// The checks shared by request and delegation assertions.
pub(crate) fn check_credential_assertion(
    settings: &WebAuthnSettings,
    registry: &dyn KeyRegistry,
    key: &RegisteredKey,
    assertion: &Assertion,
    challenge: &str,
    user_verification: bool,
    delegated: bool,
) -> Result<AssertionToVerify, Rejection> {
    if !matches!(key.level, KeyLevel::Fido2 | KeyLevel::Fido2Unattested) {
        return Err(Rejection::new(
            RejectCode::UnknownKey,
            "the key is not a FIDO2 credential",
        ));
    }
    let credential = registry
        .fido2_credential(&key.key_id)
        .map_err(Rejection::Registry)?
        .ok_or_else(|| {
            Rejection::new(RejectCode::UnknownKey, "the key is not a FIDO2 credential")
        })?;
    if credential.rp_id != settings.rp_id {
        return Err(refused(WebAuthnError::RpIdMismatch));
    }
    let checked = assertion
        .check(&AssertionExpectations {
            challenge,
            rp_id: &settings.rp_id,
            origins: &settings.origins,
            user_verification,
        })
        .map_err(refused)?;
    let flags = checked.authenticator_data.flags;
    if credential.possibly_cloned {
        return Err(refused(WebAuthnError::CounterRegressed {
            stored: credential.sign_count,
            new: checked.authenticator_data.sign_count,
        }));
    }
    let mut message = assertion.authenticator_data.clone();
    message.extend_from_slice(&Sha256::digest(&assertion.client_data_json));
    Ok(AssertionToVerify {
        message,
        used: WebAuthnUse {
            sign_count: checked.authenticator_data.sign_count,
            stored_sign_count: credential.sign_count,
            user_present: flags.user_present(),
            user_verified: flags.user_verified(),
            delegated,
        },
    })
}
