//! Deprovisioning and force logout, shared by SCIM and the admin API: what "this user is gone"
//! and "end these sessions" do to the registry and the directory.

use super::{Directory, DirectoryError, SessionEnd, SessionScope};
use crate::registry::{KeyRegistry, RegistryError};

/// How long a force-logout record is kept: longer than any session it can end lives (a delegation
/// statement is valid at most 15 minutes, plus the clock skew; a strict request's window is the
/// skew).
pub const SESSION_END_KEEP_SECS: i64 = 3600;

/// Why deprovisioning or revoking failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeprovisionError {
    /// The directory failed.
    #[error("directory")]
    Directory(#[from] DirectoryError),
    /// The registry failed.
    #[error("registry")]
    Registry(#[from] RegistryError),
}

/// Ends the sessions in `scope` issued at or before `ended_unix` (at most `now_unix`); returns how
/// many listed sessions that removed.
pub fn end_sessions(
    directory: &dyn Directory,
    scope: SessionScope,
    ended_unix: i64,
    now_unix: i64,
) -> Result<u64, DirectoryError> {
    let end = SessionEnd {
        scope,
        ended_unix: ended_unix.min(now_unix),
        keep_until_unix: now_unix.saturating_add(SESSION_END_KEEP_SECS),
    };
    directory.end_sessions(&end, now_unix)
}

/// Revokes a device in the registry: an enrolled device id revokes the device and every key of
/// it; otherwise `device` is a key id. Returns false when the registry knows neither.
pub fn revoke_device(registry: &dyn KeyRegistry, device: &str) -> Result<bool, RegistryError> {
    if registry.device(device)?.is_some() {
        registry.revoke_device(device)?;
        return Ok(true);
    }
    match registry.revoke(device) {
        Ok(()) => Ok(true),
        Err(RegistryError::UnknownKey(_)) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Revokes every device of user `user_id` and ends every session of the user and of those
/// devices, at once. Returns the devices revoked.
pub fn deprovision_user(
    directory: &dyn Directory,
    registry: &dyn KeyRegistry,
    user_id: &str,
    now_unix: i64,
) -> Result<Vec<String>, DeprovisionError> {
    let devices = directory.devices_of(user_id)?;
    for device in &devices {
        revoke_device(registry, device)?;
        end_sessions(
            directory,
            SessionScope::Device(device.clone()),
            now_unix,
            now_unix,
        )?;
    }
    end_sessions(
        directory,
        SessionScope::User(user_id.to_owned()),
        now_unix,
        now_unix,
    )?;
    tracing::info!(
        user = user_id,
        devices = devices.len(),
        "user deprovisioned"
    );
    Ok(devices)
}
