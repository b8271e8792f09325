//! The streaming chain check: one record at a time, constant memory, reporting the first break
//! and what kind of edit it is.
//!
//! How each edit shows (docs/AUDIT.md):
//! - a record's content changed, its `hash` kept: its hash does not match (`edited` at it);
//! - changed with its `hash` recomputed: the next record's `prev` does not match (`edited` at it);
//! - removed: a gap in `seq` (`removed` at the first missing seq);
//! - reordered: a gap whose missing seq turns up later (`reordered` at the first missing seq);
//! - inserted: a second record with a seq already seen (`inserted` at that seq);
//! - a rewritten run of records with every hash recomputed: the next checkpoint's signature no
//!   longer verifies (`forged_checkpoint`), or the chain differs from a checkpoint kept apart;
//! - a truncated tail: a checkpoint kept apart names a seq past the chain's end (`truncated`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::checkpoint::{self, CheckpointKey};
use crate::seal::record_hash;
use crate::{HASH, OMITTED, PREV, SEQ};

/// What the check accepts.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Checks checkpoint signatures with this key; without one they are counted as unverified.
    pub key: Option<CheckpointKey>,
    /// Accepts an export's stand-ins (`"omitted": true`: seq, prev and hash only) for records a
    /// filter left out. Never set this for a log: a stand-in hides a record's content.
    pub allow_omitted: bool,
    /// Skips lines without `seq` and `hash` before the first chained record (an agent log
    /// written before it was chained).
    pub allow_unchained_prefix: bool,
    /// The first record must be the chain's first (`seq` 0, `prev` zeros).
    pub require_genesis: bool,
}

/// The kind of edit a break reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakKind {
    /// A line that is not a sealed record.
    Malformed,
    /// A record whose content changed.
    Edited,
    /// Records missing.
    Removed,
    /// Records out of order.
    Reordered,
    /// A record that was not in the chain.
    Inserted,
    /// Records missing at the end, past a checkpoint kept apart.
    Truncated,
    /// A checkpoint whose signature does not verify with the checkpoint key.
    ForgedCheckpoint,
}

impl BreakKind {
    /// The name the report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Edited => "edited",
            Self::Removed => "removed",
            Self::Reordered => "reordered",
            Self::Inserted => "inserted",
            Self::Truncated => "truncated",
            Self::ForgedCheckpoint => "forged_checkpoint",
        }
    }
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The first bad seq.
    pub seq: u64,
    /// What kind of edit.
    pub kind: BreakKind,
    /// A human explanation.
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {}: {}: {}",
            self.seq,
            self.kind.as_str(),
            self.detail
        )
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records that chained (stand-ins included).
    pub records: u64,
    /// The first record's seq.
    pub first_seq: Option<u64>,
    /// The last good record's seq.
    pub last_seq: Option<u64>,
    /// The last good record's hash (hex).
    pub head: Option<String>,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Checkpoints not checked (no key given).
    pub unverified_checkpoints: u64,
    /// The last verified checkpoint's seq.
    pub last_checkpoint_seq: Option<u64>,
    /// Export stand-ins for records a filter left out.
    pub omitted: u64,
    /// Unchained lines before the chain began (agent logs from before the chain).
    pub unchained_prefix: u64,
    /// The first break, if any.
    pub first_break: Option<Break>,
}

/// A break whose kind depends on what follows.
#[derive(Debug, Clone, Copy)]
enum Tentative {
    /// Seqs `from..to` were missing: reordered if one of them turns up.
    Gap { from: u64, to: u64 },
    /// Record `seq` did not link to `expected`: an insertion if the next record is a second
    /// `seq` that does.
    PrevMismatch { seq: u64, expected: [u8; 32] },
}

/// Checks a chain record by record ([`ChainChecker::push`]), then [`ChainChecker::finish`].
#[derive(Debug)]
pub struct ChainChecker {
    options: CheckOptions,
    external: BTreeMap<u64, [u8; 32]>,
    last: Option<(u64, [u8; 32])>,
    tentative: Option<Tentative>,
    report: CheckReport,
}

struct Parsed {
    record: Map<String, Value>,
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
}

fn hex32(value: Option<&Value>) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value?.as_str()?, &mut out).ok()?;
    Some(out)
}

fn parse(line: &[u8]) -> Result<Parsed, Option<Map<String, Value>>> {
    let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(line) else {
        return Err(None);
    };
    let seq = record.get(SEQ).and_then(Value::as_u64);
    let prev = hex32(record.get(PREV));
    let hash = hex32(record.get(HASH));
    match (seq, prev, hash) {
        (Some(seq), Some(prev), Some(hash)) => Ok(Parsed {
            record,
            seq,
            prev,
            hash,
        }),
        _ => Err(Some(record)),
    }
}

impl ChainChecker {
    /// A check with `options`.
    pub fn new(options: CheckOptions) -> Self {
        Self {
            options,
            external: BTreeMap::new(),
            last: None,
            tentative: None,
            report: CheckReport::default(),
        }
    }

    /// Adds a checkpoint kept apart from the chain (a line of `checkpoints.jsonl`): it must be
    /// signed by the checkpoint key, and the chain must hold the same record at its seq and
    /// reach at least that far.
    pub fn add_external_checkpoint(&mut self, line: &[u8]) -> Result<(), Break> {
        let parsed = parse(line).map_err(|_| Break {
            seq: 0,
            kind: BreakKind::Malformed,
            detail: "a line of the checkpoint file is not a sealed record".to_owned(),
        })?;
        let forged = |detail: String| Break {
            seq: parsed.seq,
            kind: BreakKind::ForgedCheckpoint,
            detail,
        };
        let Some(key) = &self.options.key else {
            return Err(forged(
                "checkpoints kept apart need the checkpoint key to be checked".to_owned(),
            ));
        };
        if record_hash(&parsed.record).ok() != Some(parsed.hash) {
            return Err(forged(
                "the checkpoint's content does not match its hash".to_owned(),
            ));
        }
        key.verify(&parsed.record)
            .map_err(|error| forged(format!("kept-apart checkpoint: {error}")))?;
        self.external.insert(parsed.seq, parsed.hash);
        Ok(())
    }

