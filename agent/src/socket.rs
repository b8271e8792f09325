//! Binding the agent's socket when systemd does not pass one: the directory is made 0700 (only
//! the owner can even reach the socket), the socket 0600; a socket file left by a crashed agent
//! is replaced, but only after checking that nothing answers on it.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use crate::AgentError;
use crate::fsutil::ensure_private_dir;

fn socket_error(what: String, source: std::io::Error) -> AgentError {
    AgentError::Socket { what, source }
}

/// Binds `path`. Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    let shown = path.display();
    let parent = path.parent().ok_or_else(|| {
        socket_error(
            format!("path {shown}"),
            std::io::Error::other("has no parent directory"),
        )
    })?;
    ensure_private_dir(parent)
        .map_err(|e| socket_error(format!("directory {}", parent.display()), e))?;
    remove_stale(path)?;
    let listener =
        UnixListener::bind(path).map_err(|e| socket_error(format!("bind {shown}"), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| socket_error(format!("chmod {shown}"), e))?;
    Ok(listener)
}

/// Removes `path` if it is a socket nobody listens on. A live socket (another agent) or a file
/// that is not a socket is an error, never deleted.
fn remove_stale(path: &Path) -> Result<(), AgentError> {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(socket_error(format!("stat {shown}"), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(socket_error(
            format!("path {shown}"),
            std::io::Error::new(ErrorKind::AlreadyExists, "exists and is not a socket"),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(socket_error(
            format!("path {shown}"),
            std::io::Error::new(
                ErrorKind::AddrInUse,
                "another process is listening on it (is an agent already running?)",
            ),
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %shown, "removing stale socket");
            fs::remove_file(path).map_err(|e| socket_error(format!("remove {shown}"), e))
        }
        Err(e) => Err(socket_error(format!("probe {shown}"), e)),
    }
}
