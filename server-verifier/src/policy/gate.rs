//! The device policy's place in the verification pipeline: looks up the device's facts, asks
//! the [`PolicyEngine`] and turns a refusal into `policy_denied`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hwsign_proto::RejectCode;

use super::reload::{PolicyWatch, ReloadStatus, Reloadable};
use super::{PolicyEngine, PolicyRequest, PolicySettings, covers};
use crate::enrollment::EnrollmentError;
use crate::reattestation::{AttestationChallenges, NonceOrigin};
use crate::registry::{KeyRegistry, RegisteredKey};
use crate::rejection::Rejection;

/// The loaded policies and the settings they apply under. Cloning gives another handle on the
/// same policies (a reload through one is seen by all).
#[derive(Debug, Clone)]
pub struct PolicyGate {
    policies: Arc<Reloadable>,
    covers: Vec<String>,
    reveal_reasons: bool,
}

/// The route a covered request asked for, kept between the verifier's phases.
#[derive(Debug, Clone)]
pub struct PolicyRoute {
    method: String,
    path: String,
    source_ip: Option<IpAddr>,
}

impl PolicyRoute {
    /// The client's address, for `context.source_ip`.
    pub(crate) fn set_source_ip(&mut self, ip: IpAddr) {
        self.source_ip = Some(ip);
    }
}

impl PolicyGate {
    /// Loads the policies `settings` name.
    pub fn load(settings: &PolicySettings) -> Result<Self, super::PolicyError> {
        let engine = PolicyEngine::load(settings)?;
        tracing::info!(
            target: super::LOG_TARGET,
            source = %settings.source(),
            policies = engine.policy_ids().len(),
            "device policies loaded"
        );
        Ok(Self::new(Arc::new(engine), settings))
    }

    /// A gate for an engine loaded elsewhere.
    pub fn new(engine: Arc<PolicyEngine>, settings: &PolicySettings) -> Self {
        Self {
            policies: Arc::new(Reloadable::new(engine, settings.clone())),
            covers: settings.covers.clone(),
            reveal_reasons: settings.reveal_reasons,
        }
    }

