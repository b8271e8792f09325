//! The verification pipeline (design brief §6): from a received request's parts, its body hash
//! and the current time to a verified principal or a rejection with its wire code.
//!
//! Checks run in a fixed order, cheapest and least trusting first, so the code a client sees is
//! predictable: parse → audience → host → date → presigned-URL policy → registry (for a delegated
//! request: the delegation statement, see [`crate::delegation`]) → signature; then the nonce is
//! reserved; then, once the body is complete, with the clock read again: body hash → the
//! request's window → revocation again → route rule → device policy ([`crate::policy`], when
//! configured).
//!
//! # Two phases, two clock reads
//! A server that streams the body calls [`Verifier::check_signature`] and [`Verifier::reserve`]
//! before reading it, reads the body no later than [`Reserved::deadline`], then calls
//! [`Verifier::finish`], which reads the verifier's [`Clock`] itself: the decision that lets the
//! request through is made with the time after the body arrived, so a body (or a chunked
//! terminator) held back until the window closed, the key was revoked or the delegation statement
//! expired is refused. The nonce is reserved before the body is read, so a second copy of a
//! request is refused at once (`replayed_nonce`); a request whose body then fails (hash mismatch,
//! too slow, too large) has still used its nonce — the signer signs again with a new one.
//! [`Verifier::verify`] does all three steps with one `now` for callers that already hold the
//! body (read `now` after the body is complete).
//!
//! Only requests with a valid signature reach the replay cache, so a stranger cannot fill it or
//! burn someone's nonce.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hwsign_proto::api::KeyLevel;
use hwsign_proto::keys::check_key_id;
use hwsign_proto::verify_input::{parse_header_signed, parse_presigned};
use hwsign_proto::webauthn::{HWS1_WEBAUTHN, WEBAUTHN_ALGORITHM, WebAuthnError};
use hwsign_proto::{ClaimedSignature, HWS1, RejectCode, RequestParts, SignedHeaders};
use subtle::ConstantTimeEq;

use crate::audit::{AuditLog, DecisionContext};
use crate::config::{ConfigError, VerifierConfig};
use crate::delegation::{RequestClaims, StatementCache};
use crate::directory::sessions::ObservedSession;
use crate::directory::{SessionClient, SessionGuard, device_ref};
use crate::ecdsa_backend::{PreparedKey, VerifyBackend};
use crate::hosts::HostList;
use crate::policy::{PolicyGate, PolicyRoute};
use crate::reattestation::AttestationChallenges;
use crate::registry::{KeyRegistry, RegisteredKey};
use crate::rejection::Rejection;
use crate::replay::{Freshness, ReplayCache, Reservation};
use crate::route_rules::{RouteOutcome, route_outcome};
use crate::unix_time;
use crate::webauthn::{
    StepUp, WebAuthnUse, check_delegation_assertion, check_request_assertion, check_step_up,
};

/// Prepared keys kept per verifier; cleared when full rather than grown without bound.
const PREPARED_KEY_CAPACITY: usize = 65_536;

/// Who signed a request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPrincipal {
    /// The signing key's id; for a delegated request, the device key that signed the delegation
    /// statement (the session key is ephemeral and says nothing about who signed).
    pub key_id: String,
    /// The key's label in the registry.
    pub label: String,
    /// The enrolled device the key belongs to, if any.
    pub device_id: Option<String>,
    /// The id of the device's user in the directory, when the verifier has one (force logout or
    /// the admin API configured) and the device is assigned to an active user.
    pub user_id: Option<String>,
    /// The key's level.
    pub level: KeyLevel,
    /// Whether a delegated session key signed, under a statement by the device key `key_id`.
    pub delegated: bool,
    /// The names of the headers the signature covers, lower case and sorted. A handler that
    /// trusts a header (`X-Forwarded-Host`, `X-HTTP-Method-Override`, ...) must check it is here:
    /// any header not listed may have been added or changed by anyone on the path.
    pub signed_headers: Vec<String>,
}

impl VerifiedPrincipal {
    /// Whether the signature covers the header `name` (compared case-insensitively).
    pub fn signs_header(&self, name: &str) -> bool {
        self.signed_headers
            .iter()
            .any(|signed| signed.eq_ignore_ascii_case(name))
    }
}

/// Where the verifier reads the time for the second half of the two-phase API.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system clock ([`SystemTime::now`]), the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The body hash a request's signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    Sha256([u8; 32]),
    /// Presigned URLs only.
    Unsigned,
}

