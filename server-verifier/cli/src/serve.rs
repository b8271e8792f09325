//! `hwsign-verifier serve --config FILE`: loads the configuration, binds the listeners, and runs
//! the verifying proxy (the `hwsign-verifier-serve` library) until SIGTERM or SIGINT.

use std::path::Path;

use anyhow::Context as _;
use hwsign_verifier_serve::{Listeners, ServeConfig};

/// Runs the proxy, or with `check_only` validates the configuration and returns.
pub(crate) fn run(config_path: &Path, check_only: bool) -> anyhow::Result<()> {
    let config = ServeConfig::load(config_path)
        .with_context(|| format!("configuration {}", config_path.display()))?;
    if check_only {
        println!(
            "configuration OK: listen {}, upstream {}, audience {:?}",
            config.listen, config.upstream, config.verifier.audience
        );
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        notify(&[sd_notify::NotifyState::Ready]);
        hwsign_verifier_serve::run(config, listeners, shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT (and tells systemd the service is stopping).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "sd_notify failed");
    }
}
