//! The admin API's routes: each parses its input, authorizes the signer, and calls the
//! directory, the registry or the enrollment store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{AdminApi, ApiError, Role};
use crate::VerifiedDevice;
use crate::directory::deprovision::{end_sessions, revoke_device};
use crate::directory::{RecoveryGrant, SessionScope, User};
use crate::registry::RegisteredKey;

type ApiResult = Result<Response, ApiError>;
type Api = State<Arc<AdminApi>>;

pub(super) fn routes(api: Arc<AdminApi>) -> Router {
    Router::new()
        .route("/admin/v1/whoami", get(whoami))
        .route("/admin/v1/devices", get(list_devices))
        .route("/admin/v1/devices/{device}", get(show_device))
        .route("/admin/v1/devices/{device}/revoke", post(revoke))
        .route("/admin/v1/devices/{device}/reattest", post(reattest))
        .route("/admin/v1/devices/{device}/assign", post(assign))
        .route("/admin/v1/sessions", get(list_sessions))
        .route("/admin/v1/sessions/end", post(end))
        .route("/admin/v1/users", get(list_users))
        .route("/admin/v1/users/{user}", get(show_user))
        .route("/admin/v1/groups", get(list_groups))
        .route(
            "/admin/v1/enrollment-tokens",
            get(list_tokens).post(issue_token),
        )
        .route(
            "/admin/v1/enrollment-tokens/{id}/revoke",
            post(revoke_token),
        )
        .route("/admin/v1/recovery", post(recovery))
        .route("/admin/v1/audit", get(super::audit::search))
        .route("/admin/v1/audit/export", get(super::audit::export))
        .with_state(api)
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn now_unix() -> i64 {
    crate::unix_time::seconds_or_zero(now())
}

fn ok(value: Value) -> ApiResult {
    Ok((StatusCode::OK, Json(value)).into_response())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("body: {e}")))
}

async fn whoami(State(api): Api, VerifiedDevice(who): VerifiedDevice) -> ApiResult {
    let role = api.authorize(&who, Role::Viewer)?;
    ok(json!({
        "key_id": who.key_id,
        "level": who.level.as_str(),
        "delegated": who.delegated,
        "role": role.as_str(),
    }))
}

fn key_json(key: &RegisteredKey) -> Value {
    json!({
        "key_id": key.key_id,
        "label": key.label,
        "level": key.level.as_str(),
        "revoked": key.revoked,
        "added_unix": key.added_unix,
    })
}

/// Devices from the registry's keys, with their user and last-seen time.
fn devices(api: &AdminApi) -> Result<BTreeMap<String, Value>, ApiError> {
    let keys = api.registry.list()?;
    let sessions = api.directory.sessions(now_unix())?;
    let mut devices: BTreeMap<String, Value> = BTreeMap::new();
    for key in &keys {
        let device = crate::directory::device_ref(key).to_owned();
        let entry = devices.entry(device.clone()).or_insert_with(|| {
            json!({
                "device": device,
                "enrolled": key.device_id.is_some(),
                "revoked": true,
                "level": key.level.as_str(),
                "keys": [],
            })
        });
        if !key.revoked {
            entry["revoked"] = json!(false);
        }
        if let Some(list) = entry["keys"].as_array_mut() {
            list.push(key_json(key));
        }
    }
    for (device, entry) in &mut devices {
        let user = api.directory.device_owner(device)?;
        entry["user_id"] = json!(user);
        let last_seen = sessions
            .iter()
            .filter(|s| &s.device == device)
            .map(|s| s.last_seen_unix)
            .max();
        entry["last_seen_unix"] = json!(last_seen);
    }
    Ok(devices)
}

async fn list_devices(State(api): Api, VerifiedDevice(who): VerifiedDevice) -> ApiResult {
    api.authorize(&who, Role::Viewer)?;
    let devices: Vec<Value> = devices(&api)?.into_values().collect();
    ok(json!({ "devices": devices }))
}

