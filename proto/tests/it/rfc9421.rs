//! RFC 9421 building blocks against the RFC's own Appendix B example: the signature base is
//! rebuilt byte for byte from the message and `Signature-Input`, and the published ECDSA P-256
//! signature verifies over it with the published key (and fails over a changed message).

use anyhow::{Context as _, Result, ensure};
use hwsign_proto::rfc9421::{parse_signature, parse_signature_input, signature_base};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    status: u16,
    fields: Vec<(String, String)>,
    body: String,
    signature_input: String,
    signature: String,
    signature_base: String,
    public_key_pem: String,
}

fn vector() -> Result<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/rfc9421/b24.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn base_of(vector: &Vector, status: u16) -> Result<String> {
    let inputs = parse_signature_input(&vector.signature_input)?;
    let (label, params) = inputs.first().context("no signature input")?;
    ensure!(label == "sig-b24");
    Ok(signature_base(params, |name| match name {
        "@status" => Some(status.to_string()),
        field => vector
            .fields
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, v)| v.clone()),
    })?)
}

#[test]
fn rfc9421_appendix_b24_signature_base_and_published_signature_verify() -> Result<()> {
    let vector = vector()?;
    ensure!(vector.body.len() == 23, "the body Content-Length names");
    let base = base_of(&vector, vector.status)?;
    ensure!(base == vector.signature_base, "base:\n{base}");

    let signatures = parse_signature(&vector.signature)?;
    let (label, raw) = signatures.first().context("no signature")?;
    ensure!(label == "sig-b24" && raw.len() == 64);
    let key = VerifyingKey::from_public_key_pem(&vector.public_key_pem)?;
    let signature = Signature::from_slice(raw)?;
    key.verify(base.as_bytes(), &signature)?;

    // Any change to a covered component breaks it.
    let changed = base_of(&vector, 201)?;
    ensure!(key.verify(changed.as_bytes(), &signature).is_err());
    Ok(())
}

#[test]
fn rfc9421_a_missing_covered_component_is_refused() -> Result<()> {
    let vector = vector()?;
    let inputs = parse_signature_input(&vector.signature_input)?;
    let (_, params) = inputs.first().context("no signature input")?;
    let error = signature_base(params, |name| (name == "@status").then(|| "200".to_owned()))
        .err()
        .context("a base was built without content-type")?;
    ensure!(error.to_string().contains("content-type"), "{error}");
    Ok(())
}
