//! Writes the committed seed corpora of the text and structured targets (`authorization`,
//! `delegation`, `agent_api`, `canonicalize`) from the worked example of docs/PROTOCOL.md §11.
//! TPM seeds come from `fuzz/seeds/tpm-seeds.sh` (a real swtpm).
//!
//! Run from `fuzz/`: `cargo run --example write_seeds`. Output is deterministic.

use std::error::Error;
use std::fs;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_fuzz::RequestInput;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::{Evidence, KeyAttestation, TpmEvidence};
use hwsign_proto::delegation::DelegationStatement;
use hwsign_proto::{PublicKey, SigningTime};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The published example key of docs/PROTOCOL.md §11.
const EXAMPLE_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+i0wdUaJa3FRdyInLilkWOiTzhPT
dUbf5tzj+fC13Oplxv/5vTIEVirLNxeEF5BH3hyXpjsY82u5WkYiVqGNCQ==
-----END PUBLIC KEY-----";
const EXAMPLE_KEY_ID: &str = "hk1_eeef11fb77768d7147ff4c60af03efd7";
/// The example's header-mode signature (DER, hex).
const EXAMPLE_SIGNATURE: &str = "3046022100f21d7d43887c48971fdb105a5f049f66a37338a7ea84d90db2def6e3d514e1130221008b67448e30783a2eff26eb3ee30ffdfc70f84e28351bd5960737d6da66370405";
/// SHA-256 of the example body `{"to":"acct-42","amount":100}`.
const EXAMPLE_BODY_SHA256: &str =
    "b7050799cf419ab30d41a209d2025e6936654ce8837c7a3b8b2ab4dc342e6287";
/// 2026-11-23T19:30:00Z.
const EXAMPLE_TIME: u32 = 1_795_462_200;

