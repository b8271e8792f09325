//! The audit log: one JSON object per line, appended (O_APPEND, mode 0600) for every key
//! creation and every signing decision, granted or refused. Each record is written with a single
//! `write` so that concurrent records never interleave. If a record cannot be written, the
//! operation fails: the agent does not sign what it cannot account for.
//!
//! Records are hash-chained (docs/AUDIT.md, the `hwsign-audit-chain` crate): each carries `seq`,
//! `prev` (the previous record's hash) and its own `hash`, so `hwsign audit verify` finds an
//! edited, removed, reordered or inserted record. A log written before the chain (no `hash` on
//! its last line) is continued by a new chain whose first record is
//! `{"op": "chain_start", "migrated": true}`; the unchained lines before it stay as they were.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use hwsign_audit_chain::Sealer;
use serde::Serialize;
use serde_json::{Map, Value};

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

/// How much of the log's end is read to find its last record when it is opened.
const TAIL_BYTES: u64 = 64 * 1024;

/// The open audit log.
#[derive(Debug)]
pub(crate) struct AuditLog {
    path: PathBuf,
    file: Mutex<(File, Sealer)>,
}

/// The chain to continue in a log whose content ends with `tail`: its last record's, or a new
/// one (and whether an unchained log is being migrated).
fn resume(tail: &[u8]) -> (Sealer, Option<bool>) {
    let body = tail.strip_suffix(b"\n").unwrap_or(tail);
    if body.is_empty() {
        return (Sealer::genesis(), Some(false));
    }
    let last = body
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(body, |i| &body[i + 1..]);
    match Sealer::resume(last) {
        Ok(sealer) if tail.ends_with(b"\n") => (sealer, None),
        _ => (Sealer::genesis(), Some(true)),
    }
}

impl AuditLog {
    /// Opens (creating with mode 0600) `path` for appending.
    /// Continues the log's chain, or starts one (`chain_start`) in a new or unchained log.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let (mut sealer, start) = resume(&tail);
        if let Some(migrated) = start {
            if !tail.is_empty() && !tail.ends_with(b"\n") {
                // A torn last line (a crash mid-write) is ended, not continued.
                file.write_all(b"\n")?;
            }
            let mut record = Map::new();
            record.insert("op".to_owned(), Value::from("chain_start"));
            record.insert("ts".to_owned(), Value::from(unix_time::now()));
            record.insert("outcome".to_owned(), Value::from("ok"));
            record.insert("migrated".to_owned(), Value::from(migrated));
            let line = sealer.seal(record).map_err(io::Error::other)?;
            file.write_all(&line)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new((file, sealer)),
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

    /// Appends one record, sealed into the chain.
    fn append(&self, record: &Record<'_>) -> io::Result<()> {
        let Value::Object(fields) = serde_json::to_value(record).map_err(io::Error::other)? else {
            return Err(io::Error::other("an audit record is not a JSON object"));
        };
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, sealer) = &mut *guard;
        // The head advances only once the line is written.
        let mut next = sealer.clone();
        let line = next.seal(fields).map_err(io::Error::other)?;
        file.write_all(&line)?;
        *sealer = next;
        Ok(())
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

#[cfg(test)]
mod tests {
    use hwsign_audit_chain::{BreakKind, ChainChecker, CheckOptions, CheckReport};

    use super::*;

    struct Refused;

    impl Outcome for Refused {
        fn outcome(&self) -> &'static str {
            "key_not_permitted"
        }
    }

    fn peer() -> Peer {
        Peer {
            uid: 1000,
            gid: 1000,
            pid: Some(42),
        }
    }

    fn write_records(path: &Path, count: usize) -> Result<(), AuditError> {
        let log = AuditLog::open(path).map_err(|source| AuditError {
            path: path.to_path_buf(),
            source,
        })?;
        for i in 0..count {
            let mut record = Record::new(Operation::Sign, &peer());
            record.key_id = Some("hk1_test");
            let result: Result<(), Refused> = if i % 2 == 0 { Ok(()) } else { Err(Refused) };
            log.record_outcome(record, &result)?;
        }
        Ok(())
    }

    fn check(text: &str, options: CheckOptions) -> CheckReport {
        let mut checker = ChainChecker::new(options);
        for line in text.lines() {
            checker.push(line.as_bytes());
        }
        checker.finish()
    }

    #[test]
    fn records_chain_from_a_chain_start_and_across_reopening()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.jsonl");
        write_records(&path, 3)?;
        write_records(&path, 2)?;
        let text = std::fs::read_to_string(&path)?;
        let strict = CheckOptions {
            require_genesis: true,
            ..CheckOptions::default()
        };
        let report = check(&text, strict.clone());
        assert_eq!(report.first_break, None);
        assert_eq!(report.records, 6, "one chain_start, then five records");
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.contains("\"op\":\"chain_start\""))
        );
        assert_eq!(text.matches("key_not_permitted").count(), 2);
        // A record removed is found.
        let without: Vec<&str> = text.lines().filter(|l| !l.contains("\"seq\":2,")).collect();
        let report = check(&without.join("\n"), strict);
        assert_eq!(
            report.first_break.map(|b| (b.seq, b.kind)),
            Some((2, BreakKind::Removed))
        );
        Ok(())
    }

    #[test]
    fn an_unchained_log_is_continued_by_a_migrated_chain() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.jsonl");
        std::fs::write(
            &path,
            "{\"ts\":1,\"op\":\"sign\",\"outcome\":\"ok\",\"uid\":1000}\n{\"ts\":2,\"op\":\"sign\",\"outcome\":\"ok\",\"uid\":1000}\n",
        )?;
        write_records(&path, 2)?;
        let text = std::fs::read_to_string(&path)?;
        let report = check(
            &text,
            CheckOptions {
                allow_unchained_prefix: true,
                ..CheckOptions::default()
            },
        );
        assert_eq!(report.first_break, None);
        assert_eq!(report.unchained_prefix, 2);
        assert_eq!(report.records, 3);
        assert!(text.contains("\"migrated\":true"));
        Ok(())
    }
}
