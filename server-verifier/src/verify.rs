//! The verification pipeline (design brief §6): from a received request's parts, its body hash
//! and the current time to a verified principal or a rejection with its wire code.
//!
//! Checks run in a fixed order, cheapest and least trusting first, so the code a client sees is
//! predictable: parse → audience → date → registry (for a delegated request: the delegation
//! statement, see [`crate::delegation`]) → signature → body hash → nonce → route rule.
//! The body hash comes after the signature, so a request with a valid signature over another body
//! is reported as `body_hash_mismatch`; the nonce is remembered only for requests that passed every
//! cryptographic check, so a stranger cannot fill the replay cache or burn someone's nonce.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hwsign_proto::api::KeyLevel;
use hwsign_proto::keys::check_key_id;
use hwsign_proto::verify_input::{parse_header_signed, parse_presigned};
use hwsign_proto::{ClaimedSignature, HWS1, ProtoError, RejectCode, RequestParts, SignedHeaders};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::backend::{PreparedKey, VerifyBackend};
use crate::config::{ConfigError, VerifierConfig};
use crate::delegation::{RequestClaims, StatementCache};
use crate::registry::{KeyRegistry, RegisteredKey};
use crate::replay::{Freshness, ReplayCache};
use crate::routes::{required_level, strict_required};

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
    /// The key's level.
    pub level: KeyLevel,
    /// Whether a delegated session key signed, under a statement by the device key `key_id`.
    pub delegated: bool,
}

/// Why a request was refused. `detail` is safe to send to the client: internal causes (registry
/// or cache failures) are logged, not put here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {detail}")]
pub struct Rejection {
    /// The wire code.
    pub code: RejectCode,
    /// A human explanation.
    pub detail: String,
}

impl Rejection {
    /// A rejection with `code` and `detail`.
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
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
    key: RegisteredKey,
    payload: Payload,
    nonce: String,
    nonce_expires_unix: i64,
    required_level: Option<KeyLevel>,
    strict_route: bool,
    delegated: bool,
    signed_headers: SignedHeaders,
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

    /// Whether a delegated session key signed.
    pub fn is_delegated(&self) -> bool {
        self.delegated
    }

    /// Whether the signature covers the header `name` (lower case).
    pub fn signs_header(&self, name: &str) -> bool {
        self.signed_headers.contains(name)
    }
}

/// Checks HWS1-signed requests against a key registry and a replay cache.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    registry: Arc<dyn KeyRegistry>,
    replay: Arc<dyn ReplayCache>,
    backend: VerifyBackend,
    prepared: RwLock<HashMap<String, Arc<PreparedKey>>>,
    statements: StatementCache,
}

fn unix_seconds(now: SystemTime) -> Result<i64, Rejection> {
    now.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| {
            tracing::error!("system clock is before 1970 or beyond i64 seconds");
            Rejection::new(
                RejectCode::VerifierUnavailable,
                "verifier clock is unusable",
            )
        })
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

