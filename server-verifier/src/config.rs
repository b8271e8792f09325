//! Verifier configuration: TOML with unknown fields refused, so a typo is an error rather than a
//! silently ignored rule.

use std::path::Path;

use hwsign_proto::api::KeyLevel;
use hwsign_proto::scope::check_audience;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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

/// What the verifier checks requests against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    /// This API's audience; the credential scope must name exactly this.
    pub audience: String,
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
    #[error("cannot read {path}: {source}")]
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
    #[error("invalid configuration: {0}")]
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
}

impl VerifierConfig {
    /// Defaults for `audience`: ±300 s, 10 MiB bodies, no route rules.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            route_rules: Vec::new(),
        }
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_CONFIG_FILE_BYTES {
            return Err(ConfigError::TooLarge(path.display().to_string()));
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::from_toml_str(&text)
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
        Ok(())
    }
}
