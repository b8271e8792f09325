//! The integration tests of `hwsign-verifier-serve`, one test binary. The proxy's behaviour on
//! the wire (identity headers, refusals, streaming, TLS, shutdown) is tested end to end in
//! tests/tests/it/fleet_serve.rs with the real binary.

mod config;
mod startup;
