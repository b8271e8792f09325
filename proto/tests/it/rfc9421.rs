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

mod request {
    use anyhow::{Context as _, Result, ensure};
    use hwsign_proto::canonical::RequestParts;
    use hwsign_proto::nonce::Nonce;
    use hwsign_proto::rfc9421::{content_digest_sha256, signature_member};
    use hwsign_proto::rfc9421_request::{
        LABEL, components_for, parse_rfc9421_request, request_signature_base, signing_params,
    };
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
    use sha2::{Digest as _, Sha256};

    const BODY: &[u8] = br#"{"model":"gpt","input":"hi"}"#;

    /// Signs like hwsign's signer: Content-Digest, then the base, then the two fields.
    fn signed(
        key: &SigningKey,
        headers: &[(&str, &str)],
        query: &str,
    ) -> Result<Vec<(String, String)>> {
        let mut owned: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let digest: [u8; 32] = Sha256::digest(BODY).into();
        owned.push(("content-digest".into(), content_digest_sha256(&digest)));
        let borrowed: Vec<(&str, &str)> = owned
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let parts = RequestParts {
            method: "POST",
            path: "/v1/responses",
            query,
            headers: &borrowed,
        };
        let params = signing_params(
            components_for(&parts, &[]),
            1_764_547_200,
            &Nonce::from_random([9; 16]),
            "hk1_0123456789abcdef0123456789abcdef",
            "api.example",
        );
        let base = request_signature_base(&parts, &params)?;
        let signature: Signature = key.sign(base.as_bytes());
        owned.push((
            "signature-input".into(),
            format!("{LABEL}={}", params.serialize()),
        ));
        owned.push((
            "signature".into(),
            signature_member(LABEL, &signature.to_bytes()),
        ));
        Ok(owned)
    }

    fn parse(
        headers: &[(String, String)],
        method: &str,
        path: &str,
        query: &str,
    ) -> Result<
        hwsign_proto::rfc9421_request::Rfc9421Claim,
        hwsign_proto::rfc9421_request::Rfc9421RequestError,
    > {
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        parse_rfc9421_request(&RequestParts {
            method,
            path,
            query,
            headers: &borrowed,
        })
    }

    fn key() -> Result<SigningKey> {
        Ok(SigningKey::from_slice(&[0x42; 32])?)
    }

    #[test]
    fn rfc9421_request_round_trip_covers_what_hws1_covers() -> Result<()> {
        let key = key()?;
        let verifying = VerifyingKey::from(&key);
        let headers = signed(
            &key,
            &[
                ("host", "API.example:8443"),
                ("content-type", "application/json"),
            ],
            "b=2&a=1",
        )?;
        let claim = parse(&headers, "POST", "/v1/responses", "b=2&a=1")?;
        ensure!(claim.audience == "api.example" && claim.created_unix == 1_764_547_200);
        ensure!(claim.key_id == "hk1_0123456789abcdef0123456789abcdef");
        ensure!(claim.body_sha256 == <[u8; 32]>::from(Sha256::digest(BODY)));
        ensure!(
            claim.signature_base.starts_with("\"@method\": POST\n\"@authority\": api.example:8443\n\"@path\": /v1/responses\n\"@query\": ?b=2&a=1\n\"content-digest\": sha-256=:"),
            "{}",
            claim.signature_base
        );
        ensure!(
            claim
                .signature_base
                .contains("\n\"content-type\": application/json\n")
        );
        let signature = Signature::from_slice(&claim.signature)?;
        verifying.verify(claim.signature_base.as_bytes(), &signature)?;

        // The same headers received for another method, path or query: the base differs, the
        // signature no longer verifies.
        for (method, path, query) in [
            ("PUT", "/v1/responses", "b=2&a=1"),
            ("POST", "/v1/other", "b=2&a=1"),
            ("POST", "/v1/responses", "b=2&a=2"),
        ] {
            let other = parse(&headers, method, path, query)?;
            ensure!(
                verifying
                    .verify(other.signature_base.as_bytes(), &signature)
                    .is_err(),
                "{method} {path}?{query}"
            );
        }
        Ok(())
    }

    #[test]
    fn rfc9421_request_profile_refusals() -> Result<()> {
        let key = key()?;
        let headers = signed(
            &key,
            &[
                ("host", "api.example"),
                ("content-type", "application/json"),
            ],
            "",
        )?;
        let with = |name: &str, value: &str| -> Vec<(String, String)> {
            headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        if n == name {
                            value.to_owned()
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect()
        };
        let input = headers
            .iter()
            .find(|(n, _)| n == "signature-input")
            .map(|(_, v)| v.clone())
            .context("input")?;
        let refused = |headers: Vec<(String, String)>, why: &str| -> Result<()> {
            let error = parse(&headers, "POST", "/v1/responses", "")
                .err()
                .context(format!("accepted: {why}"))?;
            ensure!(error.to_string().contains(why), "{why}: {error}");
            Ok(())
        };
        refused(
            with("signature-input", &input.replace("\"@query\" ", "")),
            "@query",
        )?;
        refused(
            with("signature-input", &input.replace(" \"content-type\"", "")),
            "content-type",
        )?;
        refused(
            with(
                "signature-input",
                &input.replace("ecdsa-p256-sha256", "hmac-sha256"),
            ),
            "alg",
        )?;
        refused(
            with(
                "signature-input",
                &input.replace("hws1:api.example", "api.example"),
            ),
            "tag",
        )?;
        refused(with("signature-input", &format!("{input};foo=1")), "foo")?;
        refused(
            with("signature-input", &input.replace(";created=1764547200", "")),
            "created",
        )?;
        refused(
            with("signature-input", &input.replace("hws=", "other=")),
            "same label",
        )?;
        refused(with("content-digest", "sha-512=:AAAA:"), "sha-256")?;
        refused(with("signature", "hws=:AAAA:"), "64 bytes")?;
        let mut twice = headers.clone();
        twice.push(("signature-input".into(), input.clone()));
        refused(twice, "exactly one Signature-Input")?;
        let mut two_hosts = headers.clone();
        two_hosts.push(("host".into(), "evil.example".into()));
        refused(two_hosts, "@authority")?;
        Ok(())
    }
}
