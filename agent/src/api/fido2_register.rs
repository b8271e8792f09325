//! `POST /v1/keys/fido2/register`: the agent's half of a verifier's FIDO2 registration
//! ceremony (docs/WEBAUTHN.md). The caller passes what the verifier's creation options ask (RP
//! id, challenge, user handle, exclude list, user verification); the security key creates a
//! credential over THAT challenge (one touch; PIN from the askpass program when user
//! verification is required), the agent keeps it under the caller's label, and answers the
//! clientDataJSON and attestation object the verifier's registration step takes.

use ::http::{Response, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use hwsign_proto::api::{Fido2RegisterRequest, Fido2RegisterResponse, MAX_FIDO2_EXCLUDE};

use super::ApiError;
use super::http::{self, Body};
use super::keys::info;
use crate::audit::{Operation, Record};
use crate::backends::{Fido2Creation, check_label};
use crate::context::Context;
use crate::keystore::KeyStore;
use crate::peer::Peer;

/// The backend that answers registrations.
const BACKEND: &str = "fido2";
/// Bounds of the registration challenge (WebAuthn asks for at least 16 random bytes).
const CHALLENGE_LEN: std::ops::RangeInclusive<usize> = 16..=64;
/// Bounds of the user handle (WebAuthn: at most 64 bytes).
const USER_ID_LEN: std::ops::RangeInclusive<usize> = 1..=64;
/// Longest credential id in the exclude list (CTAP allows up to 1023 bytes).
const MAX_CREDENTIAL_ID_LEN: usize = 1023;

fn decode(
    what: &str,
    text: &str,
    len: std::ops::RangeInclusive<usize>,
) -> Result<Vec<u8>, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| ApiError::InvalidRequest(format!("{what} is not base64url")))?;
    if !len.contains(&bytes.len()) {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must be {} to {} bytes",
            len.start(),
            len.end()
        )));
    }
    Ok(bytes)
}

/// The checked creation parameters of a request.
fn creation(request: &Fido2RegisterRequest) -> Result<Fido2Creation, ApiError> {
    check_label(&request.user_name).map_err(|_| {
        ApiError::InvalidRequest("user_name must be 1 to 64 printable characters".into())
    })?;
    if request.exclude_credentials.len() > MAX_FIDO2_EXCLUDE {
        return Err(ApiError::InvalidRequest(format!(
            "at most {MAX_FIDO2_EXCLUDE} exclude_credentials"
        )));
    }
    let exclude = request
        .exclude_credentials
        .iter()
        .map(|id| decode("an exclude_credentials id", id, 1..=MAX_CREDENTIAL_ID_LEN))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Fido2Creation {
        rp_id: request.rp_id.clone(),
        challenge: decode("challenge", &request.challenge, CHALLENGE_LEN)?,
        user_id: decode("user_id", &request.user_id, USER_ID_LEN)?,
        user_name: request.user_name.clone(),
        exclude,
        user_verification: request.user_verification,
    })
}

/// Creates a credential for a verifier's registration; `201` with the new key and the
/// registration material.
pub(super) async fn register(
    ctx: &Context,
    peer: Peer,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let request: Fido2RegisterRequest = http::parse_json(body)?;
    let result = register_key(ctx, &request).await;
    let mut record = Record::new(Operation::CreateKey, &peer);
    record.backend = Some(BACKEND);
    record.label = Some(&request.label);
    if let Ok(answer) = &result {
        record.key_id = Some(&answer.key.id);
    }
    ctx.audit.record_outcome(record, &result)?;
    let answer = result?;
    tracing::info!(key_id = %answer.key.id, label = %answer.key.label, rp_id = %request.rp_id,
        "security key registered for a verifier");
    Ok(http::json(StatusCode::CREATED, &answer))
}

async fn register_key(
    ctx: &Context,
    request: &Fido2RegisterRequest,
) -> Result<Fido2RegisterResponse, ApiError> {
    let backend = ctx.keys.backend(BACKEND).ok_or_else(|| {
        let open: Vec<&str> = ctx.keys.backends().iter().map(|b| b.name()).collect();
        ApiError::UnknownBackend(BACKEND.to_owned(), open.join(", "))
    })?;
    check_label(&request.label)?;
    let creation = creation(request)?;
    let label = request.label.clone();
    let made = KeyStore::call(backend, move |b| b.fido2_register(&label, &creation)).await?;
    ctx.keys.remember(backend, &made.key);
    Ok(Fido2RegisterResponse {
        key: info(BACKEND, made.key),
        credential_id: URL_SAFE_NO_PAD.encode(&made.credential_id),
        client_data_json: URL_SAFE_NO_PAD.encode(made.client_data_json.as_bytes()),
        attestation_object: URL_SAFE_NO_PAD.encode(&made.attestation_object),
    })
}
