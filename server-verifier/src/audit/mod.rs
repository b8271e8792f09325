//! The audit trail (docs/AUDIT.md): every authentication decision, and every admin, enrollment
//! and recovery action, appended to a hash-chained log with signed checkpoints.
//!
//! # Storage
//! Each verifier process appends to its own chain in a local directory ([`AuditSettings::dir`]):
//! `chain-<first seq>.jsonl` files (one canonical JSON record per line, rotated by size) and
//! `checkpoints.jsonl` (a copy of every checkpoint, kept apart so a truncated tail shows). The
//! request path only enqueues an [`AuditEvent`] on a bounded channel ([`AuditLog::record`]); one
//! writer thread numbers, links, hashes and writes the records and makes them durable by group
//! commit (`fdatasync` at most every [`AuditSettings::commit_interval_ms`]). PostgreSQL is not on
//! this path: a shared database would serialize every replica's decisions behind one lock and
//! one WAL, and a chain must be appended by one writer anyway.
//!
//! # When the log cannot keep up
//! A full queue or a failed writer (disk full, I/O error) refuses the request that cannot be
//! recorded (`verifier_unavailable`) unless [`WhenFull::Drop`] is configured, which answers and
//! counts the lost records in a `records_lost` record. A request is answered once its record is
//! queued, before it is durable: a crash loses at most the records of the last commit interval
//! plus the queue (docs/AUDIT.md, durability).

mod decision;
mod event;
mod export;
mod files;
mod log;
mod search;
mod settings;
mod verify;
mod writer;

pub use decision::DecisionContext;
pub(crate) use decision::event as decision_event;
pub use event::AuditEvent;
pub use export::{ExportFormat, ExportQuery, ExportSummary, export, parse_time};
pub use files::{CHECKPOINTS_FILE, MAX_LINE_BYTES, chain_files};
pub use hwsign_audit_chain::checkpoint::{CheckpointKey, CheckpointSigner};
pub use hwsign_audit_chain::{Break, BreakKind, CheckOptions, CheckReport};
pub use log::{AuditError, AuditLog, AuditUnavailable};
pub use search::{MAX_PAGE, SearchPage, files_after, search};
pub use settings::{AuditSettings, WhenFull};
pub use verify::verify;
