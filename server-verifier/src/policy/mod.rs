//! Device policy (design brief §8, docs/POLICY.md): Cedar policies over who signed, the route,
//! and what the verifier knows about the device.
//!
//! Policies come from a directory of `.cedar` files and are validated (strict mode) against the
//! schema shipped in `server-verifier/policy/hws.cedarschema` ([`SCHEMA`]) when loaded; an
//! invalid policy is refused at load with its file, line and the reason. Each request the
//! policies cover is then decided by Cedar: a `permit` must match and no `forbid` may
//! (default deny). Requests outside the covered path prefixes
//! ([`PolicySettings::covers`](PolicySettings::covers)) are not evaluated, so a
//! verifier without policies behaves exactly as before.
//!
//! Every decision is logged (target `hwsign::policy`) with the ids of the policies that
//! determined it.

mod bundle;
mod context;
mod gate;
mod load;
mod reload;
mod route_index;
mod settings;

use std::collections::BTreeSet;
use std::path::Path;

use cedar_policy::{Authorizer, Decision};

pub use bundle::{
    BundleError, BundleKey, MAX_BUNDLE_BYTES, MAX_PUBLIC_KEY_BYTES, MAX_SIGNATURE_BYTES,
    default_signature_path, policy_files, read_signed,
};
pub use context::{
    DeviceOwner, MAX_OWNER_GROUPS, MAX_ROUTE_DEPTH, PolicyRequest, SignatureFacts, format_rfc3339,
};
pub use gate::{PolicyGate, PolicyRoute};
pub use load::{PolicyError, PolicyIssue};
pub use reload::{PolicyWatch, ReloadStatus};
pub use settings::PolicySettings;

/// The schema every policy is validated against (Cedar schema syntax).
pub const SCHEMA: &str = include_str!("../../policy/hws.cedarschema");
/// The log target decisions are written to.
pub const LOG_TARGET: &str = "hwsign::policy";
/// The pseudo policy id logged when no policy matched (Cedar's default deny).
pub const DEFAULT_DENY: &str = "default-deny";
/// The pseudo policy id logged when a path is too deep to decide
/// ([`MAX_ROUTE_DEPTH`](context::MAX_ROUTE_DEPTH) segments); such a request is refused.
pub const ROUTE_TOO_DEEP: &str = "route-too-deep";

/// Loaded, validated policies and the schema they were validated against.
#[derive(Debug)]
pub struct PolicyEngine {
    requests: context::RequestFactory,
    /// The policies whose scope can match each route (only those are evaluated).
    index: route_index::RouteIndex,
    authorizer: Authorizer,
    ids: Vec<String>,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The ids of the policies that determined the decision: the matching `forbid` policies
    /// for a refusal (or [`DEFAULT_DENY`] when no `permit` matched), the matching `permit`
    /// policies for an acceptance.
    pub determining: Vec<String>,
    /// Policies that failed to evaluate (their ids and the error). Any error refuses the
    /// request: a `forbid` that cannot be evaluated must not let it through.
    pub errors: Vec<String>,
}

impl PolicyEngine {
    /// Loads the policies `settings` name: its directory, or its bundle once the bundle's
    /// signature verifies with its public key (before the bundle is read).
    pub fn load(settings: &PolicySettings) -> Result<Self, PolicyError> {
        match (&settings.dir, &settings.bundle) {
            (Some(dir), None) => Self::load_dir(dir),
            (None, Some(bundle)) => {
                let key = settings
                    .public_key
                    .as_deref()
                    .ok_or(PolicyError::Settings("a policy bundle needs public_key"))?;
                let key = BundleKey::read(key)?;
                let signature = settings
                    .signature_path()
                    .unwrap_or_else(|| default_signature_path(bundle));
                let sources = read_signed(bundle, &signature, &key)?;
                Self::from_sources(&sources)
            }
            _ => Err(PolicyError::Settings(
                "[policy] needs exactly one of dir and bundle",
            )),
        }
    }

