//! The console's pages (GET): sign-in and registration, devices, sessions, users and groups,
//! route rules and policy. Reading needs `viewer`; buttons for actions show only to a role that
//! may press them (and the action checks again).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::HeaderMap;
use http::header::CONTENT_TYPE;

use super::html::{Viewer, action_button, esc, page, time};
use super::{Console, Refusal, SignedIn, html_headers, now_unix};
use crate::admin_api::Role;
use crate::directory::device_ref;

type Shared = State<Arc<Console>>;

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

pub(super) async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub(super) async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// The signed-in user, or a redirect to the sign-in page.
pub(super) fn require(console: &Console, headers: &HeaderMap) -> Result<SignedIn, Box<Response>> {
    match console.signed_in(headers) {
        Ok(Some(signed_in)) => Ok(signed_in),
        Ok(None) => Err(Box::new(Redirect::to("/console/sign-in").into_response())),
        Err(refusal) => Err(Box::new(refusal.into_response())),
    }
}

/// A page for a signed-in user: `body` renders it, or the sign-in redirect or a refusal.
fn signed_page(
    console: &Console,
    headers: &HeaderMap,
    title: &str,
    current: &str,
    body: impl FnOnce(&Console, &SignedIn) -> Result<String, Refusal>,
) -> Response {
    let signed_in = match require(console, headers) {
        Ok(signed_in) => signed_in,
        Err(response) => return *response,
    };
    match body(console, &signed_in) {
        Ok(body) => render(title, current, Some(&signed_in.viewer()), &body),
        Err(refusal) => refusal.into_response(),
    }
}

fn render(title: &str, current: &str, viewer: Option<&Viewer<'_>>, body: &str) -> Response {
    (html_headers(), page(title, current, viewer, body)).into_response()
}

pub(super) async fn home(State(console): Shared, headers: HeaderMap) -> Response {
    match require(&console, &headers) {
        Ok(_) => Redirect::to("/console/devices").into_response(),
        Err(response) => *response,
    }
}

pub(super) async fn sign_in() -> Response {
    render(
        "Sign in",
        "",
        None,
        "<p>Sign in with your passkey.</p>\
<p><button id=sign-in class=primary>Sign in with a passkey</button></p>\
<p id=status role=status></p>",
    )
}

pub(super) async fn register() -> Response {
    render(
        "Register a passkey",
        "",
        None,
        "<p>This page registers a passkey for the console with the one-time link (or bootstrap \
token) in its address.</p>\
<p><button id=register class=primary>Register a passkey</button></p>\
<p id=status role=status></p>",
    )
}

/// One row per device: its keys' level and state, owner, last session activity, posture.
pub(super) async fn devices(State(console): Shared, headers: HeaderMap) -> Response {
    signed_page(&console, &headers, "Devices", "devices", devices_body)
}

struct DeviceRow {
    levels: Vec<&'static str>,
    keys: usize,
    active: bool,
}

