//! `hwsign keys list`, `hwsign keys create` and `hwsign keys export`.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use hwsign_client::{AgentClient, KeyInfo};
use hwsign_proto::api::BackendStatus;
use serde::Serialize;

use crate::status::{exit_code, human_time};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the agent's keys, and name any configured backend that is unavailable (its keys
    /// cannot be listed); exits 3 then.
    List {
        /// Also print each public key (PEM), e.g. to register it with a verifier.
        #[arg(long)]
        public_keys: bool,
    },
    /// Create a key.
    Create {
        /// Backend that holds the key: software, tpm or pkcs11 (as compiled in and configured).
        #[arg(long)]
        backend: String,
        /// A human label, 1–64 printable characters.
        #[arg(long)]
        label: String,
    },
    /// Print one key's public key (SubjectPublicKeyInfo PEM), e.g. for
    /// `hwsign-verifier keys add --public-key FILE`.
    Export {
        /// Key id (`hk1_…`) or the key's label (when exactly one key has it).
        key: String,
    },
}

/// What `keys list --json` prints.
#[derive(Serialize)]
struct ListOutput<'a> {
    keys: &'a [KeyInfo],
    /// Backends that could not be asked for their keys.
    unavailable_backends: Vec<&'a BackendStatus>,
}

pub(crate) async fn run(
    agent: &AgentClient,
    command: KeysCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::List { public_keys } => list(agent, public_keys, json).await,
        KeysCommand::Create { backend, label } => {
            let key = agent.create_key(&backend, &label).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                print_key(&key);
                print!("{}", key.public_key_pem);
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Export { key } => {
            let keys = agent.list_keys().await?;
            let found = find_key(&keys, &key);
            match found.as_slice() {
                [one] => {
                    print!("{}", one.public_key_pem);
                    Ok(ExitCode::SUCCESS)
                }
                [] => {
                    let down = unavailable(agent).await?;
                    if down.is_empty() {
                        bail!("the agent has no key {key:?} (see `hwsign keys list`)");
                    }
                    bail!(
                        "the agent has no key {key:?} among the keys it can list; unavailable: {}",
                        describe_unavailable(&down)
                    );
                }
                _ => bail!(
                    "{} keys are labelled {key:?}; name one by its id (hk1_…, see `hwsign keys list`)",
                    found.len()
                ),
            }
        }
    }
}

async fn list(agent: &AgentClient, public_keys: bool, json: bool) -> anyhow::Result<ExitCode> {
    let keys = agent.list_keys().await?;
    // The agent leaves out the keys of a backend that cannot list them; say which one.
    let backends = agent.status().await?.backends;
    let down: Vec<&BackendStatus> = backends.iter().filter(|b| !b.available).collect();
    if json {
        let output = ListOutput {
            keys: &keys,
            unavailable_backends: down,
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(exit_code(&backends));
    }
    for backend in &down {
        eprintln!(
            "hwsign: backend {} is unavailable, its keys are not listed: {}",
            backend.name,
            backend.detail.as_deref().unwrap_or("no detail")
        );
    }
    if keys.is_empty() && down.is_empty() {
        println!("no keys; create one with: hwsign keys create --backend software --label NAME");
    }
    for key in &keys {
        print_key(key);
        if public_keys {
            print!("{}", key.public_key_pem);
        }
    }
    Ok(exit_code(&backends))
}

async fn unavailable(agent: &AgentClient) -> anyhow::Result<Vec<BackendStatus>> {
    Ok(agent
        .status()
        .await?
        .backends
        .into_iter()
        .filter(|b| !b.available)
        .collect())
}

fn describe_unavailable(down: &[BackendStatus]) -> String {
    down.iter()
        .map(|b| match &b.detail {
            Some(detail) => format!("{} ({detail})", b.name),
            None => b.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys whose id is `wanted`, else keys whose label is `wanted`.
fn find_key<'a>(keys: &'a [KeyInfo], wanted: &str) -> Vec<&'a KeyInfo> {
    let by_id: Vec<&KeyInfo> = keys.iter().filter(|k| k.id == wanted).collect();
    if !by_id.is_empty() {
        return by_id;
    }
    keys.iter().filter(|k| k.label == wanted).collect()
}

fn print_key(key: &KeyInfo) {
    println!(
        "{}  level={}  backend={}  label={:?}  created={}",
        key.id,
        key.level.as_str(),
        key.backend,
        key.label,
        human_time(key.created_unix)
    );
}
