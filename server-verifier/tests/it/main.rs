//! The integration tests of `server-verifier`, one test binary: each module was its own binary before.

mod attestation_support;
mod verify_support;

mod attestation_clock;
mod attestation_credential;
mod attestation_ek;
mod attestation_evidence;
mod attestation_parsing;
mod attestation_props;
mod audit_trail;
mod backends;
mod config;
mod enrollment;
mod fleet_enrollment;
mod fleet_registry;
mod fleet_replay;
mod http_layer;
mod manufacturer_roots;
mod registry;
mod replay_cache;
mod verify_pipeline;
mod wycheproof;
