//! `HWS1-WEBAUTHN-ES256`: the worked example in `vectors/webauthn/example.json` is produced by this
//! code and checked step by step; then every refusal of the stateless checks.
//!
//! After a deliberate protocol change: `HWSIGN_REGENERATE=1 cargo test -p hwsign-proto --test it
//! webauthn`, review the diff, commit.

use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_proto::delegation::DelegationStatement;
use hwsign_proto::keys::sha256_hex;
use hwsign_proto::sign::prepare_headers;
use hwsign_proto::webauthn::{
    Assertion, AssertionExpectations, AttestationObject, AttestationStatement, AttestedCredential,
    AuthenticatorData, AuthenticatorFlags, ClientData, HWS1_WEBAUTHN, TYPE_CREATE, TYPE_GET,
    WEBAUTHN_ALGORITHM, WebAuthnDelegation, WebAuthnError, check_sign_count, client_data_json,
    cose_key_from_public_key, is_webauthn_delegation, public_key_from_cose, request_challenge,
    rp_id_hash,
};
use hwsign_proto::{
    HeaderSelection, Nonce, ProtoError, PublicKey, RejectCode, RequestParts, SigningParams,
    SigningTime,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://app.example.com";
const AUDIENCE: &str = "payments";
const DATE: &str = "20261123T193000Z";
const NONCE_BYTES: &[u8; 16] = b"hwsign-webauthn1";
const BODY: &str = "{\"to\":\"acct-42\",\"amount\":100}";

/// The example credential: a fixed, published scalar. Never use it for anything real.
fn example_key() -> Result<SigningKey> {
    let scalar = Sha256::digest(b"hwsign webauthn example credential -- public, never use");
    Ok(SigningKey::from_slice(&scalar)?)
}

fn example_session_key() -> Result<SigningKey> {
    let scalar = Sha256::digest(b"hwsign protocol example session key -- public, never use");
    Ok(SigningKey::from_slice(&scalar)?)
}

fn public(key: &SigningKey) -> Result<PublicKey> {
    Ok(PublicKey::from_verifying_key(*key.verifying_key())?)
}

fn sign(key: &SigningKey, digest: &[u8; 32]) -> Result<Vec<u8>> {
    let signature: Signature = key.sign_prehash(digest)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

fn authenticator_data(flags: u8, sign_count: u32) -> Vec<u8> {
    AuthenticatorData {
        rp_id_hash: rp_id_hash(RP_ID),
        flags: AuthenticatorFlags(flags),
        sign_count,
        attested_credential: None,
    }
    .to_bytes()
}

/// Sets a flag that `to_bytes` would clear (ED, AT) without adding what it announces.
fn with_flag(mut ad: Vec<u8>, flag: u8) -> Vec<u8> {
    ad[32] |= flag;
    ad
}

/// Computes the example from its inputs: every intermediate value, in order.
fn compute() -> Result<Value> {
    let key = example_key()?;
    let key_id = public(&key)?.key_id();
    let time = SigningTime::parse_amz_date(DATE)?;
    let nonce = Nonce::from_random(*NONCE_BYTES);
    let headers = [
        ("host", "api.example.com"),
        ("content-type", "application/json"),
    ];
    let parts = RequestParts {
        method: "POST",
        path: "/v1/transfers",
        query: "",
        headers: &headers,
    };
    let params = SigningParams {
        profile: &HWS1_WEBAUTHN,
        credential: &key_id,
        audience: AUDIENCE,
        time,
        nonce: Some(&nonce),
        added_headers: &[],
    };
    let prepared = prepare_headers(
        &params,
        &parts,
        &sha256_hex(BODY.as_bytes()),
        HeaderSelection::ProfileWith(&[]),
    )?;
    let challenge = request_challenge(prepared.string_to_sign());
    let client_data = client_data_json(TYPE_GET, &challenge, ORIGIN);
    let flags = AuthenticatorFlags::UP | AuthenticatorFlags::UV;
    let ad = authenticator_data(flags, 42);
    let assertion = Assertion {
        authenticator_data: ad.clone(),
        client_data_json: client_data.clone().into_bytes(),
    };
    let digest = assertion.digest();
    let signature = sign(&key, &digest)?;
    let canonical = prepared.canonical_request().as_str().to_owned();
    let string_to_sign = prepared.string_to_sign().as_str().to_owned();
    let mut added = prepared.finish(&HWS1_WEBAUTHN, &signature);
    added.push(("x-hws-webauthn".into(), assertion.to_header_value()));

    // Delegation by assertion: the credential authorizes a session key with one touch.
    let session = public(&example_session_key()?)?;
    let statement = DelegationStatement {
        device_key_id: key_id.clone(),
        session_key: session,
        audience: AUDIENCE.into(),
        not_before: time,
        not_after: SigningTime::from_unix(time.unix() + 900),
    };
    let delegation_challenge = WebAuthnDelegation::challenge_for(&statement);
    let delegation_client_data = client_data_json(TYPE_GET, &delegation_challenge, ORIGIN);
    let delegation_assertion = Assertion {
        authenticator_data: authenticator_data(AuthenticatorFlags::UP, 43),
        client_data_json: delegation_client_data.clone().into_bytes(),
    };
    let delegation = WebAuthnDelegation {
        signature: sign(&key, &delegation_assertion.digest())?,
        statement: statement.clone(),
        assertion: delegation_assertion.clone(),
    };

    Ok(json!({
        "inputs": {
            "credential_private_scalar_hex": hex::encode(Sha256::digest(
                b"hwsign webauthn example credential -- public, never use")),
            "rp_id": RP_ID,
            "origin": ORIGIN,
            "audience": AUDIENCE,
            "date": DATE,
            "nonce_bytes": String::from_utf8_lossy(NONCE_BYTES),
            "request": {
                "method": "POST",
                "path": "/v1/transfers",
                "headers": headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
                "body": BODY,
            },
            "authenticator_flags": flags,
            "sign_count": 42,
        },
        "credential": {
            "spki_der_hex": hex::encode(public(&key)?.spki_der()),
            "key_id": key_id,
            "cose_key_hex": hex::encode(cose_key_from_public_key(&public(&key)?)),
        },
        "canonical_request": canonical,
        "string_to_sign": string_to_sign,
        "challenge": challenge,
        "client_data_json": client_data,
        "authenticator_data_hex": hex::encode(&ad),
        "signed_digest_hex": hex::encode(digest),
        "signature_der_hex": hex::encode(&signature),
        "added_headers": added.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        "delegation": {
            "statement_text": WebAuthnDelegation::statement_text(&statement),
            "challenge": delegation_challenge,
            "client_data_json": delegation_client_data,
            "authenticator_data_hex": hex::encode(&delegation_assertion.authenticator_data),
            "x_hws_delegation": delegation.to_header_value(),
        },
    }))
}

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vectors/webauthn/example.json")
}

fn field<'a>(value: &'a Value, path: &[&str]) -> Result<&'a str> {
    let mut node = value;
    for name in path {
        node = node
            .get(name)
            .with_context(|| format!("missing {path:?}"))?;
    }
    node.as_str()
        .with_context(|| format!("{path:?} is not a string"))
}

