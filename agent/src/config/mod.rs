//! The agent's configuration: a TOML file (`--config PATH`, else
//! `~/.config/hwsign/agent.toml`, else built-in defaults). Unknown keys are errors, so a typo is
//! reported instead of silently ignored. `agent/config.sample.toml` documents every field.
//!
//! A configuration is resolved once (defaults filled in, values checked) and then shared as
//! `Arc<Config>`; nothing reads it from a global.

pub mod check;
mod error;
pub mod paths;
mod posture;
mod reattestation;
mod rules;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::fsutil::OpenTrustedError;

pub use error::ConfigError;
pub use posture::PostureConfig;
pub use reattestation::{
    DEFAULT_INTERVAL_SECS, MAX_INTERVAL_SECS, MAX_REATTESTATION_KEYS, ReattestationSchedule,
};
pub use rules::{KeyMode, KeyRule, RuleRefusal};

/// Largest configuration file read.
pub const MAX_CONFIG_FILE_LEN: u64 = 1024 * 1024;
/// Default number of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Upper bound of `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 4096;
/// Default of `limits.body_read_timeout_ms`.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 5_000;
/// hyper cannot parse a request head in a smaller buffer.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the agent binds its socket (unless systemd passes one in).
    pub socket_path: PathBuf,
    /// Where backends keep their state (`software/`, `tpm/`) and the audit log lives.
    pub state_dir: PathBuf,
    /// Caller uids served on the socket.
    pub allowed_uids: Vec<u32>,
    /// Connections served at once; more are answered `503 unavailable` and closed.
    pub max_connections: usize,
    /// Connections one caller uid may hold at once; more are answered
    /// `429 too_many_connections` and closed. `None`: see [`Self::connections_per_uid`].
    pub max_connections_per_uid: Option<usize>,
    /// Size and time bounds.
    pub limits: Limits,
    /// Backends to open.
    pub backends: BackendsConfig,
    /// Per-key restrictions.
    pub key_rules: Vec<KeyRule>,
    /// The audit log (JSON lines); default `<state_dir>/audit.jsonl`.
    pub audit_log: PathBuf,
    /// `socket_group`, resolved to a gid: the group whose members may connect to a socket the
    /// agent binds itself (the socket is then 0660 with this group), and the only group that
    /// may have write access to the socket's directory. `None`: socket 0600, no group write.
    pub socket_group: Option<u32>,
    /// The agent's own re-attestation schedule; `None`: attest only when asked.
    pub reattestation: Option<ReattestationSchedule>,
    /// Where the device's posture is read.
    pub posture: PostureConfig,
}

/// `socket_group = "hwsign"` or `socket_group = 990`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum GroupSpec {
    Gid(u32),
    Name(String),
}

impl GroupSpec {
    fn resolve(&self) -> Result<u32, ConfigError> {
        match self {
            Self::Gid(gid) => Ok(*gid),
            Self::Name(name) => match nix::unistd::Group::from_name(name) {
                Ok(Some(group)) => Ok(group.gid.as_raw()),
                Ok(None) => Err(ConfigError::Invalid(format!(
                    "socket_group: no group named {name:?}"
                ))),
                Err(e) => Err(ConfigError::Invalid(format!(
                    "socket_group: cannot look up group {name:?}: {e}"
                ))),
            },
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers), bytes; at least 8192.
    pub max_header_bytes: usize,
    /// Most header fields in a request to the agent.
    pub max_headers: usize,
    /// Largest request body, bytes; at most [`hwsign_proto::api::MAX_API_BODY`].
    pub max_body_bytes: usize,
    /// Milliseconds a client has to send a complete request head (slowloris bound).
    pub header_read_timeout_ms: u64,
    /// Milliseconds a client has to send the whole request body once its head is read; a
    /// slower body is answered `408 request_timeout` and the connection closed.
    pub body_read_timeout_ms: u64,
    /// Milliseconds a client may leave an answer unread (the agent's write waiting for room)
    /// before the connection is closed.
    pub write_timeout_ms: u64,
    /// Delegated sessions (one per audience) a key holds at once; a new audience evicts the
    /// key's least recently used session.
    pub max_sessions_per_key: usize,
    /// Milliseconds in-flight requests get to finish at shutdown.
    pub shutdown_grace_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: hwsign_proto::api::MAX_API_BODY,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
            write_timeout_ms: 10_000,
            max_sessions_per_key: crate::session::DEFAULT_MAX_SESSIONS_PER_KEY,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl Limits {
    /// [`Self::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`Self::body_read_timeout_ms`] as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// [`Self::write_timeout_ms`] as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// [`Self::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let max_body = hwsign_proto::api::MAX_API_BODY;
        if !(MIN_HEADER_BYTES..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_header_bytes must be {MIN_HEADER_BYTES} to 1048576"
            )));
        }
        if !(1..=1024).contains(&self.max_headers) {
            return Err(ConfigError::Invalid(
                "limits.max_headers must be 1 to 1024".into(),
            ));
        }
        if !(1..=max_body).contains(&self.max_body_bytes) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_body_bytes must be 1 to {max_body}"
            )));
        }
        if self.header_read_timeout_ms == 0 || self.header_read_timeout_ms > 600_000 {
            return Err(ConfigError::Invalid(
                "limits.header_read_timeout_ms must be 1 to 600000".into(),
            ));
        }
        if self.body_read_timeout_ms == 0 || self.body_read_timeout_ms > 600_000 {
            return Err(ConfigError::Invalid(
                "limits.body_read_timeout_ms must be 1 to 600000".into(),
            ));
        }
        if self.write_timeout_ms == 0 || self.write_timeout_ms > 600_000 {
            return Err(ConfigError::Invalid(
                "limits.write_timeout_ms must be 1 to 600000".into(),
            ));
        }
        let max_sessions = crate::session::MAX_SESSIONS_PER_KEY;
        if !(1..=max_sessions).contains(&self.max_sessions_per_key) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_sessions_per_key must be 1 to {max_sessions}"
            )));
        }
        if self.shutdown_grace_ms > 600_000 {
            return Err(ConfigError::Invalid(
                "limits.shutdown_grace_ms must be at most 600000".into(),
            ));
        }
        Ok(())
    }
}

