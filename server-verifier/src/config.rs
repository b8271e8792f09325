//! Verifier configuration: TOML with unknown fields refused, so a typo is an error rather than a
//! silently ignored rule.

use std::path::Path;

use hwsign_proto::api::KeyLevel;
use hwsign_proto::scope::check_audience;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::policy::PolicySettings;

/// Default allowed distance between the signer's date and the verifier's clock.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 300;
/// Default body limit (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Largest skew accepted: a wider window would make the replay cache remember nonces for hours.
pub const MAX_CLOCK_SKEW_SECS: u64 = 3600;
/// Most route rules (each is checked on every request).
pub const MAX_ROUTE_RULES: usize = 256;
/// Largest configuration file read.
const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
/// Default longest presigned-URL lifetime accepted (15 minutes).
pub const DEFAULT_MAX_PRESIGN_EXPIRY_SECS: u64 = 900;
/// The protocol's own bound on `X-Hws-Expires` (7 days); the setting cannot exceed it.
pub const PROTOCOL_MAX_PRESIGN_EXPIRY_SECS: u64 = 604_800;
/// Default number of live nonces one key may hold in the replay cache.
pub const DEFAULT_REPLAY_QUOTA_PER_KEY: usize = 10_000;
/// Most `hosts` entries.
pub const MAX_HOSTS: usize = 64;
/// The `hosts` entry that accepts any signed host (insecure; see [`VerifierConfig::any_host`]).
pub const ANY_HOST: &str = crate::hosts::ANY_HOST;

/// What the verifier checks requests against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    /// This API's audience; the credential scope must name exactly this.
    pub audience: String,
    /// The authorities this verifier serves: `host` or `host:port`, or `*.domain[:port]` (the
    /// `*` stands for exactly one label). The signed `host` must match one entry, else the
    /// request is refused with `wrong_host` (docs/PROTOCOL.md §6). Required, and never empty:
    /// the single entry `"*"` accepts any host, which lets a request captured on one deployment
    /// (staging) be replayed on another (production) with the same audience — an explicit,
    /// insecure choice.
    pub hosts: Vec<String>,
    /// Allowed distance in seconds between the request's date and the verifier's clock, either
    /// way. Nonces are remembered for this long after the request's date.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Largest request body accepted; past it the answer is 413 `body_too_large`.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Minimum key level per path prefix; the longest matching prefix wins, and a request no rule
    /// matches needs only a registered key.
    #[serde(default)]
    pub route_rules: Vec<RouteRule>,
    /// Longest presigned-URL lifetime (`X-Hws-Expires`) accepted, seconds (default 900, at most
    /// 604800); a longer one is refused with `policy_denied`.
    #[serde(default = "default_max_presign_expiry")]
    pub max_presign_expiry_secs: u64,
    /// Live nonces one key may hold in the replay cache at once (default 10,000); past it that
    /// key's requests are refused with `rate_limited` (429) until its entries expire, and no
    /// other key is affected. Size the replay cache's capacity for this times the number of keys
    /// that may be busy at once.
    #[serde(default = "default_replay_quota")]
    pub replay_quota_per_key: usize,
    /// Device policy (docs/POLICY.md): Cedar policies decided after the route rules. Absent:
    /// no device policy, the route rules alone decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySettings>,
    /// FIDO2 / WebAuthn (docs/WEBAUTHN.md): the RP ID and origins `HWS1-WEBAUTHN-ES256`
    /// assertions must match. Absent: WebAuthn-signed requests are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<crate::webauthn::WebAuthnSettings>,
}

/// Whether a route accepts presigned URLs (docs/PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PresignPolicy {
    /// Presigned URLs are accepted for every method (the default).
    #[default]
    Allow,
    /// Presigned URLs are accepted for `GET` and `HEAD` only.
    GetHeadOnly,
    /// Presigned URLs are refused (`policy_denied`); requests must carry `Authorization`.
    Deny,
}

impl PresignPolicy {
    /// Whether a presigned request with `method` is allowed.
    pub fn allows(self, method: &str) -> bool {
        match self {
            Self::Allow => true,
            Self::GetHeadOnly => method == "GET" || method == "HEAD",
            Self::Deny => false,
        }
    }
}

