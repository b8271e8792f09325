//! `hwsign proxy`: a local signing reverse proxy for tools that cannot load an SDK (curl, IDE
//! extensions, any OpenAI-compatible client given a base URL). Each request is routed by path
//! prefix to a configured upstream — never to a server the caller names — signed through the
//! agent, and forwarded over HTTPS (rustls) or plain HTTP to a loopback upstream; the answer
//! streams back unchanged (server-sent events event by event).
//!
//! It listens only on loopback TCP or on a Unix socket whose callers' uid it checks
//! (SO_PEERCRED): whoever reaches it signs with the configured keys.
//!
//! Layers, one per file: [`config`] (what is allowed), [`listener`] (loopback / Unix socket,
//! peer uid), [`spool`] (the body, hashed and bounded), [`forward`] (sign and send), and [`run`]
//! here (bounded connections, graceful shutdown).

mod config;
mod forward;
mod listener;
mod spool;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use hwsign_client::AgentClient;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub(crate) use config::ProxySettings;
pub(crate) use listener::ProxyListener;

/// How long a caller may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a request head (request line and headers) from a caller.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long shutdown waits for requests in flight (a streaming answer included) before it
/// closes them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Listen here: 127.0.0.1:PORT, [::1]:PORT or unix:/path (loopback only).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A TOML config with several upstreams (`[[upstream]]` prefix, url, key, audience);
    /// see docs/OPERATIONS.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The one upstream, https:// (or http:// to a loopback host); every path goes there.
    #[arg(long, value_name = "URL", requires_all = ["key", "audience"])]
    upstream: Option<String>,
    /// Key id that signs for --upstream (`hk1_…`).
    #[arg(long, value_name = "KEY_ID", requires = "upstream")]
    key: Option<String>,
    /// The audience --upstream's verifier expects.
    #[arg(long, requires = "upstream")]
    audience: Option<String>,
    /// Also sign this header for --upstream (repeatable).
    #[arg(long = "sign-header", value_name = "NAME", requires = "upstream")]
    sign_headers: Vec<String>,
    /// Trust this CA certificate (PEM) for https upstreams, beside the webpki roots
    /// (repeatable).
    #[arg(long, value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// Refuse request bodies larger than this (413) [default: 64 MiB].
    #[arg(long = "max-body", value_name = "BYTES")]
    max_body_bytes: Option<u64>,
    /// On a Unix socket, allow this uid (repeatable; default: only the proxy's own uid).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct Proxy {
    settings: ProxySettings,
    agent: AgentClient,
    tls: Arc<ClientConfig>,
}

/// `hwsign proxy`: checks the settings, listens, serves until SIGTERM or ctrl-c.
pub(crate) async fn run_command(agent: AgentClient, args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let settings = ProxySettings::from_args(&args)?;
    let tls = crate::https::client_config(&settings.cacert)?;
    let listener = ProxyListener::bind(&settings.listen, &settings.allowed_uids)
        .await
        .context("binding the proxy's listener")?;
    for upstream in &settings.upstreams {
        eprintln!(
            "hwsign proxy: {} -> {}{} (key {}, audience {})",
            upstream.prefix,
            upstream.origin.to_string().trim_end_matches('/'),
            upstream.base_path,
            upstream.key,
            upstream.audience
        );
    }
    eprintln!("hwsign proxy: listening on {}", listener.describe());
    let proxy = Arc::new(Proxy {
        settings,
        agent,
        tls,
    });
    run(listener, proxy, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or ctrl-c (SIGINT).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Serves `listener` until `shutdown` resolves: at most `max_connections` connections at once
/// (further callers wait in the kernel's backlog), then drains for [`DRAIN_TIMEOUT`].
pub(crate) async fn run(
    listener: ProxyListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(proxy.settings.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.context("connection limit")?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(Some(stream)) => stream,
                Ok(None) => continue, // refused peer, already closed
                Err(e) => {
                    eprintln!("hwsign proxy: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let proxy = Arc::clone(&proxy);
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let proxy = Arc::clone(&proxy);
                async move {
                    Ok::<_, std::convert::Infallible>(forward::handle(proxy, request).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "hwsign proxy: {} connection(s) still open after {DRAIN_TIMEOUT:?}, closing them",
            connections.len()
        );
        connections.shutdown().await;
    }
    Ok(())
}
