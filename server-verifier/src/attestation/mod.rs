//! TPM 2.0 device attestation, without libtss2 (design brief §5): TPM structure parsing, EK
//! certificate chains, software MakeCredential, and the certify / quote / clock checks of
//! enrollment.
//!
//! [`verify_evidence`] runs every check over an agent's evidence; [`make_credential`] wraps the
//! activation secret that proves the AK sits in the same TPM as the certified EK.

pub mod alg;
pub mod attest;
pub mod certificate;
pub mod chain;
pub mod checks;
pub mod clock;
pub mod credential;
mod crypto;
pub mod ek_cert;
pub mod error;
pub mod evidence;
pub mod kdf;
pub mod manufacturer_roots;
pub mod public;
pub mod reader;
pub mod registered_ek;
pub mod signature;

pub use chain::TrustAnchors;
pub use clock::ClockState;
pub use credential::{
    MadeCredential, activation_secret_matches, make_credential, new_activation_secret,
};
pub use ek_cert::TpmManufacturerInfo;
pub use error::{AttestationError, AttributeProblem, Structure};
pub use evidence::{AttestedKey, EkProvenance, verify_evidence};
pub use manufacturer_roots::manufacturer_roots;
pub use public::TpmPublic;
pub use registered_ek::{RegisteredEk, RegisteredEkError, RegisteredEks};
