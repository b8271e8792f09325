//! `hwsign-verifier`: administer the verifier's key registry, enrollment tokens and device
//! policies.
//!
//! The binary (`src/main.rs`) parses the command line and calls [`run`]. This crate, not the
//! `hwsign-verifier` library, carries the command line's dependencies (clap, anyhow), so a server
//! that links the library does not build them.
#![forbid(unsafe_code)]

mod policy;
mod tokens;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hwsign_verifier::admin::add_key_file;
use hwsign_verifier::{KeyLevel, KeyRegistry, SqliteRegistry};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "hwsign-verifier",
    version,
    about = "Administer the hwsign verifier"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Registered keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// One-time TPM enrollment tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Device policies (Cedar): validate, check a request, print the schema.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Register a public key; prints its key id.
    Add {
        /// The registry file (created if absent).
        #[arg(long)]
        db: PathBuf,
        /// PEM SubjectPublicKeyInfo of a P-256 key.
        #[arg(long)]
        public_key: PathBuf,
        /// A human label.
        #[arg(long)]
        label: String,
        /// software, hardware-unattested or tpm.
        #[arg(long, default_value = "software")]
        level: KeyLevel,
    },
    /// Revoke a key: its requests are refused with device_revoked.
    Revoke {
        /// The registry file.
        #[arg(long)]
        db: PathBuf,
        /// The key id (hk1_...).
        key_id: String,
    },
    /// List keys: id, level, status, added (unix seconds), label.
    List {
        /// The registry file.
        #[arg(long)]
        db: PathBuf,
    },
}

fn open(db: &Path, create: bool) -> anyhow::Result<SqliteRegistry> {
    if !create && !db.exists() {
        anyhow::bail!("no registry at {}", db.display());
    }
    SqliteRegistry::open(db).with_context(|| format!("opening registry {}", db.display()))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Tokens(command) => tokens::run(command)?,
        Command::Policy(command) => policy::run(command)?,
        Command::Keys(KeysCommand::Add {
            db,
            public_key,
            label,
            level,
        }) => {
            let registry = open(&db, true)?;
            let key_id = add_key_file(&registry, &public_key, &label, level)?;
            println!("{key_id}");
        }
        Command::Keys(KeysCommand::Revoke { db, key_id }) => {
            open(&db, false)?.revoke(&key_id)?;
            eprintln!("revoked {key_id}");
        }
        Command::Keys(KeysCommand::List { db }) => {
            for key in open(&db, false)?.list()? {
                let status = if key.revoked { "revoked" } else { "active" };
                println!(
                    "{}\t{}\t{status}\t{}\t{}",
                    key.key_id,
                    key.level.as_str(),
                    key.added_unix,
                    key.label
                );
            }
        }
    }
    Ok(())
}
