//! The web console (docs/ADMIN.md, "The console"): server-rendered HTML under `/console/` on the
//! admin listener, for people who would rather look than read. Devices (revoke), sessions (force
//! logout), users and groups, audit search with a verifiable JSONL download, and the active
//! route rules and policy.
//!
//! # Sign-in
//! With a passkey (WebAuthn), verified by the verifier's own WebAuthn code: the registration
//! checks of [`crate::webauthn::registration::verify_registration`] and the assertion checks of
//! [`hwsign_proto::webauthn::Assertion::check`], the ES256 signature by
//! [`hwsign_proto::PublicKey::verify_digest`]. A passkey belongs to a directory user name; the
//! first one is registered with the bootstrap token of the configuration (only while there is
//! none), later ones through one-time links an admin issues on the users page. A user's role is
//! the higher of `[admin.console] roles` and the `[admin.api] role_groups` of their directory
//! groups, looked up again on every request; a deprovisioned (inactive) user has none.
//!
//! # Security
//! Sessions are held server side ([`sessions`]: bounded, idle timeout, absolute lifetime); the
//! cookie is `HttpOnly; SameSite=Strict; Path=/console` and `Secure` (the admin listener must be
//! TLS, or loopback with `insecure_cookies_on_loopback`). Every POST must come from the
//! console's origin (`Origin`) and, for forms, carry the session's CSRF token. Every response
//! carries a strict CSP (`default-src 'none'`, script and style from self only, no inline
//! script). Each action checks the role it needs and goes through the same functions as the
//! admin API ([`crate::directory::deprovision`]), and is recorded in the audit log.

mod actions;
mod audit_view;
mod ceremony;
mod html;
mod pages;
mod passkeys;
mod sessions;
mod settings;
mod sign_in;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::admin_api::Role;
use crate::audit::{AuditEvent, AuditLog};
use crate::directory::{Directory, DirectoryError};
use crate::registry::KeyRegistry;
use crate::{PolicySettings, RouteRule};

pub use settings::ConsoleConfig;

use ceremony::Ceremonies;
use passkeys::PasskeyStore;
use sessions::{ConsoleSession, SessionTable};
use settings::Resolved;

/// Where the console lives.
pub const CONSOLE_PREFIX: &str = "/console";
/// The session cookie.
pub const COOKIE_NAME: &str = "hwsign_console";
/// Largest request body the console reads.
pub const MAX_BODY: usize = 64 * 1024;
/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is the console's.
pub fn handles(path: &str) -> bool {
    path == CONSOLE_PREFIX
        || path
            .strip_prefix(CONSOLE_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Why the console cannot start or an operation of it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// A setting is out of bounds.
    #[error("invalid console setting: {0}")]
    Invalid(&'static str),
    /// A file could not be read or written.
    #[error("console file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The system's random number generator failed.
    #[error("no randomness")]
    Random,
    /// A request was refused.
    #[error("refused: {0}")]
    Refused(&'static str),
}

/// What the console reads and acts on: the admin API's stores and the verifier's settings.
#[derive(Debug, Clone)]
pub struct ConsoleParts {
    /// The admin listener's address (for the default loopback origin).
    pub listen: SocketAddr,
    /// The directory (users, groups, device owners, sessions).
    pub directory: Arc<dyn Directory>,
    /// The key registry.
    pub registry: Arc<dyn KeyRegistry>,
    /// `[admin.api] role_groups`.
    pub role_groups: BTreeMap<String, Role>,
    /// The audit log console actions are recorded in, if any.
    pub audit: Option<Arc<AuditLog>>,
    /// The audit log's directory (for search and export), if any.
    pub audit_dir: Option<PathBuf>,
    /// The active route rules.
    pub route_rules: Vec<RouteRule>,
    /// The policy settings, if any.
    pub policy: Option<PolicySettings>,
}

/// The console service behind [`Console::router`].
#[derive(Debug)]
pub struct Console {
    config: ConsoleConfig,
    resolved: Resolved,
    parts: ConsoleParts,
    passkeys: PasskeyStore,
    sessions: SessionTable,
    ceremonies: Ceremonies,
}

/// A refusal page's status and code.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %crate::ErrorChain(error), "console: store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a store is unavailable",
        )
    }
}

impl From<DirectoryError> for Refusal {
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::NotFound(what) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
            }
            other => Self::unavailable(&other),
        }
    }
}

impl From<crate::registry::RegistryError> for Refusal {
    fn from(error: crate::registry::RegistryError) -> Self {
        Self::unavailable(&error)
    }
}

impl From<crate::directory::deprovision::DeprovisionError> for Refusal {
    fn from(error: crate::directory::deprovision::DeprovisionError) -> Self {
        Self::unavailable(&error)
    }
}

