//! The server core (mini-redis's shape): accept loops bounded by a semaphore, one task per
//! connection, a watch channel that tells every connection to finish, and a bounded wait for
//! them at shutdown.
//!
//! Per connection: the TLS handshake and each request head must arrive within
//! `header_read_timeout_secs`; a connection lives at most `max_connection_secs`, then it is
//! closed after its current response. At shutdown the listeners stop accepting, every
//! connection finishes its in-flight request and closes, and whatever is still running after
//! `shutdown_grace_secs` is cut.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hwsign_verifier::enrollment::EnrollmentError;
use hwsign_verifier::enrollment::{Enrollment, router};
use hwsign_verifier::reattestation::Reattestation;
use hwsign_verifier::{RegistryError, Verifier};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::config::{Limits, ServeConfig};
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::proxy::{Peer, Proxy, Upstream};
use crate::tls;

/// Pause after a failed `accept` (out of file descriptors): the error is transient.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The sockets the proxy serves: the main listener and, if configured, the admin listener.
#[derive(Debug)]
pub struct Listeners {
    /// Clients (or the TLS terminator in front).
    pub main: TcpListener,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds `config.listen` and `config.admin.listen`.
    pub async fn bind(config: &ServeConfig) -> Result<Self, ServeError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let main = bind(config.listen).await?;
        let admin = match &config.admin {
            Some(admin) => Some(bind(admin.listen).await?),
            None => None,
        };
        Ok(Self { main, admin })
    }
}

/// Opens the enrollment store at the registry's URL, off the runtime (PostgreSQL's blocking
/// client drives its own).
async fn open_enrollment_store(
    url: &str,
) -> Result<hwsign_verifier::enrollment::EnrollmentStore, ServeError> {
    let url = url.to_owned();
    off_runtime(move || hwsign_verifier::enrollment::open_enrollment_store(&url))
        .await
        .unwrap_or_else(|panic| Err(EnrollmentError::Store(panic.to_string())))
        .map_err(ServeError::EnrollmentStore)
}

