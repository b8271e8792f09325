//! The web console on the admin listener (`[admin.console]`, docs/ADMIN.md "The console"): built
//! on the admin API's directory, the registry, the role groups of `[admin.api]` and this
//! replica's audit log.

use std::sync::Arc;

use axum::Router;
use hwsign_verifier::KeyRegistry;
use hwsign_verifier::admin_api::AdminServices;
use hwsign_verifier::audit::AuditLog;
use hwsign_verifier::console::{Console, ConsoleError, ConsoleParts};

use crate::config::ServeConfig;
use crate::error::ServeError;

/// The console's router, when `[admin.console]` is configured (refused without `[admin.api]`).
pub(crate) fn router(
    config: &ServeConfig,
    services: Option<&AdminServices>,
    registry: &Arc<dyn KeyRegistry>,
    audit: Option<Arc<AuditLog>>,
) -> Result<Option<Router>, ServeError> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let Some(console) = &admin.console else {
        return Ok(None);
    };
    let (Some(api), Some(services)) = (&admin.api, services) else {
        return Err(ServeError::Console(ConsoleError::Invalid(
            "[admin.console] needs [admin.api]",
        )));
    };
    let parts = ConsoleParts {
        listen: admin.listen,
        directory: Arc::clone(&services.directory),
        registry: Arc::clone(registry),
        role_groups: api.role_groups.clone(),
        audit,
        audit_dir: config.audit.as_ref().map(|audit| audit.dir.clone()),
        route_rules: config.verifier.route_rules.clone(),
        policy: config.verifier.policy.clone(),
    };
    let console = Console::new(console.clone(), parts).map_err(ServeError::Console)?;
    tracing::info!(
        origin = console.origin(),
        "web console on the admin listener"
    );
    Ok(Some(console.router()))
}
