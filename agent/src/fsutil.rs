//! File-system helpers for private state: directories only the owner can enter, and files that
//! are either completely written or absent (a crash mid-write never leaves half a key).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Marker in the names of temporary files, so that start-up can remove leftovers of a crash.
pub const TEMP_MARKER: &str = ".tmp-";

/// Creates `dir` (and missing parents) with mode 0700, and checks that `dir` belongs to this
/// process's user and is closed to others. An existing directory that others can enter (`/tmp`,
/// a home directory) is refused rather than chmod-ed: it is not the agent's to change.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
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
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is accessible to other users (mode {:o}); use a dedicated directory \
                 with mode 0700",
                dir.display(),
                meta.permissions().mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` atomically with mode 0600: a temporary file in the same
/// directory is written and fsynced, renamed over the target, and the directory is fsynced so
/// the rename itself survives a power loss.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
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
pub fn is_exposed(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o077 != 0
}
