//! Passkey registration and sign-in: the JSON steps `console.js` calls around
//! `navigator.credentials.create/get`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::SET_COOKIE;
use http::{HeaderMap, StatusCode};
use hwsign_proto::PublicKey;
use hwsign_proto::webauthn::{
    Assertion, AssertionExpectations, COSE_ALG_ES256, MAX_AUTHENTICATOR_DATA_LEN,
    MAX_CLIENT_DATA_LEN, check_sign_count,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ceremony::{Purpose, decode, token_matches};
use super::passkeys::{MAX_PASSKEYS_PER_USER, Passkey};
use super::{Console, now_unix};
use crate::webauthn::WebAuthnSettings;
use crate::webauthn::registration::{AttestationTrust, verify_registration};

type Shared = State<Arc<Console>>;

/// Longest attestation object accepted (decoded).
const MAX_ATTESTATION: usize = 16 * 1024;
/// Longest DER signature accepted.
const MAX_SIGNATURE: usize = 80;
/// Longest credential id accepted (decoded; WebAuthn allows 1023).
const MAX_CREDENTIAL_ID: usize = 1023;

fn refuse(status: StatusCode, code: &'static str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The checks every ceremony step shares: the console's origin and a JSON body.
fn body<T: DeserializeOwned>(
    console: &Console,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Box<Response>> {
    if console.check_origin(headers).is_err() {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "csrf_origin",
            "this request does not come from the console's origin",
        )));
    }
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(Box::new(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "the body must be application/json",
        )));
    }
    serde_json::from_slice(body).map_err(|_| {
        Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed body",
        ))
    })
}

fn settings(console: &Console) -> WebAuthnSettings {
    WebAuthnSettings {
        rp_id: console.resolved.rp_id.clone(),
        origins: vec![console.resolved.origin.clone()],
        require_user_verification: console.config.require_user_verification,
        attestation_roots: Vec::new(),
        aaguids: Vec::new(),
    }
}

fn user_verification(console: &Console) -> &'static str {
    if console.config.require_user_verification {
        "required"
    } else {
        "preferred"
    }
}

