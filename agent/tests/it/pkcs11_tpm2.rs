//! The PKCS#11 backend against tpm2-pkcs11 on swtpm: every test gets its own TPM and token, in
//! its own process. tpm2-pkcs11 never reports a locked PIN (a TPM dictionary-attack lockout shows
//! as CKR_PIN_INCORRECT), so the locked-PIN test, like the module-independent ones, runs only in
//! `pkcs11_softhsm.rs`.

#![cfg(feature = "pkcs11")]

use crate::pkcs11_suite;

use anyhow::Result;
use pkcs11_suite::harness::{Kind, Options, isolated};
use pkcs11_suite::*;

const KIND: Kind = Kind::Tpm2;

#[test]
fn pkcs11_tpm2_create_list_sign() -> Result<()> {
    isolated(
        "pkcs11_tpm2_create_list_sign",
        KIND,
        Options::default(),
        &[create_list_sign],
    )
}

#[test]
fn pkcs11_tpm2_keys_survive_restart() -> Result<()> {
    isolated(
        "pkcs11_tpm2_keys_survive_restart",
        KIND,
        Options::default(),
        &[restart_create, restart_find],
    )
}

#[test]
fn pkcs11_tpm2_non_extractable() -> Result<()> {
    isolated(
        "pkcs11_tpm2_non_extractable",
        KIND,
        Options::default(),
        &[non_extractable],
    )
}

#[test]
fn pkcs11_tpm2_attestation_claims() -> Result<()> {
    isolated(
        "pkcs11_tpm2_attestation_claims",
        KIND,
        Options::default(),
        &[attestation_claims],
    )
}

#[test]
fn pkcs11_tpm2_wrong_pin_not_retried() -> Result<()> {
    let options = Options {
        spy: true,
        ..Options::default()
    };
    isolated(
        "pkcs11_tpm2_wrong_pin_not_retried",
        KIND,
        options,
        &[wrong_pin_not_retried],
    )
}

#[test]
fn pkcs11_tpm2_absent_token() -> Result<()> {
    isolated(
        "pkcs11_tpm2_absent_token",
        KIND,
        Options::default(),
        &[absent_token],
    )
}

#[test]
fn pkcs11_tpm2_agent_end_to_end() -> Result<()> {
    isolated(
        "pkcs11_tpm2_agent_end_to_end",
        KIND,
        Options::default(),
        &[agent_end_to_end],
    )
}
