//! The hwsign agent: holds keys in key backends (software files, a TPM, a PKCS#11 token) and
//! signs API requests for local SDKs over a Unix socket (HTTP/1.1, JSON, API v1).
//!
//! Layers, one module each (outside in):
//! [`server`] (accept loop, connection cap, shutdown and drain) →
//! [`peer`] (SO_PEERCRED uid check, before any byte of the request is read) →
//! [`api`] (routing, bounded bodies, JSON, wire error codes) →
//! [`signing`] (the signing use case: rules, nonce, delegated session, audit before release) →
//! [`keystore`] (key id → backend, blocking calls off the runtime) and [`session`] (delegated
//! session keys) →
//! [`backends`] (the [`backends::KeyBackend`] implementations).
//! [`context`] holds what they share; [`reattestation`] runs the agent's own re-attestation
//! schedule when `[reattestation]` is configured.
//!
//! Embedding the agent (the `hwsign` CLI's demo, tests):
//! ```no_run
//! # async fn demo() -> Result<(), hwsign_agent::AgentError> {
//! use std::sync::Arc;
//! let config = hwsign_agent::Config::for_state_dir("/tmp/demo/state", "/tmp/demo/agent.sock");
//! let listener = hwsign_agent::socket::bind(&config.socket_path)?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let agent = tokio::spawn(hwsign_agent::run(listener, Arc::new(config), async move {
//!     let _ = stopped.await;
//! }));
//! // ... talk to the agent ...
//! let _ = stop.send(());
//! # Ok(()) }
//! ```
//!
//! Unsafe code is denied crate-wide and allowed in exactly one module, [`systemd`], which adopts
//! the listening socket systemd passes as a raw file descriptor (the one operation the safe
//! standard library cannot express). The workspace lint is `deny` rather than `forbid` only so
//! that this one module can opt out; every other crate root says `#![forbid(unsafe_code)]`.
#![deny(unsafe_code)]

pub(crate) mod api;
pub(crate) mod audit;
pub mod backends;
pub mod config;
pub(crate) mod context;
mod error;
pub(crate) mod fsutil;
pub(crate) mod keystore;
pub mod logging;
pub(crate) mod peer;
pub(crate) mod posture;
pub(crate) mod reattestation;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod signing;
pub mod socket;
#[allow(unsafe_code)]
pub mod systemd;
mod unix_time;

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;

pub use config::Config;
pub use error::{AgentError, ErrorChain, error_chain};
pub use server::Agent;

/// Opens the configured backends, then serves API v1 on `listener` until `shutdown` completes;
/// then stops accepting, lets in-flight requests finish (at most `limits.shutdown_grace_ms`)
/// and returns. The caller owns the socket file (see [`socket::bind`]).
pub async fn run(
    listener: UnixListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let agent = Agent::open(config).await?;
    agent.serve(listener, shutdown).await
}
