//! `hwsign keys list` and `hwsign keys create`.

use std::process::ExitCode;

use clap::Subcommand;
use hwsign_client::{AgentClient, KeyInfo};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the agent's keys.
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
}

pub(crate) async fn run(agent: &AgentClient, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::List { public_keys } => {
            let keys = agent.list_keys().await?;
            if keys.is_empty() {
                println!(
                    "no keys; create one with: hwsign keys create --backend software --label NAME"
                );
            }
            for key in &keys {
                print_key(key);
                if public_keys {
                    print!("{}", key.public_key_pem);
                }
            }
        }
        KeysCommand::Create { backend, label } => {
            let key = agent.create_key(&backend, &label).await?;
            print_key(&key);
            print!("{}", key.public_key_pem);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_key(key: &KeyInfo) {
    println!(
        "{}  level={}  backend={}  label={:?}  created={}",
        key.id,
        key.level.as_str(),
        key.backend,
        key.label,
        key.created_unix
    );
}
