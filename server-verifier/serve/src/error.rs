//! Why the proxy cannot start. Causes are kept as [`std::error::Error::source`]; the messages do
//! not repeat them.

use hwsign_verifier::config::ConfigError;
use hwsign_verifier::enrollment::{EnrollmentConfigError, EnrollmentError};
use hwsign_verifier::{RegistryError, ReplayError};
use thiserror::Error;

use crate::config::ServeConfigError;

/// The proxy could not start (or its listener failed for good).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[source] ServeConfigError),
    /// The key registry cannot be opened.
    #[error("cannot open the key registry {url:?}")]
    Registry {
        /// The configured URL.
        url: String,
        /// Why.
        source: RegistryError,
    },
    /// The replay cache cannot be opened.
    #[error("cannot open the replay cache {url:?}")]
    Replay {
        /// The configured URL.
        url: String,
        /// Why.
        source: ReplayError,
    },
    /// The verifier refuses its configuration (e.g. a device policy that does not load).
    #[error("cannot build the verifier")]
    Verifier(#[source] ConfigError),
    /// The decision log cannot be opened.
    #[error("cannot open the decision log")]
    Audit(#[source] hwsign_verifier::audit::AuditError),
    /// The enrollment store cannot be opened.
    #[error("cannot start the admin API")]
    AdminApi(#[source] hwsign_verifier::admin_api::AdminApiError),
    /// The web console cannot start (it also needs `[admin.api]`).
    #[error("cannot start the web console")]
    Console(#[source] hwsign_verifier::console::ConsoleError),
    /// The enrollment store cannot be opened.
    #[error("cannot open the enrollment store")]
    EnrollmentStore(#[source] EnrollmentError),
    /// The enrollment trust anchors cannot be loaded.
    #[error("cannot load the enrollment trust anchors")]
    EnrollmentAnchors(#[source] EnrollmentConfigError),
    /// `[webauthn] attestation_roots` or `aaguids` cannot be loaded.
    #[error("cannot load [webauthn] attestation_roots / aaguids")]
    WebAuthnAttestationRoots(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The re-attestation settings are refused.
    #[error("cannot set up re-attestation")]
    Reattestation(#[source] hwsign_verifier::reattestation::ReattestationConfigError),
    /// A TLS file cannot be read or holds no usable PEM object.
    #[error("cannot read TLS file {path}")]
    TlsFile {
        /// The file.
        path: String,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refuses the certificate or key.
    #[error("invalid TLS certificate or key")]
    Tls(#[source] rustls::Error),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
