//! File-system helpers for private state: directories only the owner can enter, and files that
//! are either completely written or absent (a crash mid-write never leaves half a key).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Marker in the names of temporary files, so that start-up can remove leftovers of a crash.
pub(crate) const TEMP_MARKER: &str = ".tmp-";

/// Group- and other-write permission bits.
pub(crate) const GROUP_OTHER_WRITE: u32 = 0o022;

/// Creates `dir` (and missing parents) with mode 0700, and checks that `dir` belongs to this
/// process's user and is closed to others: no access at all for others, no write for the group.
/// An existing directory that others can enter (`/tmp`, a home directory) or that the group can
/// write (where a group member could swap the files the agent trusts) is refused rather than
/// chmod-ed: it is not the agent's to change.
pub(crate) fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    ensure_dir(dir, None)
}

/// [`ensure_private_dir`] for the directory of the agent's socket: there the group may also
/// write, but only when the directory's group is `socket_group` (the configured group whose
/// members may connect) and the directory belongs to the agent's uid, as
/// [`ensure_private_dir`] requires anyway.
pub(crate) fn ensure_socket_dir(dir: &Path, socket_group: Option<u32>) -> io::Result<()> {
    ensure_dir(dir, socket_group)
}

fn ensure_dir(dir: &Path, writable_by_group: Option<u32>) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
    check_dir(dir, &meta, writable_by_group)
}

/// The rules [`ensure_private_dir`] and [`ensure_socket_dir`] enforce on an existing directory
/// (`--check-config` applies them without creating anything): a directory, owned by the agent's
/// uid, nothing for others, group write only for `writable_by_group`.
pub(crate) fn check_dir(
    dir: &Path,
    meta: &fs::Metadata,
    writable_by_group: Option<u32>,
) -> io::Result<()> {
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to the agent's uid {me}",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is accessible to other users (mode {:o}); use a dedicated directory \
                 with mode 0700",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    if mode & 0o020 != 0 && writable_by_group != Some(meta.gid()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by its group (gid {}, mode {:o}), which is not the configured \
                 socket_group; use mode 0700 or 0750",
                dir.display(),
                meta.gid(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A file or directory the agent would trust (its configuration, a PKCS#11 module) but that
/// someone other than the agent's user or root could change.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct UntrustedPath {
    /// The file or directory.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks that `meta` (of `path`) belongs to root or to `euid` and is not writable by group or
/// others: the rule for every file whose content the agent obeys, and for its directory.
pub(crate) fn check_owner_and_mode(
    path: &Path,
    meta: &fs::Metadata,
    euid: u32,
) -> Result<(), UntrustedPath> {
    let owner = meta.uid();
    if owner != 0 && owner != euid {
        return Err(UntrustedPath {
            path: path.to_path_buf(),
            reason: format!("owned by uid {owner}, not by root or the agent's uid {euid}"),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(UntrustedPath {
            path: path.to_path_buf(),
            reason: format!("mode {mode:04o} is writable by group or others"),
        });
    }
    Ok(())
}

/// Why [`open_trusted_file`] did not open a file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenTrustedError {
    /// The file or its directory could not be resolved, examined or opened.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file or its directory could be changed by someone the agent does not trust.
    #[error(transparent)]
    Untrusted(#[from] UntrustedPath),
}

/// Opens a file whose content the agent obeys (its configuration) after checking it and its
/// directory with [`check_owner_and_mode`] (the rule PKCS#11 modules follow). Symlinks are
/// resolved first, so the checked file and directory are the real ones; the file's own check is
/// on the opened file, so a file swapped in after the check is not the one read.
pub(crate) fn open_trusted_file(path: &Path) -> Result<File, OpenTrustedError> {
    let canonical = fs::canonicalize(path)?;
    let euid = nix::unistd::geteuid().as_raw();
    if let Some(dir) = canonical.parent() {
        check_owner_and_mode(dir, &fs::metadata(dir)?, euid)?;
    }
    let file = File::open(&canonical)?;
    check_owner_and_mode(&canonical, &file.metadata()?, euid)?;
    Ok(file)
}

/// Writes `bytes` to `dir/name` atomically with mode 0600: a temporary file in the same
/// directory is written and fsynced, renamed over the target, and the directory is fsynced so
/// the rename itself survives a power loss.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let temp: PathBuf = dir.join(format!(".{name}{TEMP_MARKER}{}", hex::encode(suffix)));
    let result = write_then_rename(&temp, &dir.join(name), bytes);
    if result.is_err() {
        // Best effort: the temp file holds a secret; the error that matters is the write's.
        let _ = fs::remove_file(&temp);
    }
    result?;
    File::open(dir)?.sync_all()
}

fn write_then_rename(temp: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, target)
}

/// Whether `path`'s mode lets anyone but its owner read or write it.
pub(crate) fn is_exposed(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o077 != 0
}
