//! Export by time range and filter, as JSONL (verifiable) or CSV (for reading), streaming.
//!
//! A JSONL export holds every matching record whole, and for each record the filter left out
//! between the first match and the next checkpoint after the range a stand-in
//! `{"hash", "omitted": true, "prev", "seq"}`; the checkpoints in that span are whole. So the
//! chain links from the first exported record to a signed checkpoint: an auditor checks each
//! whole record against its hash, each link, and the checkpoint signature, and knows every
//! exported record is the log's, unchanged and in its place (docs/AUDIT.md). The CSV export holds
//! the matching records only, with their `seq`, `prev` and `hash` to cross-check.

use std::io::{BufRead, Write};

use hwsign_audit_chain::{HASH, OMITTED, PREV, SEQ, canonical_json, checkpoint};
use serde_json::{Map, Value};

use crate::audit::files::read_line;
use crate::audit::log::AuditError;

/// Which records to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportQuery {
    /// Records with `ts` at or after this (seconds since the epoch).
    pub from: Option<i64>,
    /// Records with `ts` before this.
    pub to: Option<i64>,
    /// Every `(field, value)` must equal the record's top-level field (`kind=decision`,
    /// `code=stale_date`, `device=…`).
    pub filter: Vec<(String, String)>,
}

/// The export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// One JSON record per line, with stand-ins for omitted records: verifiable.
    #[default]
    Jsonl,
    /// A header and one row per matching record.
    Csv,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records matching the query.
    pub matched: u64,
    /// Stand-ins for records left out.
    pub omitted: u64,
    /// Checkpoints included whole.
    pub checkpoints: u64,
}

/// The CSV columns.
const CSV_COLUMNS: [&str; 16] = [
    "seq",
    "ts",
    "kind",
    "outcome",
    "code",
    "key",
    "claimed_key",
    "device",
    "user",
    "method",
    "route",
    "source",
    "user_agent",
    "detail",
    "prev",
    "hash",
];

impl ExportQuery {
    pub(crate) fn in_range(&self, ts: i64) -> bool {
        self.from.is_none_or(|from| ts >= from) && self.to.is_none_or(|to| ts < to)
    }

    pub(crate) fn matches(&self, record: &Map<String, Value>) -> bool {
        self.filter.iter().all(|(field, wanted)| {
            record.get(field).is_some_and(|value| match value {
                Value::String(text) => text == wanted,
                other => wanted.as_str() == other.to_string().as_str(),
            })
        })
    }
}

/// A time in a query: seconds since the epoch, or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    hwsign_proto::SigningTime::parse_rfc3339_utc(text)
        .ok()
        .map(hwsign_proto::SigningTime::unix)
}

/// Streams the records of `inputs` (chain files in order) that `query` selects to `out`.
pub fn export<R: BufRead, W: Write>(
    inputs: impl IntoIterator<Item = (String, R)>,
    query: &ExportQuery,
    format: ExportFormat,
    out: &mut W,
) -> Result<ExportSummary, AuditError> {
    let mut summary = ExportSummary::default();
    if format == ExportFormat::Csv {
        write_csv_row(out, CSV_COLUMNS.iter().map(|c| (*c).to_owned()))?;
    }
    // Whether a record has been exported: from then on every record is accounted for.
    let mut started = false;
    // Past the range: stop at the next checkpoint.
    let mut closing = false;
    let mut line = Vec::new();
    'inputs: for (name, mut reader) in inputs {
        while read_line(&mut reader, &mut line).map_err(|source| AuditError::Io {
            path: name.clone().into(),
            source,
        })? {
            let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(&line) else {
                return Err(AuditError::Io {
                    path: name.into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a line is not a JSON record (run audit verify)",
                    ),
                });
            };
            let ts = record.get("ts").and_then(Value::as_i64).unwrap_or(0);
            let is_checkpoint =
                record.get("kind").and_then(Value::as_str) == Some(checkpoint::KIND);
            if query.to.is_some_and(|to| ts >= to) {
                if !started {
                    break 'inputs;
                }
                closing = true;
            }
            let selected = !closing && query.in_range(ts) && query.matches(&record);
            if selected {
                summary.matched += 1;
                started = true;
                write_record(out, format, &line, &record)?;
            } else if started && is_checkpoint {
                summary.checkpoints += 1;
                if format == ExportFormat::Jsonl {
                    write_line(out, &line)?;
                }
                if closing {
                    break 'inputs;
                }
            } else if started && format == ExportFormat::Jsonl {
                summary.omitted += 1;
                write_line(out, &stand_in(&record))?;
            }
        }
    }
    out.flush().map_err(AuditError::Output)?;
    Ok(summary)
}

fn write_line<W: Write>(out: &mut W, line: &[u8]) -> Result<(), AuditError> {
    out.write_all(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(AuditError::Output)
}

fn write_record<W: Write>(
    out: &mut W,
    format: ExportFormat,
    line: &[u8],
    record: &Map<String, Value>,
) -> Result<(), AuditError> {
    match format {
        ExportFormat::Jsonl => write_line(out, line),
        ExportFormat::Csv => write_csv_row(
            out,
            CSV_COLUMNS.iter().map(|column| match record.get(*column) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            }),
        ),
    }
}

/// A record's stand-in: its seq, prev and hash.
fn stand_in(record: &Map<String, Value>) -> Vec<u8> {
    let mut stub = Map::new();
    for field in [SEQ, PREV, HASH] {
        if let Some(value) = record.get(field) {
            stub.insert(field.to_owned(), value.clone());
        }
    }
    stub.insert(OMITTED.to_owned(), Value::Bool(true));
    // Only strings, integers and a boolean: always canonical.
    canonical_json(&Value::Object(stub)).unwrap_or_default()
}

fn write_csv_row<W: Write>(
    out: &mut W,
    cells: impl Iterator<Item = String>,
) -> Result<(), AuditError> {
    let mut row = String::new();
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            row.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            row.push('"');
            row.push_str(&cell.replace('"', "\"\""));
            row.push('"');
        } else {
            row.push_str(&cell);
        }
    }
    row.push_str("\r\n");
    out.write_all(row.as_bytes()).map_err(AuditError::Output)
}
