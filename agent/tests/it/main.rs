//! The integration tests of `agent`, one test binary: each module was its own binary before.

mod pkcs11_suite;
mod support;

mod api;
mod config;
mod daemon;
mod limits;
mod pkcs11_softhsm;
mod pkcs11_tpm2;
mod software_backend;
mod state;
mod systemd_units;
mod tpm_api;
mod tpm_backend;
mod tpm_backend_attest;
mod tpm_backend_verifier;