fn devices_body(console: &Console, signed_in: &SignedIn) -> Result<String, Refusal> {
    let parts = &console.parts;
    let keys = parts.registry.list()?;
    let sessions = parts.directory.sessions(now_unix())?;
    let mut rows: BTreeMap<String, DeviceRow> = BTreeMap::new();
    for key in &keys {
        let row = rows
            .entry(device_ref(key).to_owned())
            .or_insert_with(|| DeviceRow {
                levels: Vec::new(),
                keys: 0,
                active: false,
            });
        row.keys += 1;
        row.active |= !key.revoked;
        if !row.levels.contains(&key.level.as_str()) {
            row.levels.push(key.level.as_str());
        }
    }
    let viewer = signed_in.viewer();
    let mut out = String::from(
        "<table id=devices><thead><tr><th>Device</th><th>User</th><th>Level</th><th>State</th>\
<th>Posture</th><th>Last seen</th><th></th></tr></thead><tbody>",
    );
    for (device, row) in &rows {
        let owner = parts
            .directory
            .device_owner(device)?
            .and_then(|id| parts.directory.user(&id).ok().flatten())
            .map(|user| user.user_name);
        let last_seen = sessions
            .iter()
            .filter(|s| &s.device == device)
            .map(|s| s.last_seen_unix)
            .max();
        let posture = parts
            .registry
            .device_facts(device)?
            .and_then(|facts| facts.posture)
            .and_then(|posture| serde_json::to_value(posture).ok())
            .map(|value| posture_summary(&value))
            .unwrap_or_else(|| "—".to_owned());
        let state = if row.active { "active" } else { "revoked" };
        let button = if row.active {
            action_button(
                &viewer,
                Role::Operator,
                "/console/devices/revoke",
                &[("device", device)],
                "Revoke",
                &format!("revoke-{device}"),
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr data-device=\"{}\"><td><code>{}</code> <small>({} key{})</small></td><td>{}</td>\
<td>{}</td><td class=\"state state-{state}\">{state}</td><td>{}</td><td>{}</td><td>{button}</td></tr>",
            esc(device),
            esc(device),
            row.keys,
            if row.keys == 1 { "" } else { "s" },
            esc(owner.as_deref().unwrap_or("—")),
            esc(&row.levels.join(", ")),
            esc(&posture),
            esc(&time(last_seen)),
        );
    }
    out.push_str("</tbody></table>");
    if rows.is_empty() {
        out.push_str("<p>No devices are registered.</p>");
    }
    Ok(out)
}

/// `disk_encrypted=true, screen_lock=false, …` from a posture report's facts.
fn posture_summary(value: &serde_json::Value) -> String {
    let Some(object) = value.as_object() else {
        return "—".to_owned();
    };
    let facts: Vec<String> = object
        .iter()
        .filter(|(name, _)| name.as_str() != "received_unix")
        .map(|(name, fact)| {
            let shown = fact.get("value").unwrap_or(fact);
            format!("{name}={shown}")
        })
        .collect();
    if facts.is_empty() {
        "—".to_owned()
    } else {
        facts.join(", ")
    }
}

/// Live sessions with force-logout buttons: one session, its device's, its user's.
pub(super) async fn sessions(State(console): Shared, headers: HeaderMap) -> Response {
    signed_page(&console, &headers, "Sessions", "sessions", sessions_body)
}

fn sessions_body(console: &Console, signed_in: &SignedIn) -> Result<String, Refusal> {
    let directory = &console.parts.directory;
    let sessions = directory.sessions(now_unix())?;
    let viewer = signed_in.viewer();
    let mut out = String::from(
        "<table id=sessions><thead><tr><th>Session</th><th>Device</th><th>User</th>\
<th>Audience</th><th>Issued</th><th>Expires</th><th>Last seen</th><th>Client</th>\
<th>Force logout</th></tr></thead><tbody>",
    );
    for session in &sessions {
        let user = match &session.user_id {
            Some(id) => directory.user(id)?.map(|u| u.user_name),
            None => None,
        };
        let mut buttons = action_button(
            &viewer,
            Role::Operator,
            "/console/sessions/end",
            &[("scope", "session"), ("id", &session.id)],
            "This session",
            &format!("end-session-{}", session.id),
        );
        buttons.push_str(&action_button(
            &viewer,
            Role::Operator,
            "/console/sessions/end",
            &[("scope", "device"), ("id", &session.device)],
            "Device's",
            &format!("end-device-{}", session.device),
        ));
        if let Some(user_id) = &session.user_id {
            buttons.push_str(&action_button(
                &viewer,
                Role::Operator,
                "/console/sessions/end",
                &[("scope", "user"), ("id", user_id)],
                "User's",
                &format!("end-user-{user_id}"),
            ));
        }
        let client = format!(
            "{} {}",
            session.source_address.as_deref().unwrap_or(""),
            session.user_agent.as_deref().unwrap_or("")
        );
        let _ = write!(
            out,
            "<tr data-session=\"{}\"><td><code>{}</code>{}</td><td><code>{}</code></td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=buttons>{buttons}</td></tr>",
            esc(&session.id),
            esc(&session.id),
            if session.delegated {
                " <small>(session key)</small>"
            } else {
                ""
            },
            esc(&session.device),
            esc(user.as_deref().unwrap_or("—")),
            esc(&session.audience),
            esc(&time(Some(session.issued_unix))),
            esc(&time(Some(session.expires_unix))),
            esc(&time(Some(session.last_seen_unix))),
            esc(client.trim()),
        );
    }
    out.push_str("</tbody></table>");
    if sessions.is_empty() {
        out.push_str("<p id=no-sessions>No live sessions.</p>");
    }
    Ok(out)
}

/// Users (with groups, devices and a passkey-link button for admins) and groups.
pub(super) async fn users(State(console): Shared, headers: HeaderMap) -> Response {
    signed_page(&console, &headers, "Users & groups", "users", users_body)
}

fn users_body(console: &Console, signed_in: &SignedIn) -> Result<String, Refusal> {
    let directory = &console.parts.directory;
    let viewer = signed_in.viewer();
    let mut out = String::from(
        "<h2>Users</h2><table id=users><thead><tr><th>User name</th><th>Display name</th>\
<th>Active</th><th>Groups</th><th>Devices</th><th>Console role</th><th>Passkeys</th><th></th>\
</tr></thead><tbody>",
    );
    for user in directory.list_users()? {
        let groups = directory.groups_of(&user.id)?;
        let devices = directory.devices_of(&user.id)?;
        let role = console.role_of(&user.user_name)?.map_or("—", Role::as_str);
        let button = action_button(
            &viewer,
            Role::Admin,
            "/console/users/passkey-link",
            &[("user", &user.user_name)],
            "Passkey link",
            &format!("passkey-link-{}", user.user_name),
        );
        let _ = write!(
            out,
            "<tr data-user=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{button}</td></tr>",
            esc(&user.user_name),
            esc(&user.user_name),
            esc(user.display_name.as_deref().unwrap_or("")),
            if user.active {
                "yes"
            } else {
                "no (deprovisioned)"
            },
            esc(&groups.join(", ")),
            esc(&devices.join(", ")),
            role,
            console.passkeys.count_of(&user.user_name),
        );
    }
    out.push_str(
        "</tbody></table><h2>Groups</h2><table id=groups><thead><tr><th>Group</th>\
<th>Members</th><th>Role it gives</th></tr></thead><tbody>",
    );
    for group in directory.list_groups()? {
        let mut members = Vec::new();
        for member in &group.members {
            members.push(
                directory
                    .user(member)?
                    .map_or_else(|| member.clone(), |u| u.user_name),
            );
        }
        let role = console
            .parts
            .role_groups
            .get(&group.display_name)
            .map_or("—", |r| r.as_str());
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{role}</td></tr>",
            esc(&group.display_name),
            esc(&members.join(", ")),
        );
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

/// The verifier's route rules and policy settings.
pub(super) async fn rules(State(console): Shared, headers: HeaderMap) -> Response {
    signed_page(&console, &headers, "Rules & policies", "rules", rules_body)
}

fn rules_body(console: &Console, _: &SignedIn) -> Result<String, Refusal> {
    let parts = &console.parts;
    let mut out = String::from(
        "<h2>Route rules</h2><p>The first rule whose prefix matches a request's path applies.</p>\
<table id=rules><thead><tr><th>Path prefix</th><th>Lowest level</th><th>Strict</th>\
<th>Presigned</th><th>Step-up</th></tr></thead><tbody>",
    );
    for rule in &parts.route_rules {
        let step_up = rule.step_up.as_ref().map_or_else(
            || "—".to_owned(),
            |s| {
                format!(
                    "within {} s{}",
                    s.max_age_secs,
                    if s.user_verification {
                        ", user verified"
                    } else {
                        ""
                    }
                )
            },
        );
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&rule.path_prefix),
            rule.min_level.as_str(),
            if rule.strict { "yes" } else { "no" },
            esc(&format!("{:?}", rule.presigned)),
            esc(&step_up),
        );
    }
    out.push_str("</tbody></table>");
    if parts.route_rules.is_empty() {
        out.push_str("<p>No route rules: every path accepts any registered key level.</p>");
    }
    out.push_str("<h2>Policy</h2>");
    match &parts.policy {
        None => out.push_str("<p>No Cedar policy is configured.</p>"),
        Some(policy) => {
            let shown = |path: &Option<std::path::PathBuf>| {
                path.as_ref()
                    .map_or_else(|| "—".to_owned(), |p| p.display().to_string())
            };
            let _ = write!(
                out,
                "<dl id=policy><dt>Policy directory</dt><dd><code>{}</code></dd>\
<dt>Signed bundle</dt><dd><code>{}</code></dd><dt>Applies to</dt><dd>{}</dd></dl>",
                esc(&shown(&policy.dir)),
                esc(&shown(&policy.bundle)),
                esc(&policy.covers.join(", ")),
            );
            if let Some(dir) = &policy.dir {
                out.push_str(&policy_files(dir));
            }
        }
    }
    Ok(out)
}

/// The `.cedar` files of a policy directory, each shown (at most 64 KiB each, 32 files).
fn policy_files(dir: &std::path::Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return "<p>The policy directory cannot be read.</p>".to_owned();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    files.sort();
    let mut out = String::new();
    for path in files.iter().take(32) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let text: String = text.chars().take(64 * 1024).collect();
        let _ = write!(
            out,
            "<h3><code>{}</code></h3><pre class=policy>{}</pre>",
            esc(&path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()),
            esc(&text)
        );
    }
    out
}
