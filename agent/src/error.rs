//! Errors that stop the agent (start-up, socket, configuration). Errors of single API calls are
//! in [`crate::api::ApiError`] and never end the process.

use thiserror::Error;

use crate::backends::BackendError;
use crate::config::ConfigError;

pub use hwsign_proto::error::ErrorChain;

/// [`ErrorChain`] as a string.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    ErrorChain(error).to_string()
}

/// Why the agent could not start or keep serving.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured backend could not be opened.
    #[error("cannot open the {backend} backend")]
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
    #[error("state {what}")]
    State {
        /// What was being prepared.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket could not be obtained or prepared.
    #[error("socket {what}")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, "cause-marker")
    }

    /// Each message leaves its cause to `source()`, so a chain prints every cause once.
    #[test]
    fn newuser_every_cause_is_printed_once() -> Result<(), Box<dyn std::error::Error>> {
        let toml_error = match toml::from_str::<toml::Value>("x = = 1") {
            Err(e) => e,
            Ok(_) => return Err("invalid TOML was accepted".into()),
        };
        let toml_text = toml_error.to_string();
        let errors: Vec<(Box<dyn std::error::Error>, &str)> = vec![
            (
                Box::new(ConfigError::Read {
                    path: "/etc/hwsign/agent.toml".into(),
                    source: io(),
                }),
                "cause-marker",
            ),
            (Box::new(ConfigError::Parse(toml_error)), toml_text.as_str()),
            (
                Box::new(AgentError::Backend {
                    backend: "software",
                    source: BackendError::Io(io()),
                }),
                "cause-marker",
            ),
            (
                Box::new(AgentError::State {
                    what: "directory /s".into(),
                    source: io(),
                }),
                "cause-marker",
            ),
            (
                Box::new(AgentError::Socket {
                    what: "bind".into(),
                    source: io(),
                }),
                "cause-marker",
            ),
            (Box::new(BackendError::Io(io())), "cause-marker"),
            (
                Box::new(ApiError::Backend(BackendError::Io(io()))),
                "cause-marker",
            ),
        ];
        for (error, cause) in &errors {
            let chain = error_chain(error.as_ref());
            assert_eq!(
                chain.matches(cause).count(),
                1,
                "{cause:?} not exactly once in {chain:?}"
            );
            // The agent binary prints the same chain (`ErrorChain`).
            assert!(
                !error.to_string().contains(cause),
                "{error} repeats its cause"
            );
        }
        Ok(())
    }

    /// An error of another crate whose message repeats its cause still shows it once.
    #[test]
    fn newuser_the_chain_leaves_out_a_repeated_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Repeats(#[source] std::io::Error);
        let chain = error_chain(&Repeats(io()));
        assert_eq!(chain, "outer: cause-marker");
    }
}