#[test]
fn webauthn_example_is_the_vector_file_and_checks_step_by_step() -> Result<()> {
    let computed = compute()?;
    let text = serde_json::to_string_pretty(&computed)? + "\n";
    if std::env::var_os("HWSIGN_REGENERATE").is_some() {
        std::fs::write(example_path(), &text)?;
    }
    let stored_text = std::fs::read_to_string(example_path())
        .context("vectors/webauthn/example.json (HWSIGN_REGENERATE=1 writes it)")?;
    let stored: Value = serde_json::from_str(&stored_text)?;
    ensure!(
        stored == computed,
        "vectors/webauthn/example.json differs from the code (HWSIGN_REGENERATE=1 after a deliberate change)"
    );

    // Step by step from the stored file, independently of `compute`.
    let string_to_sign = field(&stored, &["string_to_sign"])?;
    ensure!(string_to_sign.starts_with(&format!("{WEBAUTHN_ALGORITHM}\n{DATE}\n")));
    let canonical = field(&stored, &["canonical_request"])?;
    ensure!(string_to_sign.ends_with(&hex::encode(Sha256::digest(canonical.as_bytes()))));
    let challenge = field(&stored, &["challenge"])?;
    ensure!(challenge == URL_SAFE_NO_PAD.encode(Sha256::digest(string_to_sign.as_bytes())));
    let client_data = field(&stored, &["client_data_json"])?;
    let parsed = ClientData::parse(client_data.as_bytes())?;
    ensure!(parsed.challenge == challenge && parsed.origin == ORIGIN && parsed.type_ == TYPE_GET);
    let ad = hex::decode(field(&stored, &["authenticator_data_hex"])?)?;
    ensure!(ad[..32] == Sha256::digest(RP_ID.as_bytes())[..]);
    ensure!(ad[32] == 0x05 && ad[33..37] == 42u32.to_be_bytes() && ad.len() == 37);
    let mut signed = ad.clone();
    signed.extend_from_slice(&Sha256::digest(client_data.as_bytes()));
    let digest: [u8; 32] = Sha256::digest(&signed).into();
    ensure!(hex::encode(digest) == field(&stored, &["signed_digest_hex"])?);
    let key = PublicKey::from_spki_der(&hex::decode(field(
        &stored,
        &["credential", "spki_der_hex"],
    )?)?)?;
    ensure!(key.key_id() == field(&stored, &["credential", "key_id"])?);
    let cose = hex::decode(field(&stored, &["credential", "cose_key_hex"])?)?;
    ensure!(public_key_from_cose(&cose)? == key);
    let signature = hex::decode(field(&stored, &["signature_der_hex"])?)?;
    ensure!(key.verify_digest(&digest, &signature));

    // The headers parse back and pass the checks.
    let added = stored["added_headers"]
        .as_array()
        .context("added_headers")?;
    let header = |name: &str| {
        added
            .iter()
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair[1].as_str())
            .with_context(|| format!("no {name}"))
    };
    ensure!(header("authorization")?.starts_with("HWS1-WEBAUTHN-ES256 Credential="));
    let assertion = Assertion::parse_header_value(header("x-hws-webauthn")?)?;
    let origins = vec![ORIGIN.to_owned()];
    let checked = assertion.check(&AssertionExpectations {
        challenge,
        rp_id: RP_ID,
        origins: &origins,
        user_verification: true,
    })?;
    ensure!(checked.digest == digest && checked.authenticator_data.sign_count == 42);

    // The delegation header parses back, and its assertion is over the statement.
    let delegation_header = field(&stored, &["delegation", "x_hws_delegation"])?;
    ensure!(is_webauthn_delegation(delegation_header));
    let delegation = WebAuthnDelegation::parse_header_value(delegation_header)?;
    let statement_text = field(&stored, &["delegation", "statement_text"])?;
    ensure!(statement_text.starts_with("HWS1-DELEGATION-WEBAUTHN-ES256\n"));
    ensure!(
        delegation.challenge() == URL_SAFE_NO_PAD.encode(Sha256::digest(statement_text.as_bytes()))
    );
    let checked = delegation.assertion.check(&AssertionExpectations {
        challenge: &delegation.challenge(),
        rp_id: RP_ID,
        origins: &origins,
        user_verification: false,
    })?;
    ensure!(key.verify_digest(&checked.digest, &delegation.signature));
    // The ECDSA delegation parser refuses the assertion form.
    ensure!(DelegationStatement::parse_header_value(delegation_header).is_err());
    Ok(())
}

