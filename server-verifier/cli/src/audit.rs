//! `hwsign-verifier audit`: the checkpoint key, and checking and exporting a decision log
//! (docs/AUDIT.md).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use hwsign_verifier::audit::{
    CHECKPOINTS_FILE, CheckOptions, CheckReport, CheckpointKey, CheckpointSigner, ExportFormat,
    ExportQuery, chain_files,
};

/// `hwsign-verifier audit …`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Create a checkpoint key: the private key (PKCS#8 PEM, mode 0600) at OUT and its public
    /// key (SPKI PEM, for `audit verify --key`) at OUT.pub.
    Keygen {
        /// The private key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a decision log (a directory, or chain files in order) or an export: reports the
    /// first edited, removed, reordered or inserted record, a forged checkpoint, or a tail
    /// truncated past a checkpoint; exits 1 if the chain is broken.
    Verify {
        /// The checkpoint public key (SPKI PEM).
        #[arg(long)]
        key: PathBuf,
        /// The checkpoints kept apart (default: checkpoints.jsonl in a log directory).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The input is an export: accept stand-ins for records its filter left out.
        #[arg(long)]
        export: bool,
        /// A log directory, or chain files oldest first.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Export records by time range and filter, streaming, to standard output.
    Export {
        /// From this time (seconds since the epoch, or YYYY-MM-DDTHH:MM:SSZ), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// To this time, exclusive.
        #[arg(long)]
        to: Option<String>,
        /// FIELD=VALUE conditions, all of which must hold: kind=decision, code=stale_date,
        /// device=tpm-….
        #[arg(long, value_delimiter = ',')]
        filter: Vec<String>,
        /// jsonl (verifiable: stand-ins for left-out records) or csv.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// A log directory, or chain files oldest first.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

pub(crate) fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Keygen { out } => keygen(&out),
        AuditCommand::Verify {
            key,
            checkpoints,
            export,
            paths,
        } => verify(&key, checkpoints, export, &paths),
        AuditCommand::Export {
            from,
            to,
            filter,
            format,
            paths,
        } => {
            let query = ExportQuery {
                from: from.as_deref().map(parse_time).transpose()?,
                to: to.as_deref().map(parse_time).transpose()?,
                filter: filter
                    .iter()
                    .map(|condition| {
                        condition
                            .split_once('=')
                            .map(|(field, value)| (field.to_owned(), value.to_owned()))
                            .with_context(|| {
                                format!("--filter {condition:?}: expected FIELD=VALUE")
                            })
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            let format = match format {
                Format::Jsonl => ExportFormat::Jsonl,
                Format::Csv => ExportFormat::Csv,
            };
            let (files, _) = expand(&paths)?;
            let stdout = io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let summary =
                hwsign_verifier::audit::export(open_all(&files)?, &query, format, &mut out)?;
            out.flush()?;
            eprintln!(
                "exported {} records, {} stand-ins, {} checkpoints",
                summary.matched, summary.omitted, summary.checkpoints
            );
            Ok(())
        }
    }
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let (private, public) = CheckpointSigner::generate_pem()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    file.write_all(private.as_bytes())?;
    let public_path = public_key_path(out);
    std::fs::write(&public_path, public.as_bytes())
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    println!(
        "checkpoint key {}; public key {}",
        out.display(),
        public_path.display()
    );
    Ok(())
}

fn public_key_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn verify(
    key: &Path,
    checkpoints: Option<PathBuf>,
    export: bool,
    paths: &[PathBuf],
) -> anyhow::Result<()> {
    let pem =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let key = CheckpointKey::from_public_key_pem(&pem)
        .with_context(|| format!("{} is not a P-256 public key (SPKI PEM)", key.display()))?;
    let (files, kept) = expand(paths)?;
    let checkpoints = checkpoints.or(kept);
    let kept = checkpoints
        .as_ref()
        .map(|path| {
            File::open(path)
                .map(BufReader::new)
                .with_context(|| format!("cannot open {}", path.display()))
        })
        .transpose()?;
    let options = CheckOptions {
        key: Some(key),
        allow_omitted: export,
        ..CheckOptions::default()
    };
    let report = hwsign_verifier::audit::verify(open_all(&files)?, kept, options)?;
    print_report(&report, checkpoints.as_deref());
    match &report.first_break {
        None => Ok(()),
        Some(broken) => anyhow::bail!("the chain is broken at {broken}"),
    }
}

fn print_report(report: &CheckReport, checkpoints: Option<&Path>) {
    let range = match (report.first_seq, report.last_seq) {
        (Some(first), Some(last)) => format!("seq {first}..={last}"),
        _ => "no records".to_owned(),
    };
    println!(
        "{} records ({range}), {} stand-ins, {} checkpoints verified (last at seq {}), head {}",
        report.records,
        report.omitted,
        report.checkpoints,
        report
            .last_checkpoint_seq
            .map_or_else(|| "-".to_owned(), |seq| seq.to_string()),
        report.head.as_deref().unwrap_or("-"),
    );
    match checkpoints {
        Some(path) => println!("checkpoints kept apart: {}", path.display()),
        None => println!(
            "no checkpoints kept apart given: a tail truncated past the last checkpoint would not show"
        ),
    }
    if let Some(last_checkpoint) = report.last_checkpoint_seq
        && let Some(last) = report.last_seq
        && last > last_checkpoint
    {
        println!("records after seq {last_checkpoint} are not covered by a checkpoint yet");
    }
}

/// Chain files in order, and the checkpoint file of a log directory.
fn expand(paths: &[PathBuf]) -> anyhow::Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let mut files = Vec::new();
    let mut checkpoints = None;
    for path in paths {
        if path.is_dir() {
            files.extend(
                chain_files(path).with_context(|| format!("cannot list {}", path.display()))?,
            );
            let kept = path.join(CHECKPOINTS_FILE);
            if kept.exists() {
                checkpoints = Some(kept);
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok((files, checkpoints))
}

fn open_all(files: &[PathBuf]) -> anyhow::Result<Vec<(String, BufReader<File>)>> {
    files
        .iter()
        .map(|path| {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            Ok((path.display().to_string(), BufReader::new(file)))
        })
        .collect()
}

/// Seconds since the epoch, or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub(crate) fn parse_time(text: &str) -> anyhow::Result<i64> {
    hwsign_verifier::audit::parse_time(text).ok_or_else(|| {
        anyhow::anyhow!("{text:?}: expected seconds since the epoch or YYYY-MM-DDTHH:MM:SSZ")
    })
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_utc() -> anyhow::Result<()> {
        assert_eq!(parse_time("0")?, 0);
        assert_eq!(parse_time("1970-01-01T00:00:00Z")?, 0);
        assert_eq!(parse_time("2026-12-01T00:30:49Z")?, 1_796_085_049);
        assert_eq!(parse_time("2000-02-29T12:00:00Z")?, 951_825_600);
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
        assert!(parse_time("yesterday").is_err());
        Ok(())
    }
}
