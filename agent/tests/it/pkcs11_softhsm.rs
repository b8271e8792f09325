//! The PKCS#11 backend against SoftHSM2: every test gets its own token, in its own process.

#![cfg(feature = "pkcs11")]

use crate::pkcs11_suite;

use anyhow::Result;
use pkcs11_suite::harness::{Kind, Options, isolated};
use pkcs11_suite::*;

const KIND: Kind = Kind::SoftHsm;

#[test]
fn pkcs11_softhsm_create_list_sign() -> Result<()> {
    isolated(
        "pkcs11_softhsm_create_list_sign",
        KIND,
        Options::default(),
        &[create_list_sign],
    )
}

#[test]
fn pkcs11_softhsm_keys_survive_restart() -> Result<()> {
    isolated(
        "pkcs11_softhsm_keys_survive_restart",
        KIND,
        Options::default(),
        &[restart_create, restart_find],
    )
}

#[test]
fn pkcs11_softhsm_non_extractable() -> Result<()> {
    isolated(
        "pkcs11_softhsm_non_extractable",
        KIND,
        Options::default(),
        &[non_extractable],
    )
}

#[test]
fn pkcs11_softhsm_attestation_claims() -> Result<()> {
    isolated(
        "pkcs11_softhsm_attestation_claims",
        KIND,
        Options::default(),
        &[attestation_claims],
    )
}

#[test]
fn pkcs11_softhsm_wrong_pin_not_retried() -> Result<()> {
    let options = Options {
        spy: true,
        ..Options::default()
    };
    isolated(
        "pkcs11_softhsm_wrong_pin_not_retried",
        KIND,
        options,
        &[wrong_pin_not_retried],
    )
}

#[test]
fn pkcs11_softhsm_locked_pin() -> Result<()> {
    let options = Options {
        spy: true,
        lock_user_pin: true,
    };
    isolated("pkcs11_softhsm_locked_pin", KIND, options, &[locked_pin])
}

#[test]
fn pkcs11_softhsm_absent_token() -> Result<()> {
    isolated(
        "pkcs11_softhsm_absent_token",
        KIND,
        Options::default(),
        &[absent_token],
    )
}

#[test]
fn pkcs11_softhsm_missing_module() -> Result<()> {
    isolated(
        "pkcs11_softhsm_missing_module",
        KIND,
        Options::default(),
        &[missing_module],
    )
}

#[test]
fn pkcs11_softhsm_writable_module_refused() -> Result<()> {
    isolated(
        "pkcs11_softhsm_writable_module_refused",
        KIND,
        Options::default(),
        &[writable_module_refused],
    )
}

#[test]
fn pkcs11_softhsm_agent_end_to_end() -> Result<()> {
    isolated(
        "pkcs11_softhsm_agent_end_to_end",
        KIND,
        Options::default(),
        &[agent_end_to_end],
    )
}

#[test]
fn pkcs11_softhsm_newuser_missing_pin_not_available() -> Result<()> {
    isolated(
        "pkcs11_softhsm_newuser_missing_pin_not_available",
        KIND,
        Options::default(),
        &[missing_pin_not_available],
    )
}