async fn show_device(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Path(device): Path<String>,
) -> ApiResult {
    api.authorize(&who, Role::Viewer)?;
    let mut entry = devices(&api)?
        .remove(&device)
        .ok_or_else(|| ApiError::not_found("such device"))?;
    if let Some(record) = api.registry.device(&device)? {
        entry["attestation"] = json!({
            "ek_cert_sha256": record.ek_cert_sha256,
            "firmware_version": record.firmware_version,
            "enrolled_unix": record.enrolled_unix,
            "reset_count": record.clock.reset_count,
            "restart_count": record.clock.restart_count,
            "pcr_baseline_len": record.pcr_baseline.len(),
        });
        let facts = api.registry.device_facts(&device)?;
        entry["facts"] = serde_json::to_value(facts).unwrap_or(Value::Null);
    }
    let sessions: Vec<_> = api
        .directory
        .sessions(now_unix())?
        .into_iter()
        .filter(|s| s.device == device)
        .collect();
    entry["sessions"] = serde_json::to_value(sessions).unwrap_or(Value::Null);
    ok(entry)
}

async fn revoke(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Path(device): Path<String>,
) -> ApiResult {
    api.authorize(&who, Role::Operator)?;
    if !revoke_device(api.registry.as_ref(), &device)? {
        return Err(ApiError::not_found("such device"));
    }
    let now = now_unix();
    let ended = end_sessions(
        api.directory.as_ref(),
        SessionScope::Device(device.clone()),
        now,
        now,
    )?;
    tracing::info!(device = %device, by = %who.key_id, "admin: device revoked");
    api.record_admin(&who.key_id, "device_revoke", Some(&device));
    ok(json!({ "device": device, "revoked": true, "sessions_ended": ended }))
}