/// Serves `config` on `listeners` until `shutdown` completes, then drains (bounded by
/// `limits.shutdown_grace_secs`) and returns.
pub async fn run(
    config: ServeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    // Opening a PostgreSQL registry or enrollment store connects and migrates with the blocking
    // client, which drives its own runtime and must not run on this one's threads.
    let url = config.registry.clone();
    let registry = off_runtime(move || hwsign_verifier::registry::open_registry(&url))
        .await
        .unwrap_or_else(|panic| Err(RegistryError::Unavailable(panic.into())))
        .map_err(|source| ServeError::Registry {
            url: config.registry.clone(),
            source,
        })?;
    let replay = hwsign_verifier::replay::open_replay_cache(
        &config.replay_cache,
        config.replay_cache_capacity,
    )
    .map_err(|source| ServeError::Replay {
        url: config.replay_cache.clone(),
        source,
    })?;
    let audit_log = match &config.audit {
        Some(settings) => Some(Arc::new(
            hwsign_verifier::audit::AuditLog::open(settings).map_err(ServeError::Audit)?,
        )),
        None => None,
    };
    let admin_services = match config.admin.as_ref().and_then(|admin| admin.api.as_ref()) {
        Some(api) => {
            // A PostgreSQL directory connects with the blocking client: off this runtime.
            let (api, url) = (api.clone(), config.registry.clone());
            let (registry, replay) = (Arc::clone(&registry), Arc::clone(&replay));
            let audit =
                config
                    .audit
                    .as_ref()
                    .map(|settings| hwsign_verifier::admin_api::AuditAccess {
                        dir: settings.dir.clone(),
                        log: audit_log.clone(),
                    });
            let services = off_runtime(move || {
                hwsign_verifier::admin_api::admin_services_audited(
                    &api, &url, registry, replay, audit,
                )
            })
            .await
            .unwrap_or(Err(hwsign_verifier::admin_api::AdminApiError::Invalid(
                "the admin API panicked while starting",
            )))
            .map_err(ServeError::AdminApi)?;
            Some(services)
        }
        None => None,
    };
    let mut verifier = Verifier::new(
        config.verifier.clone(),
        Arc::clone(&registry),
        Arc::clone(&replay),
    )
    .map_err(ServeError::Verifier)?;
    if let Some(services) = &admin_services {
        verifier = verifier.with_sessions(Arc::clone(&services.sessions));
    }
    if let Some(log) = &audit_log {
        verifier = verifier.with_audit_log(Arc::clone(log));
    }
    let console = crate::console::router(
        &config,
        admin_services.as_ref(),
        &registry,
        audit_log.clone(),
    )?;
    let enrollment = match &config.enrollment {
        Some(settings) => {
            let store = open_enrollment_store(&config.registry).await?;
            let anchors = settings
                .trust_anchors()
                .map_err(ServeError::EnrollmentAnchors)?;
            let mut enrollment =
                Enrollment::new(store, Arc::clone(&registry), anchors, settings.clone());
            if let Some(services) = &admin_services {
                enrollment = enrollment.with_directory(Arc::clone(&services.directory));
            }
            if let Some(log) = &audit_log {
                enrollment = enrollment.with_audit_log(Arc::clone(log));
            }
            Some(enrollment)
        }
        None => None,
    };
    // FIDO2 registration (`hwsign enroll --fido2`, the browser's `register`): the same
    // tokens as TPM enrollment, so it needs `[enrollment]` beside `[webauthn]`.
    let webauthn_registration = match (&config.verifier.webauthn, &config.enrollment) {
        (Some(settings), Some(_)) => {
            let store = open_enrollment_store(&config.registry).await?;
            let trust = settings
                .attestation_trust()
                .map_err(ServeError::WebAuthnAttestationRoots)?;
            Some(hwsign_verifier::webauthn::registration::router(Arc::new(
                hwsign_verifier::webauthn::registration::Fido2Enrollment::new(
                    store,
                    Arc::clone(&registry),
                    settings.clone(),
                    trust,
                ),
            )))
        }
        _ => None,
    };
    let reattestation = match (&config.reattestation, &enrollment) {
        (Some(settings), Some(enrollment)) => Some(Arc::new(
            Reattestation::new(enrollment, settings).map_err(ServeError::Reattestation)?,
        )),
        _ => None,
    };
    let verifier = Arc::new(match &reattestation {
        Some(service) => verifier.with_reattestation(Arc::clone(service.challenges())),
        None => verifier,
    });
    // Device policy reloads (SIGHUP, file watch) until `run` returns.
    let _policy_reloads = crate::policy_reload::start(&verifier);
    let enrollment = enrollment.map(|enrollment| router(Arc::new(enrollment)));
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let upstream_uri = config.upstream_uri().map_err(ServeError::Config)?;
    let limits = config.limits.clone();
    let upstream = Upstream {
        scheme: upstream_uri
            .scheme()
            .cloned()
            .unwrap_or(http::uri::Scheme::HTTP),
        authority: upstream_uri.authority().cloned().ok_or_else(|| {
            ServeError::Config(crate::config::ServeConfigError::Upstream(
                config.upstream.clone(),
            ))
        })?,
        connect_timeout: Duration::from_secs(limits.upstream_connect_timeout_secs),
        timeout: Duration::from_secs(limits.upstream_timeout_secs),
    };
    let metrics = Arc::new(Metrics::default());
    let trusted = config.trusted_proxies().map_err(ServeError::Config)?;
    let mut proxy = Proxy::new(
        verifier,
        upstream,
        trusted,
        Arc::clone(&metrics),
        enrollment,
    );
    if let Some(service) = reattestation {
        proxy = proxy.with_reattestation(hwsign_verifier::reattestation::router(service));
    }
    if let Some(router) = webauthn_registration {
        proxy = proxy.with_webauthn_registration(router);
    }
    let proxy = Arc::new(proxy);
    let admin = Arc::new(Admin {
        registry,
        replay,
        metrics: Arc::clone(&metrics),
    });

    let (stop, stopped) = watch::channel(false);
    let mut loops = JoinSet::new();
    let main_addr = listeners.main.local_addr().ok();
    tracing::info!(
        listen = ?main_addr,
        tls = tls.is_some(),
        upstream = %config.upstream,
        "hwsign-verifier serve listening"
    );
    {
        let proxy = Arc::clone(&proxy);
        let metrics = Arc::clone(&metrics);
        let tls = tls.clone();
        loops.spawn(accept_loop(
            listeners.main,
            limits.clone(),
            stopped.clone(),
            move |stream, peer, limits, stopped| {
                let proxy = Arc::clone(&proxy);
                let metrics = Arc::clone(&metrics);
                let tls = tls.clone();
                async move {
                    metrics.connection(1);
                    serve_client(stream, peer, tls, proxy, &limits, stopped).await;
                    metrics.connection(-1);
                }
            },
        ));
    }
    let admin_api = admin_services.map(|services| services.router);
    if let Some(listener) = listeners.admin {
        tracing::info!(listen = ?listener.local_addr().ok(), "admin listener");
        loops.spawn(accept_loop(
            listener,
            limits.clone(),
            stopped.clone(),
            move |stream, _peer, limits, stopped| {
                let admin = Arc::clone(&admin);
                let admin_api = admin_api.clone();
                let console = console.clone();
                async move {
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let admin = Arc::clone(&admin);
                        let admin_api = admin_api.clone();
                        let console = console.clone();
                        async move {
                            if let Some(router) = console.clone()
                                && hwsign_verifier::console::handles(request.uri().path())
                            {
                                let request = request.map(axum::body::Body::new);
                                return match tower::ServiceExt::oneshot(router, request).await {
                                    Ok(response) => Ok::<_, Infallible>(response),
                                    Err(never) => match never {},
                                };
                            }
                            if let Some(router) = admin_api
                                && hwsign_verifier::admin_api::handles(request.uri().path())
                            {
                                let request = request.map(axum::body::Body::new);
                                return match tower::ServiceExt::oneshot(router, request).await {
                                    Ok(response) => Ok::<_, Infallible>(response),
                                    Err(never) => match never {},
                                };
                            }
                            Ok::<_, Infallible>(admin.handle(request).await)
                        }
                    });
                    serve_http(stream, service, &limits, stopped).await;
                }
            },
        ));
    }

    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    let _ = stop.send(true);
    // Each loop drains its own connections, bounded by the grace period.
    while loops.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// Runs blocking `work` on tokio's blocking pool (the error: it panicked).
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(work).await
}