impl From<ConsoleError> for Refusal {
    fn from(error: ConsoleError) -> Self {
        match error {
            ConsoleError::Refused(why) => Self::new(StatusCode::BAD_REQUEST, "refused", why),
            other => Self::unavailable(&other),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = html::page(
            "Refused",
            "",
            None,
            &format!(
                "<p class=error data-code=\"{}\">{}: {}</p><p><a href=\"/console/\">Back to the console</a></p>",
                self.code,
                self.code,
                html::esc(&self.message)
            ),
        );
        (self.status, html_headers(), body).into_response()
    }
}

fn html_headers() -> [(http::HeaderName, &'static str); 1] {
    [(CONTENT_TYPE, "text/html; charset=utf-8")]
}

pub(crate) fn now_unix() -> i64 {
    crate::unix_time::seconds_or_zero(std::time::SystemTime::now())
}

/// A signed-in request: the session's cookie value, the session and the user's current role.
#[derive(Debug)]
pub(crate) struct SignedIn {
    pub(crate) id: String,
    pub(crate) session: ConsoleSession,
    pub(crate) role: Role,
}

impl SignedIn {
    pub(crate) fn viewer(&self) -> html::Viewer<'_> {
        html::Viewer {
            user_name: &self.session.user_name,
            role: self.role,
            csrf: &self.session.csrf,
        }
    }

    pub(crate) fn actor(&self) -> String {
        format!("console:{}", self.session.user_name)
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

impl Console {
    /// The console over `parts` with `config`.
    pub fn new(config: ConsoleConfig, parts: ConsoleParts) -> Result<Self, ConsoleError> {
        let resolved = config.resolve(parts.listen)?;
        let passkeys = PasskeyStore::open(config.passkeys.as_deref())?;
        let sessions = SessionTable::new(
            config.max_sessions,
            config.idle_timeout_secs,
            config.max_session_secs,
        );
        Ok(Self {
            config,
            resolved,
            parts,
            passkeys,
            sessions,
            ceremonies: Ceremonies::default(),
        })
    }

    /// The origin browsers must use.
    pub fn origin(&self) -> &str {
        &self.resolved.origin
    }

    /// The routes under `/console/`, with the security headers on every response.
    pub fn router(self) -> Router {
        let console = Arc::new(self);
        Router::new()
            .route("/console", get(pages::home))
            .route("/console/", get(pages::home))
            .route("/console/static/console.js", get(pages::script))
            .route("/console/static/console.css", get(pages::style))
            .route("/console/sign-in", get(pages::sign_in))
            .route("/console/register", get(pages::register))
            .route("/console/api/sign-in/options", post(sign_in::options))
            .route("/console/api/sign-in", post(sign_in::finish))
            .route(
                "/console/api/register/options",
                post(sign_in::register_options),
            )
            .route("/console/api/register", post(sign_in::register))
            .route("/console/devices", get(pages::devices))
            .route("/console/sessions", get(pages::sessions))
            .route("/console/users", get(pages::users))
            .route("/console/rules", get(pages::rules))
            .route("/console/audit", get(audit_view::search))
            .route("/console/audit/export", get(audit_view::download))
            .route("/console/devices/revoke", post(actions::revoke_device))
            .route("/console/sessions/end", post(actions::end_sessions))
            .route("/console/users/passkey-link", post(actions::passkey_link))
            .route("/console/logout", post(actions::sign_out))
            .fallback(|| async {
                Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such console page")
            })
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(console)
    }

    /// The user's role now: the higher of `[admin.console] roles` and their directory groups'
    /// `role_groups`; none for a deprovisioned user.
    pub(crate) fn role_of(&self, user_name: &str) -> Result<Option<Role>, DirectoryError> {
        let mut role = self.config.roles.get(user_name).copied();
        let directory = &self.parts.directory;
        if let Some(user) = directory.user_by_name(user_name)? {
            if !user.active {
                return Ok(None);
            }
            role = role.max(crate::admin_api::group_role(
                directory.as_ref(),
                &self.parts.role_groups,
                &user.id,
            )?);
        }
        Ok(role)
    }

    /// The signed-in user of a request, if any (an idle, expired or role-less session ends).
    pub(crate) fn signed_in(&self, headers: &HeaderMap) -> Result<Option<SignedIn>, Refusal> {
        let Some(id) = cookie_value(headers) else {
            return Ok(None);
        };
        let Some(session) = self.sessions.get(&id, now_unix()) else {
            return Ok(None);
        };
        match self.role_of(&session.user_name)? {
            Some(role) => Ok(Some(SignedIn { id, session, role })),
            None => {
                self.sessions.end(&id);
                Ok(None)
            }
        }
    }

    /// Refuses a POST whose `Origin` is not the console's (`csrf_origin`).
    pub(crate) fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let origin = headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if origin != Some(self.resolved.origin.as_str()) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "csrf_origin",
                "this request does not come from the console's origin",
            ));
        }
        Ok(())
    }

    /// Records a console action in the audit log (when one is configured).
    pub(crate) fn record(&self, actor: &str, action: &str, target: Option<&str>, outcome: &str) {
        if let Some(audit) = &self.parts.audit {
            let event =
                AuditEvent::admin(actor, action, target, outcome).with("via", Some("console"));
            if audit.record(event).is_err() {
                tracing::error!(action, "console: the audit log did not take the record");
            }
        }
        tracing::info!(actor, action, target, outcome, "console action");
    }

    /// The session cookie for `id` (empty and expired to sign out).
    pub(crate) fn cookie(&self, id: Option<&str>) -> HeaderValue {
        let secure = if self.resolved.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        let text = match id {
            Some(id) => format!(
                "{COOKIE_NAME}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                self.config.max_session_secs
            ),
            None => format!(
                "{COOKIE_NAME}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
            ),
        };
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
