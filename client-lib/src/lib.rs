//! Client side of hwsign: talk to the local agent over its Unix socket and sign outgoing HTTP
//! requests with a hardware-held key.
//!
//! - [`AgentClient`]: the agent API v1 (status, keys, sign, attestation) over HTTP/1.1 on the
//!   agent's socket, with keep-alive connections reused and one transparent reconnect.
//! - [`Signer`]: signs an `http::Request` (or its parts) — the body is hashed here, never sent to
//!   the agent; large bodies are hashed as a stream ([`body_sha256_from_reader`]).
//! - [`reattest`]: answering a verifier's `attestation_required` with fresh TPM evidence.
//! - Adapters: [`layer::SigningLayer`] (feature `tower`), [`middleware::SigningMiddleware`]
//!   (feature `reqwest`), and [`blocking::BlockingAgentClient`] (feature `blocking`).
//!
//! Every attempt of a retried request must be signed again: each signature has a fresh date and
//! nonce, and verifiers refuse a replayed nonce. The adapters sign per attempt when placed inside
//! the retry loop; [`Signer`] re-signs an already signed request cleanly.
//!
//! ```no_run
//! # async fn example() -> Result<(), hwsign_client::ClientError> {
//! let agent = hwsign_client::AgentClient::from_env()?;
//! let signer = hwsign_client::Signer::new(agent, "hk1_0123456789abcdef0123456789abcdef", "payments");
//! let mut request = http::Request::post("https://api.example.com/v1/transfers?currency=EUR")
//!     .header("content-type", "application/json")
//!     .body(br#"{"amount":100}"#.to_vec())
//!     .map_err(|e| hwsign_client::ClientError::Protocol(e.to_string()))?;
//! signer.sign_request(&mut request).await?; // adds X-Hws-* and Authorization
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "blocking")]
pub mod blocking;
mod client;
mod describe;
mod digest;
mod error;
#[cfg(feature = "tower")]
pub mod layer;
#[cfg(feature = "reqwest")]
pub mod middleware;
pub mod reattest;
pub mod revoked_session;
mod signer;
pub mod step_up;
mod transport;

pub use client::{
    AGENT_UID_ENV, AgentClient, AgentClientBuilder, DEFAULT_MAX_IDLE_CONNECTIONS,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, SOCKET_ENV, default_socket_path,
};
pub use digest::{BodyDigest, body_sha256_from_reader, body_sha256_of_file};
pub use error::{ClientError, RequestError};
pub use hwsign_proto::AgentErrorCode;
pub use hwsign_proto::api::{
    KeyInfo, KeyLevel, SignEncoding, SignRequest, SignResponse, StatusResponse, StepUpSignRequest,
};
pub use signer::{Signer, SignerConfig};