/// `[backends.software]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareConfig {
    /// Whether the backend is opened.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for SoftwareConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A section for a backend that is not compiled in: accepted by the parser only so that the
/// error can say what is wrong ([`ConfigError::BackendNotCompiled`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct NotCompiled(toml::Value);

#[cfg(feature = "software")]
type SoftwareSection = SoftwareConfig;
#[cfg(not(feature = "software"))]
type SoftwareSection = NotCompiled;
#[cfg(feature = "tpm")]
type TpmSection = crate::backends::tpm::TpmConfig;
#[cfg(not(feature = "tpm"))]
type TpmSection = NotCompiled;
#[cfg(feature = "pkcs11")]
type Pkcs11Section = crate::backends::pkcs11::Pkcs11Config;
#[cfg(not(feature = "pkcs11"))]
type Pkcs11Section = NotCompiled;
#[cfg(feature = "fido2")]
type Fido2Section = crate::backends::fido2::Fido2Config;
#[cfg(not(feature = "fido2"))]
type Fido2Section = NotCompiled;

/// `[backends]`: one optional section per backend. Without a `[backends.software]` section the
/// software backend is enabled (when compiled in), so an empty configuration works.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsConfig {
    /// `[backends.software]`.
    #[serde(default)]
    pub software: Option<SoftwareSection>,
    /// `[backends.tpm]` (cargo feature `tpm`).
    #[serde(default)]
    pub tpm: Option<TpmSection>,
    /// `[backends.pkcs11]` (cargo feature `pkcs11`).
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Section>,
    /// `[backends.fido2]` (cargo feature `fido2`).
    #[serde(default)]
    pub fido2: Option<Fido2Section>,
}

impl BackendsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        #[cfg(not(feature = "software"))]
        if self.software.is_some() {
            return Err(ConfigError::BackendNotCompiled("software"));
        }
        #[cfg(not(feature = "tpm"))]
        if self.tpm.is_some() {
            return Err(ConfigError::BackendNotCompiled("tpm"));
        }
        #[cfg(not(feature = "pkcs11"))]
        if self.pkcs11.is_some() {
            return Err(ConfigError::BackendNotCompiled("pkcs11"));
        }
        #[cfg(feature = "pkcs11")]
        if let Some(pkcs11) = &self.pkcs11 {
            pkcs11
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("[backends.pkcs11]: {e}")))?;
        }
        #[cfg(not(feature = "fido2"))]
        if self.fido2.is_some() {
            return Err(ConfigError::BackendNotCompiled("fido2"));
        }
        #[cfg(feature = "fido2")]
        if let Some(fido2) = &self.fido2 {
            fido2
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("[backends.fido2]: {e}")))?;
        }
        Ok(())
    }

    /// Whether the software backend is to be opened.
    #[cfg(feature = "software")]
    pub fn software_enabled(&self) -> bool {
        self.software.as_ref().is_none_or(|s| s.enabled)
    }
}

/// The file as written, before defaults are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket_path: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    allowed_uids: Option<Vec<u32>>,
    max_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    backends: BackendsConfig,
    #[serde(default)]
    key_rules: Vec<KeyRule>,
    audit_log: Option<PathBuf>,
    socket_group: Option<GroupSpec>,
    reattestation: Option<ReattestationSchedule>,
    #[serde(default)]
    posture: PostureConfig,
}