    /// Loads and validates every `*.cedar` file in `dir` (not recursive).
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let sources = load::read_dir(dir)?;
        Self::from_sources(&sources)
    }

    /// Parses and validates policies given as `(file name, text)` pairs. A policy's id is its
    /// `@id("…")` annotation, else `<file name>#<n>` (its position in the file, from 1).
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, PolicyError> {
        let schema = load::schema()?;
        let (policies, ids) = load::compile(&schema, sources)?;
        Ok(Self {
            requests: context::RequestFactory::new(schema)?,
            index: route_index::RouteIndex::new(&policies),
            authorizer: Authorizer::new(),
            ids,
        })
    }

    /// The ids of the loaded policies, in load order.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// Decides `request`. The route is decided under each of its spellings (as sent,
    /// percent-decoded, dot segments resolved) and every spelling must be allowed, so an
    /// encoded path cannot escape a rule written for the plain one. Logs the decision.
    pub fn decide(&self, request: &PolicyRequest<'_>) -> Result<PolicyDecision, PolicyError> {
        let decision = self.evaluate(request, false)?;
        log_decision(request, &decision);
        Ok(decision)
    }

    /// Whether `request` would be allowed were the device's last attestation (and posture
    /// report) made now, with the same boot state and posture values: true means a
    /// re-attestation, not a refusal, is the answer. Not logged.
    pub fn allowed_if_attested_now(
        &self,
        request: &PolicyRequest<'_>,
    ) -> Result<bool, PolicyError> {
        Ok(self.evaluate(request, true)?.allowed)
    }

    fn evaluate(
        &self,
        request: &PolicyRequest<'_>,
        fresh: bool,
    ) -> Result<PolicyDecision, PolicyError> {
        let mut permits = BTreeSet::new();
        let mut refusals = BTreeSet::new();
        let mut errors = Vec::new();
        for path in crate::path_spellings::path_spellings(request.path) {
            if context::too_deep(&path) {
                refusals.insert(ROUTE_TOO_DEEP.to_owned());
                continue;
            }
            let cedar_request = self.requests.build(request, &path, fresh)?;
            let policies = self.index.for_route(&path)?;
            let response = self.authorizer.is_authorized(
                &cedar_request.request,
                &policies,
                &cedar_request.entities,
            );
            let failed: Vec<String> = response
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect();
            let reasons = response.diagnostics().reason().map(ToString::to_string);
            if response.decision() == Decision::Allow && failed.is_empty() {
                permits.extend(reasons);
            } else {
                let before = refusals.len();
                if response.decision() == Decision::Deny {
                    refusals.extend(reasons);
                }
                if refusals.len() == before && failed.is_empty() {
                    refusals.insert(DEFAULT_DENY.to_owned());
                }
            }
            errors.extend(failed);
        }
        let allowed = refusals.is_empty() && errors.is_empty();
        let determining = if allowed { permits } else { refusals };
        Ok(PolicyDecision {
            allowed,
            determining: determining.into_iter().collect(),
            errors,
        })
    }
}

fn log_decision(request: &PolicyRequest<'_>, decision: &PolicyDecision) {
    let outcome = if decision.allowed { "allow" } else { "deny" };
    if decision.errors.is_empty() {
        tracing::info!(
            target: LOG_TARGET,
            decision = outcome,
            device = %request.device_id(),
            key_id = %request.key.key_id,
            method = %request.method,
            path = %request.path,
            policies = %decision.determining.join(","),
            "policy decision"
        );
    } else {
        tracing::warn!(
            target: LOG_TARGET,
            decision = outcome,
            device = %request.device_id(),
            key_id = %request.key.key_id,
            method = %request.method,
            path = %request.path,
            policies = %decision.determining.join(","),
            errors = %decision.errors.join("; "),
            "policy decision (policies failed to evaluate; refused)"
        );
    }
}

/// Whether `path` falls under one of the covered prefixes, under any of its spellings.
pub fn covers(prefixes: &[String], path: &str) -> bool {
    crate::path_spellings::path_spellings(path)
        .iter()
        .any(|form| {
            prefixes
                .iter()
                .any(|prefix| form.starts_with(prefix.as_str()))
        })
}
