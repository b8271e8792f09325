//! The audit log: one JSON object per line, appended (O_APPEND, mode 0600) for every key
//! creation and every signing decision, granted or refused. Each record is written with a single
//! `write` so that concurrent records never interleave. If a record cannot be written, the
//! operation fails: the agent does not sign what it cannot account for.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::peer::Peer;
use crate::unix_time;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Operation {
    /// `POST /v1/sign`.
    Sign,
    /// `POST /v1/keys`.
    CreateKey,
    /// `POST /v1/keys/{id}/activate-credential`.
    ActivateCredential,
    /// The hardware key signed a delegation statement for a new session key (delegated mode).
    IssueDelegation,
}

/// One audit record. Never holds secrets or bodies: identifiers and request coordinates only.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record<'a> {
    /// Seconds since the epoch.
    pub(crate) ts: i64,
    /// What was done.
    pub(crate) op: Operation,
    /// `ok` or the wire error code (set by [`AuditLog::record_outcome`]).
    pub(crate) outcome: &'static str,
    /// Caller uid.
    pub(crate) uid: u32,
    /// Caller pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<i32>,
    /// Key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<&'a str>,
    /// Backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend: Option<&'a str>,
    /// Key label (create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) label: Option<&'a str>,
    /// Audience (sign).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) audience: Option<&'a str>,
    /// Method (sign).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) method: Option<&'a str>,
    /// Authority (sign).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<&'a str>,
    /// Path without the query (sign).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<&'a str>,
    /// Presigned URL lifetime (sign, presigned mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) presign_expires_secs: Option<u64>,
    /// The session key that signed (sign, delegated mode) or was authorized (issue_delegation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_key_id: Option<&'a str>,
    /// End of the statement's validity, seconds since the epoch (issue_delegation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) not_after: Option<i64>,
}

impl<'a> Record<'a> {
    /// A record of `op` by `peer`, now, with every optional field empty; its outcome is filled
    /// in by [`AuditLog::record_outcome`].
    pub(crate) fn new(op: Operation, peer: &Peer) -> Self {
        Self {
            ts: unix_time::now(),
            op,
            outcome: "ok",
            uid: peer.uid,
            pid: peer.pid,
            key_id: None,
            backend: None,
            label: None,
            audience: None,
            method: None,
            host: None,
            path: None,
            presign_expires_secs: None,
            session_key_id: None,
            not_after: None,
        }
    }
}

/// The open audit log.
#[derive(Debug)]
pub(crate) struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating with mode 0600) `path` for appending.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Records `record` with the outcome of `result` (`ok` or its wire code). The caller releases
    /// `result` (a signature, a key, a recovered secret) only once this succeeded:
    ///
    /// ```text
    /// ctx.audit.record_outcome(record, &result)?; // not on record: not released
    /// let signature = result?;
    /// ```
    pub(crate) fn record_outcome<T, E: Outcome>(
        &self,
        mut record: Record<'_>,
        result: &Result<T, E>,
    ) -> Result<(), AuditError> {
        record.outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.append(&record).map_err(|source| AuditError {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends one record.
    fn append(&self, record: &Record<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line)
    }
}

/// The wire code an operation's failure is recorded with.
pub(crate) trait Outcome {
    /// `snake_case` wire code, as the caller receives it.
    fn outcome(&self) -> &'static str;
}

/// A record could not be written; the operation it describes is not released.
#[derive(Debug, thiserror::Error)]
#[error("cannot append to the audit log {}", path.display())]
pub(crate) struct AuditError {
    path: PathBuf,
    #[source]
    source: io::Error,
}