async fn reattest(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Path(device): Path<String>,
) -> ApiResult {
    api.authorize(&who, Role::Operator)?;
    if api.registry.device(&device)?.is_none() {
        return Err(ApiError::not_found("enrolled device"));
    }
    let mut facts = api.registry.device_facts(&device)?.unwrap_or_default();
    // With no last attestation on record, a device policy with an attestation age limit answers
    // `attestation_required` until the device attests again.
    facts.last_attestation = None;
    api.registry.put_device_facts(&device, &facts)?;
    tracing::info!(device = %device, by = %who.key_id, "admin: re-attestation forced");
    api.record_admin(&who.key_id, "device_reattest", Some(&device));
    ok(json!({ "device": device, "attestation": "stale" }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    user: String,
}

/// A user by id or, failing that, by user name.
fn find_user(api: &AdminApi, user: &str) -> Result<User, ApiError> {
    if let Some(found) = api.directory.user(user)? {
        return Ok(found);
    }
    api.directory
        .user_by_name(user)?
        .ok_or_else(|| ApiError::not_found("such user"))
}

async fn assign(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Path(device): Path<String>,
    body: Bytes,
) -> ApiResult {
    api.authorize(&who, Role::Admin)?;
    let body: AssignBody = parse(&body)?;
    let user = find_user(&api, &body.user)?;
    if !devices(&api)?.contains_key(&device) {
        return Err(ApiError::not_found("such device"));
    }
    api.directory.assign_device(&device, &user.id)?;
    api.record(
        crate::audit::AuditEvent::admin(&who.key_id, "device_assign", Some(&device), "ok")
            .with("user", Some(&user.id)),
    );
    ok(json!({ "device": device, "user_id": user.id }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    user: Option<String>,
    device: Option<String>,
}

async fn list_sessions(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Query(query): Query<SessionQuery>,
) -> ApiResult {
    api.authorize(&who, Role::Viewer)?;
    let user = query
        .user
        .as_deref()
        .map(|u| find_user(&api, u))
        .transpose()?;
    let sessions: Vec<_> = api
        .directory
        .sessions(now_unix())?
        .into_iter()
        .filter(|s| {
            user.as_ref()
                .is_none_or(|u| s.user_id.as_deref() == Some(&u.id))
        })
        .filter(|s| query.device.as_ref().is_none_or(|d| &s.device == d))
        .collect();
    ok(json!({ "sessions": sessions }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndBody {
    /// `session`, `device`, `user` or `all`.
    scope: String,
    /// The session, device or user (id or name).
    #[serde(default)]
    id: Option<String>,
    /// `all`: end the sessions issued at or before this time (default: now).
    #[serde(default)]
    issued_before_unix: Option<i64>,
}

async fn end(State(api): Api, VerifiedDevice(who): VerifiedDevice, body: Bytes) -> ApiResult {
    api.authorize(&who, Role::Operator)?;
    let body: EndBody = parse(&body)?;
    let id = || {
        body.id
            .clone()
            .ok_or_else(|| ApiError::invalid("this scope needs an id"))
    };
    let scope = match body.scope.as_str() {
        "session" => SessionScope::Session(id()?),
        "device" => SessionScope::Device(id()?),
        "user" => SessionScope::User(find_user(&api, &id()?)?.id),
        "all" => SessionScope::All,
        _ => return Err(ApiError::invalid("scope is session, device, user or all")),
    };
    let now = now_unix();
    let ended_unix = body.issued_before_unix.unwrap_or(now);
    if ended_unix > now {
        return Err(ApiError::invalid("issued_before_unix is in the future"));
    }
    let ended = end_sessions(api.directory.as_ref(), scope.clone(), ended_unix, now)?;
    // A user's devices too: the user-scope record follows the device's owner at request time,
    // the device-scope records stay even if the device is reassigned.
    if let SessionScope::User(user) = &scope {
        for device in api.directory.devices_of(user)? {
            end_sessions(
                api.directory.as_ref(),
                SessionScope::Device(device),
                ended_unix,
                now,
            )?;
        }
    }
    tracing::info!(?scope, by = %who.key_id, "admin: sessions ended");
    let target = match &scope {
        SessionScope::Session(id) => format!("session:{id}"),
        SessionScope::Device(id) => format!("device:{id}"),
        SessionScope::User(id) => format!("user:{id}"),
        SessionScope::All => format!("all:{ended_unix}"),
    };
    api.record_admin(&who.key_id, "sessions_end", Some(&target));
    ok(json!({ "scope": scope, "ended_unix": ended_unix, "sessions_ended": ended }))
}

fn user_json(api: &AdminApi, user: &User) -> Result<Value, ApiError> {
    Ok(json!({
        "id": user.id,
        "user_name": user.user_name,
        "display_name": user.display_name,
        "external_id": user.external_id,
        "active": user.active,
        "groups": api.directory.groups_of(&user.id)?,
        "devices": api.directory.devices_of(&user.id)?,
    }))
}

async fn list_users(State(api): Api, VerifiedDevice(who): VerifiedDevice) -> ApiResult {
    api.authorize(&who, Role::Viewer)?;
    let users = api
        .directory
        .list_users()?
        .iter()
        .map(|u| user_json(&api, u))
        .collect::<Result<Vec<_>, _>>()?;
    ok(json!({ "users": users }))
}

async fn show_user(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Path(user): Path<String>,
) -> ApiResult {
    api.authorize(&who, Role::Viewer)?;
    let user = find_user(&api, &user)?;
    ok(user_json(&api, &user)?)
}

async fn list_groups(State(api): Api, VerifiedDevice(who): VerifiedDevice) -> ApiResult {
    api.authorize(&who, Role::Viewer)?;
    ok(json!({ "groups": api.directory.list_groups()? }))
}

fn enrollment(api: &AdminApi) -> Result<&crate::enrollment::EnrollmentStore, ApiError> {
    api.enrollment.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "enrollment_not_configured",
            "this verifier has no enrollment store",
        )
    })
}

fn enrollment_error(error: crate::enrollment::EnrollmentError) -> ApiError {
    match error {
        crate::enrollment::EnrollmentError::Malformed(why) => ApiError::invalid(why),
        crate::enrollment::EnrollmentError::InvalidToken => ApiError::not_found("such token"),
        other => ApiError::unavailable(&other),
    }
}

async fn list_tokens(State(api): Api, VerifiedDevice(who): VerifiedDevice) -> ApiResult {
    api.authorize(&who, Role::Viewer)?;
    let tokens: Vec<Value> = enrollment(&api)?
        .list_tokens()
        .map_err(enrollment_error)?
        .into_iter()
        .map(|t| {
            json!({
                "id": t.id,
                "label": t.label,
                "created_unix": t.created_unix,
                "expires_unix": t.expires_unix,
                "used_unix": t.used_unix,
                "revoked": t.revoked,
            })
        })
        .collect();
    ok(json!({ "tokens": tokens }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    label: String,
    #[serde(default = "default_token_ttl")]
    ttl_secs: u64,
}

fn default_token_ttl() -> u64 {
    crate::enrollment::DEFAULT_TOKEN_TTL_SECS
}

async fn issue_token(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    body: Bytes,
) -> ApiResult {
    api.authorize(&who, Role::Operator)?;
    let body: TokenBody = parse(&body)?;
    let (id, token) =
        crate::enrollment::create_token(enrollment(&api)?, &body.label, body.ttl_secs, now())
            .map_err(enrollment_error)?;
    tracing::info!(token = %id, by = %who.key_id, "admin: enrollment token issued");
    api.record(
        crate::audit::AuditEvent::new("enrollment")
            .with("step", Some("token_issued"))
            .with("token", Some(&id))
            .with("actor", Some(&who.key_id))
            .with("outcome", Some("ok")),
    );
    ok(json!({ "id": id, "token": token.as_str() }))
}

async fn revoke_token(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    Path(id): Path<String>,
) -> ApiResult {
    api.authorize(&who, Role::Operator)?;
    enrollment(&api)?
        .revoke_token(&id)
        .map_err(enrollment_error)?;
    api.record(
        crate::audit::AuditEvent::new("enrollment")
            .with("step", Some("token_revoked"))
            .with("token", Some(&id))
            .with("actor", Some(&who.key_id))
            .with("outcome", Some("ok")),
    );
    ok(json!({ "id": id, "revoked": true }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryBody {
    /// The user (id or name) the recovered device will belong to.
    user: String,
}

async fn recovery(
    State(api): Api,
    VerifiedDevice(who): VerifiedDevice,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    api.authorize(&who, Role::Admin)?;
    api.require_fresh(&who, &headers, now())?;
    let body: RecoveryBody = parse(&body)?;
    let user = find_user(&api, &body.user)?;
    if !user.active {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "user_inactive",
            "the user is deprovisioned",
        ));
    }
    let ttl = api.config.recovery_ttl_secs;
    let label = format!(
        "recovery {}",
        user.user_name.chars().take(48).collect::<String>()
    );
    let (token_id, token) = crate::enrollment::create_token(enrollment(&api)?, &label, ttl, now())
        .map_err(enrollment_error)?;
    let issued = now_unix();
    let grant = RecoveryGrant {
        token_id: token_id.clone(),
        user_id: user.id.clone(),
        issued_by: who.key_id.clone(),
        issued_unix: issued,
        expires_unix: issued.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        used_by_device: None,
    };
    if let Err(error) = api.directory.put_recovery(&grant) {
        // Without its grant the token would enroll a device for nobody: withdraw it.
        let _ = enrollment(&api)?.revoke_token(&token_id);
        return Err(error.into());
    }
    tracing::info!(token = %token_id, user = %user.id, by = %who.key_id, "admin: recovery token issued");
    api.record(
        crate::audit::AuditEvent::recovery(&user.id, "grant_issued", Some(&who.key_id), "ok")
            .with("token", Some(&token_id)),
    );
    ok(json!({
        "token_id": token_id,
        "token": token.as_str(),
        "user_id": user.id,
        "expires_unix": grant.expires_unix,
    }))
}