fn write(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn authorization() -> Result<()> {
    let hws1 = format!(
        "HWS1-ECDSA-P256-SHA256 Credential={EXAMPLE_KEY_ID}/20261123/payments/hws1_request, \
         SignedHeaders=content-type;host;x-hws-content-sha256;x-hws-date;x-hws-nonce, \
         Signature={EXAMPLE_SIGNATURE}"
    );
    write("authorization", "docs-example", hws1.as_bytes())?;
    let presigned_style = format!(
        "HWS1-ECDSA-P256-SHA256 Credential={EXAMPLE_KEY_ID}/20261123/payments/hws1_request, \
         SignedHeaders=host, Signature=3045022100b8eb007169138cce2954424c78a2e98d60eb1052a46e3bb8779fbe479fc36b27022065e0a62539221c7305811d01de33dc46f92e3cea2643ac4c0baf7984970679da"
    );
    write("authorization", "host-only", presigned_style.as_bytes())?;
    let aws = "AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/20150830/service/aws4_request, \
               SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=3045022100e0";
    write("authorization", "aws-sigv4a", aws.as_bytes())?;
    Ok(())
}

fn statement() -> Result<DelegationStatement> {
    Ok(DelegationStatement {
        device_key_id: "hk1_0123456789abcdef0123456789abcdef".to_owned(),
        session_key: PublicKey::from_spki_pem(EXAMPLE_KEY_PEM)?,
        audience: "payments".to_owned(),
        not_before: SigningTime::from_unix(i64::from(EXAMPLE_TIME)),
        not_after: SigningTime::from_unix(i64::from(EXAMPLE_TIME) + 900),
    })
}

fn delegation() -> Result<()> {
    let header = statement()?.to_header_value(&hex::decode(EXAMPLE_SIGNATURE)?);
    DelegationStatement::parse_header_value(&header)?;
    write("delegation", "fifteen-minutes", header.as_bytes())?;
    Ok(())
}

fn agent_api() -> Result<()> {
    let sign = format!(
        r#"{{"key_id":"{EXAMPLE_KEY_ID}","audience":"payments","method":"POST","authority":"api.example.com","path":"/v1/transfers/caf%C3%A9","query":"currency=EUR&amount=100","headers":[{{"name":"content-type","value":"application/json"}}],"body_sha256":"{EXAMPLE_BODY_SHA256}","signed_headers":[]}}"#
    );
    write("agent_api", "sign-request", sign.as_bytes())?;
    let presign = format!(
        r#"{{"key_id":"{EXAMPLE_KEY_ID}","audience":"payments","method":"GET","authority":"api.example.com","path":"/v1/reports/2026-11.pdf","body_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","presign_expires_secs":3600}}"#
    );
    write("agent_api", "presign-request", presign.as_bytes())?;
    write(
        "agent_api",
        "create-key",
        br#"{"backend":"tpm","label":"laptop signing key"}"#,
    )?;
    write(
        "agent_api",
        "activate-credential",
        br#"{"credential_blob":"ACDe3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==","encrypted_secret":"AQIDBA=="}"#,
    )?;
    write(
        "agent_api",
        "enroll-start",
        br#"{"token":"hwt1_0123456789abcdef","key_id":"hk1_eeef11fb77768d7147ff4c60af03efd7"}"#,
    )?;
    write(
        "agent_api",
        "enroll-activate",
        br#"{"challenge_id":"c-42","secret":"3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs="}"#,
    )?;
    let attestation = tpm_attestation()?;
    write("agent_api", "tpm-attestation", attestation.as_bytes())?;
    let enroll = format!(r#"{{"challenge_id":"c-42","evidence":{attestation}}}"#);
    write("agent_api", "enroll-evidence", enroll.as_bytes())?;
    write(
        "agent_api",
        "error",
        br#"{"error":{"code":"key_not_permitted","message":"key not allowed for audience payments"}}"#,
    )?;
    write(
        "agent_api",
        "pkcs11-attestation",
        br#"{"version":1,"key_id":"hk1_eeef11fb77768d7147ff4c60af03efd7","level":"hardware-unattested","evidence":{"kind":"pkcs11-claims","claims_not_proof":true,"local":true,"never_extractable":true,"always_sensitive":null,"manufacturer":"SoftHSM project","model":"SoftHSM v2","serial":"1d2c3b4a","token_label":"hwsign"}}"#,
    )?;
    Ok(())
}

/// A `KeyAttestation` carrying the real swtpm structures of the `tpm_structures` corpus
/// (run `seeds/tpm-seeds.sh` first).
fn tpm_attestation() -> Result<String> {
    let seed = |name: &str| -> Result<String> {
        let bytes = fs::read(Path::new("corpus/tpm_structures").join(name))?;
        Ok(STANDARD.encode(bytes))
    };
    let evidence = TpmEvidence {
        ek_certificate: seed("ek-rsa2048.der")?,
        ek_certificate_nv_index: 0x01c0_0002,
        ek_chain: Vec::new(),
        ek_public: seed("ek-rsa2048.tpmt-public")?,
        ak_public: seed("ak-ecdsa.tpmt-public")?,
        key_public: seed("signing-key.tpmt-public")?,
        certify_info: seed("certify-ecdsa.tpms-attest")?,
        certify_signature: seed("certify-ecdsa.tpmt-signature")?,
        quote_info: seed("quote-ecdsa.tpms-attest")?,
        quote_signature: seed("quote-ecdsa.tpmt-signature")?,
        pcrs_sha256: vec!["00".repeat(32); 8],
    };
    let attestation = KeyAttestation {
        version: 1,
        key_id: EXAMPLE_KEY_ID.to_owned(),
        level: KeyLevel::Tpm,
        evidence: Evidence::Tpm(evidence),
    };
    Ok(serde_json::to_string(&attestation)?)
}

fn canonicalize() -> Result<()> {
    let mut body_sha256 = [0u8; 32];
    body_sha256.copy_from_slice(&hex::decode(EXAMPLE_BODY_SHA256)?);
    let example = RequestInput {
        selector: 0,
        time: EXAMPLE_TIME,
        nonce: *b"hwsign-example-1",
        body_sha256,
        presign_expires: 3600,
        signature: hex::decode(EXAMPLE_SIGNATURE)?,
        credential: EXAMPLE_KEY_ID.to_owned(),
        audience: "payments".to_owned(),
        method: "POST".to_owned(),
        path: "/v1/transfers/caf%C3%A9".to_owned(),
        query: "currency=EUR&amount=100".to_owned(),
        headers: vec![
            ("Host".to_owned(), "api.example.com".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ],
        extra_signed: Vec::new(),
        delegation: None,
    };
    let presigned = RequestInput {
        selector: 0b100,
        method: "GET".to_owned(),
        path: "/v1/reports/2026-11.pdf".to_owned(),
        query: String::new(),
        headers: vec![("host".to_owned(), "api.example.com".to_owned())],
        ..example.clone()
    };
    let delegated = RequestInput {
        headers: vec![
            ("host".to_owned(), "api.example.com:8443".to_owned()),
            ("x-request-id".to_owned(), "  a   b ".to_owned()),
        ],
        extra_signed: vec!["X-Request-Id".to_owned()],
        delegation: Some(statement()?.to_header_value(&hex::decode(EXAMPLE_SIGNATURE)?)),
        ..example.clone()
    };
    let aws = RequestInput {
        selector: 1,
        credential: "AKIDEXAMPLE".to_owned(),
        audience: "service".to_owned(),
        method: "GET".to_owned(),
        path: "/example/../a/./b//c%2Fd".to_owned(),
        query: "Param2=value2&Param1=value1".to_owned(),
        headers: vec![
            ("host".to_owned(), "example.amazonaws.com".to_owned()),
            ("My-Header1".to_owned(), "value1".to_owned()),
            ("my-header1".to_owned(), "value2".to_owned()),
        ],
        ..example.clone()
    };
    for (name, input) in [
        ("docs-example", &example),
        ("presigned", &presigned),
        ("delegated", &delegated),
        ("aws-normalized", &aws),
    ] {
        let bytes = input.to_bytes();
        let decoded = RequestInput::arbitrary(&mut Unstructured::new(&bytes))?;
        if &decoded != input {
            return Err(format!("seed {name} does not decode to itself").into());
        }
        write("canonicalize", name, &bytes)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    authorization()?;
    delegation()?;
    agent_api()?;
    canonicalize()?;
    Ok(())
}