    /// The engine in force.
    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.policies.engine()
    }

    /// Loads the policies again from the configured directory or bundle (signature checked,
    /// every policy validated) and puts them in force only if all of that succeeds. Requests
    /// being decided meanwhile are answered by the policies in force; on failure those stay,
    /// the error is logged and returned, and [`PolicyGate::reload_status`] says so.
    pub fn reload(&self) -> Result<(), super::PolicyError> {
        self.policies.reload()
    }

    /// What the reloads did so far.
    pub fn reload_status(&self) -> ReloadStatus {
        self.policies.status()
    }

    /// Watches the policy files, polling every `interval`, and reloads when they change.
    /// Stops when the returned handle is dropped.
    pub fn watch(&self, interval: Duration) -> Result<PolicyWatch, std::io::Error> {
        super::reload::watch(Arc::clone(&self.policies), interval)
    }

    /// The watch `[policy] watch_secs` asks for (none when it is 0).
    pub fn watch_configured(&self) -> Result<Option<PolicyWatch>, std::io::Error> {
        match self.policies.settings().watch_secs {
            0 => Ok(None),
            secs => self.watch(Duration::from_secs(secs)).map(Some),
        }
    }

    /// The route to decide later, or `None` when the policies do not cover `path`.
    pub fn route(&self, method: &str, path: &str) -> Option<PolicyRoute> {
        covers(&self.covers, path).then(|| PolicyRoute {
            method: method.to_owned(),
            path: path.to_owned(),
            source_ip: None,
        })
    }

    /// Decides a verified request: `policy_denied` when the policies refuse it,
    /// `verifier_unavailable` when the registry or the request cannot be read (fail closed).
    /// With `reattest`, a refused request of an enrolled TPM device that the policies would
    /// allow were its attestation made now is answered `attestation_required` with a nonce
    /// issued from `reattest`.
    pub fn check(
        &self,
        registry: &dyn KeyRegistry,
        key: &RegisteredKey,
        route: &PolicyRoute,
        delegated: bool,
        now_unix: i64,
        reattest: Option<&AttestationChallenges>,
    ) -> Result<(), Rejection> {
        self.check_with_owner(registry, key, route, delegated, now_unix, reattest, None)
    }

    /// [`PolicyGate::check`] with the device's owner: the principal gets the parents
    /// `Hws::User::"<userName>"` and `Hws::Group::"<displayName>"` for each of the user's groups
    /// (docs/POLICY.md), so `principal in Hws::Group::"sre"` is expressible.
    #[allow(clippy::too_many_arguments)]
    pub fn check_with_owner(
        &self,
        registry: &dyn KeyRegistry,
        key: &RegisteredKey,
        route: &PolicyRoute,
        delegated: bool,
        now_unix: i64,
        reattest: Option<&AttestationChallenges>,
        owner: Option<&super::DeviceOwner>,
    ) -> Result<(), Rejection> {
        let unavailable = |what: &str, error: &(dyn std::error::Error + 'static)| {
            tracing::error!(target: super::LOG_TARGET, error = %crate::ErrorChain(error), "{what}; failing closed");
            Rejection::new(
                RejectCode::VerifierUnavailable,
                "the device policy cannot be evaluated",
            )
        };
        let (device, facts) = match key.device_id.as_deref() {
            Some(id) => (
                registry
                    .device(id)
                    .map_err(|e| unavailable("device lookup failed", &e))?,
                registry
                    .device_facts(id)
                    .map_err(|e| unavailable("device facts lookup failed", &e))?,
            ),
            None => (None, None),
        };
        let request = PolicyRequest {
            key,
            device: device.as_ref(),
            facts: facts.as_ref(),
            method: &route.method,
            path: &route.path,
            delegated,
            now_unix,
            source_ip: route.source_ip,
            owner,
        };
        let engine = self.policies.engine();
        let decision = engine
            .decide(&request)
            .map_err(|e| unavailable("policy request failed", &e))?;
        if decision.allowed {
            return Ok(());
        }
        let attestable = device.as_ref().is_some_and(|d| !d.revoked)
            && key.level == hwsign_proto::api::KeyLevel::Tpm
            && facts.as_ref().is_some_and(|f| f.last_attestation.is_some());
        if let (Some(challenges), true) = (reattest, attestable)
            && engine
                .allowed_if_attested_now(&request)
                .map_err(|e| unavailable("policy request failed", &e))?
        {
            return Err(attestation_required(challenges, key, now_unix));
        }
        let detail = if self.reveal_reasons {
            format!(
                "refused by the device policy ({})",
                if decision.determining.is_empty() {
                    "a policy failed to evaluate".to_owned()
                } else {
                    decision.determining.join(", ")
                }
            )
        } else {
            "refused by the device policy".to_owned()
        };
        Err(Rejection::new(RejectCode::PolicyDenied, detail))
    }
}

/// `attestation_required` with a fresh nonce for `key`'s device; `rate_limited` when too many
/// nonces are pending.
fn attestation_required(
    challenges: &AttestationChallenges,
    key: &RegisteredKey,
    now_unix: i64,
) -> Rejection {
    let device_id = key.device_id.as_deref().unwrap_or(&key.key_id);
    match challenges.issue(&key.key_id, device_id, NonceOrigin::Refusal, now_unix) {
        Ok(issued) => {
            tracing::info!(
                target: super::LOG_TARGET,
                device = %device_id,
                key_id = %key.key_id,
                "fresher attestation required; nonce issued"
            );
            Rejection::AttestationRequired {
                nonce: issued.nonce,
            }
        }
        Err(EnrollmentError::TooManyChallenges) => Rejection::new(
            RejectCode::RateLimited,
            "too many re-attestations are pending; retry later",
        ),
        Err(error) => {
            tracing::error!(target: super::LOG_TARGET, error = %crate::ErrorChain(&error), "cannot issue a re-attestation nonce; failing closed");
            Rejection::new(
                RejectCode::VerifierUnavailable,
                "the device policy cannot be evaluated",
            )
        }
    }
}
