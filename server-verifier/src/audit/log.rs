//! The handle the verify path holds: a bounded queue to the writer thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use hwsign_audit_chain::SealError;
use hwsign_audit_chain::checkpoint::{CheckpointError, CheckpointSigner};

use crate::audit::AuditEvent;
use crate::audit::settings::{AuditSettings, WhenFull};
use crate::audit::writer::{self, Message};

/// The decision log could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file of the log could not be read or written.
    #[error("audit log I/O on {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint key file is not a P-256 PKCS#8 PEM key.
    #[error("cannot use the checkpoint key {}", path.display())]
    CheckpointKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: CheckpointError,
    },
    /// The chain's last record is not sealed: the log was damaged; it is not continued.
    #[error("the audit chain in {} cannot be continued", path.display())]
    Resume {
        /// The chain file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: SealError,
    },
    /// A record could not be sealed.
    #[error("an audit record could not be sealed")]
    Seal(#[source] SealError),
    /// Writing the export failed.
    #[error("writing the export failed")]
    Output(#[source] std::io::Error),
    /// The writer thread could not be started.
    #[error("the audit writer thread could not be started")]
    Spawn(#[source] std::io::Error),
}

/// The log did not take a record: its queue is full or its writer failed.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("the audit log cannot take the record")]
pub struct AuditUnavailable;

/// What the request path and the writer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The writer stopped on an error: every record from now on fails.
    pub(crate) failed: AtomicBool,
    /// Records dropped (`when_full = "drop"`) not yet reported in a `records_lost` record.
    pub(crate) lost: AtomicU64,
}

/// An open decision log: [`AuditLog::record`] enqueues, a writer thread seals and writes.
#[derive(Debug)]
pub struct AuditLog {
    sender: SyncSender<Message>,
    shared: Arc<Shared>,
    when_full: WhenFull,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens (or continues) the chain in `settings.dir` and starts its writer thread. A torn last
    /// line (a crash mid-write) is cut off and counted in the `log_opened` record that starts
    /// every run; a last record that is not sealed is an error (the log is not continued blind).
    pub fn open(settings: &AuditSettings) -> Result<Self, AuditError> {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(&settings.checkpoint_key).map_err(|source| AuditError::Io {
                path: settings.checkpoint_key.clone(),
                source,
            })?,
        );
        let signer =
            CheckpointSigner::from_pkcs8_pem(&pem).map_err(|source| AuditError::CheckpointKey {
                path: settings.checkpoint_key.clone(),
                source,
            })?;
        let shared = Arc::new(Shared::default());
        let state = writer::Writer::open(settings, signer, Arc::clone(&shared))?;
        let (sender, receiver) = mpsc::sync_channel(settings.queue_capacity.max(1));
        let worker = std::thread::Builder::new()
            .name("hwsign-audit".to_owned())
            .spawn(move || state.run(&receiver))
            .map_err(AuditError::Spawn)?;
        Ok(Self {
            sender,
            shared,
            when_full: settings.when_full,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Enqueues `event` (never blocks). `Err` when the queue is full or the writer failed and
    /// the log fails closed; with `when_full = "drop"`, such a record is counted as lost instead.
    pub fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        if self.shared.failed.load(Ordering::Acquire) {
            return self.lost();
        }
        match self.sender.try_send(Message::Event(event)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.lost(),
        }
    }

    fn lost(&self) -> Result<(), AuditUnavailable> {
        match self.when_full {
            WhenFull::Refuse => Err(AuditUnavailable),
            WhenFull::Drop => {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Waits until every record enqueued before this call is written and `fdatasync`ed.
    pub fn sync(&self) -> Result<(), AuditUnavailable> {
        let (reply, done) = mpsc::channel();
        self.sender
            .send(Message::Sync(reply))
            .map_err(|_| AuditUnavailable)?;
        done.recv().map_err(|_| AuditUnavailable)?;
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(AuditUnavailable);
        }
        Ok(())
    }

    /// Writes what is queued and a closing checkpoint, and stops the writer. Later records fail
    /// (or are counted lost). Also done on drop.
    pub fn close(&self) {
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(worker) = worker {
            // A full queue: the writer drains it and then sees Close.
            let _ = self.sender.send(Message::Close);
            if worker.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
            self.shared.failed.store(true, Ordering::Release);
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}
