//! Why a configuration cannot be used.

use std::path::PathBuf;

use thiserror::Error;

/// A configuration file that cannot be read, parsed or accepted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file, or its directory, could have been written by someone other than root or the
    /// agent's user (owner, or group/other write permission).
    #[error("refusing configuration {}: {}", .0.path.display(), .0.reason)]
    Untrusted(crate::fsutil::UntrustedPath),
    /// The file is larger than any sensible configuration.
    #[error("configuration {path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: u64,
    },
    /// Not TOML, or TOML of the wrong shape (unknown keys included).
    #[error("invalid configuration")]
    Parse(#[from] toml::de::Error),
    /// A backend section names a backend this build does not contain.
    #[error(
        "[backends.{0}] is configured but the {0} backend is not compiled into this agent \
         (rebuild with cargo feature `{0}`)"
    )]
    BackendNotCompiled(&'static str),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// No path was given and none could be derived (no home directory).
    #[error("cannot determine the default {0}: set it in the configuration")]
    NoDefault(&'static str),
}
