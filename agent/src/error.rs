//! Errors that stop the agent (start-up, socket, configuration). Errors of single API calls are
//! in [`crate::api::ApiError`] and never end the process.

use thiserror::Error;

use crate::backends::BackendError;
use crate::config::ConfigError;

/// Why the agent could not start or keep serving.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured backend could not be opened.
    #[error("cannot open the {backend} backend: {source}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// No backend is enabled: the agent would have nothing to sign with.
    #[error("no key backend is enabled")]
    NoBackend,
    /// The state directory or the audit log cannot be created or opened.
    #[error("state {what}: {source}")]
    State {
        /// What was being prepared.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket could not be obtained or prepared.
    #[error("socket {what}: {source}")]
    Socket {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blocking start-up task panicked or was cancelled.
    #[error("start-up task failed: {0}")]
    Task(String),
}
