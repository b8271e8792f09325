//! `audit verify` as a library function: check chain files (or an export) and the checkpoints
//! kept apart.

use std::io::BufRead;

use hwsign_audit_chain::{ChainChecker, CheckOptions, CheckReport};

use crate::audit::files::read_line;
use crate::audit::log::AuditError;

/// Checks the chain read from `inputs`, in order (a log's files oldest first, or one export),
/// against the checkpoints in `checkpoints` (a `checkpoints.jsonl`, when given). Streams: memory
/// does not grow with the log. A line longer than 64 KiB is an I/O error, not a break.
pub fn verify<R: BufRead, C: BufRead>(
    inputs: impl IntoIterator<Item = (String, R)>,
    checkpoints: Option<C>,
    options: CheckOptions,
) -> Result<CheckReport, AuditError> {
    let mut checker = ChainChecker::new(options);
    let mut line = Vec::new();
    if let Some(mut kept) = checkpoints {
        while read_line(&mut kept, &mut line).map_err(|source| AuditError::Io {
            path: "checkpoints".into(),
            source,
        })? {
            if line.is_empty() {
                continue;
            }
            if let Err(broken) = checker.add_external_checkpoint(&line) {
                return Ok(CheckReport {
                    first_break: Some(broken),
                    ..CheckReport::default()
                });
            }
        }
    }
    for (name, mut reader) in inputs {
        while read_line(&mut reader, &mut line).map_err(|source| AuditError::Io {
            path: name.clone().into(),
            source,
        })? {
            if !line.is_empty() {
                checker.push(&line);
            }
        }
    }
    Ok(checker.finish())
}