    fn expected_seq(&self) -> u64 {
        self.last.map_or(0, |(seq, _)| seq.saturating_add(1))
    }

    fn fail(&mut self, seq: u64, kind: BreakKind, detail: impl Into<String>) {
        self.report.first_break = Some(Break {
            seq,
            kind,
            detail: detail.into(),
        });
    }

    /// Checks the next line of the chain (without its newline).
    pub fn push(&mut self, line: &[u8]) {
        if self.report.first_break.is_some() {
            self.classify(line);
            return;
        }
        let parsed = match parse(line) {
            Ok(parsed) => parsed,
            Err(Some(_)) if self.options.allow_unchained_prefix && self.last.is_none() => {
                self.report.unchained_prefix += 1;
                return;
            }
            Err(_) => {
                let seq = self.expected_seq();
                self.fail(
                    seq,
                    BreakKind::Malformed,
                    "a line that is not a sealed record (seq, prev, hash)",
                );
                return;
            }
        };
        let seq = parsed.seq;
        let omitted = parsed.record.get(OMITTED) == Some(&Value::Bool(true));
        if omitted && !self.options.allow_omitted {
            self.fail(
                seq,
                BreakKind::Edited,
                "an export's stand-in for an omitted record in a log: the record's content is gone",
            );
            return;
        }
        let computed = if omitted {
            parsed.hash
        } else {
            match record_hash(&parsed.record) {
                Ok(hash) => hash,
                Err(_) => {
                    self.fail(
                        seq,
                        BreakKind::Malformed,
                        "the record has no canonical form",
                    );
                    return;
                }
            }
        };
        if computed != parsed.hash {
            self.fail(
                seq,
                BreakKind::Edited,
                "the record's content does not match its hash",
            );
            return;
        }
        match self.last {
            None => {
                if self.options.require_genesis && (seq != 0 || parsed.prev != [0; 32]) {
                    self.fail(
                        0,
                        BreakKind::Removed,
                        format!("the chain starts at seq {seq}, not at its first record"),
                    );
                    return;
                }
                self.report.first_seq = Some(seq);
            }
            Some((last, head)) if seq == last.saturating_add(1) => {
                if parsed.prev != head {
                    self.fail(
                        last,
                        BreakKind::Edited,
                        format!("record {seq} does not link to this record's hash"),
                    );
                    self.tentative = Some(Tentative::PrevMismatch {
                        seq,
                        expected: head,
                    });
                    return;
                }
            }
            Some((last, _)) if seq <= last => {
                self.fail(
                    seq,
                    BreakKind::Inserted,
                    format!("a record with seq {seq} after seq {last}"),
                );
                return;
            }
            Some((last, _)) => {
                let from = last.saturating_add(1);
                self.fail(
                    from,
                    BreakKind::Removed,
                    format!("records {from}..{} are missing", seq - 1),
                );
                self.tentative = Some(Tentative::Gap { from, to: seq });
                return;
            }
        }
        if !omitted && parsed.record.get("kind").and_then(Value::as_str) == Some(checkpoint::KIND) {
            match &self.options.key {
                Some(key) => {
                    if let Err(error) = key.verify(&parsed.record) {
                        self.fail(seq, BreakKind::ForgedCheckpoint, error.to_string());
                        return;
                    }
                    self.report.checkpoints += 1;
                    self.report.last_checkpoint_seq = Some(seq);
                }
                None => self.report.unverified_checkpoints += 1,
            }
        }
        if let Some(kept) = self.external.get(&seq)
            && *kept != computed
        {
            self.fail(
                seq,
                BreakKind::Edited,
                "the record differs from the signed checkpoint kept apart",
            );
            return;
        }
        if omitted {
            self.report.omitted += 1;
        }
        self.report.records += 1;
        self.report.last_seq = Some(seq);
        self.report.head = Some(hex::encode(computed));
        self.last = Some((seq, computed));
    }

    /// After a break: what follows may say what kind of edit it was.
    fn classify(&mut self, line: &[u8]) {
        let Some(tentative) = self.tentative else {
            return;
        };
        let Ok(parsed) = parse(line) else {
            return;
        };
        match tentative {
            Tentative::Gap { from, to } => {
                if (from..to).contains(&parsed.seq) {
                    self.tentative = None;
                    self.fail(
                        from,
                        BreakKind::Reordered,
                        format!("record {} appears after record {to}", parsed.seq),
                    );
                }
            }
            Tentative::PrevMismatch { seq, expected } => {
                self.tentative = None;
                if parsed.seq == seq && parsed.prev == expected {
                    self.fail(
                        seq,
                        BreakKind::Inserted,
                        format!("a record with seq {seq} that is not the chain's precedes it"),
                    );
                }
            }
        }
    }

    /// The report: the first break, or a truncated tail if a checkpoint kept apart lies past the
    /// chain's end.
    pub fn finish(mut self) -> CheckReport {
        if self.report.first_break.is_none() {
            let next = self.expected_seq();
            if let Some((&seq, _)) = self.external.range(next..).next() {
                self.fail(
                    next,
                    BreakKind::Truncated,
                    format!(
                        "the chain ends before seq {next}; a signed checkpoint at seq {seq} says it went on"
                    ),
                );
            }
        }
        self.report
    }
}
