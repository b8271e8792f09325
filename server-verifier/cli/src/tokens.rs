//! `hwsign-verifier tokens …`: one-time enrollment tokens in the registry's SQLite file or its
//! PostgreSQL database.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Subcommand;
use hwsign_verifier::enrollment::{
    DEFAULT_TOKEN_TTL_SECS, EnrollmentStore, create_token, open_enrollment_store,
};

use crate::{RegistryArgs, scheme};

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Issue a one-time enrollment token; it is printed once and only its hash is stored.
    Create {
        /// The registry (an SQLite file is created if absent).
        #[command(flatten)]
        registry: RegistryArgs,
        /// Lifetime in seconds (at most 30 days).
        #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_SECS)]
        ttl_secs: u64,
        /// A human label; the enrolled key carries it.
        #[arg(long, default_value = "enrolled device")]
        label: String,
    },
    /// List tokens: id, status, expires (unix seconds), label. Never the tokens themselves.
    List {
        /// The registry.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Revoke an unused token by its id (the part between `hwt1_` and `.`).
    Revoke {
        /// The registry.
        #[command(flatten)]
        registry: RegistryArgs,
        /// The token id.
        id: String,
    },
}

fn open(args: &RegistryArgs, create: bool) -> anyhow::Result<EnrollmentStore> {
    let db = match (&args.db, &args.registry) {
        (Some(db), _) => db.clone(),
        (None, Some(url)) => match url.strip_prefix("sqlite:") {
            Some(path) => PathBuf::from(path.strip_prefix("//").unwrap_or(path)),
            None => {
                return open_enrollment_store(url)
                    .with_context(|| format!("opening the {} enrollment store", scheme(url)));
            }
        },
        (None, None) => anyhow::bail!("--db or --registry is required"),
    };
    if !create && !db.exists() {
        anyhow::bail!("no registry at {}", db.display());
    }
    EnrollmentStore::open(&db).with_context(|| format!("opening {}", db.display()))
}

pub(crate) fn run(command: TokensCommand) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match command {
        TokensCommand::Create {
            registry,
            ttl_secs,
            label,
        } => {
            let store = open(&registry, true)?;
            let (id, token) = create_token(&store, &label, ttl_secs, now)?;
            println!("{}", token.as_str());
            eprintln!("token {id} valid for {ttl_secs} s; it is shown only now");
        }
        TokensCommand::List { registry } => {
            let now = unix_seconds(now);
            for token in open(&registry, false)?.list_tokens()? {
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
        TokensCommand::Revoke { registry, id } => {
            open(&registry, false)?
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
