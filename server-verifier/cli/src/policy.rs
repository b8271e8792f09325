//! `hwsign-verifier policy`: validate device policies and try them on a request
//! (docs/POLICY.md).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Subcommand;
use hwsign_verifier::policy::{PolicyEngine, PolicyRequest};
use hwsign_verifier::{KeyRegistry, PolicySettings, RegisteredKey};

/// `hwsign-verifier policy …`
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Parse every *.cedar file in DIR and validate it against the schema; prints the policy
    /// ids, or each problem as FILE:LINE:COLUMN: REASON.
    Validate {
        /// The policy directory, or a signed bundle (with --public-key).
        dir: PathBuf,
        /// Treat DIR as a signed policy bundle and check its signature with this PEM public key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The bundle's signature (default: DIR.sig).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Decide a request for a registered device as the verifier would; prints the decision and
    /// the ids of the policies that determined it.
    Check {
        /// The registry file.
        #[arg(long)]
        db: PathBuf,
        /// The device id (tpm-…), or the key id (hk1_…) of a key registered without a device.
        #[arg(long)]
        device: String,
        /// The request: METHOD PATH, e.g. 'POST /v1/admin/keys'.
        #[arg(long)]
        request: String,
        /// The policy directory, or a signed bundle (with --public-key).
        #[arg(long)]
        policies: PathBuf,
        /// Treat --policies as a signed bundle checked with this PEM public key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Decide as if a delegated session key signed.
        #[arg(long)]
        delegated: bool,
        /// The time to decide at, seconds since the epoch (default: now).
        #[arg(long)]
        at: Option<i64>,
    },
    /// Approve a device's changed boot chain: the PCR values of its last attestation become
    /// its baseline and its boot_state is `unchanged` again.
    ApproveBaseline {
        /// The registry file.
        #[arg(long)]
        db: PathBuf,
        /// The device id (tpm-…).
        #[arg(long)]
        device: String,
    },
    /// Print the schema policies are validated against.
    Schema,
}

pub(crate) fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Validate {
            dir,
            public_key,
            signature,
        } => {
            let engine = load(&dir, public_key, signature)?;
            for id in engine.policy_ids() {
                println!("{id}");
            }
            eprintln!(
                "{}: {} policies valid",
                dir.display(),
                engine.policy_ids().len()
            );
        }
        PolicyCommand::Check {
            db,
            device,
            request,
            policies,
            public_key,
            delegated,
            at,
        } => {
            let engine = load(&policies, public_key, None)?;
            let (method, path) = request
                .trim()
                .split_once(' ')
                .map(|(m, p)| (m.trim(), p.trim()))
                .filter(|(m, p)| !m.is_empty() && p.starts_with('/'))
                .context("--request must be METHOD PATH, e.g. 'POST /v1/admin/keys'")?;
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            if !db.exists() {
                anyhow::bail!("no registry at {}", db.display());
            }
            let registry = hwsign_verifier::SqliteRegistry::open(&db)
                .with_context(|| format!("opening registry {}", db.display()))?;
            let key = key_for(&registry, &device)?;
            let record = match key.device_id.as_deref() {
                Some(id) => registry.device(id)?,
                None => None,
            };
            let facts = match key.device_id.as_deref() {
                Some(id) => registry.device_facts(id)?,
                None => None,
            };
            let now_unix = match at {
                Some(at) => at,
                None => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            };
            let decision = engine.decide(&PolicyRequest {
                key: &key,
                device: record.as_ref(),
                facts: facts.as_ref(),
                method,
                path,
                delegated,
                now_unix,
                source_ip: None,
                owner: None,
                signature: Default::default(),
            })?;
            println!(
                "decision: {}",
                if decision.allowed { "allow" } else { "deny" }
            );
            println!("key: {}", key.key_id);
            println!("policies: {}", decision.determining.join(", "));
            for error in &decision.errors {
                println!("error: {error}");
            }
        }
        PolicyCommand::ApproveBaseline { db, device } => {
            if !db.exists() {
                anyhow::bail!("no registry at {}", db.display());
            }
            let registry = hwsign_verifier::SqliteRegistry::open(&db)
                .with_context(|| format!("opening registry {}", db.display()))?;
            let count = hwsign_verifier::admin::approve_boot_baseline(&registry, &device)?;
            eprintln!("approved {count} PCR values as the baseline of {device}");
        }
        PolicyCommand::Schema => print!("{}", hwsign_verifier::policy::SCHEMA),
    }
    Ok(())
}

/// A directory, or a signed bundle when a public key is given.
fn load(
    source: &Path,
    public_key: Option<PathBuf>,
    signature: Option<PathBuf>,
) -> anyhow::Result<PolicyEngine> {
    let Some(public_key) = public_key else {
        return Ok(PolicyEngine::load_dir(source)?);
    };
    let mut settings = PolicySettings::bundle(source, public_key);
    settings.signature = signature;
    Ok(PolicyEngine::load(&settings)?)
}

/// The key a device id names: the key itself for a key id, else the device's unrevoked key
/// with the highest level.
fn key_for(registry: &dyn KeyRegistry, device: &str) -> anyhow::Result<RegisteredKey> {
    if device.starts_with("hk1_") {
        return registry
            .lookup(device)?
            .with_context(|| format!("no key {device}"));
    }
    registry
        .list()?
        .into_iter()
        .filter(|key| key.device_id.as_deref() == Some(device) && !key.revoked)
        .max_by_key(|key| key.level)
        .with_context(|| format!("no unrevoked key for device {device}"))
}
