//! Replacing the policies in force without dropping a request: the engine lives behind a
//! read-write lock around an `Arc`; a reload builds, verifies and validates the new engine
//! completely outside the lock and swaps the `Arc` in one short write. A request holds its own
//! `Arc` for the whole decision, so it is decided by the old policies or the new ones, never a
//! mix, and is never refused because a reload is under way.
//!
//! The file watch polls (every second in `serve`) rather than using inotify: the policy source
//! is one bundle plus its signature, or one directory of at most
//! [`MAX_POLICY_FILES`](super::load::MAX_POLICY_FILES) files, so a poll is a handful of `stat`
//! calls; polling needs no extra dependency, sees a bundle replaced by `rename` (the usual
//! atomic deploy) the same as one rewritten in place, and works on every file system
//! (inotify misses changes made through NFS and some container volume mounts).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{LOG_TARGET, PolicyEngine, PolicyError, PolicySettings};

/// What the last reloads did (for logs, metrics and status pages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Engines put in force since start, the first load included.
    pub generation: u64,
    /// Reloads that put a new engine in force.
    pub reloads: u64,
    /// Reloads refused (the previous policies stayed in force).
    pub failed_reloads: u64,
    /// Whether the most recent reload was refused.
    pub last_failed: bool,
    /// Why the most recent reload was refused.
    pub last_error: Option<String>,
    /// When the most recent reload was attempted, seconds since the epoch.
    pub last_attempt_unix: Option<i64>,
}

/// The policies in force and how to load them again.
#[derive(Debug)]
pub(super) struct Reloadable {
    settings: PolicySettings,
    engine: RwLock<Arc<PolicyEngine>>,
    status: Mutex<ReloadStatus>,
    /// Serializes reloads (the watch and SIGHUP may fire together).
    reloading: Mutex<()>,
}

impl Reloadable {
    pub(super) fn new(engine: Arc<PolicyEngine>, settings: PolicySettings) -> Self {
        Self {
            settings,
            engine: RwLock::new(engine),
            status: Mutex::new(ReloadStatus {
                generation: 1,
                ..ReloadStatus::default()
            }),
            reloading: Mutex::new(()),
        }
    }

    pub(super) fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The engine in force.
    pub(super) fn engine(&self) -> Arc<PolicyEngine> {
        Arc::clone(&self.engine.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads the policies again; puts them in force only when they load completely (bundle
    /// signature, archive, schema validation). On failure the policies in force stay, the
    /// error is logged and [`ReloadStatus::last_failed`] is set.
    pub(super) fn reload(&self) -> Result<(), PolicyError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let attempted = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let loaded = PolicyEngine::load(&self.settings);
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.last_attempt_unix = Some(attempted);
        match loaded {
            Ok(engine) => {
                let policies = engine.policy_ids().len();
                *self.engine.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
                status.generation += 1;
                status.reloads += 1;
                status.last_failed = false;
                status.last_error = None;
                tracing::info!(
                    target: LOG_TARGET,
                    policies,
                    generation = status.generation,
                    "device policies reloaded"
                );
                Ok(())
            }
            Err(error) => {
                status.failed_reloads += 1;
                status.last_failed = true;
                status.last_error = Some(crate::ErrorChain(&error).to_string());
                tracing::error!(
                    target: LOG_TARGET,
                    error = %crate::ErrorChain(&error),
                    "device policy reload refused; the policies in force stay"
                );
                Err(error)
            }
        }
    }
}

/// A fingerprint of the files a reload would read: name, length, modification time and inode.
fn fingerprint(settings: &PolicySettings) -> Vec<(String, u64, Option<SystemTime>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let stat = |path: &Path| {
        let meta = std::fs::metadata(path).ok();
        (
            path.display().to_string(),
            meta.as_ref().map_or(0, std::fs::Metadata::len),
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map_or(0, MetadataExt::ino),
        )
    };
    let mut out = Vec::new();
    for path in settings.watched_files() {
        out.push(stat(&path));
    }
    if let Some(dir) = &settings.dir {
        out.push(stat(dir));
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut files: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("cedar"))
                .take(super::load::MAX_POLICY_FILES + 1)
                .collect();
            files.sort();
            out.extend(files.iter().map(|p| stat(p)));
        }
    }
    out
}

/// A running file watch; dropping it stops the watch.
#[derive(Debug)]
pub struct PolicyWatch {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PolicyWatch {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls the policy files every `interval` and reloads when they change.
pub(super) fn watch(
    target: Arc<Reloadable>,
    interval: Duration,
) -> Result<PolicyWatch, std::io::Error> {
    let (stop, stopped) = mpsc::channel::<()>();
    let mut seen = fingerprint(target.settings());
    let thread = std::thread::Builder::new()
        .name("hwsign-policy-watch".into())
        .spawn(move || {
            loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = fingerprint(target.settings());
                if now != seen {
                    seen = now;
                    tracing::info!(target: LOG_TARGET, "device policy files changed; reloading");
                    // The outcome is logged and kept in the status.
                    let _ = target.reload();
                }
            }
        })?;
    Ok(PolicyWatch {
        stop: Some(stop),
        thread: Some(thread),
    })
}
