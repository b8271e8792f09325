//! Connections to HTTP servers, plain or over TLS (rustls on ring): what `hwsign request`,
//! `hwsign enroll` and `hwsign proxy` open to reach a server. Trust is the webpki root set (the
//! Mozilla CA list) plus any CA certificates the user names (`--cacert`), nothing else.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long opening a connection (TCP and TLS handshake) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream to a server, plain or TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrustError {
    /// The file cannot be read or is not PEM.
    #[error("reading CA certificates from {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("{} holds no PEM certificate", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// rustls refuses a certificate as a trust anchor.
    #[error("{} holds a certificate that cannot be a trust anchor", path.display())]
    Anchor {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// rustls refuses the configuration.
    #[error("setting up TLS")]
    Config(#[source] rustls::Error),
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The URL cannot be connected to (no host, unknown scheme).
    #[error("cannot connect to {0:?}: only http:// and https:// URLs with a host")]
    Url(String),
    /// TCP or the TLS handshake failed.
    #[error("connecting to {authority}")]
    Io {
        /// `host:port`.
        authority: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// TCP and TLS took longer than [`CONNECT_TIMEOUT`].
    #[error("connecting to {0} timed out")]
    Timeout(String),
}

/// The TLS client configuration: webpki roots plus the certificates in `cacerts` (PEM files),
/// HTTP/1.1 by ALPN.
pub(crate) fn client_config(cacerts: &[PathBuf]) -> Result<Arc<ClientConfig>, TrustError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for path in cacerts {
        add_pem_file(&mut roots, path)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TrustError> {
    let read = |source| TrustError::Read {
        path: path.to_owned(),
        source,
    };
    let mut count = 0usize;
    for cert in CertificateDer::pem_file_iter(path).map_err(read)? {
        roots
            .add(cert.map_err(read)?)
            .map_err(|source| TrustError::Anchor {
                path: path.to_owned(),
                source,
            })?;
        count += 1;
    }
    if count == 0 {
        return Err(TrustError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Whether `host` (from a URL, IPv6 literals in brackets) is the local machine: `localhost` or a
/// loopback address.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Opens a connection to the server of `uri` (`http://` or `https://`), TLS verified against
/// `tls`'s roots for `https`.
pub(crate) async fn connect(
    uri: &Uri,
    tls: &Arc<ClientConfig>,
) -> Result<Pin<Box<dyn Stream>>, ConnectError> {
    let bad_url = || ConnectError::Url(uri.to_string());
    let authority = uri.authority().ok_or_else(bad_url)?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad_url()),
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let name = authority.as_str().to_owned();
    let io_error = |source| ConnectError::Io {
        authority: name.clone(),
        source,
    };
    let open = async {
        let tcp = TcpStream::connect((host, port)).await.map_err(io_error)?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(Box::pin(tcp) as Pin<Box<dyn Stream>>);
        }
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| bad_url())?;
        let tls = TlsConnector::from(Arc::clone(tls))
            .connect(server_name, tcp)
            .await
            .map_err(io_error)?;
        Ok(Box::pin(tls) as Pin<Box<dyn Stream>>)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| ConnectError::Timeout(name.clone()))?
}
