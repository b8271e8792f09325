//! `hwsign-verifier serve`: a verifying reverse proxy (design brief §7) that puts HWS1
//! verification in front of an API written in any language.
//!
//! Every request is verified by the `hwsign-verifier` library (the same checks, limits and
//! refusals as its tower middleware); a verified one is forwarded to the configured upstream
//! with the identity headers `X-Hws-Verified-Key`, `-Device`, `-Level`, `-Delegated` and
//! `-Signed-Headers` (incoming copies of any `X-Hws-Verified-*` are always removed), and the
//! upstream's response streams back as it arrives (Server-Sent Events, chunked bodies). A refused
//! request never reaches the upstream: the proxy answers it with the documented status and
//! `WWW-Authenticate: HWS1 error="<code>"`. An upstream that does not answer is 502
//! `upstream_unavailable`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use hwsign_verifier_serve::{Listeners, ServeConfig, run};
//!
//! let config = ServeConfig::load("serve.toml".as_ref())?;
//! let listeners = Listeners::bind(&config).await?;
//! run(config, listeners, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! The configuration is documented in `server-verifier/serve/serve.example.toml`; operations in
//! docs/OPERATIONS.md and docs/SCALING.md.
#![forbid(unsafe_code)]

mod admin;
pub mod config;
mod console;
mod error;
mod forwarded;
mod headers;
mod metrics;
mod policy_reload;
mod proxy;
mod server;
mod tls;

pub use config::{ServeConfig, ServeConfigError};
pub use error::ServeError;
pub use headers::{
    VERIFIED_DELEGATED, VERIFIED_DEVICE, VERIFIED_KEY, VERIFIED_LEVEL, VERIFIED_SIGNED_HEADERS,
    VERIFIED_USER,
};
pub use server::{Listeners, run};
