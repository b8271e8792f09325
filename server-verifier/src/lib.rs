//! The hwsign verifier: checks HWS1-signed requests (design brief §6) and, in [`attestation`],
//! TPM enrollment evidence (§5).
//!
//! # Use
//! ```no_run
//! use std::sync::Arc;
//! use hwsign_verifier::{
//!     HwsignLayer, MemoryReplayCache, SqliteRegistry, Verifier, VerifierConfig, VerifiedDevice,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(SqliteRegistry::open("keys.db".as_ref())?);
//! let replay = Arc::new(MemoryReplayCache::new(100_000));
//! let verifier = Arc::new(Verifier::new(VerifierConfig::new("my-api", ["api.example.com"]), registry, replay)?);
//! let app: axum::Router = axum::Router::new()
//!     .route(
//!         "/hello",
//!         axum::routing::get(|VerifiedDevice(who): VerifiedDevice| async move { who.key_id }),
//!     )
//!     .layer(HwsignLayer::new(verifier));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Or call [`Verifier::verify`] directly with the request's parts, its body's SHA-256 and the
//! time read after the body was complete; a server streaming the body uses the two-phase API
//! ([`Verifier::check_signature`], [`Verifier::reserve`], then [`Verifier::finish`], which reads
//! the verifier's [`Clock`] itself once the body is complete).
//!
//! `hosts` names the authorities the API serves (the signed `host` must match one):
//! [`VerifierConfig::new`] takes them; [`VerifierConfig::any_host`] is the insecure opt-out. Keys enter the registry through the `hwsign-verifier keys add` command (or
//! [`KeyRegistry::add`]).
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_api;
pub mod attestation;
pub mod audit;
pub mod config;
pub mod console;
pub mod delegation;
pub mod directory;
pub mod ecdsa_backend;
pub mod enrollment;
mod hosts;
pub mod layer;
mod path_spellings;
pub mod policy;
pub mod reattestation;
pub mod registry;
mod rejection;
pub mod replay;
mod route_rules;
mod unix_time;
pub mod verify;
pub mod webauthn;

pub use config::{PolicySettings, PresignPolicy, RouteRule, VerifierConfig};
pub use ecdsa_backend::VerifyBackend;
pub use hwsign_proto::RejectCode;
pub use hwsign_proto::api::KeyLevel;
pub use hwsign_proto::error::ErrorChain;
pub use layer::{HwsignLayer, HwsignService, VerifiedDevice, rejection_response};
pub use policy::{PolicyDecision, PolicyEngine, PolicyError};
pub use registry::{
    DeviceClock, DeviceFacts, DeviceRecord, Fido2Credential, KeyRegistry, MemoryRegistry,
    RegisteredKey, RegistryError, SqliteRegistry,
};
pub use rejection::Rejection;
pub use replay::{
    Freshness, MemoryReplayCache, ReplayCache, ReplayError, Reservation, open_replay_cache,
};
pub use verify::{Clock, Reserved, SignatureChecked, SystemClock, VerifiedPrincipal, Verifier};
