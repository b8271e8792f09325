//! The proxy's configuration: TOML with unknown fields refused (serve.example.toml is the
//! annotated sample). What requests are checked against is the verifier's own
//! [`VerifierConfig`] under `[verifier]`, and enrollment is the library's [`EnrollmentConfig`]
//! under `[enrollment]`: one definition of each, shared with the middleware.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hwsign_verifier::VerifierConfig;
use hwsign_verifier::config::{ConfigError, read_config_file};
use hwsign_verifier::enrollment::{EnrollmentConfig, EnrollmentConfigError};
use hwsign_verifier::reattestation::{ReattestationConfig, ReattestationConfigError};
use serde::Deserialize;
use thiserror::Error;

use crate::forwarded::TrustedProxies;

/// Default bound on connections served at once (main and admin listeners each).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time a client has to send a request head (and finish the TLS handshake).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default longest life of one client connection; long enough for a Server-Sent Events stream.
pub const DEFAULT_MAX_CONNECTION_SECS: u64 = 3600;
/// Default time to connect to the upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Default time the upstream has to answer with a response head.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 60;
/// Default time in-flight requests get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Default capacity of an in-process (`memory`) replay cache, in live nonces.
pub const DEFAULT_REPLAY_CACHE_CAPACITY: usize = 1_000_000;

/// `hwsign-verifier serve --config FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where clients (or the TLS terminator in front) connect.
    pub listen: SocketAddr,
    /// Serve HTTPS on `listen` with these files; absent: plain HTTP (behind a TLS terminator).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// The API behind the proxy: `http://host:port`, no path. Verified requests go there.
    pub upstream: String,
    /// The key registry: `sqlite:/path/keys.db` or `memory` (empty; tests).
    pub registry: String,
    /// The replay cache: `memory` (this process only: a fleet of replicas needs a shared cache).
    #[serde(default = "default_replay_cache")]
    pub replay_cache: String,
    /// Live nonces a `memory` replay cache holds at most (past it: 503 verifier_unavailable).
    #[serde(default = "default_replay_capacity")]
    pub replay_cache_capacity: usize,
    /// Peers (CIDR, e.g. `127.0.0.1/32`) whose `X-Forwarded-For/-Proto/-Host` are passed on;
    /// from anyone else those headers are replaced by what this proxy saw.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Health, readiness and metrics on a separate listener; absent: not served.
    #[serde(default)]
    pub admin: Option<AdminSettings>,
    /// Connection and time bounds.
    #[serde(default)]
    pub limits: Limits,
    /// What requests are verified against (the library's `VerifierConfig`: audience, hosts,
    /// body limit, route rules, policy).
    pub verifier: VerifierConfig,
    /// TPM enrollment (`/enroll/start`, `/enroll/evidence`, `/enroll/activate`, answered by the
    /// proxy outside verification); absent: those paths are verified and proxied like any other.
    #[serde(default)]
    pub enrollment: Option<EnrollmentConfig>,
    /// Re-attestation (`POST /hws/v1/attest/challenge`, `POST /hws/v1/attest`, answered by the
    /// proxy outside verification, with the enrollment trust anchors), and `401
    /// attestation_required` with a nonce where the device policy needs a fresher attestation.
    /// Needs `[enrollment]`; absent: those paths are verified and proxied like any other.
    #[serde(default)]
    pub reattestation: Option<ReattestationConfig>,
    /// The decision log (docs/AUDIT.md): every decision recorded in this replica's hash chain;
    /// absent: no decision log.
    #[serde(default)]
    pub audit: Option<hwsign_verifier::audit::AuditSettings>,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `GET /healthz`, `GET /readyz`, `GET /metrics` (keep it off the public network).
    pub listen: SocketAddr,
    /// The admin API (`/admin/v1/...`) and SCIM (`/scim/v2/...`) on this listener, and the
    /// session checks (`session_revoked`) on every request (docs/ADMIN.md); absent: neither.
    #[serde(default)]
    pub api: Option<hwsign_verifier::admin_api::AdminApiConfig>,
    /// The web console (`/console/`, docs/ADMIN.md "The console") on this listener; needs
    /// `api`. Absent: no console.
    #[serde(default)]
    pub console: Option<hwsign_verifier::console::ConsoleConfig>,
}

/// Bounds on connections and time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds to complete the TLS handshake and each request head.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Longest life of one client connection, seconds; then it is closed after its current
    /// response (or cut, `shutdown_grace_secs` later).
    #[serde(default = "default_max_connection")]
    pub max_connection_secs: u64,
    /// Seconds to connect to the upstream.
    #[serde(default = "default_upstream_connect_timeout")]
    pub upstream_connect_timeout_secs: u64,
    /// Seconds the upstream has to answer with a response head (the body may stream longer).
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            max_connection_secs: DEFAULT_MAX_CONNECTION_SECS,
            upstream_connect_timeout_secs: DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS,
            upstream_timeout_secs: DEFAULT_UPSTREAM_TIMEOUT_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }
}

fn default_replay_cache() -> String {
    "memory".to_owned()
}

