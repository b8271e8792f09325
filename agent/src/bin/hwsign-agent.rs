//! `hwsign-agent`: the daemon. Reads the configuration, obtains the socket (from systemd, or by
//! binding the configured path), reports readiness, and serves until SIGTERM or SIGINT. All the
//! work is in the `hwsign_agent` library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use hwsign_agent::config::check::{Severity, check_environment};
use hwsign_agent::logging::{self, LogFormat};
use hwsign_agent::{Agent, Config, socket, systemd};

/// Holds hardware-backed keys and signs API requests for local SDKs.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (default: ~/.config/hwsign/agent.toml if it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Log line format on stderr: `text`, or `json` (one object per line, for journald/SIEM).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(
        args.log_format,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    match start(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: &(dyn std::error::Error + 'static) = e.as_ref();
            tracing::error!("{}", hwsign_agent::ErrorChain(chain));
            ExitCode::FAILURE
        }
    }
}

fn start(args: &Args) -> Result<()> {
    if args.check_config {
        return check_config(args.config.as_deref());
    }
    let config = Config::load_default(args.config.as_deref())?;
    // Before the runtime's threads exist: adopting the socket clears environment variables.
    let activated = systemd::take_activated_listener()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(Arc::new(config), activated))
}

/// `--check-config`: names the file read (or that none was), then everything start-up would
/// refuse (errors, exit 1) or warn about (warnings, exit 0).
fn check_config(path: Option<&std::path::Path>) -> Result<()> {
    let file = match path {
        Some(path) => Some(path.to_path_buf()),
        None => hwsign_agent::config::paths::default_config_file().filter(|f| f.exists()),
    };
    match &file {
        Some(file) => println!("configuration file: {}", file.display()),
        None => println!(
            "configuration file: none ({} does not exist); using the built-in defaults",
            hwsign_agent::config::paths::default_config_file()
                .map_or_else(|| "no default path".to_owned(), |f| f.display().to_string())
        ),
    }
    let config = Config::load_default(file.as_deref())?;
    let findings = check_environment(&config);
    let mut errors = 0;
    for finding in &findings {
        match finding.severity {
            Severity::Error => {
                errors += 1;
                println!("error: {}", finding.message);
            }
            Severity::Warning => println!("warning: {}", finding.message),
        }
    }
    if errors > 0 {
        anyhow::bail!("configuration not usable: {errors} error(s), see above");
    }
    println!("configuration OK");
    Ok(())
}

async fn serve(
    config: Arc<Config>,
    activated: Option<std::os::unix::net::UnixListener>,
) -> Result<()> {
    let (listener, bound) = match activated {
        Some(listener) => {
            socket::check_activated(&listener, config.socket_group)?;
            tracing::info!("using the socket passed by systemd");
            (UnixListener::from_std(listener)?, None)
        }
        None => {
            let listener = socket::bind_with_group(&config.socket_path, config.socket_group)?;
            tracing::info!(socket = %config.socket_path.display(), "listening");
            (listener, Some(config.socket_path.clone()))
        }
    };
    let agent = Agent::open(Arc::clone(&config)).await?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    systemd::notify_ready();
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
        systemd::notify_stopping();
    };
    let result = agent.serve(listener, shutdown).await;
    if let Some(path) = bound {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(socket = %path.display(), error = %e, "could not remove the socket");
        }
    }
    Ok(result?)
}
