//! `hwsign-verifier`: administer the verifier's key registry, enrollment tokens and device
//! policies, and run the verifying proxy (`serve`).
//!
//! The binary (`src/main.rs`) parses the command line and calls [`run`]. This crate, not the
//! `hwsign-verifier` library, carries the command line's dependencies (clap, anyhow), so a server
//! that links the library does not build them.
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod ek;
mod policy;
mod serve;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hwsign_verifier::admin::add_key_file;
use hwsign_verifier::config::ANY_HOST;
use hwsign_verifier::registry::open_registry;
use hwsign_verifier::{KeyLevel, KeyRegistry, VerifierConfig};

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
    /// EK public keys registered for TPMs without an EK certificate.
    #[command(subcommand)]
    Ek(ek::EkCommand),
    /// Check a verifier configuration file (`VerifierConfig::load`, e.g.
    /// server-verifier/verifier.example.toml): prints the file read, warnings, and exits 1 on an
    /// error.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Run the verifying reverse proxy in front of an API (server-verifier/serve/serve.example.toml
    /// documents the configuration) until SIGTERM or SIGINT.
    Serve {
        /// The TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Only check the configuration, then exit (0 when valid).
        #[arg(long)]
        check_config: bool,
    },
    /// Device policies (Cedar): validate, check a request, print the schema.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The admin API (devices, sessions, users, tokens, recovery), signed through the local
    /// agent; prints JSON (docs/ADMIN.md).
    Admin(admin::AdminArgs),
    /// The decision log: checkpoint key, verify, export (docs/AUDIT.md).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Where the keys (and enrollment tokens) are: an SQLite file (`--db`) or a registry URL
/// (`--registry`).
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct RegistryArgs {
    /// The registry file (SQLite).
    #[arg(long)]
    pub(crate) db: Option<PathBuf>,
    /// The registry URL: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE (a fleet's shared
    /// registry; every verifier using it sees the change within a second).
    #[arg(long)]
    pub(crate) registry: Option<String>,
}

/// The scheme of a URL that may carry a password, for error messages.
pub(crate) fn scheme(url: &str) -> &str {
    url.split(':').next().unwrap_or_default()
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Register a public key; prints its key id.
    Add {
        /// The registry (an SQLite file is created if absent).
        #[command(flatten)]
        registry: RegistryArgs,
        /// PEM SubjectPublicKeyInfo of a P-256 key.
        #[arg(long)]
        public_key: PathBuf,
        /// A human label.
        #[arg(long)]
        label: String,
        /// software, hardware-unattested or tpm. An unchecked administrator claim: nothing here
        /// proves where the key lives (use `hwsign enroll` for an attested TPM key), so `tpm`
        /// draws a warning.
        #[arg(long, default_value = "software")]
        level: KeyLevel,
    },
    /// Revoke a key: its requests are refused with device_revoked. Permanent: a revoked key
    /// cannot be re-activated or added again; give the device a new key
    /// (`hwsign keys create`) and add that.
    Revoke {
        /// The registry.
        #[command(flatten)]
        registry: RegistryArgs,
        /// The key id (hk1_...).
        key_id: String,
    },
    /// List keys, tab-separated: id, level, status, added (UTC), label.
    List {
        /// The registry.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Clear a FIDO2 credential's possibly-cloned flag (set when its signature counter went
    /// backwards) after checking the security key: its requests are accepted again. The stored
    /// counter stays, so a clone still behind it is flagged again at its next request.
    ClearCloned {
        /// The registry.
        #[command(flatten)]
        registry: RegistryArgs,
        /// The key id (hk1_...) of the FIDO2 credential.
        key_id: String,
        /// Record the action in a decision-log chain in this directory (one directory per
        /// process: not a running `serve`'s own).
        #[arg(long, requires = "audit_key")]
        audit_dir: Option<PathBuf>,
        /// The checkpoint key of that chain (`hwsign-verifier audit keygen`).
        #[arg(long, requires = "audit_dir")]
        audit_key: Option<PathBuf>,
    },
}

/// `error` and its causes, joined by `: `, leaving out a cause whose text the message before it
/// already contains (some library messages repeat their cause), so each cause is printed once.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// `2026-11-23 19:30:00 UTC` for seconds since the epoch.
fn human_time(unix: i64) -> String {
    let compact = hwsign_proto::SigningTime::from_unix(unix).to_amz_date();
    match (
        compact.get(0..4),
        compact.get(4..6),
        compact.get(6..8),
        compact.get(9..11),
        compact.get(11..13),
        compact.get(13..15),
    ) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) => {
            format!("{y}-{mo}-{d} {h}:{mi}:{s} UTC")
        }
        _ => compact,
    }
}

