//! `pkcs11_*` end to end on tpm2-pkcs11 (Debian `libtpm2-pkcs11-1`) over swtpm, provisioned through
//! tpm2-abrmd on a private bus: the same scenarios as `pkcs11_softhsm.rs`, so the backend is shown
//! not to depend on SoftHSM. Not repeated here: a locked PIN (tpm2-pkcs11 reports a TPM
//! dictionary-attack lockout as CKR_PIN_INCORRECT, never CKR_PIN_LOCKED).

use anyhow::Result;
use hwsign_e2e::pkcs11_e2e::{self, Token};
use hwsign_test_support::tpm2_pkcs11::USER_PIN;

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_tpm2_signs_end_to_end() -> Result<()> {
    pkcs11_e2e::signs_end_to_end(&Token::tpm2("e2e-tpm2-sign")?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_tpm2_wrong_pin_is_refused() -> Result<()> {
    pkcs11_e2e::wrong_pin(&Token::tpm2("e2e-tpm2-pin")?, USER_PIN).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_tpm2_absent_token_is_unavailable() -> Result<()> {
    pkcs11_e2e::absent_token(&Token::tpm2("e2e-tpm2-present")?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_tpm2_missing_module_leaves_the_agent_serving() -> Result<()> {
    pkcs11_e2e::missing_module(&Token::tpm2("e2e-tpm2-module")?).await
}
