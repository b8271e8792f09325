//! The HWS1 wire format, shared by signer and verifier: canonical request, string to sign,
//! `Authorization` header, presigned URLs, and the agent API types. No I/O, no clock, no
//! randomness: time and nonces are inputs, so every step is reproducible in tests.
//!
//! The pipeline follows SigV4: [`RequestParts`] → [`CanonicalRequest`] → [`StringToSign`] →
//! ECDSA P-256 over SHA-256 (done by a key backend) → headers to add. A [`Profile`] chooses the
//! algorithm name, header names and scope terminator; with [`profile::aws_sigv4a`] the pipeline
//! reproduces the AWS SigV4a test suite byte for byte.
#![forbid(unsafe_code)]

pub mod api;
pub mod attestation;
pub mod authorization;
pub mod canonical;
pub mod codes;
pub mod delegation;
pub mod encoding;
pub mod enrollment;
pub mod error;
pub mod host;
pub mod keys;
pub mod limits;
pub mod nonce;
pub mod posture;
pub mod profile;
pub mod reattestation;
pub mod rfc9421;
pub mod rfc9421_request;
pub mod scope;
pub mod sign;
pub mod string_to_sign;
pub mod time;
pub mod verify_input;
pub mod webauthn;

pub use authorization::Authorization;
pub use canonical::{CanonicalRequest, RequestParts, SignedHeaders};
pub use codes::{AgentErrorCode, RejectCode};
pub use error::ProtoError;
pub use keys::PublicKey;
pub use nonce::Nonce;
pub use profile::{HWS1, Profile};
pub use scope::Scope;
pub use sign::{HeaderSelection, PreparedSignature, SigningParams};
pub use string_to_sign::StringToSign;
pub use time::SigningTime;
pub use verify_input::ClaimedSignature;