fn open(args: &RegistryArgs, create: bool) -> anyhow::Result<Arc<dyn KeyRegistry>> {
    match (&args.db, &args.registry) {
        (Some(db), _) => open_file(db, create),
        (None, Some(url)) => {
            // The URL may carry a password: name only its scheme in errors.
            let scheme = scheme(url);
            if let Some(path) = url.strip_prefix("sqlite:") {
                return open_file(Path::new(path.strip_prefix("//").unwrap_or(path)), create);
            }
            open_registry(url).with_context(|| format!("opening the {scheme} registry"))
        }
        (None, None) => anyhow::bail!("--db or --registry is required"),
    }
}

fn open_file(db: &Path, create: bool) -> anyhow::Result<Arc<dyn KeyRegistry>> {
    if !create && !db.exists() {
        anyhow::bail!("no registry at {}", db.display());
    }
    let registry = hwsign_verifier::SqliteRegistry::open(db)
        .with_context(|| format!("opening registry {}", db.display()))?;
    Ok(Arc::new(registry))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Tokens(command) => tokens::run(command)?,
        Command::Ek(command) => ek::run(command)?,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(
                shell,
                &mut command,
                "hwsign-verifier",
                &mut std::io::stdout(),
            );
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
        }
        Command::CheckConfig { file } => {
            println!("configuration file: {}", file.display());
            let config = VerifierConfig::load(&file)?;
            if config.hosts.iter().any(|h| h == ANY_HOST) {
                println!(
                    "warning: hosts = [\"*\"] accepts any host: a request captured on one \
                     deployment can be replayed on another with the same audience"
                );
            }
            println!(
                "configuration OK: audience {:?}, {} host(s), {} route rule(s)",
                config.audience,
                config.hosts.len(),
                config.route_rules.len()
            );
        }
        Command::Policy(command) => policy::run(command)?,
        Command::Admin(args) => admin::run(args)?,
        Command::Audit(command) => audit::run(command)?,
        Command::Serve {
            config,
            check_config,
        } => serve::run(&config, check_config)?,
        Command::Keys(KeysCommand::Add {
            registry,
            public_key,
            label,
            level,
        }) => {
            let registry = open(&registry, true)?;
            let key_id = add_key_file(registry.as_ref(), &public_key, &label, level)?;
            if level == KeyLevel::Tpm {
                eprintln!(
                    "warning: --level tpm is your claim, not checked: nothing attested that \
                     {key_id} lives in a TPM. Keys enrolled with `hwsign enroll` are attested."
                );
            }
            println!("{key_id}");
        }
        Command::Keys(KeysCommand::Revoke { registry, key_id }) => {
            open(&registry, false)?.revoke(&key_id)?;
            eprintln!(
                "revoked {key_id} (permanent: it cannot be re-activated or added again; \
                 register a new key for the device)"
            );
        }
        Command::Keys(KeysCommand::ClearCloned {
            registry,
            key_id,
            audit_dir,
            audit_key,
        }) => {
            let audit = match (audit_dir, audit_key) {
                (Some(dir), Some(key)) => Some(
                    hwsign_verifier::audit::AuditLog::open(
                        &hwsign_verifier::audit::AuditSettings::new(dir, key),
                    )
                    .context("opening the audit log")?,
                ),
                _ => None,
            };
            let registry = open(&registry, false)?;
            let was = registry.fido2_credential(&key_id)?;
            let result = match &was {
                Some(_) => registry
                    .clear_possibly_cloned(&key_id)
                    .map_err(anyhow::Error::from),
                None => Err(anyhow::anyhow!(
                    "{key_id} is not a registered FIDO2 credential"
                )),
            };
            if let Some(audit) = &audit {
                let actor = format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
                );
                let outcome = if result.is_ok() { "ok" } else { "unknown_key" };
                audit
                    .record(
                        hwsign_verifier::audit::AuditEvent::admin(
                            &actor,
                            "fido2_clear_cloned",
                            Some(&key_id),
                            outcome,
                        )
                        .with_value(
                            "was_flagged",
                            was.as_ref().is_some_and(|c| c.possibly_cloned),
                        ),
                    )
                    .map_err(|_| anyhow::anyhow!("the audit log refused the record"))?;
                audit
                    .sync()
                    .map_err(|_| anyhow::anyhow!("the audit log could not be written"))?;
                audit.close();
            }
            result?;
            if was.is_some_and(|c| c.possibly_cloned) {
                eprintln!("cleared the possibly-cloned flag of {key_id}");
            } else {
                eprintln!("{key_id} was not flagged possibly cloned; nothing changed");
            }
        }
        Command::Keys(KeysCommand::List { registry }) => {
            for key in open(&registry, false)?.list()? {
                let status = if key.revoked { "revoked" } else { "active" };
                println!(
                    "{}\t{}\t{status}\t{}\t{}",
                    key.key_id,
                    key.level.as_str(),
                    human_time(key.added_unix),
                    key.label
                );
            }
        }
    }
    Ok(())
}
