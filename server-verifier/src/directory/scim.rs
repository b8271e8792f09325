//! SCIM 2.0 (RFC 7643/7644) Users and Groups, the subset Okta and Entra ID use to provision:
//! create, get, list with `filter=<attr> eq "…"`, replace (PUT), PATCH (`active`, names, group
//! membership), DELETE. Identity providers cannot sign with HWS1, so the endpoints take a bearer
//! token; only its SHA-256 is configured, compared in constant time.
//!
//! Deprovisioning (`active` set false, or DELETE) revokes every device of the user and ends
//! every session at once ([`deprovision_user`](super::deprovision::deprovision_user)).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::deprovision::deprovision_user;
use super::{Directory, DirectoryError, Group, User, new_id};
use crate::registry::KeyRegistry;

/// Where the SCIM endpoints live.
pub const SCIM_PREFIX: &str = "/scim/v2";
/// Largest SCIM request body.
pub const MAX_SCIM_BODY: usize = 256 * 1024;
/// Most resources one list answer holds.
pub const MAX_SCIM_COUNT: usize = 1000;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The SCIM endpoints' settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimConfig {
    /// Lower-case hex SHA-256 of the bearer token the identity provider sends
    /// (`printf %s "$TOKEN" | sha256sum`).
    pub token_sha256: String,
}

struct ScimState {
    directory: Arc<dyn Directory>,
    registry: Arc<dyn KeyRegistry>,
    token_sha256: [u8; 32],
}

/// A SCIM error answer (RFC 7644 §3.12).
#[derive(Debug)]
struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, format!("{what} not found"))
    }
}

impl From<DirectoryError> for ScimError {
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::Conflict(name) => Self::new(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                format!("{name} already exists"),
            ),
            DirectoryError::NotFound(what) => Self::not_found(&what),
            DirectoryError::Invalid(why) => Self::bad("invalidValue", why),
            DirectoryError::Full(what) => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                None,
                format!("the directory holds no more {what}"),
            ),
            other => {
                tracing::error!(error = %crate::ErrorChain(&other), "SCIM: directory failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    "the directory is unavailable",
                )
            }
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type);
        }
        scim_json(self.status, &body)
    }
}

fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    response
}

type ScimResult = Result<Response, ScimError>;

/// The SCIM router (paths under [`SCIM_PREFIX`]); `None` when the token hash is not 64 hex
/// digits.
pub fn scim_router(
    config: &ScimConfig,
    directory: Arc<dyn Directory>,
    registry: Arc<dyn KeyRegistry>,
) -> Option<Router> {
    let mut token_sha256 = [0u8; 32];
    hex::decode_to_slice(&config.token_sha256, &mut token_sha256).ok()?;
    let state = Arc::new(ScimState {
        directory,
        registry,
        token_sha256,
    });
    Some(
        Router::new()
            .route("/scim/v2/Users", get(list_users).post(create_user))
            .route(
                "/scim/v2/Users/{id}",
                get(get_user)
                    .put(replace_user)
                    .patch(patch_user)
                    .delete(delete_user),
            )
            .route("/scim/v2/Groups", get(list_groups).post(create_group))
            .route(
                "/scim/v2/Groups/{id}",
                get(get_group)
                    .put(replace_group)
                    .patch(patch_group)
                    .delete(delete_group),
            )
            .layer(DefaultBodyLimit::max(MAX_SCIM_BODY))
            .with_state(state),
    )
}

impl ScimState {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ScimError> {
        let unauthorized =
            || ScimError::new(StatusCode::UNAUTHORIZED, None, "bearer token required");
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(unauthorized());
        };
        let value = value.to_str().map_err(|_| unauthorized())?;
        let token = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| value[7..].trim())
            .ok_or_else(unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(presented.ct_eq(&self.token_sha256)) {
            Ok(())
        } else {
            Err(unauthorized())
        }
    }
}

fn now_unix() -> i64 {
    crate::unix_time::seconds_or_zero(SystemTime::now())
}

fn parse_body(body: &[u8]) -> Result<Value, ScimError> {
    serde_json::from_slice(body).map_err(|e| ScimError::bad("invalidSyntax", e.to_string()))
}

fn opt_str(value: &Value, name: &str) -> Result<Option<String>, ScimError> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ScimError::bad(
            "invalidValue",
            format!("{name} must be a string"),
        )),
    }
}

/// SCIM booleans; Entra ID sends `"True"`/`"False"` strings in PATCH.
fn as_bool(value: &Value) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::bad("invalidValue", "active must be a boolean")),
    }
}

