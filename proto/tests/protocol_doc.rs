//! The worked examples in docs/PROTOCOL.md are produced by this code: the test recomputes them and
//! fails if the document differs. `HWSIGN_PRINT_EXAMPLE=1 cargo test -p hwsign-proto --test
//! protocol_doc -- --nocapture` prints the blocks to paste after a deliberate change.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use hwsign_proto::keys::{Nonce, PublicKey, sha256_hex};
use hwsign_proto::sign::{HeaderSelection, SigningParams, prepare_headers, prepare_presigned};
use hwsign_proto::verify_input::{parse_header_signed, parse_presigned};
use hwsign_proto::{HWS1, RequestParts, SigningTime};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

/// The example key: a fixed, published scalar. Never use it for anything real.
fn example_key() -> Result<SigningKey> {
    let scalar = Sha256::digest(b"hwsign protocol example key -- public, never use");
    Ok(SigningKey::from_slice(&scalar)?)
}

fn sign(key: &SigningKey, digest: &[u8; 32]) -> Result<Vec<u8>> {
    let signature: Signature = key.sign_prehash(digest)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

struct Blocks(Vec<(String, String)>);

impl Blocks {
    fn add(&mut self, name: &str, text: impl Into<String>) {
        self.0.push((name.to_owned(), text.into()));
    }
}

fn examples() -> Result<Blocks> {
    let mut blocks = Blocks(Vec::new());
    let key = example_key()?;
    let public = PublicKey::from_verifying_key(*key.verifying_key())?;
    let key_id = public.key_id();
    blocks.add("example-public-key", public.to_pem().trim_end().to_owned());
    blocks.add("example-key-id", key_id.clone());

    let body = br#"{"to":"acct-42","amount":100}"#;
    let body_hash = sha256_hex(body);
    let headers = [
        ("host", "api.example.com"),
        ("content-type", "application/json"),
    ];
    let parts = RequestParts {
        method: "POST",
        path: "/v1/transfers/caf%C3%A9",
        query: "currency=EUR&amount=100",
        headers: &headers,
    };
    let nonce = Nonce::from_random(*b"hwsign-example-1");
    let time = SigningTime::parse_amz_date("20261123T193000Z")?;
    let params = SigningParams {
        profile: &HWS1,
        credential: &key_id,
        audience: "payments",
        time,
        nonce: Some(&nonce),
        added_headers: &[],
    };
    let prepared = prepare_headers(
        &params,
        &parts,
        &body_hash,
        HeaderSelection::ProfileWith(&[]),
    )?;
    blocks.add(
        "example-canonical-request",
        prepared.canonical_request().as_str(),
    );
    blocks.add("example-string-to-sign", prepared.string_to_sign().as_str());
    let signature = sign(&key, &prepared.digest())?;
    let added = prepared.finish(&HWS1, &signature);
    let added_text: Vec<String> = added.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    blocks.add("example-headers", added_text.join("\n"));

    // The verifier's view reproduces the same string to sign and the signature verifies.
    let mut received: Vec<(&str, &str)> = headers.to_vec();
    received.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let claimed = parse_header_signed(
        &HWS1,
        &RequestParts {
            headers: &received,
            ..parts
        },
    )?;
    ensure!(claimed.string_to_sign.as_str() == blocks.0[3].1);
    ensure!(public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));

    // Presigned URL.
    let get_headers = [("host", "api.example.com")];
    let get_parts = RequestParts {
        method: "GET",
        path: "/v1/reports/2026-11.pdf",
        query: "",
        headers: &get_headers,
    };
    let presigned = prepare_presigned(
        &params,
        &get_parts,
        hwsign_proto::sign::UNSIGNED_PAYLOAD,
        3600,
        HeaderSelection::ProfileWith(&[]),
    )?;
    blocks.add(
        "presign-canonical-request",
        presigned.canonical_request().as_str(),
    );
    let signature = sign(&key, &presigned.digest())?;
    let query: Vec<String> = presigned
        .finish(&HWS1, &signature)
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let url = format!(
        "https://api.example.com/v1/reports/2026-11.pdf?{}",
        query.join("&")
    );
    let presigned_claim = parse_presigned(
        &HWS1,
        &RequestParts {
            query: url.split_once('?').context("query")?.1,
            ..get_parts
        },
    )?;
    ensure!(public.verify_digest(
        &presigned_claim.string_to_sign.digest(),
        &presigned_claim.authorization.signature
    ));
    blocks.add("presign-url", query.join("\n&"));
    Ok(blocks)
}

#[test]
fn protocol_doc_examples_match_the_code() -> Result<()> {
    let blocks = examples()?;
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(&doc_path).context("docs/PROTOCOL.md")?;
    let print = std::env::var_os("HWSIGN_PRINT_EXAMPLE").is_some();
    let mut missing = Vec::new();
    for (name, text) in &blocks.0 {
        let fenced = format!("<!-- {name} -->\n```\n{text}\n```");
        if print {
            println!("{fenced}\n");
        }
        if !doc.contains(&fenced) {
            missing.push(name.clone());
        }
    }
    ensure!(
        missing.is_empty(),
        "docs/PROTOCOL.md is out of date for: {missing:?}"
    );
    Ok(())
}