struct Fixture {
    key: SigningKey,
    challenge: String,
    origins: Vec<String>,
}

impl Fixture {
    fn new() -> Result<Self> {
        Ok(Self {
            key: example_key()?,
            challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(b"some string to sign")),
            origins: vec![ORIGIN.to_owned()],
        })
    }

    fn expect(&self, user_verification: bool) -> AssertionExpectations<'_> {
        AssertionExpectations {
            challenge: &self.challenge,
            rp_id: RP_ID,
            origins: &self.origins,
            user_verification,
        }
    }

    fn assertion(&self, ad: Vec<u8>, client_data: &str) -> Assertion {
        Assertion {
            authenticator_data: ad,
            client_data_json: client_data.as_bytes().to_vec(),
        }
    }

    fn good_client_data(&self) -> String {
        client_data_json(TYPE_GET, &self.challenge, ORIGIN)
    }
}

fn refused(result: Result<impl std::fmt::Debug, WebAuthnError>) -> Result<RejectCode> {
    match result {
        Ok(value) => anyhow::bail!("accepted: {value:?}"),
        Err(error) => Ok(error.code()),
    }
}

#[test]
fn webauthn_assertion_without_user_presence_is_refused() -> Result<()> {
    // The Go x/crypto/ssh flaw (CVE-2026-39831): a security-key signature without the UP flag was
    // accepted. Here the signature is valid and everything else matches; UP is clear.
    let fx = Fixture::new()?;
    let assertion = fx.assertion(
        authenticator_data(AuthenticatorFlags::UV, 7),
        &fx.good_client_data(),
    );
    let signature = sign(&fx.key, &assertion.digest())?;
    ensure!(public(&fx.key)?.verify_digest(&assertion.digest(), &signature));
    ensure!(refused(assertion.check(&fx.expect(false)))? == RejectCode::WebauthnUserPresence);
    Ok(())
}

