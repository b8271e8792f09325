//! HTTPS on the main listener: rustls with the ring provider, certificate chain and key from PEM
//! files, HTTP/1.1 only (ALPN `http/1.1`).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;
use crate::error::ServeError;

/// A TLS acceptor for `settings`.
pub(crate) fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, ServeError> {
    let file_error = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| ServeError::TlsFile { path, source }
    };
    let certs = CertificateDer::pem_file_iter(&settings.cert)
        .map_err(file_error(&settings.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error(&settings.cert))?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(file_error(&settings.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServeError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ServeError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
