//! `pkcs11_*` end to end on SoftHSM2: the real agent binary with a `[backends.pkcs11]` section,
//! each test with its own token in a temp dir (`SOFTHSM2_CONF` in the agent's environment).

use anyhow::Result;
use hwsign_e2e::pkcs11_e2e::{self, Token};
use hwsign_test_support::softhsm::USER_PIN;

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_softhsm_signs_end_to_end() -> Result<()> {
    pkcs11_e2e::signs_end_to_end(&Token::softhsm("e2e-softhsm-sign")?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_softhsm_wrong_pin_is_refused() -> Result<()> {
    pkcs11_e2e::wrong_pin(&Token::softhsm("e2e-softhsm-pin")?, USER_PIN).await
}

/// SoftHSM never locks a PIN by itself; the fixture sets the token's CKF_USER_PIN_LOCKED flag as
/// a token does after too many wrong PINs.
#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_softhsm_locked_pin_is_refused() -> Result<()> {
    let token = Token::softhsm("e2e-softhsm-locked")?;
    if let Token::SoftHsm(hsm) = &token {
        hsm.mark_user_pin_locked()?;
    }
    pkcs11_e2e::locked_pin(&token).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_softhsm_absent_token_is_unavailable() -> Result<()> {
    pkcs11_e2e::absent_token(&Token::softhsm("e2e-softhsm-present")?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_softhsm_missing_module_leaves_the_agent_serving() -> Result<()> {
    pkcs11_e2e::missing_module(&Token::softhsm("e2e-softhsm-module")?).await
}
