//! `hwsign audit verify [FILE]`: check the agent's hash-chained audit log (docs/AUDIT.md).

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use hwsign_audit_chain::{ChainChecker, CheckOptions};

/// The longest line read; a longer one is an error, not a record.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// `hwsign audit …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the agent's audit log: reports the first edited, removed, reordered or inserted
    /// record (its seq); exits 1 if the chain is broken. Unchained lines written before the
    /// chain began (an older agent) are counted, not checked.
    Verify {
        /// The log [default: the agent configuration's audit_log].
        file: Option<PathBuf>,
        /// The agent configuration that names the log [default: the agent's default file].
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub(crate) fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { file, config } = command;
    let path = match file {
        Some(path) => path,
        None => hwsign_agent::Config::load_default(config.as_deref())?.audit_log,
    };
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut checker = ChainChecker::new(CheckOptions {
        allow_unchained_prefix: true,
        ..CheckOptions::default()
    });
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() as u64 > MAX_LINE_BYTES {
            anyhow::bail!("{}: a line is longer than 64 KiB", path.display());
        }
        if !line.is_empty() {
            checker.push(&line);
        }
    }
    let report = checker.finish();
    println!(
        "{}: {} chained records (seq {}..={}), {} unchained lines before the chain, head {}",
        path.display(),
        report.records,
        report
            .first_seq
            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        report
            .last_seq
            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        report.unchained_prefix,
        report.head.as_deref().unwrap_or("-"),
    );
    match report.first_break {
        None => Ok(ExitCode::SUCCESS),
        Some(broken) => {
            eprintln!("hwsign: the audit chain is broken at {broken}");
            Ok(ExitCode::FAILURE)
        }
    }
}
