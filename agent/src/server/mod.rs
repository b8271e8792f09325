//! The server core: an accept loop with a connection cap, a per-uid share of it, a shutdown
//! signal broadcast to every connection, and a bounded drain of in-flight requests (the shape of
//! tokio's mini-redis).

mod connection;
mod uid_slots;
mod write_deadline;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::AgentError;
use crate::api::{ApiError, Context};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::fsutil::ensure_private_dir;
use crate::keystore::KeyStore;
use crate::peer::Peer;
use uid_slots::UidSlots;

/// Connections being refused at once (uid not allowed, over the cap). A refusal waits at most
/// [`connection::REFUSAL_HEAD_WAIT`] for the request head and lingers at most
/// [`connection::REFUSAL_LINGER`] after the answer, so a slot is busy only briefly; past this
/// many, further such connections are closed without an answer.
const REFUSAL_SLOTS: usize = 128;
/// Pause after a failed `accept` (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An agent with its backends open, ready to serve.
#[derive(Debug)]
pub struct Agent {
    ctx: Arc<Context>,
}

impl Agent {
    /// Checks the configuration, prepares the state directory (0700) and the audit log, opens
    /// the backends and loads their keys.
    pub async fn open(config: Arc<Config>) -> Result<Self, AgentError> {
        config.validate()?;
        ensure_private_dir(&config.state_dir).map_err(|source| AgentError::State {
            what: format!("directory {}", config.state_dir.display()),
            source,
        })?;
        if let Some(parent) = config.audit_log.parent() {
            ensure_private_dir(parent).map_err(|source| AgentError::State {
                what: format!("directory {}", parent.display()),
                source,
            })?;
        }
        let audit = AuditLog::open(&config.audit_log).map_err(|source| AgentError::State {
            what: format!("audit log {}", config.audit_log.display()),
            source,
        })?;
        let keys = KeyStore::open(Arc::clone(&config)).await?;
        let loaded = keys.list().await.len();
        tracing::info!(
            backends = ?keys.backends().iter().map(|b| b.name()).collect::<Vec<_>>(),
            keys = loaded,
            "agent ready"
        );
        Ok(Self {
            ctx: Arc::new(Context::new(config, keys, audit)),
        })
    }

    /// What the handlers share (backends, configuration).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Serves `listener` until `shutdown` completes, then drains (see [`crate::run`]).
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let config = Arc::clone(&self.ctx.config);
        let mut server = Server {
            ctx: self.ctx,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            per_uid: UidSlots::new(config.connections_per_uid()),
            refusals: Arc::new(Semaphore::new(REFUSAL_SLOTS)),
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
        };
        if let Some(schedule) = config.reattestation.clone() {
            server.tasks.spawn(crate::reattestation::run(
                Arc::clone(&server.ctx),
                schedule,
                server.stop.subscribe(),
            ));
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = server.tasks.join_next(), if !server.tasks.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "connection task failed");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => server.connection(stream),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        server.drain(config.limits.shutdown_grace()).await;
        Ok(())
    }
}

struct Server {
    ctx: Arc<Context>,
    permits: Arc<Semaphore>,
    /// The connections each uid holds, against its share of `permits`.
    per_uid: Arc<UidSlots>,
    refusals: Arc<Semaphore>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    fn connection(&mut self, stream: UnixStream) {
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; closing");
                return;
            }
        };
        let span = tracing::info_span!("connection", uid = peer.uid, pid = peer.pid);
        let limits = self.ctx.config.limits.clone();
        let refusal = if !peer.is_allowed(&self.ctx.config) {
            tracing::warn!(parent: &span, "uid not allowed; refusing");
            Some(ApiError::PermissionDenied(peer.uid))
        } else {
            // The whole cap first (503 when the agent is full), then the uid's share of it.
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => match self.per_uid.try_acquire(peer.uid) {
                    Some(share) => {
                        let ctx = Arc::clone(&self.ctx);
                        let stop = self.stop.subscribe();
                        self.tasks.spawn(
                            async move {
                                let _permit = permit;
                                let _share = share;
                                connection::serve(ctx, stream, peer, stop).await;
                            }
                            .instrument(span),
                        );
                        return;
                    }
                    None => {
                        drop(permit);
                        tracing::warn!(parent: &span, "per-uid connection limit reached; refusing");
                        Some(ApiError::TooManyConnections(self.per_uid.per_uid()))
                    }
                },
                Err(_) => {
                    tracing::warn!(parent: &span, "connection limit reached; refusing");
                    Some(ApiError::Unavailable)
                }
            }
        };
        let Some(error) = refusal else { return };
        match Arc::clone(&self.refusals).try_acquire_owned() {
            Ok(slot) => {
                self.tasks.spawn(
                    async move {
                        let _slot = slot;
                        connection::refuse(stream, &limits, error).await;
                    }
                    .instrument(span),
                );
            }
            Err(_) => tracing::warn!(parent: &span, "too many refusals in progress; closing"),
        }
    }

    async fn drain(mut self, grace: Duration) {
        let in_flight = self.tasks.len();
        tracing::info!(connections = in_flight, "shutting down; draining");
        // No receiver left is fine: then there is nothing to tell.
        let _ = self.stop.send(true);
        let finished = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "requests still in flight after the grace period; aborting them"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        tracing::info!("stopped");
    }
}