/// A request whose signature verified; its body, nonce and route are still to be checked with
/// [`Verifier::finish`]. Lets a server refuse a forged request before reading its body.
#[derive(Debug)]
#[must_use = "the request is not verified until finish() accepts it"]
pub struct SignatureChecked {
    /// As the registry answered (shared with its key cache).
    key: Arc<RegisteredKey>,
    payload: Payload,
    nonce: String,
    /// The request may be accepted while the verifier's clock is in `[accept_from, accept_until]`
    /// (the date window, or the presigned URL's validity, within the delegation statement's).
    accept_from_unix: i64,
    accept_until_unix: i64,
    /// Delegated requests: the last second the statement may be used.
    statement_until_unix: Option<i64>,
    required_level: Option<KeyLevel>,
    strict_route: bool,
    delegated: bool,
    signed_headers: SignedHeaders,
    /// The route, when device policies cover it.
    policy_route: Option<PolicyRoute>,
    /// `HWS1-WEBAUTHN-ES256`: what the assertion proved; its counter is advanced once the nonce
    /// is reserved.
    webauthn: Option<WebAuthnUse>,
    /// The route's step-up rule.
    step_up: Option<StepUp>,
    /// The signed date.
    date_unix: i64,
    /// The request's session, when the verifier checks sessions ([`Verifier::with_sessions`]).
    session: Option<ObservedSession>,
    /// The route rules naming the users or groups admitted here.
    people: Vec<crate::route_rules::PeopleRule>,
}

impl SignatureChecked {
    /// Whether the signature covers the body (false for presigned URLs).
    pub fn covers_body(&self) -> bool {
        matches!(self.payload, Payload::Sha256(_))
    }

    /// The key that signed (for a delegated request: the device key behind the session key).
    pub fn key_id(&self) -> &str {
        &self.key.key_id
    }

    /// Gives the device policy the client's address (`context.source_ip`), as the server
    /// resolved it (the TCP peer, or a trusted proxy's `X-Forwarded-For`).
    pub fn set_client_addr(&mut self, ip: std::net::IpAddr) {
        if let Some(route) = &mut self.policy_route {
            route.set_source_ip(ip);
        }
    }

    /// Whether a delegated session key signed.
    pub fn is_delegated(&self) -> bool {
        self.delegated
    }

    /// Whether the signature covers the header `name` (lower case).
    pub fn signs_header(&self, name: &str) -> bool {
        self.signed_headers.contains(name)
    }

    /// The first instant at which the request can no longer be accepted.
    pub fn deadline(&self) -> SystemTime {
        deadline_after(self.accept_until_unix)
    }
}

fn deadline_after(until_unix: i64) -> SystemTime {
    // Times are whole seconds: `until` itself is still acceptable, `until + 1` is not.
    u64::try_from(until_unix.saturating_add(1))
        .ok()
        .and_then(|secs| UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs)))
        .unwrap_or(UNIX_EPOCH)
}

/// A request whose signature verified and whose nonce is now reserved; finish it with
/// [`Verifier::finish`] once its body is complete, no later than [`Reserved::deadline`].
#[derive(Debug)]
#[must_use = "the request is not verified until finish() accepts it"]
pub struct Reserved {
    checked: SignatureChecked,
    client: Option<SessionClient>,
}

impl Reserved {
    /// The first instant at which the request can no longer be accepted: stop reading its body
    /// then and refuse it (`stale_date`).
    pub fn deadline(&self) -> SystemTime {
        self.checked.deadline()
    }

    /// Whether the signature covers the body (false for presigned URLs).
    pub fn covers_body(&self) -> bool {
        self.checked.covers_body()
    }

    /// The key that signed (for a delegated request: the device key behind the session key).
    pub fn key_id(&self) -> &str {
        self.checked.key_id()
    }

    /// Whether the signature covers the header `name` (lower case).
    pub fn signs_header(&self, name: &str) -> bool {
        self.checked.signs_header(name)
    }

    /// Records the client's address in the request's session (when sessions are checked).
    pub fn set_client(&mut self, client: SessionClient) {
        self.client = Some(client);
    }
}

/// Checks HWS1-signed requests against a key registry and a replay cache.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    registry: Arc<dyn KeyRegistry>,
    replay: Arc<dyn ReplayCache>,
    clock: Arc<dyn Clock>,
    hosts: HostList,
    backend: VerifyBackend,
    prepared: RwLock<HashMap<String, Arc<PreparedKey>>>,
    statements: StatementCache,
    policy: Option<PolicyGate>,
    reattestation: Option<Arc<AttestationChallenges>>,
    sessions: Option<Arc<SessionGuard>>,
    audit: Option<Arc<AuditLog>>,
}

