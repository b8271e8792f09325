//! What `run` refuses before serving, and that it returns once told to shut down.

use std::time::Duration;

use anyhow::Result;
use hwsign_verifier_serve::{Listeners, ServeConfig, ServeError, run};

fn config(extra_top: &str) -> Result<ServeConfig> {
    Ok(ServeConfig::from_toml_str(&format!(
        "listen = \"127.0.0.1:0\"
upstream = \"http://127.0.0.1:9\"
{extra_top}
[verifier]
audience = \"api\"
hosts = [\"api.example.com\"]
"
    ))?)
}

async fn start(config: ServeConfig) -> Result<(), ServeError> {
    let listeners = Listeners::bind(&config).await?;
    run(config, listeners, async {
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .await
}

#[tokio::test]
async fn an_unknown_registry_or_replay_cache_url_is_refused() -> Result<()> {
    let error = start(config("registry = \"mysql://db/keys\"")?).await;
    assert!(
        matches!(error, Err(ServeError::Registry { ref url, .. }) if url == "mysql://db/keys"),
        "{error:?}"
    );
    let error = start(config(
        "registry = \"memory\"\nreplay_cache = \"memcached://x\"",
    )?)
    .await;
    assert!(
        matches!(error, Err(ServeError::Replay { ref url, .. }) if url == "memcached://x"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_tls_files_are_refused() -> Result<()> {
    let error = start(config(
        "registry = \"memory\"\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"",
    )?)
    .await;
    assert!(
        matches!(error, Err(ServeError::TlsFile { ref path, .. }) if path == "/nonexistent/cert.pem"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn run_returns_when_shutdown_completes() -> Result<()> {
    let served = tokio::time::timeout(
        Duration::from_secs(30),
        start(config("registry = \"memory\"")?),
    )
    .await?;
    served?;
    Ok(())
}
