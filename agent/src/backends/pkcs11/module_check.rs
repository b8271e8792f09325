//! Checks on the PKCS#11 module before it is loaded. Loading a module runs its code inside the
//! agent with the agent's keys and sockets, so whoever can replace the file (or rename another
//! file into its directory) owns the agent. Both the file and its directory must be owned by
//! root or by the agent's user and must not be writable by group or others.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::Pkcs11Error;

/// Resolves symlinks and checks the module file and its directory. Returns the canonical path,
/// which is what gets loaded.
pub fn check_module(path: &Path) -> Result<PathBuf, Pkcs11Error> {
    let shown = path.display().to_string();
    let canonical = fs::canonicalize(path).map_err(|e| Pkcs11Error::Module {
        path: shown.clone(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "file not found (is the vendor package installed?)".into()
        } else {
            format!("cannot resolve: {e}")
        },
    })?;
    let meta = fs::metadata(&canonical).map_err(|e| Pkcs11Error::Module {
        path: shown.clone(),
        reason: format!("cannot stat: {e}"),
    })?;
    if !meta.is_file() {
        return Err(Pkcs11Error::Module {
            path: shown,
            reason: "not a regular file".into(),
        });
    }
    let euid = nix::unistd::geteuid().as_raw();
    check_owner_and_mode(&canonical, &meta, euid)?;
    let dir = canonical.parent().ok_or_else(|| Pkcs11Error::Module {
        path: shown.clone(),
        reason: "has no parent directory".into(),
    })?;
    let dir_meta = fs::metadata(dir).map_err(|e| Pkcs11Error::Module {
        path: dir.display().to_string(),
        reason: format!("cannot stat directory: {e}"),
    })?;
    check_owner_and_mode(dir, &dir_meta, euid)?;
    Ok(canonical)
}

/// The agent's one rule for files it obeys ([`crate::fsutil::check_owner_and_mode`]), with the
/// refusal as a PKCS#11 error.
fn check_owner_and_mode(path: &Path, meta: &fs::Metadata, euid: u32) -> Result<(), Pkcs11Error> {
    crate::fsutil::check_owner_and_mode(path, meta, euid).map_err(|e| Pkcs11Error::UnsafeModule {
        path: e.path.display().to_string(),
        reason: e.reason,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn refuses_writable_file_and_directory() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let module = dir.path().join("module.so");
        fs::write(&module, b"not really a module")?;
        fs::set_permissions(&module, fs::Permissions::from_mode(0o644))?;
        assert!(check_module(&module).is_ok());

        fs::set_permissions(&module, fs::Permissions::from_mode(0o666))?;
        assert!(matches!(
            check_module(&module),
            Err(Pkcs11Error::UnsafeModule { .. })
        ));

        fs::set_permissions(&module, fs::Permissions::from_mode(0o644))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
        assert!(matches!(
            check_module(&module),
            Err(Pkcs11Error::UnsafeModule { .. })
        ));
        Ok(())
    }

    #[test]
    fn missing_module_is_named() {
        let result = check_module(Path::new("/nonexistent/hwsign/module.so"));
        assert!(matches!(result, Err(Pkcs11Error::Module { .. })));
    }
}