fn unix_seconds(now: SystemTime) -> Result<i64, Rejection> {
    unix_time::seconds(now)
        .filter(|secs| *secs < i64::MAX)
        .ok_or_else(|| {
            tracing::error!("system clock is before 1970 or beyond i64 seconds");
            Rejection::new(
                RejectCode::VerifierUnavailable,
                "verifier clock is unusable",
            )
        })
}

/// A FIDO2 credential's level says a person touched the authenticator: its key signs only
/// through a WebAuthn assertion, never a bare ECDSA signature.
fn refuse_fido2_without_assertion(key: &RegisteredKey) -> Result<(), Rejection> {
    if matches!(key.level, KeyLevel::Fido2 | KeyLevel::Fido2Unattested) {
        return Err(Rejection::new(
            RejectCode::UnknownKey,
            "a FIDO2 credential signs with HWS1-WEBAUTHN-ES256 only",
        ));
    }
    Ok(())
}

/// Whether the request's `Authorization` names the WebAuthn profile.
fn is_webauthn(parts: &RequestParts<'_>) -> bool {
    parts
        .header_values("authorization")
        .next()
        .and_then(|value| value.strip_prefix(WEBAUTHN_ALGORITHM))
        .is_some_and(|rest| rest.starts_with(' '))
}

fn window_closed(now: i64, until: i64) -> Rejection {
    Rejection::new(
        RejectCode::StaleDate,
        format!(
            "the request's window closed {} s before it was complete",
            now.saturating_sub(until)
        ),
    )
}

/// Whether the query carries a presigned signature (`X-Hws-Signature`).
fn is_presigned(query: &str) -> bool {
    const NAME: &str = "Signature";
    let prefix = HWS1.query_prefix;
    query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
        .any(|key| {
            key.len() == prefix.len() + NAME.len()
                && key.is_char_boundary(prefix.len())
                && key[..prefix.len()].eq_ignore_ascii_case(prefix)
                && key[prefix.len()..].eq_ignore_ascii_case(NAME)
        })
}

impl Verifier {
    /// A verifier for `config` (validated here) using the default backend
    /// ([`VerifyBackend::default`]).
    pub fn new(
        config: VerifierConfig,
        registry: Arc<dyn KeyRegistry>,
        replay: Arc<dyn ReplayCache>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let policy = config.policy.as_ref().map(PolicyGate::load).transpose()?;
        Ok(Self {
            policy,
            hosts: HostList::new(&config.hosts),
            config,
            registry,
            replay,
            clock: Arc::new(SystemClock),
            backend: VerifyBackend::default(),
            prepared: RwLock::new(HashMap::new()),
            statements: StatementCache::default(),
            reattestation: None,
            sessions: None,
            audit: None,
        })
    }

    /// The same verifier answering a request its device policy refuses, and would allow were
    /// the device's attestation fresh, with `attestation_required` and a nonce from
    /// `challenges` (share them with the [`Reattestation`](crate::reattestation::Reattestation)
    /// service behind the attest endpoint).
    pub fn with_reattestation(mut self, challenges: Arc<AttestationChallenges>) -> Self {
        self.reattestation = Some(challenges);
        self
    }