#[test]
fn webauthn_stateless_refusals_have_their_codes() -> Result<()> {
    let fx = Fixture::new()?;
    let up = AuthenticatorFlags::UP;
    let good = fx.good_client_data();
    fx.assertion(authenticator_data(up, 1), &good)
        .check(&fx.expect(false))?;

    let cases: Vec<(&str, Assertion, bool, RejectCode)> = vec![
        (
            "no UV where asked",
            fx.assertion(authenticator_data(up, 1), &good),
            true,
            RejectCode::WebauthnUserVerification,
        ),
        (
            "other origin",
            fx.assertion(
                authenticator_data(up, 1),
                &client_data_json(TYPE_GET, &fx.challenge, "https://evil.example"),
            ),
            false,
            RejectCode::WebauthnOrigin,
        ),
        (
            "cross origin",
            fx.assertion(
                authenticator_data(up, 1),
                &good.replace("\"crossOrigin\":false", "\"crossOrigin\":true"),
            ),
            false,
            RejectCode::WebauthnOrigin,
        ),
        (
            "other challenge",
            fx.assertion(
                authenticator_data(up, 1),
                &client_data_json(TYPE_GET, "AAAA", ORIGIN),
            ),
            false,
            RejectCode::SignatureInvalid,
        ),
        (
            "create type",
            fx.assertion(
                authenticator_data(up, 1),
                &client_data_json(TYPE_CREATE, &fx.challenge, ORIGIN),
            ),
            false,
            RejectCode::WebauthnInvalid,
        ),
        (
            "repeated member",
            fx.assertion(
                authenticator_data(up, 1),
                &good.replace("{", &format!("{{\"origin\":\"{ORIGIN}\",")),
            ),
            false,
            RejectCode::WebauthnInvalid,
        ),
        (
            "not JSON",
            fx.assertion(authenticator_data(up, 1), "type=webauthn.get"),
            false,
            RejectCode::WebauthnInvalid,
        ),
        (
            "other RP",
            fx.assertion(
                AuthenticatorData {
                    rp_id_hash: rp_id_hash("evil.example"),
                    flags: AuthenticatorFlags(up),
                    sign_count: 1,
                    attested_credential: None,
                }
                .to_bytes(),
                &good,
            ),
            false,
            RejectCode::WebauthnOrigin,
        ),
        (
            "short",
            fx.assertion(vec![0; 36], &good),
            false,
            RejectCode::WebauthnInvalid,
        ),
        (
            "trailing",
            fx.assertion([authenticator_data(up, 1), vec![0]].concat(), &good),
            false,
            RejectCode::WebauthnInvalid,
        ),
        (
            "BS without BE",
            fx.assertion(authenticator_data(up | AuthenticatorFlags::BS, 1), &good),
            false,
            RejectCode::WebauthnInvalid,
        ),
        (
            "ED without extensions",
            fx.assertion(
                with_flag(authenticator_data(up, 1), AuthenticatorFlags::ED),
                &good,
            ),
            false,
            RejectCode::WebauthnInvalid,
        ),
    ];
    for (name, assertion, uv, code) in cases {
        let got = refused(assertion.check(&fx.expect(uv))).context(name)?;
        ensure!(got == code, "{name}: {got:?} instead of {code:?}");
    }

    // Extensions as one CBOR map are accepted (ED set): {"credProtect": 2}.
    let mut with_extensions = AuthenticatorData::parse(&authenticator_data(up, 1))?.to_bytes();
    with_extensions[32] |= AuthenticatorFlags::ED;
    with_extensions.extend_from_slice(&[0xa1, 0x6b]);
    with_extensions.extend_from_slice(b"credProtect");
    with_extensions.push(0x02);
    fx.assertion(with_extensions, &good)
        .check(&fx.expect(false))?;

    // Browsers add members; they are allowed.
    let chromium = good.replace(
        "}",
        ",\"other_keys_can_be_added_here\":\"do not compare clientDataJSON against a template\"}",
    );
    fx.assertion(authenticator_data(up, 1), &chromium)
        .check(&fx.expect(false))?;
    Ok(())
}

