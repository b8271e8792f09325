//! The chain directory: `chain-<first seq, 20 digits>.jsonl` files and `checkpoints.jsonl`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The file holding a copy of every checkpoint, beside the chain files.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// The longest record line read back (export, verify, resume); a longer line is an error.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How much of a chain file's end is read to find its last record.
const TAIL_BYTES: u64 = 2 * MAX_LINE_BYTES as u64;

/// The chain files in `dir`, in chain order.
pub fn chain_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("chain-") && name.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The name of the chain file whose first record is `seq`.
pub(crate) fn chain_file_name(seq: u64) -> String {
    format!("chain-{seq:020}.jsonl")
}

pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The last complete line of `path`, after cutting off a torn (unterminated) last line, and how
/// many bytes were cut.
pub(crate) fn last_line_repairing(path: &Path) -> io::Result<(Option<Vec<u8>>, u64)> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let complete = match tail.iter().rposition(|byte| *byte == b'\n') {
        Some(end) => end + 1,
        None if start == 0 => 0,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the chain file's last line is longer than a record may be",
            ));
        }
    };
    let torn = (tail.len() - complete) as u64;
    if torn > 0 {
        file.set_len(len - torn)?;
        file.sync_data()?;
    }
    let lines = &tail[..complete];
    let body = lines.strip_suffix(b"\n").unwrap_or(lines);
    if body.is_empty() {
        return Ok((None, torn));
    }
    let begin = body
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |i| i + 1);
    if begin == 0 && start > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the chain file's last line is longer than a record may be",
        ));
    }
    Ok((Some(body[begin..].to_vec()), torn))
}

/// Reads one line (without its newline) of at most [`MAX_LINE_BYTES`] into `line`; false at the
/// end of the input.
pub(crate) fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let read = reader.by_ref().take(limit).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a record line is longer than 64 KiB",
        ));
    }
    Ok(true)
}
