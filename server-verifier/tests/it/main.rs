//! The integration tests of `server-verifier`, one test binary: each module was its own binary before.

mod attestation_support;
mod verify_support;

mod admin_directory;
mod admin_people;
mod admin_recovery;
mod attestation_clock;
mod attestation_credential;
mod attestation_ek;
mod attestation_evidence;
mod attestation_parsing;
mod attestation_props;
mod audit_trail;
mod backends;
mod config;
mod console_http;
mod delegation_window;
mod enrollment;
mod fleet_enrollment;
mod fleet_registry;
mod fleet_replay;
mod http_layer;
mod key_cache;
mod manufacturer_roots;
mod policy_bundles;
mod presigned_detection;
mod registry;
mod rejection_responses;
mod replay_cache;
mod rfc9421_verify;
mod route_spellings;
mod verify_pipeline;
mod webauthn_registration;
mod webauthn_verify;
mod wycheproof;