impl Config {
    /// Reads, resolves and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        // The file decides who may use the keys (`allowed_uids`, `key_rules`): it is refused
        // when anyone but root or the agent's user could have written it, like a PKCS#11 module.
        let file = crate::fsutil::open_trusted_file(path).map_err(|e| match e {
            OpenTrustedError::Io(source) => read_err(source),
            OpenTrustedError::Untrusted(untrusted) => ConfigError::Untrusted(untrusted),
        })?;
        let too_large = || ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_FILE_LEN,
        };
        if file.metadata().map_err(read_err)?.len() > MAX_CONFIG_FILE_LEN {
            return Err(too_large());
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_FILE_LEN {
            return Err(too_large());
        }
        Self::parse(&text)
    }

    /// `--config PATH` if given; else the default file if it exists; else the defaults.
    pub fn load_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(path) = path {
            return Self::load(path);
        }
        match paths::default_config_file() {
            Some(file) if file.exists() => Self::load(&file),
            _ => Self::parse(""),
        }
    }

    /// Parses configuration text (paths left out take their defaults).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text)?;
        let state_dir = match file.state_dir {
            Some(dir) => dir,
            None => paths::default_state_dir().ok_or(ConfigError::NoDefault("state_dir"))?,
        };
        let socket_path = match file.socket_path {
            Some(path) => path,
            None => paths::default_socket_path().ok_or(ConfigError::NoDefault("socket_path"))?,
        };
        let audit_log = file
            .audit_log
            .unwrap_or_else(|| state_dir.join("audit.jsonl"));
        let config = Self {
            socket_path,
            state_dir,
            allowed_uids: file.allowed_uids.unwrap_or_else(|| vec![own_uid()]),
            max_connections: file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_uid: file.max_connections_per_uid,
            limits: file.limits,
            backends: file.backends,
            key_rules: file.key_rules,
            audit_log,
            socket_group: file
                .socket_group
                .as_ref()
                .map(GroupSpec::resolve)
                .transpose()?,
            reattestation: file.reattestation,
            posture: file.posture,
        };
        config.validate()?;
        Ok(config)
    }

    /// A configuration with the built-in defaults, the software backend enabled, keys in
    /// `state_dir` and the socket at `socket_path`; only the agent's own uid is served. The
    /// CLI's demo and tests use it.
    pub fn for_state_dir(state_dir: impl Into<PathBuf>, socket_path: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        Self {
            socket_path: socket_path.into(),
            audit_log: state_dir.join("audit.jsonl"),
            state_dir,
            allowed_uids: vec![own_uid()],
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_uid: None,
            limits: Limits::default(),
            backends: BackendsConfig {
                #[cfg(feature = "software")]
                software: Some(SoftwareConfig { enabled: true }),
                ..BackendsConfig::default()
            },
            key_rules: Vec::new(),
            socket_group: None,
            reattestation: None,
            posture: PostureConfig::default(),
        }
    }

    /// Checks ranges and consistency. [`Self::load`] and [`Self::parse`] call it; call it again
    /// after changing fields by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, path) in [
            ("socket_path", &self.socket_path),
            ("state_dir", &self.state_dir),
            ("audit_log", &self.audit_log),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an absolute path, not {}",
                    path.display()
                )));
            }
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if self.socket_path.as_os_str().len() > 107 {
            return Err(ConfigError::Invalid(
                "socket_path is longer than a Unix socket path may be (107 bytes)".into(),
            ));
        }
        if self.allowed_uids.is_empty() {
            return Err(ConfigError::Invalid(
                "allowed_uids is empty: nobody could use the agent".into(),
            ));
        }
        if !(1..=MAX_MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::Invalid(format!(
                "max_connections must be 1 to {MAX_MAX_CONNECTIONS}"
            )));
        }
        if let Some(per_uid) = self.max_connections_per_uid {
            if !(1..=self.max_connections).contains(&per_uid) {
                return Err(ConfigError::Invalid(
                    "max_connections_per_uid must be 1 to max_connections".into(),
                ));
            }
        }
        self.limits.validate()?;
        self.backends.validate()?;
        if let Some(schedule) = &self.reattestation {
            schedule.validate()?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.key_rules {
            rule.validate()?;
            if !seen.insert(rule.key_id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "key_rules: more than one rule for {}",
                    rule.key_id
                )));
            }
        }
        Ok(())
    }

    /// Connections one uid may hold at once: `max_connections_per_uid` if set; else, when more
    /// than one uid is allowed, half of `max_connections` (at least 1), so that no caller can
    /// take every slot; else (one allowed uid) `max_connections`.
    pub fn connections_per_uid(&self) -> usize {
        match self.max_connections_per_uid {
            Some(per_uid) => per_uid.clamp(1, self.max_connections.max(1)),
            None if self
                .allowed_uids
                .first()
                .is_some_and(|first| self.allowed_uids.iter().any(|uid| uid != first)) =>
            {
                (self.max_connections / 2).max(1)
            }
            None => self.max_connections.max(1),
        }
    }

    /// The rule for `key_id`, if any.
    pub fn rule_for(&self, key_id: &str) -> Option<&KeyRule> {
        self.key_rules.iter().find(|r| r.key_id == key_id)
    }
}

/// The (effective) uid this process runs as: what SO_PEERCRED reports for its own clients.
pub fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}