#[test]
fn webauthn_sign_count_rule() {
    assert!(
        check_sign_count(0, 0).is_ok(),
        "authenticators without a counter"
    );
    assert!(check_sign_count(5, 6).is_ok());
    assert!(check_sign_count(0, 1).is_ok());
    for (stored, new) in [(5, 5), (5, 4), (5, 0), (u32::MAX, 0)] {
        let refused = check_sign_count(stored, new);
        assert_eq!(
            refused.map_err(|e| e.code()),
            Err(RejectCode::WebauthnCounterRegressed),
            "{stored} -> {new}"
        );
    }
}

#[test]
fn webauthn_header_is_strict_and_bounded() -> Result<()> {
    let fx = Fixture::new()?;
    let assertion = fx.assertion(
        authenticator_data(AuthenticatorFlags::UP, 1),
        &fx.good_client_data(),
    );
    let value = assertion.to_header_value();
    ensure!(Assertion::parse_header_value(&value)? == assertion);
    for bad in [
        value.replace(", cd=", ",cd="),
        value.replace("ad=", "AD="),
        format!("{value}=="),
        "cd=x, ad=y".to_owned(),
        "ad=, cd=".to_owned(),
    ] {
        ensure!(
            Assertion::parse_header_value(&bad).map_err(|e| e.code())
                == Err(RejectCode::WebauthnInvalid),
            "{bad}"
        );
    }
    let big_ad = URL_SAFE_NO_PAD.encode(vec![0u8; 1025]);
    let over = format!("ad={big_ad}, cd=e30");
    ensure!(matches!(
        Assertion::parse_header_value(&over),
        Err(WebAuthnError::TooLarge { .. })
    ));
    let big_cd = URL_SAFE_NO_PAD.encode(vec![b' '; 2049]);
    let over = format!("ad=AA, cd={big_cd}");
    ensure!(matches!(
        Assertion::parse_header_value(&over),
        Err(WebAuthnError::TooLarge { .. })
    ));
    Ok(())
}

#[test]
fn webauthn_registration_objects_round_trip_and_parse_strictly() -> Result<()> {
    let key = public(&example_key()?)?;
    let ad = AuthenticatorData {
        rp_id_hash: rp_id_hash(RP_ID),
        flags: AuthenticatorFlags(
            AuthenticatorFlags::UP | AuthenticatorFlags::UV | AuthenticatorFlags::AT,
        ),
        sign_count: 0,
        attested_credential: Some(AttestedCredential {
            aaguid: [7; 16],
            credential_id: vec![1, 2, 3, 4],
            public_key: key.clone(),
        }),
    };
    let bytes = ad.to_bytes();
    ensure!(AuthenticatorData::parse(&bytes)? == ad);
    // AT with extensions after the COSE key: the key's CBOR item ends where it should.
    let mut with_ext = bytes.clone();
    with_ext[32] |= AuthenticatorFlags::ED;
    with_ext.push(0xa0);
    ensure!(AuthenticatorData::parse(&with_ext)?.attested_credential == ad.attested_credential);
    ensure!(AuthenticatorData::parse(&bytes[..bytes.len() - 1]).is_err());

    for statement in [
        AttestationStatement::None,
        AttestationStatement::Packed {
            alg: -7,
            sig: vec![0x30, 0x00],
            x5c: vec![vec![0x30]],
        },
        AttestationStatement::Packed {
            alg: -7,
            sig: vec![0x30, 0x00],
            x5c: vec![],
        },
    ] {
        let object = AttestationObject {
            statement,
            auth_data_bytes: bytes.clone(),
            auth_data: ad.clone(),
        };
        ensure!(AttestationObject::parse(&object.to_bytes())? == object);
    }
    // An assertion (no AT) is not a registration.
    let no_at = AttestationObject {
        statement: AttestationStatement::None,
        auth_data_bytes: authenticator_data(AuthenticatorFlags::UP, 0),
        auth_data: ad.clone(),
    };
    ensure!(AttestationObject::parse(&no_at.to_bytes()).is_err());
    // COSE: an Ed25519 (OKP) key is refused.
    let okp = [0xa3, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06];
    ensure!(public_key_from_cose(&okp).is_err());
    ensure!(public_key_from_cose(&cose_key_from_public_key(&key))? == key);
    Ok(())
}

