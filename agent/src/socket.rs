//! Binding the agent's socket when systemd does not pass one: the directory is made 0700 (only
//! the owner can even reach the socket), the socket 0600; a socket file left by a crashed agent
//! is replaced, but only after checking that nothing answers on it.
//!
//! Whoever can write the socket's directory can replace the socket with their own and read
//! every request SDKs send for signing (cookies and tokens included). So the directory must
//! belong to the agent's user and must not be writable by others, nor by its group unless that
//! group is the configured `socket_group` ([`crate::fsutil::ensure_socket_dir`]). A socket that
//! systemd passes in is checked the same way ([`check_activated`]), except that its directory
//! may belong to root (systemd creates it).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt as _, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use crate::AgentError;
use crate::fsutil::ensure_socket_dir;

fn socket_error(what: String, source: std::io::Error) -> AgentError {
    AgentError::Socket { what, source }
}

/// Binds `path` with mode 0600 and no socket group. Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    bind_with_group(path, None)
}

/// Binds `path`. With `socket_group` (a gid), the socket gets that group and mode 0660, and its
/// directory may be writable by that group (and no other); without, the socket is 0600. Must be
/// called inside a tokio runtime.
pub fn bind_with_group(path: &Path, socket_group: Option<u32>) -> Result<UnixListener, AgentError> {
    let shown = path.display();
    let parent = path.parent().ok_or_else(|| {
        socket_error(
            format!("path {shown}"),
            std::io::Error::other("has no parent directory"),
        )
    })?;
    ensure_socket_dir(parent, socket_group)
        .map_err(|e| socket_error(format!("directory {}", parent.display()), e))?;
    remove_stale(path)?;
    let listener =
        UnixListener::bind(path).map_err(|e| socket_error(format!("bind {shown}"), e))?;
    let mode = match socket_group {
        Some(gid) => {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|e| socket_error(format!("chgrp {shown} to gid {gid}"), e.into()))?;
            0o660
        }
        None => 0o600,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| socket_error(format!("chmod {shown}"), e))?;
    Ok(listener)
}

/// Checks the directory of a socket systemd passed in: owned by root or the agent's user, not
/// writable by others, and writable by its group only when that group is `socket_group` and the
/// directory belongs to the agent's user. A socket without a path (abstract) has no directory
/// to check.
pub fn check_activated(
    listener: &std::os::unix::net::UnixListener,
    socket_group: Option<u32>,
) -> Result<(), AgentError> {
    let address = listener
        .local_addr()
        .map_err(|e| socket_error("activated socket".into(), e))?;
    let Some(dir) = address.as_pathname().and_then(Path::parent) else {
        return Ok(());
    };
    let shown = dir.display();
    let meta = fs::metadata(dir).map_err(|e| socket_error(format!("directory {shown}"), e))?;
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| {
        socket_error(
            format!("directory {shown}"),
            std::io::Error::new(ErrorKind::PermissionDenied, why),
        )
    };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(refuse(format!(
            "belongs to uid {}, not to root or the agent's uid {me}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(refuse(format!(
            "is writable by other users (mode {mode:o}); set DirectoryMode=0750 in the socket unit"
        )));
    }
    if mode & 0o020 != 0 && (socket_group != Some(meta.gid()) || meta.uid() != me) {
        return Err(refuse(format!(
            "is writable by its group (gid {}, mode {mode:o}), which is not the configured \
             socket_group of a directory the agent owns; set DirectoryMode=0750 in the socket unit",
            meta.gid()
        )));
    }
    Ok(())
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
