//! A registry named by a URL, as a verifier's configuration names it.

use std::path::Path;
use std::sync::Arc;

use super::{KeyRegistry, MemoryRegistry, RegistryError, SqliteRegistry};

/// Opens the registry named by `url`:
/// - `memory:`: an empty [`MemoryRegistry`] (tests, demos; nothing is shared or kept);
/// - `sqlite:PATH`: the [`SqliteRegistry`] file at `PATH` (created if absent), which keeps its own
///   key cache invalidated by its writes at once and by `PRAGMA data_version` (read at most every
///   [`CHANGE_CHECK_INTERVAL`](super::CHANGE_CHECK_INTERVAL): another process's revocation is
///   refused within that);
/// - `postgres://…` or `postgresql://…` (a libpq URL): a [`PostgresRegistry`](super::PostgresRegistry)
///   (cargo feature `postgres`; its schema is created or migrated now), behind a
///   [`CachedRegistry`](super::CachedRegistry) invalidated by `LISTEN`/`NOTIFY` and bypassed while the notification
///   connection is down.
pub fn open_registry(url: &str) -> Result<Arc<dyn KeyRegistry>, RegistryError> {
    if url == "memory:" || url == "memory" {
        return Ok(Arc::new(MemoryRegistry::new()));
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(RegistryError::InvalidUrl("sqlite: needs a file path"));
        }
        // Caches its own lookups: a cache in front would only look the key up twice.
        return Ok(Arc::new(SqliteRegistry::open(Path::new(path))?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let registry = super::PostgresRegistry::connect(url)?;
            return Ok(Arc::new(super::CachedRegistry::new(Arc::new(registry))));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(RegistryError::InvalidUrl(
            "postgres:// registries need the `postgres` cargo feature",
        ));
    }
    Err(RegistryError::InvalidUrl(
        "expected memory:, sqlite:PATH or postgres://USER@HOST:PORT/DATABASE",
    ))
}
