//! `hwsign-verifier tokens …`: one-time enrollment tokens in the registry's SQLite file.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Subcommand;
use hwsign_verifier::enrollment::{DEFAULT_TOKEN_TTL_SECS, EnrollmentStore, create_token};

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Issue a one-time enrollment token; it is printed once and only its hash is stored.
    Create {
        /// The registry file (created if absent).
        #[arg(long)]
        db: PathBuf,
        /// Lifetime in seconds (at most 30 days).
        #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_SECS)]
        ttl_secs: u64,
        /// A human label; the enrolled key carries it.
        #[arg(long, default_value = "enrolled device")]
        label: String,
    },
    /// List tokens: id, status, expires (unix seconds), label. Never the tokens themselves.
    List {
        /// The registry file.
        #[arg(long)]
        db: PathBuf,
    },
    /// Revoke an unused token by its id (the part between `hwt1_` and `.`).
    Revoke {
        /// The registry file.
        #[arg(long)]
        db: PathBuf,
        /// The token id.
        id: String,
    },
}

fn open(db: &Path, create: bool) -> anyhow::Result<EnrollmentStore> {
    if !create && !db.exists() {
        anyhow::bail!("no registry at {}", db.display());
    }
    EnrollmentStore::open(db).with_context(|| format!("opening {}", db.display()))
}

pub(crate) fn run(command: TokensCommand) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match command {
        TokensCommand::Create {
            db,
            ttl_secs,
            label,
        } => {
            let store = open(&db, true)?;
            let (id, token) = create_token(&store, &label, ttl_secs, now)?;
            println!("{}", token.as_str());
            eprintln!("token {id} valid for {ttl_secs} s; it is shown only now");
        }
        TokensCommand::List { db } => {
            let now = unix_seconds(now);
            for token in open(&db, false)?.list_tokens()? {
                let status = if token.revoked {
                    "revoked"
                } else if token.used_unix.is_some() {
                    "used"
                } else if token.expires_unix <= now {
                    "expired"
                } else {
                    "valid"
                };
                println!(
                    "{}\t{status}\t{}\t{}",
                    token.id, token.expires_unix, token.label
                );
            }
        }
        TokensCommand::Revoke { db, id } => {
            open(&db, false)?
                .revoke_token(&id)
                .with_context(|| format!("revoking token {id}"))?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