    /// The same verifier refusing requests whose session an administrator ended
    /// (`session_revoked`, checked against the directory on every request) and recording each
    /// session as seen (docs/ADMIN.md "Sessions").
    pub fn with_sessions(mut self, sessions: Arc<SessionGuard>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The session guard, when sessions are checked.
    pub fn sessions(&self) -> Option<&Arc<SessionGuard>> {
        self.sessions.as_ref()
    }

    /// The same verifier with another signature backend.
    pub fn with_backend(mut self, backend: VerifyBackend) -> Self {
        self.backend = backend;
        self.prepared = RwLock::new(HashMap::new());
        self.statements.clear();
        self
    }

    /// The same verifier reading the time from `clock` in [`Verifier::finish`] (tests; a
    /// monotonic-adjusted clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same verifier recording every decision in `log` (see [`Verifier::record_decision`]).
    pub fn with_audit_log(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// The decision log, if one is configured.
    pub fn audit_log(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Records a decision in the decision log, if one is configured, and returns it; a decision
    /// the log cannot take turns an acceptance into a refusal (`verifier_unavailable`) unless
    /// the log is configured to drop (docs/AUDIT.md). [`Verifier::verify`] and the middleware's
    /// [`authenticate`](crate::layer::authenticate) call this; a server using the two-phase API
    /// itself calls it with the outcome.
    pub fn record_decision(
        &self,
        context: &DecisionContext<'_>,
        result: Result<VerifiedPrincipal, Rejection>,
    ) -> Result<VerifiedPrincipal, Rejection> {
        let Some(log) = &self.audit else {
            return result;
        };
        match (
            log.record(crate::audit::decision_event(context, &result)),
            result,
        ) {
            (Err(_), Ok(_)) => {
                tracing::error!("the decision log cannot take the record; failing closed");
                Err(Rejection::new(
                    RejectCode::VerifierUnavailable,
                    "the verifier is unavailable",
                ))
            }
            (_, result) => result,
        }
    }

    /// The device policy in force, if any.
    pub fn policy(&self) -> Option<&PolicyGate> {
        self.policy.as_ref()
    }

    /// The verifier's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The signature backend in use.
    pub fn backend(&self) -> VerifyBackend {
        self.backend
    }

    /// The key registry.
    pub fn registry(&self) -> &Arc<dyn KeyRegistry> {
        &self.registry
    }

    /// Verifies a request whose body is already complete: `parts` as received (every header,
    /// `host` included), the SHA-256 of its body, and the current time read **after** the body
    /// was complete (an input, so tests can fix it). Runs [`Verifier::check_signature`],
    /// [`Verifier::reserve`] and the checks of [`Verifier::finish`] with this one time.
    pub fn verify(
        &self,
        parts: &RequestParts<'_>,
        body_sha256: &[u8; 32],
        now: SystemTime,
    ) -> Result<VerifiedPrincipal, Rejection> {
        let result = self
            .check_signature(parts, now)
            .and_then(|checked| self.reserve(checked, now))
            .and_then(|reserved| self.finish_at(reserved, body_sha256, now));
        self.record_decision(&DecisionContext::from_parts(parts), result)
    }

    /// Phase one, before the body is read: parse, audience, host, date, presigned-URL policy,
    /// registry and signature, judged at `now`. Nothing is remembered yet; pass the result to
    /// [`Verifier::reserve`].
    pub fn check_signature(
        &self,
        parts: &RequestParts<'_>,
        now: SystemTime,
    ) -> Result<SignatureChecked, Rejection> {
        let now = unix_seconds(now)?;
        let presigned = is_presigned(parts.query);
        let has_authorization = parts.header_values("authorization").next().is_some();
        let rfc9421 = hwsign_proto::rfc9421_request::is_rfc9421(parts);
        let claimed = match (presigned, has_authorization) {
            (_, _) if rfc9421 && (presigned || has_authorization) => {
                return Err(Rejection::new(
                    RejectCode::MalformedRequest,
                    "an RFC 9421 signature beside an HWS1 one",
                ));
            }
            (_, _) if rfc9421 => hwsign_proto::rfc9421_request::parse_rfc9421_claimed(parts),
            (true, true) => {
                return Err(Rejection::new(
                    RejectCode::MalformedRequest,
                    "both an Authorization header and a presigned signature",
                ));
            }
            (true, false) => parse_presigned(&HWS1, parts),
            (false, true) if is_webauthn(parts) => parse_header_signed(&HWS1_WEBAUTHN, parts),
            (false, true) => parse_header_signed(&HWS1, parts),
            (false, false) => {
                return Err(Rejection::new(
                    RejectCode::MissingAuthorization,
                    "the request is not signed",
                ));
            }
        }
        .map_err(Rejection::Parse)?;
        // The wire grammar admits any credential (AWS access key ids); HWS1 names keys by id.
        check_key_id(&claimed.authorization.credential).map_err(|_| {
            Rejection::new(
                RejectCode::MalformedAuthorization,
                "the credential is not an hwsign key id",
            )
        })?;

        if claimed.authorization.scope.audience != self.config.audience {
            return Err(Rejection::new(
                RejectCode::WrongAudience,
                format!(
                    "signed for audience {:?}, this API is {:?}",
                    claimed.authorization.scope.audience, self.config.audience
                ),
            ));
        }
        self.check_host(parts)?;
        let (accept_from_unix, mut accept_until_unix) = self.check_date(&claimed, now)?;
        // RFC 9421 `expires`: the signer's own limit, inside the verifier's window.
        if let Some(not_after) = claimed.not_after_unix {
            if now > not_after {
                return Err(Rejection::new(
                    RejectCode::StaleDate,
                    format!("the signature expired {} s ago", now - not_after),
                ));
            }
            accept_until_unix = accept_until_unix.min(not_after);
        }
        let route = route_outcome(&self.config.route_rules, parts.path);
        if let Some(expires) = claimed.expires_secs {
            self.check_presign_policy(parts, &route, expires)?;
        }
        let webauthn_profile = claimed
            .string_to_sign
            .as_str()
            .starts_with(WEBAUTHN_ALGORITHM);
        if webauthn_profile && claimed.delegation.is_some() {
            return Err(Rejection::new(
                RejectCode::MalformedRequest,
                "a WebAuthn-signed request cannot carry a delegation statement",
            ));
        }
        let mut webauthn = None;
        let mut signed_message = None;
        let (key, signer, statement_until_unix, session_terms) = match &claimed.delegation {
            None if webauthn_profile => {
                let key = self.lookup(&claimed.authorization.credential)?;
                let asks_uv = route
                    .step_up
                    .is_some_and(|step_up| step_up.user_verification);
                let assertion = check_request_assertion(
                    self.config.webauthn.as_ref(),
                    self.registry.as_ref(),
                    &key,
                    parts,
                    &claimed,
                    asks_uv,
                )?;
                let signer = self.prepared_key(&key)?;
                signed_message = Some(assertion.message);
                webauthn = Some(assertion.used);
                (key, signer, None, None)
            }
            None => {
                let key = self.lookup(&claimed.authorization.credential)?;
                refuse_fido2_without_assertion(&key)?;
                let signer = self.prepared_key(&key)?;
                (key, signer, None, None)
            }
            Some(statement) => {
                let claims = RequestClaims {
                    credential: &claimed.authorization.credential,
                    audience: &claimed.authorization.scope.audience,
                    date_unix: claimed.time.unix(),
                    now_unix: now,
                    skew_secs: i64::try_from(self.config.clock_skew_secs).unwrap_or(i64::MAX),
                };
                let webauthn_statement = hwsign_proto::webauthn::is_webauthn_delegation(statement);
                let checked = self.statements.check_with_assertions(
                    statement,
                    &claims,
                    |device_key_id| {
                        let shared = self.lookup(device_key_id)?;
                        let key = RegisteredKey::clone(&shared);
                        if webauthn_statement {
                            Ok(key)
                        } else {
                            refuse_fido2_without_assertion(&key)
                                .map_err(|_| {
                                    Rejection::new(
                                        RejectCode::DelegationInvalid,
                                        "a FIDO2 credential signs statements with an assertion",
                                    )
                                })
                                .map(|()| key)
                        }
                    },
                    |public| Ok(Arc::new(self.backend.prepare(public))),
                    |device_key, delegation| {
                        check_delegation_assertion(
                            self.config.webauthn.as_ref(),
                            self.registry.as_ref(),
                            device_key,
                            delegation,
                        )
                    },
                )?;
                (
                    Arc::new(checked.device_key),
                    checked.session_key,
                    Some(checked.usable_until_unix),
                    Some((checked.issued_unix, checked.expires_unix)),
                )
            }
        };
        let message = signed_message
            .as_deref()
            .unwrap_or(claimed.string_to_sign.as_str().as_bytes());
        if !signer.verify(message, &claimed.authorization.signature) {
            return Err(Rejection::new(
                RejectCode::SignatureInvalid,
                "the signature does not verify",
            ));
        }
        let payload = if claimed.expires_secs.is_some() {
            Payload::Unsigned
        } else {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&claimed.payload_hash, &mut hash).map_err(|_| {
                Rejection::new(RejectCode::MalformedRequest, "invalid body hash header")
            })?;
            Payload::Sha256(hash)
        };
        let nonce = claimed.nonce.ok_or_else(|| {
            Rejection::new(RejectCode::MalformedRequest, "the request carries no nonce")
        })?;
        let session = self.sessions.as_ref().map(|_| {
            let (id, (issued_unix, expires_unix)) = match session_terms {
                Some(terms) => (claimed.authorization.credential.clone(), terms),
                None => (
                    format!("strict:{}", key.key_id),
                    (claimed.time.unix(), accept_until_unix),
                ),
            };
            ObservedSession {
                id,
                key_id: key.key_id.clone(),
                device: device_ref(&key).to_owned(),
                audience: claimed.authorization.scope.audience.clone(),
                delegated: session_terms.is_some(),
                issued_unix,
                expires_unix,
                user_agent: parts
                    .header_values("user-agent")
                    .next()
                    .map(ObservedSession::user_agent_of),
            }
        });
        Ok(SignatureChecked {
            key,
            payload,
            nonce: nonce.as_str().to_owned(),
            accept_from_unix,
            accept_until_unix: statement_until_unix
                .map_or(accept_until_unix, |until| until.min(accept_until_unix)),
            statement_until_unix,
            required_level: route.min_level,
            strict_route: route.strict,
            delegated: claimed.delegation.is_some(),
            signed_headers: claimed.authorization.signed_headers,
            policy_route: self
                .policy
                .as_ref()
                .and_then(|gate| gate.route(parts.method, parts.path))
                .map(|mut route| {
                    // A touch for THIS request: a strict assertion with UP.
                    let strict = webauthn
                        .as_ref()
                        .filter(|used| !used.delegated && claimed.delegation.is_none());
                    route.set_signature(crate::policy::SignatureFacts {
                        webauthn: strict.is_some(),
                        user_present: strict.is_some_and(|used| used.user_present),
                        user_verified: strict.is_some_and(|used| used.user_verified),
                        date_unix: claimed.time.unix(),
                    });
                    route
                }),
            webauthn,
            step_up: route.step_up,
            date_unix: claimed.time.unix(),
            session,
            people: crate::route_rules::people_rules(&self.config.route_rules, parts.path),
        })
    }

    /// Phase two, before the body is read: reserves the request's nonce for as long as the
    /// request could still be accepted, judged at `now`. A second copy is refused from then on
    /// (`replayed_nonce`), even while the first one's body is still arriving; a key over its
    /// quota of live nonces is refused (`rate_limited`); a request whose window already closed is
    /// refused (`stale_date`) and nothing is remembered.
    pub fn reserve(
        &self,
        checked: SignatureChecked,
        now: SystemTime,
    ) -> Result<Reserved, Rejection> {
        let now = unix_seconds(now)?;
        if now > checked.accept_until_unix {
            return Err(window_closed(now, checked.accept_until_unix));
        }
        let reservation = Reservation {
            key_id: &checked.key.key_id,
            nonce: &checked.nonce,
            expires_unix: checked.accept_until_unix,
            now_unix: now,
            per_key_limit: self.config.replay_quota_per_key,
        };
        match self.replay.check_and_remember(&reservation) {
            Ok(Freshness::Fresh) => {
                if let Some(used) = &checked.webauthn {
                    self.advance_sign_count(&checked.key.key_id, used)?;
                }
                Ok(Reserved {
                    checked,
                    client: None,
                })
            }
            Ok(Freshness::Replayed) => Err(Rejection::new(
                RejectCode::ReplayedNonce,
                "this nonce was already used",
            )),
            Ok(Freshness::OverQuota) => Err(Rejection::new(
                RejectCode::RateLimited,
                "this key holds too many live nonces; retry later",
            )),
            Ok(Freshness::Expired) => Err(window_closed(now, checked.accept_until_unix)),
            Err(error) => {
                tracing::error!(error = %crate::ErrorChain(&error), "replay cache refused; failing closed");
                Err(Rejection::Replay(error))
            }
        }
    }

    /// Phase three, once the body is complete: reads the verifier's clock, then checks the body
    /// hash, the request's window (date, presigned expiry, delegation statement) at that time,
    /// the key's registration again (revoked meanwhile → `device_revoked`), the route rule and
    /// the device policy.
    pub fn finish(
        &self,
        reserved: Reserved,
        body_sha256: &[u8; 32],
    ) -> Result<VerifiedPrincipal, Rejection> {
        let now = self.clock.now();
        self.finish_at(reserved, body_sha256, now)
    }

    fn finish_at(
        &self,
        reserved: Reserved,
        body_sha256: &[u8; 32],
        now: SystemTime,
    ) -> Result<VerifiedPrincipal, Rejection> {
        let client = reserved.client;
        let checked = reserved.checked;
        let now = unix_seconds(now)?;
        if let Payload::Sha256(signed) = checked.payload
            && !bool::from(signed.ct_eq(body_sha256))
        {
            return Err(Rejection::new(
                RejectCode::BodyHashMismatch,
                "the body does not match the signed body hash",
            ));
        }
        if let Some(until) = checked.statement_until_unix
            && now > until
        {
            return Err(Rejection::new(
                RejectCode::DelegationInvalid,
                "the delegation statement expired before the request's body was complete",
            ));
        }
        if now > checked.accept_until_unix {
            return Err(window_closed(now, checked.accept_until_unix));
        }
        if now < checked.accept_from_unix {
            // The clock went backwards while the body was read.
            return Err(Rejection::new(
                RejectCode::StaleDate,
                "the request's date is ahead of the verifier's clock",
            ));
        }
        // Revocation (or replacement) since phase one takes effect now, not after the body. A
        // registry with a key cache answers this from the cache while nothing changed.
        let key = self.lookup(&checked.key.key_id)?;
        if !Arc::ptr_eq(&key, &checked.key)
            && key.public_key.spki_der() != checked.key.public_key.spki_der()
        {
            return Err(Rejection::new(
                RejectCode::UnknownKey,
                "the key was replaced while the request was read",
            ));
        }
        // A force logout since phase one takes effect now too (never a cached answer).
        let mut user_id = None;
        if let (Some(guard), Some(session)) = (&self.sessions, &checked.session) {
            user_id = guard.admit(session, client, now)?;
        }
        if let Some(required) = checked.required_level
            && key.level < required
        {
            return Err(Rejection::new(
                RejectCode::PolicyDenied,
                format!(
                    "this route needs a {} key, this one is {}",
                    required.as_str(),
                    key.level.as_str()
                ),
            ));
        }
        if checked.strict_route && checked.delegated {
            return Err(Rejection::new(
                RejectCode::PolicyDenied,
                "this route needs the hardware key itself (strict mode), not a delegated session key",
            ));
        }
        if let Some(step_up) = checked.step_up {
            check_step_up(
                step_up,
                checked.webauthn.as_ref(),
                checked.delegated,
                checked.date_unix,
                now,
            )?;
        }
        // Users and groups: read from the directory only when a rule or a policy needs them.
        let owner = if checked.people.is_empty() && checked.policy_route.is_none() {
            None
        } else {
            self.owner_of(&key)?
        };
        for rule in &checked.people {
            crate::directory::people::check_people(rule, owner.as_ref())?;
        }
        if let Some((user, _)) = &owner {
            user_id = Some(user.id.clone());
        }
        if let (Some(gate), Some(route)) = (&self.policy, &checked.policy_route) {
            let owner = owner
                .as_ref()
                .map(|(user, groups)| crate::policy::DeviceOwner {
                    user: Some(user.user_name.clone()),
                    groups: groups.clone(),
                });
            gate.check_with_owner(
                self.registry.as_ref(),
                &key,
                route,
                checked.delegated,
                now,
                self.reattestation.as_deref(),
                owner.as_ref(),
            )?;
        }
        Ok(VerifiedPrincipal {
            key_id: key.key_id.clone(),
            label: key.label.clone(),
            device_id: key.device_id.clone(),
            user_id,
            level: key.level,
            delegated: checked.delegated,
            signed_headers: checked.signed_headers.into_names(),
        })
    }

    /// The device's active user and that user's groups, from the directory behind the session
    /// guard (none without a directory, or when the device has no active user).
    fn owner_of(
        &self,
        key: &RegisteredKey,
    ) -> Result<Option<(crate::directory::User, Vec<String>)>, Rejection> {
        let Some(guard) = &self.sessions else {
            return Ok(None);
        };
        crate::directory::people::owner_of(guard.directory().as_ref(), key)
    }

    /// Refuses a signed host this verifier does not serve.
    fn check_host(&self, parts: &RequestParts<'_>) -> Result<(), Rejection> {
        // Exactly one host header was already required by parsing; refuse rather than guess.
        let mut hosts = parts.header_values("host");
        match (hosts.next(), hosts.next()) {
            (Some(host), None) if self.hosts.serves(host) => Ok(()),
            (Some(_), None) => Err(Rejection::new(
                RejectCode::WrongHost,
                "the signed host is not one this API serves",
            )),
            _ => Err(Rejection::new(
                RejectCode::MalformedRequest,
                "exactly one Host header is required",
            )),
        }
    }

    /// Presigned URLs: the verifier's longest lifetime and the route's presign rule.
    fn check_presign_policy(
        &self,
        parts: &RequestParts<'_>,
        route: &RouteOutcome,
        expires_secs: u64,
    ) -> Result<(), Rejection> {
        if expires_secs > self.config.max_presign_expiry_secs {
            return Err(Rejection::new(
                RejectCode::PolicyDenied,
                format!(
                    "the presigned URL is valid for {expires_secs} s, this API accepts at most {} s",
                    self.config.max_presign_expiry_secs
                ),
            ));
        }
        if !route.presigned.allows(parts.method) {
            return Err(Rejection::new(
                RejectCode::PolicyDenied,
                format!(
                    "this route does not accept presigned URLs for {}",
                    parts.method
                ),
            ));
        }
        Ok(())
    }

    /// Checks the date window and returns the span of the verifier's clock in which the request
    /// may be accepted; the nonce is remembered until its end.
    fn check_date(&self, claimed: &ClaimedSignature, now: i64) -> Result<(i64, i64), Rejection> {
        let date = claimed.time.unix();
        let skew = i64::try_from(self.config.clock_skew_secs).unwrap_or(i64::MAX);
        let stale = |detail: String| Err(Rejection::new(RejectCode::StaleDate, detail));
        match claimed.expires_secs {
            Some(expires) => {
                // The signer's clock may run ahead of ours by up to the skew; the expiry itself
                // is not extended.
                let expires = i64::try_from(expires).unwrap_or(i64::MAX);
                let end = date.saturating_add(expires);
                if now < date.saturating_sub(skew) {
                    return stale(format!("the presigned URL is dated {} s ahead", date - now));
                }
                if now > end {
                    return stale(format!("the presigned URL expired {} s ago", now - end));
                }
                Ok((date.saturating_sub(skew), end))
            }
            None => {
                if now.saturating_sub(date) > skew {
                    return stale(format!(
                        "the date is {} s old, the window is ±{skew} s",
                        now - date
                    ));
                }
                if date.saturating_sub(now) > skew {
                    return stale(format!(
                        "the date is {} s ahead, the window is ±{skew} s",
                        date - now
                    ));
                }
                Ok((date.saturating_sub(skew), date.saturating_add(skew)))
            }
        }
    }

    /// Advances a FIDO2 credential's sign counter (compare-and-set in the registry); a counter
    /// that did not increase flags the credential and refuses the request.
    fn advance_sign_count(&self, key_id: &str, used: &WebAuthnUse) -> Result<(), Rejection> {
        let advanced = self
            .registry
            .advance_sign_count(key_id, used.sign_count)
            .map_err(Rejection::Registry)?;
        if advanced {
            return Ok(());
        }
        tracing::warn!(
            key_id,
            stored = used.stored_sign_count,
            new = used.sign_count,
            "FIDO2 sign counter did not increase: credential flagged as possibly cloned"
        );
        Err(Rejection::WebAuthn(WebAuthnError::CounterRegressed {
            stored: used.stored_sign_count,
            new: used.sign_count,
        }))
    }

    fn lookup(&self, key_id: &str) -> Result<Arc<RegisteredKey>, Rejection> {
        let key = match self.registry.lookup_shared(key_id) {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Err(Rejection::new(
                    RejectCode::UnknownKey,
                    "the key is not registered",
                ));
            }
            Err(error) => {
                tracing::error!(error = %crate::ErrorChain(&error), "key registry failed; failing closed");
                return Err(Rejection::Registry(error));
            }
        };
        if key.revoked {
            return Err(Rejection::new(
                RejectCode::DeviceRevoked,
                "the key or its device has been revoked",
            ));
        }
        Ok(key)
    }

    fn prepared_key(&self, key: &RegisteredKey) -> Result<Arc<PreparedKey>, Rejection> {
        let poisoned = || {
            tracing::error!("prepared key cache lock poisoned; failing closed");
            Rejection::new(
                RejectCode::VerifierUnavailable,
                "the verifier is unavailable",
            )
        };
        {
            let cache = self.prepared.read().map_err(|_| poisoned())?;
            if let Some(prepared) = cache.get(&key.key_id)
                && prepared.is_for(&key.public_key)
            {
                return Ok(Arc::clone(prepared));
            }
        }
        let prepared = Arc::new(self.backend.prepare(&key.public_key));
        let mut cache = self.prepared.write().map_err(|_| poisoned())?;
        if cache.len() >= PREPARED_KEY_CAPACITY {
            cache.clear();
        }
        cache.insert(key.key_id.clone(), Arc::clone(&prepared));
        Ok(prepared)
    }
}
