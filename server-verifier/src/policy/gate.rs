//! The device policy's place in the verification pipeline: looks up the device's facts, asks
//! the [`PolicyEngine`] and turns a refusal into `policy_denied`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hwsign_proto::RejectCode;

use super::reload::{PolicyWatch, ReloadStatus, Reloadable};
use super::{PolicyEngine, PolicyError, PolicyRequest, PolicySettings, SignatureFacts, covers};
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
    signature: SignatureFacts,
}

impl PolicyRoute {
    /// What the request's signature proves about a person, for `context.signature`.
    pub(crate) fn set_signature(&mut self, signature: SignatureFacts) {
        self.signature = signature;
    }

    /// The client's address, for `context.source_ip`.
    pub(crate) fn set_source_ip(&mut self, ip: IpAddr) {
        self.source_ip = Some(ip);
    }
}

impl PolicyGate {
    /// Loads the policies `settings` name.
    pub fn load(settings: &PolicySettings) -> Result<Self, PolicyError> {
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
    pub fn reload(&self) -> Result<(), PolicyError> {
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
            signature: SignatureFacts::default(),
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
            signature: route.signature,
        };
        let engine = self.policies.engine();
        let decision = engine
            .decide(&request)
            .map_err(|e| unavailable("policy request failed", &e))?;
        if decision.allowed {
            return Ok(());
        }
        if let Some(step_up) = step_up_would_allow(&engine, &request, now_unix)
            .map_err(|e| unavailable("policy request failed", &e))?
        {
            return Err(step_up);
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

/// A refused request of a FIDO2 credential that the policies would allow with a fresh strict
/// touch (a policy testing `context.signature`): `step_up_required`, with
/// `user_verification="required"` when only a touch with UV would do. The client signs again
/// with the key itself, so the what-if request is strict.
fn step_up_would_allow(
    engine: &PolicyEngine,
    request: &PolicyRequest<'_>,
    now_unix: i64,
) -> Result<Option<Rejection>, PolicyError> {
    use hwsign_proto::api::KeyLevel;
    if !matches!(
        request.key.level,
        KeyLevel::Fido2 | KeyLevel::Fido2Unattested
    ) {
        return Ok(None);
    }
    for user_verification in [false, true] {
        let retried = PolicyRequest {
            delegated: false,
            signature: SignatureFacts::stepped_up(now_unix, user_verification),
            ..request.clone()
        };
        if retried.signature == request.signature && !request.delegated {
            continue;
        }
        if engine.decide(&retried)?.allowed {
            return Ok(Some(Rejection::StepUpRequired { user_verification }));
        }
    }
    Ok(None)
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
