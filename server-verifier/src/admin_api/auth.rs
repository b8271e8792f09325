//! Who may do what on the admin API: the signing key's level, its role, and for recovery the
//! freshness of the signature.

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use hwsign_proto::SigningTime;
use serde::{Deserialize, Serialize};

use super::{AdminApi, ApiError};
use crate::verify::VerifiedPrincipal;

/// An administrator's role. Ordered: `Viewer < Operator < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads devices, sessions, users, groups and tokens.
    Viewer,
    /// Also revokes devices, ends sessions, forces re-attestation, issues and revokes
    /// enrollment tokens.
    Operator,
    /// Also assigns devices to users and issues recovery tokens.
    Admin,
}

impl Role {
    /// The spelling in configuration and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// The highest role `role_groups` gives to one of the groups of user `user_id` (the admin API's
/// keys and the console's passkeys are mapped to roles by the same groups).
pub(crate) fn group_role(
    directory: &dyn crate::directory::Directory,
    role_groups: &std::collections::BTreeMap<String, Role>,
    user_id: &str,
) -> Result<Option<Role>, crate::directory::DirectoryError> {
    Ok(directory
        .groups_of(user_id)?
        .iter()
        .filter_map(|group| role_groups.get(group).copied())
        .max())
}

impl AdminApi {
    /// The role of the key that signed, if any: from the configuration's key list, then from the
    /// groups of the user its device belongs to.
    pub(crate) fn role_of(&self, principal: &VerifiedPrincipal) -> Result<Option<Role>, ApiError> {
        let mut role = self
            .config
            .admins
            .iter()
            .filter(|admin| admin.key_id == principal.key_id)
            .map(|admin| admin.role)
            .max();
        if !self.config.role_groups.is_empty() {
            let device = principal
                .device_id
                .as_deref()
                .unwrap_or(principal.key_id.as_str());
            if let Some(user_id) = self.directory.device_owner(device)?
                && let Some(user) = self.directory.user(&user_id)?
                && user.active
            {
                role = role.max(group_role(
                    self.directory.as_ref(),
                    &self.config.role_groups,
                    &user_id,
                )?);
            }
        }
        Ok(role)
    }

    /// Refuses a key below the configured level (`admin_key_level`) or without `needed`
    /// (`forbidden_role`); returns the key's role.
    pub(crate) fn authorize(
        &self,
        principal: &VerifiedPrincipal,
        needed: Role,
    ) -> Result<Role, ApiError> {
        if principal.level < self.config.min_key_level {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_key_level",
                format!(
                    "admin requests need a {} key, this one is {}",
                    self.config.min_key_level.as_str(),
                    principal.level.as_str()
                ),
            ));
        }
        match self.role_of(principal)? {
            Some(role) if role >= needed => Ok(role),
            Some(role) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                format!(
                    "this needs the {} role, the key has {}",
                    needed.as_str(),
                    role.as_str()
                ),
            )),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                "this key holds no admin role",
            )),
        }
    }

    /// Refuses a signature that is not fresh (`fresh_signature_required`): made by a delegated
    /// session key, or dated more than `fresh_signature_secs` from the verifier's clock.
    pub(crate) fn require_fresh(
        &self,
        principal: &VerifiedPrincipal,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        let refuse = |why: String| {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "fresh_signature_required",
                why,
            ))
        };
        if principal.delegated {
            return refuse(
                "recovery needs a signature by the hardware key itself, not a session key".into(),
            );
        }
        // The date is covered by every HWS1 signature (it is in the string to sign).
        let date = headers
            .get("x-hws-date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| SigningTime::parse_amz_date(v).ok());
        let Some(date) = date else {
            return refuse("the request carries no X-Hws-Date".into());
        };
        let now = crate::unix_time::seconds_or_zero(now);
        let age = now.saturating_sub(date.unix()).abs();
        let limit = i64::try_from(self.config.fresh_signature_secs).unwrap_or(i64::MAX);
        if age > limit {
            return refuse(format!(
                "the signature is dated {age} s from now; recovery needs one within {limit} s"
            ));
        }
        Ok(())
    }
}
