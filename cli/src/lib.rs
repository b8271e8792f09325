//! The `hwsign` command: manage agent keys, sign requests, send signed requests, and a
//! self-contained demo. Every subcommand but `demo` talks to a running agent over its socket.
//!
//! The binary (`src/main.rs`) parses the command line and calls [`run`]; everything else is here.
//! This crate is the only one that links the demo's verifier, axum and the CLI parser: the agent
//! daemon (`hwsign-agent`) does not.
#![forbid(unsafe_code)]

mod audit;
mod demo;
mod enroll;
mod enroll_fido2;
mod http_send;
mod https;
mod keys;
mod proxy;
mod request;
mod sign;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hwsign_client::{AgentClient, ClientError};

/// Sign HTTP requests with a key held by the hwsign agent.
///
/// Start with `hwsign demo`: it needs no hardware and no running agent.
#[derive(Debug, Parser)]
#[command(name = "hwsign", version)]
pub struct Cli {
    /// The agent's socket [default: $HWSIGN_AGENT_SOCK, else $XDG_RUNTIME_DIR/hwsign/agent.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Print JSON instead of text (`status`, `keys list`, `keys create`, `sign`).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the agent's version, backends and key count; exits 3 when a configured backend is
    /// unavailable.
    Status,
    /// List, create or export keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Print the headers that sign a request (one `Name: value` per line); send them with it.
    Sign(sign::SignArgs),
    /// Sign a request and send it (curl-like; http:// or https://), print the response.
    Request(request::RequestArgs),
    /// Show hwsign end to end, self-contained (no hardware, no running agent needed).
    ///
    /// Starts an agent with a software key and a verifier-protected API on 127.0.0.1, all in a
    /// temporary directory; sends a signed request; shows three refusals with their codes;
    /// cleans up.
    Demo,
    /// Run a local signing reverse proxy: requests to it are signed and forwarded to the
    /// configured upstream(s), answers stream back (loopback or Unix socket only).
    Proxy(proxy::ProxyArgs),
    /// Enroll a TPM key, or onboard a FIDO2 security key (`--fido2`), with a verifier (one-time
    /// token from `hwsign-verifier tokens create`).
    Enroll(enroll::EnrollArgs),
    /// Print a shell completion script, e.g.
    /// `hwsign completions bash > ~/.local/share/bash-completion/completions/hwsign`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `hwsign man > ~/.local/share/man/man1/hwsign.1`.
    Man,
    /// The agent's audit log: check its hash chain.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Runs one parsed command line; the exit code is the command's own (e.g. `request` exits with
/// the HTTP status class).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo => demo::run().await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "hwsign", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => status::run(&agent_client(cli.socket)?, cli.json).await,
        Command::Keys(command) => keys::run(&agent_client(cli.socket)?, command, cli.json).await,
        Command::Sign(args) => sign::run(agent_client(cli.socket)?, args, cli.json).await,
        Command::Request(args) => request::run(agent_client(cli.socket)?, args).await,
        Command::Proxy(args) => proxy::run_command(agent_client(cli.socket)?, args).await,
        Command::Enroll(args) => enroll::run(&agent_client(cli.socket)?, args).await,
        Command::Audit(command) => audit::run(command),
    }
}

fn agent_client(socket: Option<PathBuf>) -> anyhow::Result<AgentClient> {
    match socket {
        Some(path) => Ok(AgentClient::new(path)),
        None => AgentClient::from_env().context("locating the agent socket"),
    }
}

/// `error` and its causes, joined by `: `, leaving out a cause whose text the message before it
/// already contains, so each cause is printed once.
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

/// A hint for the user about `error`, if there is one (agent not running, no socket path).
pub fn hint_for(error: &anyhow::Error) -> Option<&'static str> {
    match error.downcast_ref::<ClientError>()? {
        ClientError::Connect { .. } => Some(
            "is the agent running? Start `hwsign-agent` (or its systemd user socket), or pass --socket",
        ),
        ClientError::NoSocketPath => Some("pass --socket PATH or set HWSIGN_AGENT_SOCK"),
        _ => None,
    }
}
