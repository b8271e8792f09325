//! Placeholder.
pub mod attestation;