/// Accepts connections until told to stop, at most `limits.max_connections` at once, each on
/// its own task; then waits for them, cutting the rest after the shutdown grace.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
    connection: F,
) where
    F: Fn(TcpStream, SocketAddr, Limits, watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set stays as large as what is open.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let work = connection(stream, peer, limits.clone(), stopped.clone());
                connections.spawn(async move {
                    work.await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let grace = Duration::from_secs(limits.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown grace; cutting them"
        );
        connections.shutdown().await;
    }
}

/// A client connection on the main listener: TLS (bounded handshake) if configured, then HTTP.
async fn serve_client(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    limits: &Limits,
    stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = |scheme: &'static str| {
        let proxy = Arc::clone(&proxy);
        service_fn(move |request: hyper::Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            let peer = Peer { addr: peer, scheme };
            async move { Ok::<_, Infallible>(proxy.handle(request, peer).await) }
        })
    };
    match tls {
        None => serve_http(stream, service("http"), limits, stopped).await,
        Some(acceptor) => {
            let handshake = Duration::from_secs(limits.header_read_timeout_secs);
            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_http(stream, service("https"), limits, stopped).await,
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1.1 on one connection until it closes, its lifetime ends or shutdown is signalled;
/// then the current response finishes (bounded by the shutdown grace) and the connection closes.
async fn serve_http<S, Svc>(
    io: S,
    service: Svc,
    limits: &Limits,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs))
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let lifetime = tokio::time::sleep(Duration::from_secs(limits.max_connection_secs));
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        _ = stopped.wait_for(|stop| *stop) => {}
        () = lifetime => {}
    }
    connection.as_mut().graceful_shutdown();
    let grace = Duration::from_secs(limits.shutdown_grace_secs);
    if tokio::time::timeout(grace, connection).await.is_err() {
        tracing::debug!("connection cut after the grace period");
    }
}
