//! Opening the key registry, replay cache and enrollment store named by URL.
//!
//! A stand-in until the fleet stores land (issue 11 items 2–3): only `sqlite:PATH` and `memory`.
//! The library will export `hwsign_verifier::registry::open_registry` and
//! `hwsign_verifier::replay::open_replay_cache` with these signatures (plus `postgres://` and
//! `redis://`); this file then goes away.

use std::path::Path;
use std::sync::Arc;

use hwsign_verifier::enrollment::{EnrollmentError, EnrollmentStore};
use hwsign_verifier::{
    KeyRegistry, MemoryRegistry, MemoryReplayCache, RegistryError, ReplayCache, ReplayError,
    SqliteRegistry,
};

/// The registry URL's SQLite file, if it names one.
fn sqlite_path(url: &str) -> Option<&Path> {
    url.strip_prefix("sqlite:")
        .filter(|path| !path.is_empty())
        .map(Path::new)
}

/// Opens the key registry at `url`: `sqlite:PATH` or `memory`.
pub(crate) fn open_registry(url: &str) -> Result<Arc<dyn KeyRegistry>, RegistryError> {
    if let Some(path) = sqlite_path(url) {
        return Ok(Arc::new(SqliteRegistry::open(path)?));
    }
    match url {
        "memory" => Ok(Arc::new(MemoryRegistry::new())),
        _ => Err(RegistryError::Unsupported(
            "this registry URL (use sqlite:PATH or memory)",
        )),
    }
}

/// Opens the replay cache at `url`: `memory` holding at most `capacity` live nonces.
pub(crate) fn open_replay_cache(
    url: &str,
    capacity: usize,
) -> Result<Arc<dyn ReplayCache>, ReplayError> {
    match url {
        "memory" => Ok(Arc::new(MemoryReplayCache::new(capacity))),
        other => Err(ReplayError::Unavailable(format!(
            "unsupported replay cache URL {other:?} (use memory)"
        ))),
    }
}

/// Opens the enrollment store beside the registry at `url` (the same SQLite file).
pub(crate) fn open_enrollment_store(url: &str) -> Result<EnrollmentStore, EnrollmentError> {
    if let Some(path) = sqlite_path(url) {
        return EnrollmentStore::open(path);
    }
    match url {
        "memory" => EnrollmentStore::open_in_memory(),
        _ => Err(EnrollmentError::Store(
            "enrollment needs a sqlite: or memory registry".to_owned(),
        )),
    }
}