/// A minimum key level for every path starting with `path_prefix`, and whether the path demands
/// strict mode (no delegated session keys).
///
/// Prefixes are plain string prefixes (`/admin` also matches `/administrator`; write `/admin/`
/// for a directory). They are matched against the path as sent, its percent-decoded form and its
/// dot-segment-resolved, slash-collapsed form, and the strictest match applies, so that an
/// encoded or doubled-slash spelling cannot reach a protected route with a weaker key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// The lowest key level allowed.
    pub min_level: KeyLevel,
    /// Refuse delegated session keys here (`policy_denied`): the hardware key itself must sign
    /// (docs/PROTOCOL.md §8), e.g. for key generation or other sensitive routes.
    #[serde(default)]
    pub strict: bool,
    /// Whether presigned URLs are accepted here: `allow` (default), `get-head-only`, `deny`.
    /// Matched like the level rules; the strictest spelling wins.
    #[serde(default)]
    pub presigned: PresignPolicy,
    /// Step-up (docs/WEBAUTHN.md): only a fresh strict `HWS1-WEBAUTHN-ES256` signature with
    /// user presence (and verification when asked) is accepted here; anything else gets 401
    /// `step_up_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<crate::webauthn::StepUp>,
    /// Only the devices of these users (directory `userName`, case-insensitive, or user id) —
    /// or of members of `groups` — may call these routes; others are refused `policy_denied`
    /// naming the rule. Needs the directory (`[admin.api]`); a device without an active user is
    /// refused. Empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Only members of these directory groups (`displayName`) — or the `users` — may call these
    /// routes. Empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl RouteRule {
    /// A rule demanding `min_level` under `path_prefix`, not strict, presigned URLs allowed.
    pub fn new(path_prefix: impl Into<String>, min_level: KeyLevel) -> Self {
        Self {
            path_prefix: path_prefix.into(),
            min_level,
            strict: false,
            presigned: PresignPolicy::Allow,
            step_up: None,
            users: Vec::new(),
            groups: Vec::new(),
        }
    }
}

fn default_max_presign_expiry() -> u64 {
    DEFAULT_MAX_PRESIGN_EXPIRY_SECS
}

fn default_replay_quota() -> usize {
    DEFAULT_REPLAY_QUOTA_PER_KEY
}

fn default_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECS
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any sensible configuration.
    #[error("configuration file {0} is too large")]
    TooLarge(String),
    /// Not valid TOML, or unknown / mistyped fields.
    #[error("invalid configuration")]
    Parse(#[from] toml::de::Error),
    /// The audience is not 1–64 characters of `[a-z0-9._-]`.
    #[error("invalid audience {0:?}: use 1-64 characters of a-z, 0-9, '.', '_', '-'")]
    InvalidAudience(String),
    /// `clock_skew_secs` is above [`MAX_CLOCK_SKEW_SECS`].
    #[error("clock_skew_secs {0} exceeds {MAX_CLOCK_SKEW_SECS}")]
    SkewTooLarge(u64),
    /// `max_body_bytes` does not fit this platform's memory size.
    #[error("max_body_bytes {0} is too large for this platform")]
    BodyLimitTooLarge(u64),
    /// A route rule's prefix does not start with `/`.
    #[error("route rule prefix {0:?} must start with '/'")]
    InvalidRoutePrefix(String),
    /// More than [`MAX_ROUTE_RULES`] rules.
    #[error("at most {MAX_ROUTE_RULES} route rules")]
    TooManyRouteRules,
    /// `hosts` is empty: name the served authorities, or `["*"]` to accept any (insecure).
    #[error(
        "hosts is empty: list the authorities this API serves (or [\"*\"] to accept any, insecure)"
    )]
    NoHosts,
    /// More than [`MAX_HOSTS`] entries in `hosts`.
    #[error("at most {MAX_HOSTS} hosts")]
    TooManyHosts,
    /// A `hosts` entry is not `host`, `host:port`, `*.domain[:port]` or the lone `*`.
    #[error("invalid hosts entry {0:?}: use host, host:port, *.domain or *.domain:port")]
    InvalidHost(String),
    /// `max_presign_expiry_secs` is 0 or above [`PROTOCOL_MAX_PRESIGN_EXPIRY_SECS`].
    #[error("max_presign_expiry_secs {0} must be 1-{PROTOCOL_MAX_PRESIGN_EXPIRY_SECS}")]
    PresignExpiryOutOfRange(u64),
    /// `replay_quota_per_key` is 0.
    #[error("replay_quota_per_key must be at least 1")]
    ZeroReplayQuota,
    /// The `[webauthn]` section or a route's `step_up` is out of bounds.
    #[error("invalid WebAuthn settings: {0}")]
    InvalidWebAuthn(String),
    /// A `policy.covers` prefix does not start with `/`, or there are more than
    /// [`MAX_ROUTE_RULES`].
    #[error("policy.covers entries must start with '/' (at most {MAX_ROUTE_RULES}): {0:?}")]
    InvalidPolicyCover(String),
    /// The policies cannot be loaded (file, line and reason inside).
    #[error("device policy")]
    Policy(#[from] crate::policy::PolicyError),
}