/// `POST /console/api/sign-in/options`: a challenge for any registered passkey (discoverable).
pub(super) async fn options(State(console): Shared, headers: HeaderMap, raw: Bytes) -> Response {
    if let Err(refused) = body::<Value>(&console, &headers, &raw) {
        return *refused;
    }
    match console.ceremonies.begin(Purpose::SignIn, now_unix()) {
        Ok((id, challenge)) => Json(json!({
            "challenge_id": id,
            "public_key": {
                "challenge": challenge,
                "rpId": console.resolved.rp_id,
                "timeout": 120_000,
                "userVerification": user_verification(&console),
                "allowCredentials": [],
            },
        }))
        .into_response(),
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no randomness",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignInBody {
    challenge_id: String,
    credential_id: String,
    client_data_json: String,
    authenticator_data: String,
    signature: String,
}

/// `POST /console/api/sign-in`: verifies the assertion and starts a session.
pub(super) async fn finish(State(console): Shared, headers: HeaderMap, raw: Bytes) -> Response {
    let request: SignInBody = match body(&console, &headers, &raw) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    let now = now_unix();
    let refused = |code: &'static str, message: &str, who: Option<&str>| {
        console.record(
            &format!("console:{}", who.unwrap_or("-")),
            "console_sign_in",
            None,
            code,
        );
        refuse(StatusCode::UNAUTHORIZED, code, message)
    };
    let Some(pending) = console
        .ceremonies
        .take(&request.challenge_id, now)
        .filter(|p| p.purpose == Purpose::SignIn)
    else {
        return refused(
            "challenge_unknown",
            "no such sign-in challenge (expired?)",
            None,
        );
    };
    let Some(passkey) = console.passkeys.find(&request.credential_id) else {
        return refused("passkey_unknown", "this passkey is not registered", None);
    };
    let who = Some(passkey.user_name.as_str());
    let decoded = (
        decode(&request.authenticator_data, MAX_AUTHENTICATOR_DATA_LEN),
        decode(&request.client_data_json, MAX_CLIENT_DATA_LEN),
        decode(&request.signature, MAX_SIGNATURE),
    );
    let (Ok(authenticator_data), Ok(client_data_json), Ok(signature)) = decoded else {
        return refused("invalid_request", "a field is not base64url", who);
    };
    let assertion = Assertion {
        authenticator_data,
        client_data_json,
    };
    let origins = [console.resolved.origin.clone()];
    let checked = match assertion.check(&AssertionExpectations {
        challenge: &pending.challenge,
        rp_id: &console.resolved.rp_id,
        origins: &origins,
        user_verification: console.config.require_user_verification,
    }) {
        Ok(checked) => checked,
        Err(error) => return refused(error.code().as_str(), &error.to_string(), who),
    };
    let key = hex::decode(&passkey.public_key)
        .ok()
        .and_then(|sec1| PublicKey::from_sec1(&sec1).ok());
    if !key.is_some_and(|key| key.verify_digest(&checked.digest, &signature)) {
        return refused(
            "bad_signature",
            "the assertion signature does not verify",
            who,
        );
    }
    let count = checked.authenticator_data.sign_count;
    if let Err(error) = check_sign_count(passkey.sign_count, count) {
        return refused(error.code().as_str(), &error.to_string(), who);
    }
    let role = match console.role_of(&passkey.user_name) {
        Ok(Some(role)) => role,
        Ok(None) => {
            console.record(
                &format!("console:{}", passkey.user_name),
                "console_sign_in",
                None,
                "forbidden_role",
            );
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                "this user holds no console role",
            );
        }
        Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "directory"),
    };
    if console
        .passkeys
        .set_sign_count(&passkey.credential_id, count)
        .is_err()
    {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "passkey store",
        );
    }
    let Ok(id) = console.sessions.start(&passkey.user_name, now) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no randomness",
        );
    };
    console.record(
        &format!("console:{}", passkey.user_name),
        "console_sign_in",
        None,
        "ok",
    );
    (
        [(SET_COOKIE, console.cookie(Some(&id)))],
        Json(
            json!({ "next": "/console/devices", "user": passkey.user_name, "role": role.as_str() }),
        ),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterOptionsBody {
    token: String,
}

/// `POST /console/api/register/options {token}`: the bootstrap token (while no passkey exists)
/// or a registration link's token (spent here) gives creation options for its user.
pub(super) async fn register_options(
    State(console): Shared,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let request: RegisterOptionsBody = match body(&console, &headers, &raw) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    let now = now_unix();
    let bootstrap = match (
        &console.config.bootstrap_user,
        &console.config.bootstrap_token_sha256,
    ) {
        (Some(user), Some(hash))
            if console.passkeys.is_empty() && token_matches(&request.token, hash) =>
        {
            Some(user.clone())
        }
        _ => None,
    };
    let bootstrapping = bootstrap.is_some();
    let user_name = match bootstrap {
        Some(user) => user,
        None => match console.ceremonies.spend_link(&request.token, now) {
            Some(user) => user,
            None => {
                console.record(
                    "console:-",
                    "console_passkey_register",
                    None,
                    "token_invalid",
                );
                return refuse(
                    StatusCode::FORBIDDEN,
                    "token_invalid",
                    "this registration link is unknown, used or expired",
                );
            }
        },
    };
    if console.passkeys.count_of(&user_name) >= MAX_PASSKEYS_PER_USER {
        return refuse(
            StatusCode::CONFLICT,
            "too_many_passkeys",
            "too many passkeys",
        );
    }
    let purpose = Purpose::Register {
        user_name: user_name.clone(),
        bootstrap: bootstrapping,
    };
    let Ok((id, challenge)) = console.ceremonies.begin(purpose, now) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no randomness",
        );
    };
    let user_handle = URL_SAFE_NO_PAD.encode(&Sha256::digest(user_name.as_bytes())[..16]);
    Json(json!({
        "challenge_id": id,
        "user": user_name,
        "public_key": {
            "challenge": challenge,
            "rp": { "id": console.resolved.rp_id, "name": "hwsign console" },
            "user": { "id": user_handle, "name": user_name, "displayName": user_name },
            "pubKeyCredParams": [{ "type": "public-key", "alg": COSE_ALG_ES256 }],
            "authenticatorSelection": {
                "residentKey": "required",
                "userVerification": user_verification(&console),
            },
            "attestation": "none",
            "timeout": 120_000,
        },
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterBody {
    challenge_id: String,
    client_data_json: String,
    attestation_object: String,
}

/// `POST /console/api/register`: verifies the registration and keeps the passkey.
pub(super) async fn register(State(console): Shared, headers: HeaderMap, raw: Bytes) -> Response {
    let request: RegisterBody = match body(&console, &headers, &raw) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    let now = now_unix();
    let Some(pending) = console.ceremonies.take(&request.challenge_id, now) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "challenge_unknown",
            "no such registration challenge (expired?)",
        );
    };
    let Purpose::Register {
        user_name,
        bootstrap,
    } = pending.purpose
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "challenge_unknown",
            "not a registration",
        );
    };
    let decoded = (
        decode(&request.client_data_json, MAX_CLIENT_DATA_LEN),
        decode(&request.attestation_object, MAX_ATTESTATION),
    );
    let (Ok(client_data_json), Ok(attestation_object)) = decoded else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a field is not base64url",
        );
    };
    let actor = format!("console:{user_name}");
    let verified = match verify_registration(
        &settings(&console),
        &AttestationTrust::default(),
        &pending.challenge,
        &client_data_json,
        &attestation_object,
        SystemTime::now(),
    ) {
        Ok(verified) => verified,
        Err(error) => {
            console.record(
                &actor,
                "console_passkey_register",
                None,
                "registration_invalid",
            );
            return refuse(
                StatusCode::BAD_REQUEST,
                "registration_invalid",
                &error.to_string(),
            );
        }
    };
    if verified.credential.credential_id.len() > MAX_CREDENTIAL_ID {
        return refuse(
            StatusCode::BAD_REQUEST,
            "registration_invalid",
            "credential id too long",
        );
    }
    let passkey = Passkey {
        credential_id: URL_SAFE_NO_PAD.encode(&verified.credential.credential_id),
        public_key: hex::encode(verified.public_key.sec1_uncompressed()),
        user_name: user_name.clone(),
        sign_count: verified.credential.sign_count,
        created_unix: now,
    };
    if let Err(error) = console.passkeys.add(passkey, bootstrap) {
        console.record(&actor, "console_passkey_register", None, "refused");
        return refuse(StatusCode::CONFLICT, "refused", &error.to_string());
    }
    console.record(&actor, "console_passkey_register", None, "ok");
    Json(json!({ "user": user_name, "next": "/console/sign-in" })).into_response()
}
