//! `hwsign-test-api PEM...`: the OpenAI-shaped API behind the real verifier that the SDK tests use
//! ([`hwsign_e2e::openai_api`]), run by hand — e.g. to run `pytest` or `node --test` in
//! `sdk/python` / `sdk/node` against an agent of your own. Registers each given public key (SPKI
//! PEM, as `hwsign keys export` writes it) at level `software`, prints the base URL and the
//! audience, and serves on 127.0.0.1 until interrupted.

use anyhow::{Context, Result};
use hwsign_e2e::AUDIENCE;
use hwsign_e2e::openai_api::OpenAiApi;
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;

#[tokio::main]
async fn main() -> Result<()> {
    let api = OpenAiApi::start().await?;
    for path in std::env::args().skip(1) {
        let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let public = PublicKey::from_spki_pem(&pem).with_context(|| format!("parsing {path}"))?;
        api.register(&public, KeyLevel::Software)?;
        println!("registered {}", public.key_id());
    }
    println!("HWSIGN_TEST_API={}", api.base_url());
    println!("HWSIGN_TEST_AUDIENCE={AUDIENCE}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
