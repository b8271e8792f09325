//! Where the proxy listens: loopback TCP, or a Unix socket whose callers' uid is checked against
//! the allowed set (SO_PEERCRED) before anything they send is read.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::net::{TcpListener, UnixListener};

use super::config::ListenAddr;
use crate::https::Stream;

/// A bound listener.
#[derive(Debug)]
pub(crate) enum ProxyListener {
    /// Loopback TCP.
    Tcp(TcpListener),
    /// A Unix socket; removed when dropped.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
        /// The uids allowed to connect.
        allowed_uids: Vec<u32>,
    },
}

impl ProxyListener {
    /// Binds `addr`. A Unix socket is created mode 0600 when only the proxy's own uid may use
    /// it, 0666 when other uids are allowed (the uid check is then what guards it).
    pub(crate) async fn bind(addr: &ListenAddr, allowed_uids: &[u32]) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(addr) => Ok(Self::Tcp(TcpListener::bind(addr).await?)),
            ListenAddr::Unix(path) => {
                let listener = UnixListener::bind(path)?;
                let own = nix::unistd::geteuid().as_raw();
                let allowed_uids = if allowed_uids.is_empty() {
                    vec![own]
                } else {
                    allowed_uids.to_vec()
                };
                let mode = if allowed_uids == [own] { 0o600 } else { 0o666 };
                set_mode(path, mode)?;
                Ok(Self::Unix {
                    listener,
                    path: path.clone(),
                    allowed_uids,
                })
            }
        }
    }

    /// Where it listens, for the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .map(|addr| addr.to_string())
                .unwrap_or_else(|_| "tcp".to_owned()),
            Self::Unix {
                path, allowed_uids, ..
            } => format!("unix:{} (uids {allowed_uids:?})", path.display()),
        }
    }

    /// The next connection; `None` for a Unix socket caller whose uid is not allowed (closed).
    pub(crate) async fn accept(&self) -> io::Result<Option<Pin<Box<dyn Stream>>>> {
        match self {
            Self::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Some(Box::pin(stream)))
            }
            Self::Unix {
                listener,
                allowed_uids,
                ..
            } => {
                let (stream, _) = listener.accept().await?;
                let uid = stream.peer_cred()?.uid();
                if !allowed_uids.contains(&uid) {
                    eprintln!("hwsign proxy: refused a connection from uid {uid}");
                    return Ok(None);
                }
                Ok(Some(Box::pin(stream)))
            }
        }
    }
}

impl Drop for ProxyListener {
    fn drop(&mut self) {
        if let Self::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path.as_path());
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
