//! `[audit]`: where the decision log goes, how often it is committed and checkpointed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The decision log's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The directory of this replica's chain (created mode 0700). One directory per process.
    pub dir: PathBuf,
    /// The checkpoint key: a P-256 private key, PKCS#8 PEM (`hwsign-verifier audit keygen`).
    pub checkpoint_key: PathBuf,
    /// A checkpoint after this many records.
    #[serde(default = "default_checkpoint_records")]
    pub checkpoint_every_records: u64,
    /// A checkpoint at least this often while records arrive (seconds).
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_every_secs: u64,
    /// Records queued between the request path and the writer.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Group commit: the longest a written record waits for `fdatasync` (milliseconds).
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    /// A new chain file after this many bytes.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// What a full queue or a failed writer does to the request it cannot record.
    #[serde(default)]
    pub when_full: WhenFull,
}

/// What happens to a decision the log cannot take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Fail closed: the request is refused (`verifier_unavailable`).
    #[default]
    Refuse,
    /// Answer anyway and count the record as lost (a `records_lost` record says how many).
    Drop,
}

impl AuditSettings {
    /// Settings with the defaults for `dir` and `checkpoint_key`.
    pub fn new(dir: impl Into<PathBuf>, checkpoint_key: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            checkpoint_key: checkpoint_key.into(),
            checkpoint_every_records: default_checkpoint_records(),
            checkpoint_every_secs: default_checkpoint_secs(),
            queue_capacity: default_queue_capacity(),
            commit_interval_ms: default_commit_interval(),
            rotate_bytes: default_rotate_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

fn default_checkpoint_records() -> u64 {
    10_000
}

fn default_checkpoint_secs() -> u64 {
    10
}

fn default_queue_capacity() -> usize {
    65_536
}

fn default_commit_interval() -> u64 {
    10
}

fn default_rotate_bytes() -> u64 {
    256 * 1024 * 1024
}