/// A `packed` statement carries one to four certificates in `x5c` (leaf first): an empty chain
/// and a chain of five are refused, whatever the rest of the object says.
#[test]
fn webauthn_packed_x5c_holds_one_to_four_certificates() -> Result<()> {
    use ciborium::Value as Cbor;
    let key = public(&example_key()?)?;
    let ad = AuthenticatorData {
        rp_id_hash: rp_id_hash(RP_ID),
        flags: AuthenticatorFlags(AuthenticatorFlags::UP | AuthenticatorFlags::AT),
        sign_count: 0,
        attested_credential: Some(AttestedCredential {
            aaguid: [7; 16],
            credential_id: vec![1, 2, 3, 4],
            public_key: key,
        }),
    };
    let object = |certificates: usize| -> Result<Vec<u8>> {
        let x5c = Cbor::Array((0..certificates).map(|_| Cbor::Bytes(vec![0x30])).collect());
        let statement = Cbor::Map(vec![
            (Cbor::from("alg"), Cbor::from(-7)),
            (Cbor::from("sig"), Cbor::Bytes(vec![0x30, 0x00])),
            (Cbor::from("x5c"), x5c),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &Cbor::Map(vec![
                (Cbor::from("fmt"), Cbor::from("packed")),
                (Cbor::from("attStmt"), statement),
                (Cbor::from("authData"), Cbor::Bytes(ad.to_bytes())),
            ]),
            &mut bytes,
        )?;
        Ok(bytes)
    };
    for certificates in 1..=4 {
        let parsed = AttestationObject::parse(&object(certificates)?)?;
        ensure!(
            matches!(&parsed.statement, AttestationStatement::Packed { x5c, .. } if x5c.len() == certificates),
            "{certificates} certificates"
        );
    }
    for certificates in [0, 5] {
        ensure!(
            AttestationObject::parse(&object(certificates)?).is_err(),
            "{certificates} certificates"
        );
    }
    Ok(())
}

#[test]
fn webauthn_delegation_statement_forms_do_not_mix() -> Result<()> {
    let key = example_key()?;
    let statement = DelegationStatement {
        device_key_id: public(&key)?.key_id(),
        session_key: public(&example_session_key()?)?,
        audience: AUDIENCE.into(),
        not_before: SigningTime::from_unix(1_790_000_000),
        not_after: SigningTime::from_unix(1_790_000_600),
    };
    // The ECDSA form is not accepted as the assertion form, and the other way round.
    let ecdsa = statement.to_header_value(&sign(&key, &statement.digest())?);
    ensure!(!is_webauthn_delegation(&ecdsa));
    ensure!(matches!(
        WebAuthnDelegation::parse_header_value(&ecdsa),
        Err(ProtoError::MalformedDelegation(_))
    ));
    let text = URL_SAFE_NO_PAD.encode(statement.to_text());
    let mixed = format!("{text}.MEQ.AAAA.e30");
    ensure!(WebAuthnDelegation::parse_header_value(&mixed).is_err());
    ensure!(
        WebAuthnDelegation::challenge_for(&statement) != URL_SAFE_NO_PAD.encode(statement.digest())
    );
    Ok(())
}

fn doc_block<'a>(doc: &'a str, name: &str) -> Result<&'a str> {
    let marker = format!("<!-- {name} -->\n```\n");
    let start = doc
        .find(&marker)
        .with_context(|| format!("no block {name}"))?
        + marker.len();
    let len = doc[start..]
        .find("\n```")
        .with_context(|| format!("unclosed block {name}"))?;
    Ok(&doc[start..start + len])
}

#[test]
fn webauthn_protocol_doc_example_is_the_vector_file() -> Result<()> {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md"),
    )?;
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(example_path())?)?;
    ensure!(doc_block(&doc, "webauthn-string-to-sign")? == field(&stored, &["string_to_sign"])?);
    ensure!(doc_block(&doc, "webauthn-client-data")? == field(&stored, &["client_data_json"])?);
    ensure!(
        doc_block(&doc, "webauthn-authenticator-data")?
            == field(&stored, &["authenticator_data_hex"])?
    );
    let headers: Vec<String> = stored["added_headers"]
        .as_array()
        .context("added_headers")?
        .iter()
        .map(|pair| {
            format!(
                "{}: {}",
                pair[0].as_str().unwrap_or(""),
                pair[1].as_str().unwrap_or("")
            )
        })
        .collect();
    ensure!(doc_block(&doc, "webauthn-headers")? == headers.join("\n"));
    Ok(())
}