fn default_replay_capacity() -> usize {
    DEFAULT_REPLAY_CACHE_CAPACITY
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_header_read_timeout() -> u64 {
    DEFAULT_HEADER_READ_TIMEOUT_SECS
}

fn default_max_connection() -> u64 {
    DEFAULT_MAX_CONNECTION_SECS
}

fn default_upstream_connect_timeout() -> u64 {
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS
}

fn default_upstream_timeout() -> u64 {
    DEFAULT_UPSTREAM_TIMEOUT_SECS
}

fn default_shutdown_grace() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_SECS
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeConfigError {
    /// The file cannot be read, or is larger than any sensible configuration.
    #[error("configuration file")]
    File(#[source] ConfigError),
    /// Not valid TOML, or unknown / mistyped fields.
    #[error("invalid configuration")]
    Parse(#[source] toml::de::Error),
    /// The `[verifier]` section is invalid.
    #[error("[verifier]")]
    Verifier(#[source] ConfigError),
    /// The `[enrollment]` section is invalid.
    #[error("[enrollment]")]
    Enrollment(#[source] EnrollmentConfigError),
    /// The `[reattestation]` section is invalid.
    #[error("[reattestation]")]
    Reattestation(#[source] ReattestationConfigError),
    /// `[reattestation]` without `[enrollment]` (whose trust anchors it uses).
    #[error("[reattestation] needs [enrollment]")]
    ReattestationWithoutEnrollment,
    /// `upstream` is not `http://host:port` without a path.
    #[error("upstream {0:?} must be http://host[:port] with no path or query")]
    Upstream(String),
    /// A `trusted_proxies` entry is not an address or CIDR block.
    #[error("trusted_proxies entry {0:?} is not an IP address or CIDR block (10.0.0.0/8)")]
    TrustedProxy(String),
    /// A limit is zero (or too large).
    #[error("limits.{0} must be at least 1 (and fit the platform)")]
    Limit(&'static str),
    /// `replay_cache_capacity` is zero.
    #[error("replay_cache_capacity must be at least 1")]
    ReplayCapacity,
    /// The admin listener is the main listener.
    #[error("admin.listen must differ from listen")]
    AdminOnMain,
}

impl ServeConfig {
    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ServeConfigError> {
        let config: Self = toml::from_str(text).map_err(ServeConfigError::Parse)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ServeConfigError> {
        Self::from_toml_str(&read_config_file(path).map_err(ServeConfigError::File)?)
    }

    /// Checks every field's bounds.
    pub fn validate(&self) -> Result<(), ServeConfigError> {
        self.verifier
            .validate()
            .map_err(ServeConfigError::Verifier)?;
        if let Some(enrollment) = &self.enrollment {
            enrollment
                .validate()
                .map_err(ServeConfigError::Enrollment)?;
        }
        if let Some(reattestation) = &self.reattestation {
            if self.enrollment.is_none() {
                return Err(ServeConfigError::ReattestationWithoutEnrollment);
            }
            reattestation
                .golden()
                .map_err(ServeConfigError::Reattestation)?;
        }
        self.upstream_uri()?;
        self.trusted_proxies()?;
        let limits = &self.limits;
        for (name, value) in [
            ("max_connections", limits.max_connections as u64),
            ("header_read_timeout_secs", limits.header_read_timeout_secs),
            ("max_connection_secs", limits.max_connection_secs),
            (
                "upstream_connect_timeout_secs",
                limits.upstream_connect_timeout_secs,
            ),
            ("upstream_timeout_secs", limits.upstream_timeout_secs),
            ("shutdown_grace_secs", limits.shutdown_grace_secs),
        ] {
            // A year bounds every duration; tokio's timers accept far less than u64::MAX.
            if value == 0 || (name.ends_with("_secs") && value > 366 * 24 * 3600) {
                return Err(ServeConfigError::Limit(name));
            }
        }
        // tokio's semaphore holds at most usize::MAX >> 3 permits.
        if limits.max_connections > usize::MAX >> 4 {
            return Err(ServeConfigError::Limit("max_connections"));
        }
        if self.replay_cache_capacity == 0 {
            return Err(ServeConfigError::ReplayCapacity);
        }
        if self
            .admin
            .as_ref()
            .is_some_and(|admin| admin.listen == self.listen && self.listen.port() != 0)
        {
            return Err(ServeConfigError::AdminOnMain);
        }
        Ok(())
    }

    /// The upstream as a URI: `http`, an authority, no path beyond `/`, no query.
    pub fn upstream_uri(&self) -> Result<http::Uri, ServeConfigError> {
        let bad = || ServeConfigError::Upstream(self.upstream.clone());
        let uri: http::Uri = self.upstream.parse().map_err(|_| bad())?;
        let plain_http = uri.scheme() == Some(&http::uri::Scheme::HTTP);
        let path_ok = uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/");
        if !plain_http || uri.authority().is_none() || !path_ok {
            return Err(bad());
        }
        Ok(uri)
    }

    /// The parsed `trusted_proxies`.
    pub(crate) fn trusted_proxies(&self) -> Result<TrustedProxies, ServeConfigError> {
        TrustedProxies::parse(&self.trusted_proxies).map_err(ServeConfigError::TrustedProxy)
    }
}