/// Maps a wire-format error to its code. Grammar errors in the credential, scope or signature
/// container are `malformed_authorization`; everything about the request itself is
/// `malformed_request`.
fn parse_rejection(error: ProtoError) -> Rejection {
    let code = match &error {
        ProtoError::MalformedAuthorization(_)
        | ProtoError::MalformedPresign(_)
        | ProtoError::InvalidKeyId
        | ProtoError::InvalidAudience
        | ProtoError::MalformedSignature => RejectCode::MalformedAuthorization,
        ProtoError::TooLarge {
            what: "Authorization header",
            ..
        } => RejectCode::MalformedAuthorization,
        ProtoError::UnsignedPayloadNotAllowed => RejectCode::UnsignedPayloadNotAllowed,
        _ => RejectCode::MalformedRequest,
    };
    Rejection::new(code, error.to_string())
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
        Ok(Self {
            config,
            registry,
            replay,
            backend: VerifyBackend::default(),
            prepared: RwLock::new(HashMap::new()),
            statements: StatementCache::default(),
        })
    }

    /// The same verifier with another signature backend.
    pub fn with_backend(mut self, backend: VerifyBackend) -> Self {
        self.backend = backend;
        self.prepared = RwLock::new(HashMap::new());
        self.statements.clear();
        self
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

    /// Verifies a request: `parts` as received (every header, `host` included), the SHA-256 of
    /// its body, and the current time (an input, so tests can fix it).
    pub fn verify(
        &self,
        parts: &RequestParts<'_>,
        body_sha256: &[u8; 32],
        now: SystemTime,
    ) -> Result<VerifiedPrincipal, Rejection> {
        let checked = self.check_signature(parts, now)?;
        self.finish(checked, body_sha256, now)
    }

    /// The first half of [`Verifier::verify`]: parse, audience, date, registry and signature.
    pub fn check_signature(
        &self,
        parts: &RequestParts<'_>,
        now: SystemTime,
    ) -> Result<SignatureChecked, Rejection> {
        let now = unix_seconds(now)?;
        let presigned = is_presigned(parts.query);
        let has_authorization = parts.header_values("authorization").next().is_some();
        let claimed = match (presigned, has_authorization) {
            (true, true) => {
                return Err(Rejection::new(
                    RejectCode::MalformedRequest,
                    "both an Authorization header and a presigned signature",
                ));
            }
            (true, false) => parse_presigned(&HWS1, parts),
            (false, true) => parse_header_signed(&HWS1, parts),
            (false, false) => {
                return Err(Rejection::new(
                    RejectCode::MissingAuthorization,
                    "the request is not signed",
                ));
            }
        }
        .map_err(parse_rejection)?;
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
        let nonce_expires_unix = self.check_date(&claimed, now)?;
        let (key, signer) = match &claimed.delegation {
            None => {
                let key = self.lookup(&claimed.authorization.credential)?;
                let signer = self.prepared_key(&key)?;
                (key, signer)
            }
            Some(statement) => {
                let claims = RequestClaims {
                    credential: &claimed.authorization.credential,
                    audience: &claimed.authorization.scope.audience,
                    date_unix: claimed.time.unix(),
                    now_unix: now,
                    skew_secs: i64::try_from(self.config.clock_skew_secs).unwrap_or(i64::MAX),
                };
                let checked = self.statements.check(
                    statement,
                    &claims,
                    |device_key_id| self.lookup(device_key_id),
                    |public| Ok(Arc::new(self.backend.prepare(public))),
                )?;
                (checked.device_key, checked.session_key)
            }
        };
        if !signer.verify(
            claimed.string_to_sign.as_str().as_bytes(),
            &claimed.authorization.signature,
        ) {
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
        Ok(SignatureChecked {
            key,
            payload,
            nonce: nonce.as_str().to_owned(),
            nonce_expires_unix,
            required_level: required_level(&self.config.route_rules, parts.path),
            strict_route: strict_required(&self.config.route_rules, parts.path),
            delegated: claimed.delegation.is_some(),
            signed_headers: claimed.authorization.signed_headers,
        })
    }

    /// The second half of [`Verifier::verify`]: body hash, nonce and route rule.
    pub fn finish(
        &self,
        checked: SignatureChecked,
        body_sha256: &[u8; 32],
        now: SystemTime,
    ) -> Result<VerifiedPrincipal, Rejection> {
        let now = unix_seconds(now)?;
        if let Payload::Sha256(signed) = checked.payload
            && !bool::from(signed.ct_eq(body_sha256))
        {
            return Err(Rejection::new(
                RejectCode::BodyHashMismatch,
                "the body does not match the signed body hash",
            ));
        }
        match self.replay.check_and_remember(
            &checked.key.key_id,
            &checked.nonce,
            checked.nonce_expires_unix,
            now,
        ) {
            Ok(Freshness::Fresh) => {}
            Ok(Freshness::Replayed) => {
                return Err(Rejection::new(
                    RejectCode::ReplayedNonce,
                    "this nonce was already used",
                ));
            }
            Err(error) => {
                tracing::error!(%error, "replay cache refused; failing closed");
                return Err(Rejection::new(
                    RejectCode::VerifierUnavailable,
                    "replay protection is unavailable",
                ));
            }
        }
        let key = checked.key;
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
        Ok(VerifiedPrincipal {
            key_id: key.key_id,
            label: key.label,
            device_id: key.device_id,
            level: key.level,
            delegated: checked.delegated,
        })
    }

    /// Checks the date window and returns until when the nonce must be remembered.
    fn check_date(&self, claimed: &ClaimedSignature, now: i64) -> Result<i64, Rejection> {
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
                Ok(end)
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
                Ok(date.saturating_add(skew))
            }
        }
    }

    fn lookup(&self, key_id: &str) -> Result<RegisteredKey, Rejection> {
        let key = match self.registry.lookup(key_id) {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Err(Rejection::new(
                    RejectCode::UnknownKey,
                    "the key is not registered",
                ));
            }
            Err(error) => {
                tracing::error!(%error, "key registry failed; failing closed");
                return Err(Rejection::new(
                    RejectCode::VerifierUnavailable,
                    "the key registry is unavailable",
                ));
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
