//! The writer thread: seals records into the chain, commits in groups, checkpoints, rotates.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use hwsign_audit_chain::Sealer;
use hwsign_audit_chain::checkpoint::{self, CheckpointSigner};
use serde_json::{Map, Value};

use crate::audit::AuditEvent;
use crate::audit::files::{self, CHECKPOINTS_FILE};
use crate::audit::log::{AuditError, Shared};
use crate::audit::settings::AuditSettings;
use crate::unix_time;

/// Records taken from the queue between two looks at the clock.
const BATCH: usize = 1024;
/// How long the writer sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(1);
/// How often the writer looks at its queue when it is empty.
const POLL: Duration = Duration::from_millis(1);

/// What the request path sends the writer.
#[derive(Debug)]
pub(crate) enum Message {
    Event(AuditEvent),
    /// Commit everything before this, then answer.
    Sync(Sender<()>),
    /// Checkpoint, commit and stop.
    Close,
}

/// The writer's state; owned by its thread.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    /// The chain file being appended to.
    path: PathBuf,
    file: BufWriter<File>,
    file_bytes: u64,
    checkpoints: File,
    sealer: Sealer,
    signer: CheckpointSigner,
    shared: Arc<Shared>,
    commit_interval: Duration,
    checkpoint_interval: Duration,
    checkpoint_records: u64,
    rotate_bytes: u64,
    /// When the oldest record not yet `fdatasync`ed was written.
    dirty_since: Option<Instant>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Writer {
    /// Opens the chain in `settings.dir`, repairs a torn tail and writes `log_opened`.
    pub(crate) fn open(
        settings: &AuditSettings,
        signer: CheckpointSigner,
        shared: Arc<Shared>,
    ) -> Result<Self, AuditError> {
        let dir = settings.dir.clone();
        files::create_dir(&dir).map_err(io_error(&dir))?;
        let existing = files::chain_files(&dir).map_err(io_error(&dir))?;
        let mut sealer = Sealer::genesis();
        let mut torn = 0;
        let mut current = None;
        for path in existing.iter().rev() {
            let (last, cut) = files::last_line_repairing(path).map_err(io_error(path))?;
            torn += cut;
            current.get_or_insert_with(|| path.clone());
            if let Some(line) = last {
                sealer = Sealer::resume(&line).map_err(|source| AuditError::Resume {
                    path: path.clone(),
                    source,
                })?;
                break;
            }
        }
        let path = current.unwrap_or_else(|| dir.join(files::chain_file_name(0)));
        let file = files::open_append(&path).map_err(io_error(&path))?;
        let file_bytes = file.metadata().map_err(io_error(&path))?.len();
        let checkpoints_path = dir.join(CHECKPOINTS_FILE);
        let checkpoints =
            files::open_append(&checkpoints_path).map_err(io_error(&checkpoints_path))?;
        let mut writer = Self {
            dir,
            path,
            file: BufWriter::with_capacity(64 * 1024, file),
            file_bytes,
            checkpoints,
            sealer,
            signer,
            shared,
            commit_interval: Duration::from_millis(settings.commit_interval_ms),
            checkpoint_interval: Duration::from_secs(settings.checkpoint_every_secs.max(1)),
            checkpoint_records: settings.checkpoint_every_records.max(1),
            rotate_bytes: settings.rotate_bytes.max(1),
            dirty_since: None,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        };
        let opened = AuditEvent::new("log_opened")
            .with_value("torn_bytes", torn)
            .with_value("pid", std::process::id());
        writer.append(opened.fields)?;
        writer.commit()?;
        Ok(writer)
    }

    /// The thread's loop; on an error the log is marked failed and the thread ends.
    pub(crate) fn run(mut self, receiver: &Receiver<Message>) {
        if let Err(error) = self.serve(receiver) {
            tracing::error!(error = %crate::ErrorChain(&error), "audit log writer failed; refusing requests that cannot be recorded");
            self.shared.failed.store(true, Ordering::Release);
        }
    }

    fn serve(&mut self, receiver: &Receiver<Message>) -> Result<(), AuditError> {
        loop {
            // Polled, not woken per record: a sender never pays for waking this thread, and
            // records wait at most POLL before they are written.
            let first = match receiver.try_recv() {
                Ok(message) => Some(message),
                Err(TryRecvError::Empty) => {
                    let wait = self.next_due().saturating_duration_since(Instant::now());
                    std::thread::sleep(wait.min(POLL));
                    None
                }
                Err(TryRecvError::Disconnected) => Some(Message::Close),
            };
            let mut next = first;
            let mut taken = 0;
            while let Some(message) = next.take() {
                match message {
                    Message::Event(event) => self.append(event.fields)?,
                    Message::Sync(reply) => {
                        self.commit()?;
                        let _ = reply.send(());
                    }
                    Message::Close => {
                        self.report_lost()?;
                        self.checkpoint()?;
                        return self.commit();
                    }
                }
                taken += 1;
                if taken < BATCH {
                    next = receiver.try_recv().ok();
                }
            }
            self.tick()?;
        }
    }

    /// When the writer must next act without a message: a commit or a checkpoint falling due.
    fn next_due(&self) -> Instant {
        let now = Instant::now();
        let mut due = now + IDLE;
        if let Some(since) = self.dirty_since {
            due = due.min(since + self.commit_interval);
        }
        if self.since_checkpoint > 0 {
            due = due.min(self.last_checkpoint + self.checkpoint_interval);
        }
        due
    }

    fn tick(&mut self) -> Result<(), AuditError> {
        self.report_lost()?;
        let now = Instant::now();
        if self.since_checkpoint >= self.checkpoint_records
            || (self.since_checkpoint > 0 && now >= self.last_checkpoint + self.checkpoint_interval)
        {
            self.checkpoint()?;
        }
        if self
            .dirty_since
            .is_some_and(|since| now >= since + self.commit_interval)
        {
            self.commit()?;
        }
        Ok(())
    }

    fn report_lost(&mut self) -> Result<(), AuditError> {
        let lost = self.shared.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let event = AuditEvent::new("records_lost").with_value("count", lost);
            self.append(event.fields)?;
        }
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.path.clone()
    }

    fn append(&mut self, mut fields: Map<String, Value>) -> Result<(), AuditError> {
        fields.insert(
            "ts".to_owned(),
            Value::from(unix_time::seconds_or_zero(SystemTime::now())),
        );
        let line = self.sealer.seal(fields).map_err(AuditError::Seal)?;
        self.write_line(&line)?;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.checkpoint_records {
            self.checkpoint()?;
        }
        if self.file_bytes >= self.rotate_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        let path = self.current_path();
        self.file.write_all(line).map_err(io_error(&path))?;
        self.file_bytes += line.len() as u64;
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Makes everything written durable (group commit).
    fn commit(&mut self) -> Result<(), AuditError> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let path = self.current_path();
        self.file.flush().map_err(io_error(&path))?;
        self.file.get_ref().sync_data().map_err(io_error(&path))?;
        self.dirty_since = None;
        Ok(())
    }

    /// A signed checkpoint over the head, in the chain and in `checkpoints.jsonl`, both durable.
    fn checkpoint(&mut self) -> Result<(), AuditError> {
        if self.since_checkpoint == 0 {
            return Ok(());
        }
        let mut fields = Map::new();
        fields.insert("kind".to_owned(), Value::from(checkpoint::KIND));
        fields.insert(
            "ts".to_owned(),
            Value::from(unix_time::seconds_or_zero(SystemTime::now())),
        );
        fields.insert("records".to_owned(), Value::from(self.since_checkpoint));
        let line = self
            .sealer
            .seal_checkpoint(fields, &self.signer)
            .map_err(AuditError::Seal)?;
        self.write_line(&line)?;
        self.commit()?;
        let path = self.dir.join(CHECKPOINTS_FILE);
        self.checkpoints
            .write_all(&line)
            .and_then(|()| self.checkpoints.sync_data())
            .map_err(io_error(&path))?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Closes the current file with a checkpoint and starts the next.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.checkpoint()?;
        self.commit()?;
        let path = self
            .dir
            .join(files::chain_file_name(self.sealer.next_seq()));
        let file = files::open_append(&path).map_err(io_error(&path))?;
        self.file = BufWriter::with_capacity(64 * 1024, file);
        self.path = path;
        self.file_bytes = 0;
        Ok(())
    }
}
