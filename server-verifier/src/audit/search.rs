//! Search: one bounded page of the records an [`ExportQuery`] selects, after a cursor.
//!
//! The admin API's `GET /admin/v1/audit` and the console read the log through this. It streams
//! the chain files like [`export`](crate::audit::export): memory holds one page, whatever the
//! log's size. A chain file is skipped whole when the next file starts at or before the cursor
//! (file names carry their first seq).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::audit::export::ExportQuery;
use crate::audit::files::read_line;
use crate::audit::log::AuditError;

/// The most records one page holds.
pub const MAX_PAGE: usize = 1000;

/// One page of matching records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchPage {
    /// The records, in chain order, whole.
    pub records: Vec<Map<String, Value>>,
    /// The cursor for the next page (the last record's seq) when more may match.
    pub next_after_seq: Option<u64>,
}

/// The records of `inputs` (chain files in order) that `query` selects with `seq` greater than
/// `after_seq`, at most `limit` (bounded by [`MAX_PAGE`]).
pub fn search<R: BufRead>(
    inputs: impl IntoIterator<Item = (String, R)>,
    query: &ExportQuery,
    after_seq: Option<u64>,
    limit: usize,
) -> Result<SearchPage, AuditError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut page = SearchPage::default();
    let mut line = Vec::new();
    for (name, mut reader) in inputs {
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
            let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
            if after_seq.is_some_and(|after| seq <= after) {
                continue;
            }
            let ts = record.get("ts").and_then(Value::as_i64).unwrap_or(0);
            if query.to.is_some_and(|to| ts >= to) {
                return Ok(page);
            }
            if !(query.in_range(ts) && query.matches(&record)) {
                continue;
            }
            if page.records.len() == limit {
                page.next_after_seq = page
                    .records
                    .last()
                    .and_then(|last| last.get("seq"))
                    .and_then(Value::as_u64);
                return Ok(page);
            }
            page.records.push(record);
        }
    }
    Ok(page)
}

/// The chain files of `dir` a search after `after_seq` must read: a file is left out when the
/// next one starts at or before `after_seq + 1`.
pub fn files_after(dir: &Path, after_seq: Option<u64>) -> std::io::Result<Vec<PathBuf>> {
    let files = crate::audit::chain_files(dir)?;
    let Some(after) = after_seq else {
        return Ok(files);
    };
    let first_seq = |path: &PathBuf| {
        path.file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("chain-"))
            .and_then(|name| name.strip_suffix(".jsonl"))
            .and_then(|seq| seq.parse::<u64>().ok())
    };
    let keep_from = files
        .iter()
        .rposition(|path| first_seq(path).is_some_and(|first| first <= after.saturating_add(1)))
        .unwrap_or(0);
    Ok(files.into_iter().skip(keep_from).collect())
}
