//! The admin API, `/admin/v1/...` (docs/ADMIN.md): devices, sessions and force logout, users
//! and groups, enrollment tokens, recovery — an axum [`Router`] a server mounts on its admin
//! listener (`hwsign-verifier serve` does, with `[admin.api]`), beside the SCIM endpoints.
//!
//! Every request is HWS1-signed by a registered key, checked by a [`Verifier`] of its own (the
//! admin audience, the admin listener's hosts). The key's level must be at least
//! [`AdminApiConfig::min_key_level`] (`tpm` by default; tests configure `software`), and the key
//! must hold a [`Role`]: listed in [`AdminApiConfig::admins`], or through its device's user's
//! groups ([`AdminApiConfig::role_groups`]). Reading needs `viewer`, changing `operator`, and
//! recovery and device assignment `admin`. Recovery also needs a *fresh* signature: by the
//! hardware key itself (not a delegated session key) and dated within
//! [`AdminApiConfig::fresh_signature_secs`] of the verifier's clock.

mod audit;
mod auth;
pub(crate) use auth::group_role;
mod handlers;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use hwsign_proto::api::KeyLevel;
use serde::Deserialize;
use serde_json::json;

use crate::config::{ConfigError, VerifierConfig};
use crate::directory::{
    Directory, DirectoryError, SCIM_PREFIX, ScimConfig, SessionGuard, SessionLimits,
    open_directory, scim_router,
};
use crate::enrollment::EnrollmentStore;
use crate::registry::KeyRegistry;
use crate::replay::ReplayCache;
use crate::{HwsignLayer, Verifier};

pub use audit::{AuditAccess, AuditParams};
pub use auth::Role;

/// Where the admin API lives.
pub const ADMIN_PREFIX: &str = "/admin/v1";
/// The default audience admin requests are signed for.
pub const DEFAULT_ADMIN_AUDIENCE: &str = "hwsign-admin";
/// Longest recovery token lifetime, seconds.
pub const MAX_RECOVERY_TTL_SECS: u64 = 3600;

/// Whether `path` is answered by the admin API or SCIM router.
pub fn handles(path: &str) -> bool {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    under(ADMIN_PREFIX) || under(SCIM_PREFIX)
}

/// A key given a role in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKey {
    /// The key id (`hk1_…`).
    pub key_id: String,
    /// Its role.
    pub role: Role,
}

/// `[admin.api]`: the admin API's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminApiConfig {
    /// The audience admin requests are signed for.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The authorities the admin listener is reached at (the signed `host` must be one).
    pub hosts: Vec<String>,
    /// The lowest key level accepted for admin requests (`tpm`; `software` only for tests).
    #[serde(default = "default_level")]
    pub min_key_level: KeyLevel,
    /// Keys with a role.
    #[serde(default)]
    pub admins: Vec<AdminKey>,
    /// Directory groups (display name) whose members' devices hold a role.
    #[serde(default)]
    pub role_groups: BTreeMap<String, Role>,
    /// How recent a signature must be for recovery, seconds.
    #[serde(default = "default_fresh")]
    pub fresh_signature_secs: u64,
    /// Lifetime of a recovery token, seconds (at most 3600).
    #[serde(default = "default_recovery_ttl")]
    pub recovery_ttl_secs: u64,
    /// SCIM provisioning; absent: no SCIM endpoints.
    #[serde(default)]
    pub scim: Option<ScimConfig>,
    /// Sessions kept per device.
    #[serde(default = "default_per_device")]
    pub max_sessions_per_device: usize,
    /// Sessions kept in all.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session's last-seen time is written at most this often, seconds.
    #[serde(default = "default_touch")]
    pub session_touch_secs: u64,
}

fn default_audience() -> String {
    DEFAULT_ADMIN_AUDIENCE.to_owned()
}
fn default_level() -> KeyLevel {
    KeyLevel::Tpm
}
fn default_fresh() -> u64 {
    30
}
fn default_recovery_ttl() -> u64 {
    900
}
fn default_per_device() -> usize {
    SessionLimits::default().max_per_device
}
fn default_max_sessions() -> usize {
    SessionLimits::default().max_sessions
}
fn default_touch() -> u64 {
    u64::try_from(SessionLimits::default().touch_interval_secs).unwrap_or(60)
}

/// Why the admin API cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminApiError {
    /// The admin verifier's configuration is invalid.
    #[error("admin API verifier")]
    Verifier(#[from] ConfigError),
    /// A setting is out of bounds.
    #[error("invalid admin API setting: {0}")]
    Invalid(&'static str),
    /// The directory cannot be opened.
    #[error("cannot open the directory")]
    Directory(#[from] DirectoryError),
    /// The enrollment store cannot be opened.
    #[error("cannot open the enrollment store")]
    Enrollment(#[from] crate::enrollment::EnrollmentError),
}

impl AdminApiConfig {
    /// The session bounds these settings give.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_per_device: self.max_sessions_per_device,
            max_sessions: self.max_sessions,
            touch_interval_secs: i64::try_from(self.session_touch_secs).unwrap_or(i64::MAX),
        }
    }

    /// Checks bounds.
    pub fn validate(&self) -> Result<(), AdminApiError> {
        if self.recovery_ttl_secs == 0 || self.recovery_ttl_secs > MAX_RECOVERY_TTL_SECS {
            return Err(AdminApiError::Invalid("recovery_ttl_secs must be 1..=3600"));
        }
        if self.fresh_signature_secs == 0 || self.fresh_signature_secs > 300 {
            return Err(AdminApiError::Invalid(
                "fresh_signature_secs must be 1..=300",
            ));
        }
        if self.max_sessions_per_device == 0 || self.max_sessions == 0 {
            return Err(AdminApiError::Invalid("session bounds must be at least 1"));
        }
        if let Some(scim) = &self.scim {
            let ok = scim.token_sha256.len() == 64
                && scim
                    .token_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(AdminApiError::Invalid(
                    "scim.token_sha256 must be 64 lower-case hex digits",
                ));
            }
        }
        Ok(())
    }
}

