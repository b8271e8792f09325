//! TPM 2.0 device attestation, without libtss2: TPM structure parsing, EK certificate chains,
//! software MakeCredential, and the certify / quote / clock checks of enrollment.

pub mod alg;
pub mod attest;
pub mod credential;
mod crypto;
pub mod kdf;
pub mod public;
pub mod reader;
pub mod signature;
