//! Test fixtures for hwsign: real emulators and processes in temp dirs, cleaned up on drop.
#![forbid(unsafe_code)]

pub mod binaries;
pub mod dbus;
pub mod fido2_authenticator;
pub mod nginx;
pub mod notifications_standin;
pub mod ports;
pub mod postgres;
pub mod posture_standins;
pub mod redis;
pub mod softhsm;
pub mod swtpm;
pub mod tpm2_pkcs11;