fn user_json(user: &User) -> Value {
    let mut value = json!({
        "schemas": [USER_SCHEMA],
        "id": user.id,
        "userName": user.user_name,
        "active": user.active,
        "meta": {"resourceType": "User", "location": format!("{SCIM_PREFIX}/Users/{}", user.id)},
    });
    if let Some(name) = &user.display_name {
        value["displayName"] = json!(name);
    }
    if let Some(external) = &user.external_id {
        value["externalId"] = json!(external);
    }
    value
}

fn group_json(group: &Group, directory: &dyn Directory) -> Result<Value, ScimError> {
    let mut members = Vec::with_capacity(group.members.len());
    for id in &group.members {
        let display = directory.user(id)?.map(|u| u.user_name);
        members.push(
            json!({"value": id, "display": display, "$ref": format!("{SCIM_PREFIX}/Users/{id}")}),
        );
    }
    let mut value = json!({
        "schemas": [GROUP_SCHEMA],
        "id": group.id,
        "displayName": group.display_name,
        "members": members,
        "meta": {"resourceType": "Group", "location": format!("{SCIM_PREFIX}/Groups/{}", group.id)},
    });
    if let Some(external) = &group.external_id {
        value["externalId"] = json!(external);
    }
    Ok(value)
}

/// `attr eq "value"` → (attr, value). Only `eq` on one attribute is supported.
fn parse_filter(filter: &str) -> Result<(String, String), ScimError> {
    let invalid = || {
        ScimError::bad(
            "invalidFilter",
            "only `<attribute> eq \"<value>\"` is supported",
        )
    };
    let filter = filter.trim();
    let (attribute, rest) = filter.split_once(char::is_whitespace).ok_or_else(invalid)?;
    let (op, value) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(invalid)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(invalid());
    }
    let value: String = serde_json::from_str(value.trim()).map_err(|_| invalid())?;
    Ok((attribute.to_owned(), value))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    filter: Option<String>,
    start_index: Option<usize>,
    count: Option<usize>,
}

fn list_response(resources: Vec<Value>, query: &ListQuery) -> Response {
    let total = resources.len();
    let start = query.start_index.unwrap_or(1).max(1);
    let count = query.count.unwrap_or(100).min(MAX_SCIM_COUNT);
    let page: Vec<Value> = resources.into_iter().skip(start - 1).take(count).collect();
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": page.len(),
            "Resources": page,
        }),
    )
}