/// Reads a configuration file of at most 1 MiB as text (for the verifier's configuration and
/// those that embed it, such as `hwsign-verifier serve`'s).
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::TooLarge(path.display().to_string()));
    }
    std::fs::read_to_string(path).map_err(read_error)
}

impl VerifierConfig {
    /// Defaults for `audience` serving `hosts`: ±300 s, 10 MiB bodies, no route rules,
    /// presigned URLs up to 15 minutes, 10,000 live nonces per key.
    pub fn new<H: Into<String>>(
        audience: impl Into<String>,
        hosts: impl IntoIterator<Item = H>,
    ) -> Self {
        Self {
            audience: audience.into(),
            hosts: hosts.into_iter().map(Into::into).collect(),
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            route_rules: Vec::new(),
            max_presign_expiry_secs: DEFAULT_MAX_PRESIGN_EXPIRY_SECS,
            replay_quota_per_key: DEFAULT_REPLAY_QUOTA_PER_KEY,
            policy: None,
            webauthn: None,
        }
    }

    /// **Insecure opt-out**: like [`VerifierConfig::new`] but accepting any signed host
    /// (`hosts = ["*"]`). A request signed for another deployment with the same audience (say,
    /// staging) is then accepted here. For tests and demos whose address is not known in advance.
    pub fn any_host(audience: impl Into<String>) -> Self {
        Self::new(audience, [ANY_HOST])
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_config_file(path)?)
    }

    /// Checks every field's bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_audience(&self.audience)
            .map_err(|_| ConfigError::InvalidAudience(self.audience.clone()))?;
        if self.clock_skew_secs > MAX_CLOCK_SKEW_SECS {
            return Err(ConfigError::SkewTooLarge(self.clock_skew_secs));
        }
        if usize::try_from(self.max_body_bytes).is_err() {
            return Err(ConfigError::BodyLimitTooLarge(self.max_body_bytes));
        }
        if self.route_rules.len() > MAX_ROUTE_RULES {
            return Err(ConfigError::TooManyRouteRules);
        }
        if let Some(rule) = self
            .route_rules
            .iter()
            .find(|r| !r.path_prefix.starts_with('/'))
        {
            return Err(ConfigError::InvalidRoutePrefix(rule.path_prefix.clone()));
        }
        if self.hosts.is_empty() {
            return Err(ConfigError::NoHosts);
        }
        if self.hosts.len() > MAX_HOSTS {
            return Err(ConfigError::TooManyHosts);
        }
        if let Some(bad) = self
            .hosts
            .iter()
            .find(|entry| crate::hosts::HostPattern::parse(entry).is_none())
        {
            return Err(ConfigError::InvalidHost(bad.clone()));
        }
        if self.max_presign_expiry_secs == 0
            || self.max_presign_expiry_secs > PROTOCOL_MAX_PRESIGN_EXPIRY_SECS
        {
            return Err(ConfigError::PresignExpiryOutOfRange(
                self.max_presign_expiry_secs,
            ));
        }
        if self.replay_quota_per_key == 0 {
            return Err(ConfigError::ZeroReplayQuota);
        }
        if let Some(webauthn) = &self.webauthn {
            webauthn.validate().map_err(ConfigError::InvalidWebAuthn)?;
        }
        if let Some(rule) = self
            .route_rules
            .iter()
            .find(|rule| rule.step_up.is_some_and(|step_up| !step_up.is_valid()))
        {
            return Err(ConfigError::InvalidWebAuthn(format!(
                "step_up.max_age_secs of {} must be 1 to 3600",
                rule.path_prefix
            )));
        }
        if let Some(policy) = &self.policy {
            if policy.covers.len() > MAX_ROUTE_RULES {
                return Err(ConfigError::InvalidPolicyCover(format!(
                    "{} entries",
                    policy.covers.len()
                )));
            }
            if let Some(bad) = policy.covers.iter().find(|p| !p.starts_with('/')) {
                return Err(ConfigError::InvalidPolicyCover(bad.clone()));
            }
        }
        Ok(())
    }
}