/// What the admin API answers from.
#[derive(Debug)]
pub struct AdminApi {
    config: AdminApiConfig,
    directory: Arc<dyn Directory>,
    registry: Arc<dyn KeyRegistry>,
    enrollment: Option<Arc<EnrollmentStore>>,
    audit: Option<AuditAccess>,
}

impl AdminApi {
    /// The admin API over these stores; `enrollment` is needed for enrollment tokens and
    /// recovery.
    pub fn new(
        config: AdminApiConfig,
        directory: Arc<dyn Directory>,
        registry: Arc<dyn KeyRegistry>,
        enrollment: Option<Arc<EnrollmentStore>>,
    ) -> Result<Self, AdminApiError> {
        config.validate()?;
        Ok(Self {
            config,
            directory,
            registry,
            enrollment,
            audit: None,
        })
    }

    /// The same API answering audit search and export from `audit`'s log, and recording admin
    /// actions in it.
    pub fn with_audit(mut self, audit: AuditAccess) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The router: `/admin/v1/...` behind its own verifier (sharing `replay`, and with
    /// `sessions` refusing an administrator's ended sessions too), and `/scim/v2/...` when SCIM
    /// is configured.
    pub fn router(
        self,
        replay: Arc<dyn ReplayCache>,
        sessions: Option<Arc<SessionGuard>>,
    ) -> Result<Router, AdminApiError> {
        let verifier_config =
            VerifierConfig::new(self.config.audience.clone(), self.config.hosts.clone());
        let mut verifier = Verifier::new(verifier_config, Arc::clone(&self.registry), replay)?;
        if let Some(sessions) = sessions {
            verifier = verifier.with_sessions(sessions);
        }
        let verifier = Arc::new(verifier);
        let scim = self.config.scim.as_ref().and_then(|scim| {
            scim_router(
                scim,
                Arc::clone(&self.directory),
                Arc::clone(&self.registry),
            )
        });
        let api = handlers::routes(Arc::new(self)).layer(HwsignLayer::new(verifier));
        Ok(match scim {
            Some(scim) => api.merge(scim),
            None => api,
        })
    }
}

/// What a server mounting the admin API needs.
#[derive(Debug)]
pub struct AdminServices {
    /// `/admin/v1/...` and `/scim/v2/...`.
    pub router: Router,
    /// Give it to the request verifier ([`Verifier::with_sessions`]).
    pub sessions: Arc<SessionGuard>,
    /// Give it to enrollment ([`Enrollment::with_directory`](crate::enrollment::Enrollment::with_directory)).
    pub directory: Arc<dyn Directory>,
}

/// Opens the directory and enrollment store that go with `registry_url` (`memory` or
/// `sqlite:PATH`) and builds the admin API on them.
pub fn admin_services(
    config: &AdminApiConfig,
    registry_url: &str,
    registry: Arc<dyn KeyRegistry>,
    replay: Arc<dyn ReplayCache>,
) -> Result<AdminServices, AdminApiError> {
    admin_services_audited(config, registry_url, registry, replay, None)
}

/// [`admin_services`] with the audit log: search and export, and admin actions recorded.
pub fn admin_services_audited(
    config: &AdminApiConfig,
    registry_url: &str,
    registry: Arc<dyn KeyRegistry>,
    replay: Arc<dyn ReplayCache>,
    audit: Option<AuditAccess>,
) -> Result<AdminServices, AdminApiError> {
    let directory = open_directory(registry_url)?;
    let enrollment = if registry_url.starts_with("memory") {
        EnrollmentStore::open_in_memory()?
    } else {
        crate::enrollment::open_enrollment_store(registry_url)?
    };
    let sessions = Arc::new(SessionGuard::new(
        Arc::clone(&directory),
        config.session_limits(),
    ));
    let mut api = AdminApi::new(
        config.clone(),
        Arc::clone(&directory),
        registry,
        Some(Arc::new(enrollment)),
    )?;
    if let Some(audit) = audit {
        api = api.with_audit(audit);
    }
    let router = api
        // Admin requests are not recorded as sessions (they would fill the listing with the
        // administrators' own activity, and `all` would end the request that asked for it).
        .router(replay, None)?;
    Ok(AdminServices {
        router,
        sessions,
        directory,
    })
}

/// An admin API refusal: `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn unavailable(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %crate::ErrorChain(error), "admin API: store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a store is unavailable",
        )
    }
}

impl From<DirectoryError> for ApiError {
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::NotFound(what) => Self::not_found(&what),
            DirectoryError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            DirectoryError::Invalid(why) => Self::invalid(why),
            other => Self::unavailable(&other),
        }
    }
}

impl From<crate::registry::RegistryError> for ApiError {
    fn from(error: crate::registry::RegistryError) -> Self {
        Self::unavailable(&error)
    }
}

impl From<crate::directory::deprovision::DeprovisionError> for ApiError {
    fn from(error: crate::directory::deprovision::DeprovisionError) -> Self {
        Self::unavailable(&error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}
