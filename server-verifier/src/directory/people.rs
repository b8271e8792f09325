//! Users and groups on the request path: the route rules naming people, and the owner the
//! device policy's principal gets (docs/ADMIN.md "Users and groups in rules and policies").

use hwsign_proto::RejectCode;

use super::{Directory, User, device_ref, principal_of};
use crate::registry::RegisteredKey;
use crate::rejection::Rejection;
use crate::route_rules::PeopleRule;

/// The active user `key`'s device belongs to and the user's group names; a directory failure is
/// `verifier_unavailable`-class (fail closed).
pub(crate) fn owner_of(
    directory: &dyn Directory,
    key: &RegisteredKey,
) -> Result<Option<(User, Vec<String>)>, Rejection> {
    principal_of(directory, device_ref(key)).map_err(|error| {
        tracing::error!(error = %crate::ErrorChain(&error), "directory failed; failing closed");
        Rejection::Registry(crate::registry::RegistryError::Unavailable(Box::new(error)))
    })
}

/// Refuses (`policy_denied`, naming the rule) a device whose user the rule does not admit: not
/// listed, not in a listed group, deprovisioned, or no user at all.
pub(crate) fn check_people(
    rule: &PeopleRule,
    owner: Option<&(User, Vec<String>)>,
) -> Result<(), Rejection> {
    match owner {
        Some((user, groups)) if rule.admits(user, groups) => Ok(()),
        Some(_) => Err(Rejection::new(
            RejectCode::PolicyDenied,
            format!(
                "the route rule {:?} admits only its listed users and groups; this device's user is not one",
                rule.path_prefix
            ),
        )),
        None => Err(Rejection::new(
            RejectCode::PolicyDenied,
            format!(
                "the route rule {:?} admits only listed users and groups; this device has no active user",
                rule.path_prefix
            ),
        )),
    }
}
