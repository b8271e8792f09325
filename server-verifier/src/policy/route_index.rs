//! The route index: which policies can apply to a route. A policy whose scope is
//! `resource in Hws::Route::"/v1/admin"` (or `resource == …`) can only match a request whose route
//! is that route or lies under it — the resource's ancestors are exactly its route chain
//! (`context::ancestors`) — so for any other route Cedar would find its scope false and neither
//! evaluate its conditions nor report it. Evaluating only the policies whose scope can match
//! therefore gives the same decision, the same determining policies and the same errors, for
//! less work: in a realistic set most `forbid`s are scoped to other routes.
//!
//! A policy whose resource scope names anything else (no scope, another entity type, `is`) is
//! always evaluated. The subsets are built once per distinct set of matching scopes and kept
//! (bounded, emptied when full).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{Policy, PolicySet, ResourceConstraint};

use super::context::ancestors;
use super::load::PolicyError;

/// Most subsets kept; the cache is emptied when full.
const MAX_SUBSETS: usize = 1024;
/// The resource type whose scope the index understands.
const ROUTE_TYPE: &str = "Hws::Route";

/// A policy scoped to one route.
#[derive(Debug)]
struct Scoped {
    route: String,
    /// `resource == route` (only that route) rather than `resource in route` (it and below).
    exact: bool,
}

/// The policies of a set, indexed by the route their scope names.
#[derive(Debug)]
pub(super) struct RouteIndex {
    /// Every static policy of the set, in set order; `scopes[i]` is `policies[i]`'s route scope.
    policies: Vec<Policy>,
    scopes: Vec<Option<Scoped>>,
    /// The whole set: used when the set has templates (never indexed) or nothing is scoped.
    all: Arc<PolicySet>,
    indexed: bool,
    subsets: Mutex<HashMap<Vec<bool>, Arc<PolicySet>>>,
}

impl RouteIndex {
    /// Indexes `set`.
    pub(super) fn new(set: &PolicySet) -> Self {
        let policies: Vec<Policy> = set.policies().cloned().collect();
        let scopes: Vec<Option<Scoped>> = policies.iter().map(scope_of).collect();
        let indexed = set.templates().next().is_none()
            && policies.iter().all(Policy::is_static)
            && scopes.iter().any(Option::is_some);
        Self {
            policies,
            scopes,
            all: Arc::new(set.clone()),
            indexed,
            subsets: Mutex::new(HashMap::new()),
        }
    }

    /// The policies whose scope can match a request for `path`.
    pub(super) fn for_route(&self, path: &str) -> Result<Arc<PolicySet>, PolicyError> {
        if !self.indexed {
            return Ok(Arc::clone(&self.all));
        }
        let chain = ancestors(path);
        let selected: Vec<bool> = self
            .scopes
            .iter()
            .map(|scope| match scope {
                None => true,
                Some(Scoped { route, exact: true }) => route == path,
                Some(Scoped {
                    route,
                    exact: false,
                }) => route == path || chain.contains(&route.as_str()),
            })
            .collect();
        let mut subsets = self.subsets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = subsets.get(&selected) {
            return Ok(Arc::clone(found));
        }
        let subset = PolicySet::from_policies(
            self.policies
                .iter()
                .zip(&selected)
                .filter(|(_, keep)| **keep)
                .map(|(policy, _)| policy.clone()),
        )
        .map_err(|e| PolicyError::Request(format!("route index: {e}")))?;
        let subset = Arc::new(subset);
        if subsets.len() >= MAX_SUBSETS {
            subsets.clear();
        }
        subsets.insert(selected, Arc::clone(&subset));
        Ok(subset)
    }
}

/// The route a policy's resource scope confines it to, if it names one.
fn scope_of(policy: &Policy) -> Option<Scoped> {
    let (uid, exact) = match policy.resource_constraint() {
        ResourceConstraint::In(uid) => (uid, false),
        ResourceConstraint::Eq(uid) => (uid, true),
        ResourceConstraint::IsIn(type_name, uid) if type_name.to_string() == ROUTE_TYPE => {
            (uid, false)
        }
        _ => return None,
    };
    (uid.type_name().to_string() == ROUTE_TYPE).then(|| Scoped {
        route: uid.id().unescaped().to_owned(),
        exact,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    fn ids(set: Arc<PolicySet>) -> Vec<String> {
        let mut ids: Vec<String> = set
            .policies()
            .map(|p| p.annotation("id").unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    }

    fn index(text: &str) -> RouteIndex {
        let set = PolicySet::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        RouteIndex::new(&set)
    }

    #[test]
    fn only_policies_whose_scope_can_match_are_kept() -> Result<(), PolicyError> {
        let index = index(
            r#"
            @id("all") permit(principal, action, resource);
            @id("admin") forbid(principal, action, resource in Hws::Route::"/v1/admin");
            @id("admin-keys") forbid(principal, action, resource == Hws::Route::"/v1/admin/keys");
            @id("vault") forbid(principal, action, resource is Hws::Route in Hws::Route::"/v1/vault");
            @id("typed") forbid(principal, action, resource is Hws::Route);
            @id("user") forbid(principal, action, resource in Hws::User::"u");
            "#,
        );
        let always = ["all", "typed", "user"];
        let with = |extra: &[&str]| {
            let mut all: Vec<String> = always
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned())
                .collect();
            all.sort();
            all
        };
        assert_eq!(ids(index.for_route("/v1/payments/42")?), with(&[]));
        assert_eq!(ids(index.for_route("/v1/admin")?), with(&["admin"]));
        assert_eq!(ids(index.for_route("/v1/admin/")?), with(&["admin"]));
        assert_eq!(
            ids(index.for_route("/v1/admin/keys")?),
            with(&["admin", "admin-keys"])
        );
        assert_eq!(ids(index.for_route("/v1/admin/keys/x")?), with(&["admin"]));
        assert_eq!(ids(index.for_route("/v1/vault/a")?), with(&["vault"]));
        // A prefix that is not a path segment is not an ancestor.
        assert_eq!(ids(index.for_route("/v1/administrator")?), with(&[]));
        // The same subset is reused.
        assert!(Arc::ptr_eq(
            &index.for_route("/v1/admin/a")?,
            &index.for_route("/v1/admin/b")?
        ));
        Ok(())
    }

    #[test]
    fn a_set_with_templates_is_not_indexed() -> Result<(), PolicyError> {
        let index = index(
            r#"
            @id("admin") forbid(principal, action, resource in Hws::Route::"/v1/admin");
            @id("t") permit(principal == ?principal, action, resource);
            "#,
        );
        assert_eq!(index.for_route("/v1/payments")?.policies().count(), 1);
        assert_eq!(index.for_route("/v1/payments")?.templates().count(), 1);
        Ok(())
    }
}