/// Fills a user from a SCIM User body (create and PUT).
fn user_from_body(body: &Value, id: String, created_unix: i64) -> Result<User, ScimError> {
    let user_name = opt_str(body, "userName")?
        .ok_or_else(|| ScimError::bad("invalidValue", "userName is required"))?;
    let display_name = match opt_str(body, "displayName")? {
        Some(name) => Some(name),
        None => body
            .get("name")
            .and_then(|name| name.get("formatted"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let active = body.get("active").map(as_bool).transpose()?.unwrap_or(true);
    let now = now_unix();
    Ok(User {
        id,
        user_name,
        display_name,
        external_id: opt_str(body, "externalId")?,
        active,
        created_unix,
        updated_unix: now,
    })
}

/// Stores `user` over `before`, deprovisioning when it went from active to inactive.
fn store_user(state: &ScimState, before: &User, user: &User) -> Result<(), ScimError> {
    state.directory.replace_user(user)?;
    if before.active && !user.active {
        deprovision(state, &user.id)?;
    }
    Ok(())
}

fn deprovision(state: &ScimState, user_id: &str) -> Result<(), ScimError> {
    deprovision_user(
        state.directory.as_ref(),
        state.registry.as_ref(),
        user_id,
        now_unix(),
    )
    .map_err(|error| {
        tracing::error!(error = %crate::ErrorChain(&error), "SCIM: deprovisioning failed");
        ScimError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "deprovisioning failed; retry",
        )
    })?;
    Ok(())
}

async fn create_user(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ScimResult {
    state.authorize(&headers)?;
    let body = parse_body(&body)?;
    let user = user_from_body(&body, new_id()?, now_unix())?;
    state.directory.create_user(&user)?;
    tracing::info!(user = %user.id, user_name = %user.user_name, "SCIM: user created");
    Ok(scim_json(StatusCode::CREATED, &user_json(&user)))
}

async fn list_users(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ScimResult {
    state.authorize(&headers)?;
    let users = match query.filter.as_deref() {
        None => state.directory.list_users()?,
        Some(filter) => {
            let (attribute, value) = parse_filter(filter)?;
            if attribute.eq_ignore_ascii_case("userName") {
                state.directory.user_by_name(&value)?.into_iter().collect()
            } else if attribute.eq_ignore_ascii_case("externalId") {
                state
                    .directory
                    .list_users()?
                    .into_iter()
                    .filter(|u| u.external_id.as_deref() == Some(value.as_str()))
                    .collect()
            } else {
                return Err(ScimError::bad(
                    "invalidFilter",
                    "Users filter on userName or externalId",
                ));
            }
        }
    };
    Ok(list_response(users.iter().map(user_json).collect(), &query))
}

fn find_user(state: &ScimState, id: &str) -> Result<User, ScimError> {
    state
        .directory
        .user(id)?
        .ok_or_else(|| ScimError::not_found("user"))
}

async fn get_user(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult {
    state.authorize(&headers)?;
    Ok(scim_json(
        StatusCode::OK,
        &user_json(&find_user(&state, &id)?),
    ))
}

async fn replace_user(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult {
    state.authorize(&headers)?;
    let before = find_user(&state, &id)?;
    let body = parse_body(&body)?;
    let user = user_from_body(&body, id, before.created_unix)?;
    store_user(&state, &before, &user)?;
    Ok(scim_json(StatusCode::OK, &user_json(&user)))
}

/// The `Operations` of a PATCH body, each `(op, path, value)` with `op` lower-cased.
fn operations(body: &Value) -> Result<Vec<(String, Option<String>, Value)>, ScimError> {
    let ops = body
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::bad("invalidSyntax", "Operations is required"))?;
    if ops.len() > 1000 {
        return Err(ScimError::bad("tooMany", "at most 1000 operations"));
    }
    ops.iter()
        .map(|op| {
            let name = op
                .get("op")
                .and_then(Value::as_str)
                .ok_or_else(|| ScimError::bad("invalidSyntax", "op is required"))?
                .to_ascii_lowercase();
            let path = opt_str(op, "path")?;
            Ok((name, path, op.get("value").cloned().unwrap_or(Value::Null)))
        })
        .collect()
}

fn apply_user_attribute(user: &mut User, path: &str, value: &Value) -> Result<(), ScimError> {
    let text = || {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ScimError::bad("invalidValue", format!("{path} must be a string")))
    };
    match path {
        p if p.eq_ignore_ascii_case("active") => user.active = as_bool(value)?,
        p if p.eq_ignore_ascii_case("userName") => user.user_name = text()?,
        p if p.eq_ignore_ascii_case("displayName") => user.display_name = Some(text()?),
        p if p.eq_ignore_ascii_case("externalId") => user.external_id = Some(text()?),
        // Attributes we do not keep (name.*, emails, title, ...) are accepted and ignored, as
        // Okta and Entra send them on every change.
        _ => {}
    }
    Ok(())
}

async fn patch_user(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult {
    state.authorize(&headers)?;
    let before = find_user(&state, &id)?;
    let mut user = before.clone();
    for (op, path, value) in operations(&parse_body(&body)?)? {
        if op != "replace" && op != "add" {
            return Err(ScimError::bad("invalidValue", format!("op {op} on a User")));
        }
        match path {
            Some(path) => apply_user_attribute(&mut user, &path, &value)?,
            None => {
                let object = value.as_object().ok_or_else(|| {
                    ScimError::bad("invalidValue", "a PATCH without path needs an object value")
                })?;
                for (name, value) in object {
                    apply_user_attribute(&mut user, name, value)?;
                }
            }
        }
    }
    user.updated_unix = now_unix();
    user.validate()?;
    store_user(&state, &before, &user)?;
    Ok(scim_json(StatusCode::OK, &user_json(&user)))
}

async fn delete_user(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult {
    state.authorize(&headers)?;
    find_user(&state, &id)?;
    // Devices and sessions first: the user's device list goes with the user.
    deprovision(&state, &id)?;
    state.directory.delete_user(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn member_ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let list = match value {
        Value::Array(list) => list.as_slice(),
        Value::Null => &[],
        single => std::slice::from_ref(single),
    };
    list.iter()
        .map(|member| {
            member
                .get("value")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ScimError::bad("invalidValue", "members need a value"))
        })
        .collect()
}

fn group_from_body(body: &Value, id: String, created_unix: i64) -> Result<Group, ScimError> {
    Ok(Group {
        id,
        display_name: opt_str(body, "displayName")?
            .ok_or_else(|| ScimError::bad("invalidValue", "displayName is required"))?,
        external_id: opt_str(body, "externalId")?,
        members: member_ids(body.get("members").unwrap_or(&Value::Null))?,
        created_unix,
        updated_unix: now_unix(),
    })
}

async fn create_group(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ScimResult {
    state.authorize(&headers)?;
    let group = group_from_body(&parse_body(&body)?, new_id()?, now_unix())?;
    state.directory.create_group(&group)?;
    group_answer(&state, &group.id, StatusCode::CREATED)
}

/// Group `id` as stored now, answered with `status`.
fn group_answer(state: &ScimState, id: &str, status: StatusCode) -> ScimResult {
    let group = find_group(state, id)?;
    Ok(scim_json(
        status,
        &group_json(&group, state.directory.as_ref())?,
    ))
}

fn find_group(state: &ScimState, id: &str) -> Result<Group, ScimError> {
    state
        .directory
        .group(id)?
        .ok_or_else(|| ScimError::not_found("group"))
}

async fn list_groups(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ScimResult {
    state.authorize(&headers)?;
    let mut groups = state.directory.list_groups()?;
    if let Some(filter) = query.filter.as_deref() {
        let (attribute, value) = parse_filter(filter)?;
        if attribute.eq_ignore_ascii_case("displayName") {
            groups.retain(|g| g.display_name == value);
        } else if attribute.eq_ignore_ascii_case("externalId") {
            groups.retain(|g| g.external_id.as_deref() == Some(value.as_str()));
        } else {
            return Err(ScimError::bad(
                "invalidFilter",
                "Groups filter on displayName or externalId",
            ));
        }
    }
    let resources = groups
        .iter()
        .map(|g| group_json(g, state.directory.as_ref()))
        .collect::<Result<_, _>>()?;
    Ok(list_response(resources, &query))
}

async fn get_group(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult {
    state.authorize(&headers)?;
    group_answer(&state, &id, StatusCode::OK)
}

async fn replace_group(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult {
    state.authorize(&headers)?;
    let before = find_group(&state, &id)?;
    let group = group_from_body(&parse_body(&body)?, id, before.created_unix)?;
    state.directory.replace_group(&group)?;
    group_answer(&state, &group.id, StatusCode::OK)
}

/// `members[value eq "ID"]` → `ID`.
fn member_filter(path: &str) -> Option<String> {
    let inner = path.strip_prefix("members[")?.strip_suffix(']')?;
    let (attribute, value) = parse_filter(inner).ok()?;
    attribute.eq_ignore_ascii_case("value").then_some(value)
}

async fn patch_group(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult {
    state.authorize(&headers)?;
    let mut group = find_group(&state, &id)?;
    for (op, path, value) in operations(&parse_body(&body)?)? {
        let path = path.unwrap_or_default();
        match (op.as_str(), path.as_str()) {
            ("add", p) if p.eq_ignore_ascii_case("members") => {
                group.members.extend(member_ids(&value)?);
            }
            ("remove", p) if p.eq_ignore_ascii_case("members") => {
                let gone = member_ids(&value)?;
                if gone.is_empty() {
                    group.members.clear();
                } else {
                    group.members.retain(|m| !gone.contains(m));
                }
            }
            ("remove", p) if member_filter(p).is_some() => {
                let gone = member_filter(p).unwrap_or_default();
                group.members.retain(|m| *m != gone);
            }
            ("replace", p) if p.eq_ignore_ascii_case("members") => {
                group.members = member_ids(&value)?;
            }
            ("replace", p) if p.eq_ignore_ascii_case("displayName") => {
                group.display_name = value
                    .as_str()
                    .ok_or_else(|| ScimError::bad("invalidValue", "displayName must be a string"))?
                    .to_owned();
            }
            ("replace", "") => {
                if let Some(name) = value.get("displayName").and_then(Value::as_str) {
                    group.display_name = name.to_owned();
                }
                if let Some(members) = value.get("members") {
                    group.members = member_ids(members)?;
                }
            }
            _ => {
                return Err(ScimError::bad(
                    "invalidPath",
                    format!("unsupported Group operation {op} {path}"),
                ));
            }
        }
    }
    group.members.sort();
    group.members.dedup();
    group.updated_unix = now_unix();
    state.directory.replace_group(&group)?;
    group_answer(&state, &group.id, StatusCode::OK)
}

async fn delete_group(
    State(state): State<Arc<ScimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult {
    state.authorize(&headers)?;
    if !state.directory.delete_group(&id)? {
        return Err(ScimError::not_found("group"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
