//! The console's actions (POST forms): each checks the origin, the session, the form's CSRF
//! token and the role it needs, then calls the same functions as the admin API
//! ([`crate::directory::deprovision`]) and records the action in the audit log.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::response::{IntoResponse, Redirect, Response};
use http::header::SET_COOKIE;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::html::{esc, page};
use super::{Console, Refusal, SignedIn, html_headers, now_unix};
use crate::admin_api::Role;
use crate::directory::SessionScope;
use crate::directory::deprovision::{end_sessions as end_scope, revoke_device as revoke_key};

type Shared = State<Arc<Console>>;

/// Every action's form fields (those an action does not use are ignored).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

/// The checks every action makes, in order: origin (`csrf_origin`), session (`not_signed_in`),
/// CSRF token (`csrf_token`), role (`forbidden_role`). Refusals after the session is known are
/// recorded.
fn authorize(
    console: &Console,
    headers: &HeaderMap,
    form: &ActionForm,
    action: &str,
    needed: Role,
) -> Result<SignedIn, Refusal> {
    console.check_origin(headers)?;
    let Some(signed_in) = console.signed_in(headers)? else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "not_signed_in",
            "sign in first",
        ));
    };
    let csrf_ok = form
        .csrf
        .as_deref()
        .is_some_and(|token| signed_in.session.csrf_matches(token));
    if !csrf_ok {
        console.record(&signed_in.actor(), action, None, "csrf_token");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "csrf_token",
            "the form's CSRF token is missing or wrong",
        ));
    }
    if signed_in.role < needed {
        console.record(&signed_in.actor(), action, None, "forbidden_role");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            format!(
                "this needs the {} role, you have {}",
                needed.as_str(),
                signed_in.role.as_str()
            ),
        ));
    }
    Ok(signed_in)
}

fn form_of(form: Result<Form<ActionForm>, FormRejection>) -> ActionForm {
    form.map(|Form(form)| form).unwrap_or_default()
}

fn required<'a>(value: &'a Option<String>, what: &str) -> Result<&'a str, Refusal> {
    value
        .as_deref()
        .filter(|v| !v.is_empty() && v.len() <= 1024)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("{what} is missing"),
            )
        })
}

/// `POST /console/devices/revoke {csrf, device}` (operator): revokes the device's keys and ends
/// its sessions, as `POST /admin/v1/devices/{device}/revoke` does.
pub(super) async fn revoke_device(
    State(console): Shared,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    match revoke(&console, &headers, &form_of(form)) {
        Ok(()) => Redirect::to("/console/devices").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn revoke(console: &Console, headers: &HeaderMap, form: &ActionForm) -> Result<(), Refusal> {
    let signed_in = authorize(console, headers, form, "revoke_device", Role::Operator)?;
    let device = required(&form.device, "device")?;
    if !revoke_key(console.parts.registry.as_ref(), device)? {
        console.record(
            &signed_in.actor(),
            "revoke_device",
            Some(device),
            "not_found",
        );
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such device",
        ));
    }
    let now = now_unix();
    let ended = end_scope(
        console.parts.directory.as_ref(),
        SessionScope::Device(device.to_owned()),
        now,
        now,
    )?;
    console.record(&signed_in.actor(), "revoke_device", Some(device), "ok");
    tracing::info!(device, ended, "console: device revoked");
    Ok(())
}

/// `POST /console/sessions/end {csrf, scope, id}` (operator): ends one session, a device's or a
/// user's, as `POST /admin/v1/sessions/end` does.
pub(super) async fn end_sessions(
    State(console): Shared,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    match end(&console, &headers, &form_of(form)) {
        Ok(()) => Redirect::to("/console/sessions").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn end(console: &Console, headers: &HeaderMap, form: &ActionForm) -> Result<(), Refusal> {
    let signed_in = authorize(console, headers, form, "end_sessions", Role::Operator)?;
    let id = required(&form.id, "id")?.to_owned();
    let directory = console.parts.directory.as_ref();
    let scope = match form.scope.as_deref() {
        Some("session") => SessionScope::Session(id.clone()),
        Some("device") => SessionScope::Device(id.clone()),
        Some("user") => SessionScope::User(id.clone()),
        _ => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "scope is session, device or user",
            ));
        }
    };
    let now = now_unix();
    end_scope(directory, scope.clone(), now, now)?;
    // A user's devices too, as the admin API does.
    if let SessionScope::User(user) = &scope {
        for device in directory.devices_of(user)? {
            end_scope(directory, SessionScope::Device(device), now, now)?;
        }
    }
    let target = format!("{}:{id}", form.scope.as_deref().unwrap_or(""));
    console.record(&signed_in.actor(), "end_sessions", Some(&target), "ok");
    Ok(())
}

/// `POST /console/users/passkey-link {csrf, user}` (admin): a one-time link registering a
/// passkey for that user, shown once.
pub(super) async fn passkey_link(
    State(console): Shared,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    match issue_link(&console, &headers, &form_of(form)) {
        Ok(body) => (html_headers(), body).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn issue_link(
    console: &Console,
    headers: &HeaderMap,
    form: &ActionForm,
) -> Result<String, Refusal> {
    let signed_in = authorize(console, headers, form, "passkey_link", Role::Admin)?;
    let user = required(&form.user, "user")?;
    if console.parts.directory.user_by_name(user)?.is_none()
        && !console.config.roles.contains_key(user)
    {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such user",
        ));
    }
    let token = console.ceremonies.issue_link(user, now_unix())?;
    console.record(&signed_in.actor(), "passkey_link", Some(user), "ok");
    let link = format!("{}/console/register#{token}", console.resolved.origin);
    let body = format!(
        "<p>A one-time link registering a passkey for <strong>{}</strong>, valid for 15 \
minutes. Hand it to them over a channel you trust; it is shown only now.</p>\
<p><input id=passkey-link readonly size=90 value=\"{}\"></p>\
<p><a href=\"/console/users\">Back to users</a></p>",
        esc(user),
        esc(&link)
    );
    Ok(page(
        "Passkey link",
        "users",
        Some(&signed_in.viewer()),
        &body,
    ))
}

/// `POST /console/logout {csrf}`: ends the session and clears the cookie.
pub(super) async fn sign_out(
    State(console): Shared,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let form = form_of(form);
    match authorize(&console, &headers, &form, "console_sign_out", Role::Viewer) {
        Ok(signed_in) => {
            console.sessions.end(&signed_in.id);
            console.record(&signed_in.actor(), "console_sign_out", None, "ok");
            (
                [(SET_COOKIE, console.cookie(None))],
                Redirect::to("/console/sign-in"),
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}
