//! FIDO2 / WebAuthn in the verifier (docs/WEBAUTHN.md): the `[webauthn]` settings, the checks
//! of an `HWS1-WEBAUTHN-ES256` request that need the registry (credential, RP, counter), and
//! step-up.
//!
//! The pure checks (header, client data, authenticator data) live in
//! [`hwsign_proto::webauthn`]; the signature is verified by the verifier's ECDSA backend over
//! `authenticatorData ‖ SHA-256(clientDataJSON)`.

mod assertion;
pub mod packed;
pub mod registration;
mod settings;
mod step_up;

pub use settings::{MAX_ORIGINS, WebAuthnSettings};
pub use step_up::{MAX_STEP_UP_AGE_SECS, StepUp, step_up_challenge};

pub(crate) use assertion::{WebAuthnUse, check_delegation_assertion, check_request_assertion};
pub(crate) use step_up::check_step_up;
