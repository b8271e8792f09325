//! Loading and initializing PKCS#11 modules, once per process.
//!
//! `C_Initialize` may be called once per process until `C_Finalize`; a second call answers
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED`, and finalizing under another user of the same module would
//! pull the library out from under it. So every initialized module is kept here, keyed by its
//! canonical path, and shared by all backends (and backend re-opens) that name it. Modules are
//! never finalized: they live as long as the process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::error::Pkcs11Error;
use super::module_check::check_module;

/// Initialized modules of this process.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// Checks, loads and initializes the module at `configured` (or returns the one already loaded).
pub(super) fn load_module(configured: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let canonical = check_module(configured)?;
    // The list only ever grows and holds no invariant a panicking holder could break.
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, ctx)) = modules.iter().find(|(path, _)| *path == canonical) {
        return Ok(ctx.clone());
    }
    let shown = configured.display().to_string();
    let ctx = Pkcs11::new(&canonical).map_err(|e| Pkcs11Error::Module {
        path: shown.clone(),
        reason: format!("cannot load: {e}"),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in the process (another library) initialized it first; it is usable.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Pkcs11Error::Module {
                path: shown,
                reason: format!("C_Initialize failed: {e}"),
            });
        }
    }
    modules.push((canonical, ctx.clone()));
    Ok(ctx)
}
