//! The integration tests of `tests`, one test binary: each module was its own binary before.

mod admin_support;
mod delegation_support;

mod admin_audit;
mod admin_postgres;
mod admin_resession;
mod admin_roles;
mod admin_scim;
mod admin_sessions;
mod adversarial;
mod console;
mod deb;
mod delegation_software;
mod delegation_tpm;
mod fido2;
mod fido2_enroll;
mod fleet_redis;
mod fleet_serve;
mod fleet_serve_postgres;
mod fleet_serve_reattestation;
mod pkcs11_softhsm;
mod pkcs11_tpm2;
mod policy_attestation;
mod policy_posture;
mod policy_support;
mod proxy;
mod rfc9421;
mod sdk_node;
mod sdk_python;
mod software;
mod tpm_enroll;
mod tpm_refusals;
mod webauthn_browser;
