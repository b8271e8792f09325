//! The integration tests of `client-lib`, one test binary: each module was its own binary before.

mod support;

#[cfg(feature = "blocking")]
mod blocking_client;
mod real_agent;
#[cfg(feature = "reqwest")]
mod reqwest_middleware;
#[cfg(feature = "tower")]
mod tower_layer;
mod wire_inputs;
