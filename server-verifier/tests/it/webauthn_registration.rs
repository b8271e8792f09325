//! FIDO2 registration bound to an enrollment token: `none` → `fido2-unattested`, `packed` with a
//! chain to a configured root → `fido2`, synced passkeys below device-bound keys, strangers
//! without a token refused; the registered credential then signs requests the verifier accepts.
//! Attestation certificates are made by the `openssl` tool in a temp dir.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_proto::webauthn::{
    AttestationObject, AttestationStatement, AttestedCredential, AuthenticatorData,
    AuthenticatorFlags, TYPE_CREATE, client_data_json, rp_id_hash,
};
use hwsign_verifier::attestation::chain::TrustAnchors;
use hwsign_verifier::enrollment::{EnrollmentError, EnrollmentStore, create_token};
use hwsign_verifier::webauthn::WebAuthnSettings;
use hwsign_verifier::webauthn::registration::{
    AttestationTrust, Fido2Enrollment, OptionsRequest, RegisterRequest,
};
use hwsign_verifier::{KeyLevel, KeyRegistry, MemoryRegistry};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256};

use crate::verify_support::TestKey;

const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://app.example.com";
const AAGUID: [u8; 16] = *b"hwsign-test-aagu";

fn settings() -> WebAuthnSettings {
    WebAuthnSettings {
        rp_id: RP_ID.into(),
        origins: vec![ORIGIN.into()],
        require_user_verification: false,
        attestation_roots: Vec::new(),
        aaguids: Vec::new(),
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .status()?;
    ensure!(status.success(), "openssl {args:?} failed");
    Ok(())
}

/// A P-256 root CA and an attestation leaf it signed; returns (root PEM, leaf DER, leaf key).
fn attestation_ca(dir: &Path) -> Result<(Vec<u8>, Vec<u8>, SigningKey)> {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "root.key",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/CN=hwsign test FIDO root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "root.pem",
        ],
    )?;
    let (leaf, key) = attestation_leaf(
        dir,
        "leaf",
        "/C=SE/O=hwsign test/OU=Authenticator Attestation/CN=test key",
        Some("basicConstraints=critical,CA:false\n"),
    )?;
    Ok((std::fs::read(dir.join("root.pem"))?, leaf, key))
}

/// A leaf named `name` signed by the root in `dir`, with `subject` and the extensions in
/// `extensions` (an openssl extfile; none: an X.509 v1 certificate); returns (DER, key).
fn attestation_leaf(
    dir: &Path,
    name: &str,
    subject: &str,
    extensions: Option<&str>,
) -> Result<(Vec<u8>, SigningKey)> {
    let file = |ext: &str| format!("{name}.{ext}");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &file("key"),
        ],
    )?;
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &file("key"),
            "-out",
            &file("p8"),
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &file("key"),
            "-subj",
            subject,
            "-out",
            &file("csr"),
        ],
    )?;
    let mut args = vec![
        "x509".to_owned(),
        "-req".into(),
        "-in".into(),
        file("csr"),
        "-CA".into(),
        "root.pem".into(),
        "-CAkey".into(),
        "root.key".into(),
        "-CAcreateserial".into(),
        "-days".into(),
        "365".into(),
        "-outform".into(),
        "DER".into(),
        "-out".into(),
        file("der"),
    ];
    if let Some(extensions) = extensions {
        std::fs::write(dir.join(file("ext")), extensions)?;
        args.extend(["-extfile".into(), file("ext")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &args)?;
    let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(dir.join(file("p8")))?)?;
    Ok((std::fs::read(dir.join(file("der")))?, key))
}

enum Statement<'a> {
    None,
    Packed { leaf: &'a [u8], key: &'a SigningKey },
    SelfAttested,
}

/// What an authenticator and browser answer to `navigator.credentials.create`.
fn make_credential(
    credential: &TestKey,
    challenge: &str,
    flags: u8,
    statement: Statement<'_>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let client_data = client_data_json(TYPE_CREATE, challenge, ORIGIN).into_bytes();
    let auth_data = AuthenticatorData {
        rp_id_hash: rp_id_hash(RP_ID),
        flags: AuthenticatorFlags(flags | AuthenticatorFlags::AT),
        sign_count: 0,
        attested_credential: Some(AttestedCredential {
            aaguid: AAGUID,
            credential_id: credential.id.as_bytes().to_vec(),
            public_key: credential.public.clone(),
        }),
    };
    let auth_data_bytes = auth_data.to_bytes();
    let mut signed = auth_data_bytes.clone();
    signed.extend_from_slice(&Sha256::digest(&client_data));
    let digest: [u8; 32] = Sha256::digest(&signed).into();
    let statement = match statement {
        Statement::None => AttestationStatement::None,
        Statement::SelfAttested => AttestationStatement::Packed {
            alg: -7,
            sig: credential.sign_digest(&digest)?,
            x5c: Vec::new(),
        },
        Statement::Packed { leaf, key } => {
            let signature: p256::ecdsa::Signature = key.sign_prehash(&digest)?;
            AttestationStatement::Packed {
                alg: -7,
                sig: signature.to_der().as_bytes().to_vec(),
                x5c: vec![leaf.to_vec()],
            }
        }
    };
    let object = AttestationObject {
        statement,
        auth_data_bytes,
        auth_data,
    };
    Ok((client_data, object.to_bytes()))
}

struct Fixture {
    service: Fido2Enrollment,
    registry: Arc<dyn KeyRegistry>,
    store_path: tempfile::TempDir,
}

fn fixture(trust: AttestationTrust) -> Result<Fixture> {
    let store_path = tempfile::tempdir()?;
    let registry: Arc<dyn KeyRegistry> = Arc::new(MemoryRegistry::new());
    let store = EnrollmentStore::open(&store_path.path().join("enroll.db"))?;
    Ok(Fixture {
        service: Fido2Enrollment::new(store, Arc::clone(&registry), settings(), trust),
        registry,
        store_path,
    })
}

fn register(
    fx: &Fixture,
    credential: &TestKey,
    flags: u8,
    statement: Statement<'_>,
) -> Result<Result<hwsign_verifier::webauthn::registration::RegisterResponse, EnrollmentError>> {
    let store = EnrollmentStore::open(&fx.store_path.path().join("enroll.db"))?;
    let (_, token) = create_token(&store, "alice's key", 600, SystemTime::now())?;
    let options = fx.service.options(
        &OptionsRequest {
            token: token.to_string(),
        },
        SystemTime::now(),
    )?;
    ensure!(options.public_key.rp["id"] == RP_ID);
    let (client_data, object) =
        make_credential(credential, &options.public_key.challenge, flags, statement)?;
    Ok(fx.service.register(
        &RegisterRequest {
            challenge_id: options.challenge_id,
            client_data_json: URL_SAFE_NO_PAD.encode(client_data),
            attestation_object: URL_SAFE_NO_PAD.encode(object),
        },
        SystemTime::now(),
    ))
}

const UP: u8 = AuthenticatorFlags::UP;

#[test]
fn webauthn_registration_levels_follow_the_attestation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (root, leaf, leaf_key) = attestation_ca(dir.path())?;
    let trust = AttestationTrust {
        anchors: Some(TrustAnchors::from_pem(&root, b"")?),
        aaguids: vec![AAGUID],
    };
    let fx = fixture(trust)?;

    let cases: Vec<(&str, TestKey, u8, Statement<'_>, KeyLevel)> = vec![
        (
            "none",
            TestKey::from_seed("reg none")?,
            UP,
            Statement::None,
            KeyLevel::Fido2Unattested,
        ),
        (
            "self",
            TestKey::from_seed("reg self")?,
            UP,
            Statement::SelfAttested,
            KeyLevel::Fido2Unattested,
        ),
        (
            "packed, chained",
            TestKey::from_seed("reg packed")?,
            UP,
            Statement::Packed {
                leaf: &leaf,
                key: &leaf_key,
            },
            KeyLevel::Fido2,
        ),
        (
            "packed, chained, but a synced passkey (BE|BS)",
            TestKey::from_seed("reg synced")?,
            UP | AuthenticatorFlags::BE | AuthenticatorFlags::BS,
            Statement::Packed {
                leaf: &leaf,
                key: &leaf_key,
            },
            KeyLevel::Fido2Unattested,
        ),
    ];
    for (name, credential, flags, statement, level) in cases {
        let done = register(&fx, &credential, flags, statement)?.context(name)?;
        ensure!(done.level == level, "{name}: {:?}", done.level);
        ensure!(done.key_id == credential.id, "{name}");
        let stored = fx.registry.lookup(&credential.id)?.context(name)?;
        ensure!(
            stored.level == level && stored.label == "alice's key",
            "{name}"
        );
        let fido2 = fx
            .registry
            .fido2_credential(&credential.id)?
            .context(name)?;
        ensure!(fido2.rp_id == RP_ID && fido2.aaguid == AAGUID, "{name}");
    }

    // Not on the AAGUID allowlist: the chain verifies but the level stays unattested.
    let fx = fixture(AttestationTrust {
        anchors: Some(TrustAnchors::from_pem(&root, b"")?),
        aaguids: vec![[9; 16]],
    })?;
    let done = register(
        &fx,
        &TestKey::from_seed("reg other model")?,
        UP,
        Statement::Packed {
            leaf: &leaf,
            key: &leaf_key,
        },
    )??;
    ensure!(done.level == KeyLevel::Fido2Unattested);
    // No roots configured: the same.
    let fx = fixture(AttestationTrust::default())?;
    let done = register(
        &fx,
        &TestKey::from_seed("reg no roots")?,
        UP,
        Statement::Packed {
            leaf: &leaf,
            key: &leaf_key,
        },
    )??;
    ensure!(done.level == KeyLevel::Fido2Unattested);
    Ok(())
}

#[test]
fn webauthn_registration_refusals() -> Result<()> {
    let fx = fixture(AttestationTrust::default())?;
    // A stranger without a token gets no challenge.
    let stranger = fx.service.options(
        &OptionsRequest {
            token: "hwe1_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        },
        SystemTime::now(),
    );
    ensure!(stranger.is_err());
    // No UP at registration.
    let refused = register(&fx, &TestKey::from_seed("reg no up")?, 0, Statement::None)?;
    ensure!(refused.is_err());
    // A self attestation signed by another key.
    let credential = TestKey::from_seed("reg forged self")?;
    let store = EnrollmentStore::open(&fx.store_path.path().join("enroll.db"))?;
    let (_, token) = create_token(&store, "bob", 600, SystemTime::now())?;
    let options = fx.service.options(
        &OptionsRequest {
            token: token.to_string(),
        },
        SystemTime::now(),
    )?;
    let (client_data, object) = make_credential(
        &credential,
        &options.public_key.challenge,
        UP,
        Statement::SelfAttested,
    )?;
    let mut parsed = AttestationObject::parse(&object)?;
    if let AttestationStatement::Packed { sig, .. } = &mut parsed.statement {
        let other = TestKey::from_seed("someone else")?;
        *sig = other.sign_digest(&[7; 32])?;
    } else {
        bail!("expected packed");
    }
    let request = RegisterRequest {
        challenge_id: options.challenge_id.clone(),
        client_data_json: URL_SAFE_NO_PAD.encode(&client_data),
        attestation_object: URL_SAFE_NO_PAD.encode(parsed.to_bytes()),
    };
    ensure!(fx.service.register(&request, SystemTime::now()).is_err());
    // The token was spent by that attempt: the same ceremony cannot be retried.
    let retry = RegisterRequest {
        challenge_id: options.challenge_id,
        client_data_json: URL_SAFE_NO_PAD.encode(&client_data),
        attestation_object: URL_SAFE_NO_PAD.encode(&object),
    };
    ensure!(fx.service.register(&retry, SystemTime::now()).is_err());
    ensure!(fx.registry.lookup(&credential.id)?.is_none());
    // Wrong challenge in the client data.
    let (_, token) = create_token(&store, "carol", 600, SystemTime::now())?;
    let options = fx.service.options(
        &OptionsRequest {
            token: token.to_string(),
        },
        SystemTime::now(),
    )?;
    let (client_data, object) = make_credential(
        &TestKey::from_seed("reg wrong challenge")?,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        UP,
        Statement::None,
    )?;
    let wrong = RegisterRequest {
        challenge_id: options.challenge_id,
        client_data_json: URL_SAFE_NO_PAD.encode(client_data),
        attestation_object: URL_SAFE_NO_PAD.encode(object),
    };
    ensure!(fx.service.register(&wrong, SystemTime::now()).is_err());
    Ok(())
}

/// W3C WebAuthn §8.2.1: a `packed` attestation certificate must be X.509 v3, have subject OU
/// "Authenticator Attestation", basic constraints CA false, and an id-fido-gen-ce-aaguid
/// extension (when present) naming the authenticator data's AAGUID. Each failure is refused
/// with its own reason, even when the chain reaches a configured root.
#[test]
fn webauthn_registration_packed_certificate_requirements() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (root, _, _) = attestation_ca(dir.path())?;
    let fx = fixture(AttestationTrust {
        anchors: Some(TrustAnchors::from_pem(&root, b"")?),
        aaguids: Vec::new(),
    })?;
    let good_subject = "/O=hwsign test/OU=Authenticator Attestation/CN=test key";
    let leaf_ca_false = "basicConstraints=critical,CA:false\n";
    let aaguid_ext = |aaguid: &[u8; 16], critical: bool| {
        format!(
            "{leaf_ca_false}1.3.6.1.4.1.45724.1.1.4={}DER:04:10:{}\n",
            if critical { "critical," } else { "" },
            hex::encode(aaguid)
        )
    };
    let cases: Vec<(&str, &str, Option<String>, Option<&str>)> = vec![
        (
            "v1 certificate",
            good_subject,
            None,
            Some("attestation_cert_version"),
        ),
        (
            "wrong OU",
            "/O=hwsign test/OU=Something Else/CN=test key",
            Some(leaf_ca_false.to_owned()),
            Some("attestation_cert_ou"),
        ),
        (
            "no OU",
            "/O=hwsign test/CN=test key",
            Some(leaf_ca_false.to_owned()),
            Some("attestation_cert_ou"),
        ),
        (
            "a CA certificate",
            good_subject,
            Some("basicConstraints=critical,CA:true\n".to_owned()),
            Some("attestation_cert_ca"),
        ),
        (
            "another AAGUID",
            good_subject,
            Some(aaguid_ext(&[7; 16], false)),
            Some("attestation_cert_aaguid"),
        ),
        (
            "AAGUID extension marked critical",
            good_subject,
            Some(aaguid_ext(&AAGUID, true)),
            Some("attestation_cert_aaguid"),
        ),
        (
            "the AAGUID",
            good_subject,
            Some(aaguid_ext(&AAGUID, false)),
            None,
        ),
        (
            "no AAGUID extension",
            good_subject,
            Some(leaf_ca_false.to_owned()),
            None,
        ),
    ];
    for (i, (name, subject, extensions, refusal)) in cases.into_iter().enumerate() {
        let (leaf, key) = attestation_leaf(
            dir.path(),
            &format!("case{i}"),
            subject,
            extensions.as_deref(),
        )?;
        let credential = TestKey::from_seed(&format!("packed case {i}"))?;
        let result = register(
            &fx,
            &credential,
            UP,
            Statement::Packed {
                leaf: &leaf,
                key: &key,
            },
        )?;
        match (refusal, result) {
            (Some(reason), Err(error)) => {
                ensure!(
                    error.code() == format!("evidence_invalid:{reason}"),
                    "{name}: {}",
                    error.code()
                );
                ensure!(fx.registry.lookup(&credential.id)?.is_none(), "{name}");
            }
            (None, Ok(done)) => ensure!(done.level == KeyLevel::Fido2, "{name}: {:?}", done.level),
            (refusal, result) => bail!("{name}: expected {refusal:?}, got {result:?}"),
        }
    }
    Ok(())
}

/// `[webauthn] attestation_roots` and `aaguids` (what `serve` reads): the roots load from a PEM
/// file, AAGUIDs parse with or without dashes, and a `packed` registration chained to that root
/// ranks `fido2`; a malformed AAGUID is refused by `validate`.
#[test]
fn webauthn_settings_attestation_roots_and_aaguids_rank_fido2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (root, leaf, leaf_key) = attestation_ca(dir.path())?;
    let root_file = dir.path().join("fido-root.pem");
    std::fs::write(&root_file, &root)?;
    let dashed = {
        let hex = hex::encode(AAGUID);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    };
    let mut settings = settings();
    settings.attestation_roots = vec![root_file];
    settings.aaguids = vec![dashed];
    settings.validate().map_err(anyhow::Error::msg)?;
    let trust = settings
        .attestation_trust()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(trust.aaguids == vec![AAGUID]);
    let fx = fixture(trust)?;
    let done = register(
        &fx,
        &TestKey::from_seed("configured root")?,
        UP,
        Statement::Packed {
            leaf: &leaf,
            key: &leaf_key,
        },
    )??;
    ensure!(done.level == KeyLevel::Fido2, "{:?}", done.level);

    settings.aaguids = vec!["not-an-aaguid".into()];
    ensure!(settings.validate().is_err());
    let mut missing = self::settings();
    missing.attestation_roots = vec![dir.path().join("absent.pem")];
    ensure!(missing.attestation_trust().is_err());
    Ok(())
}

/// `require_user_verification`: the options ask for UV and a registration without the UV flag
/// is refused (`evidence_invalid:user_verification`), with it accepted.
#[test]
fn webauthn_registration_requires_uv_when_configured() -> Result<()> {
    let store_path = tempfile::tempdir()?;
    let registry: Arc<dyn KeyRegistry> = Arc::new(MemoryRegistry::new());
    let store = EnrollmentStore::open(&store_path.path().join("enroll.db"))?;
    let mut strict = settings();
    strict.require_user_verification = true;
    let fx = Fixture {
        service: Fido2Enrollment::new(
            store,
            Arc::clone(&registry),
            strict,
            AttestationTrust::default(),
        ),
        registry,
        store_path,
    };
    let refused = register(&fx, &TestKey::from_seed("no uv")?, UP, Statement::None)?;
    match refused {
        Err(error) => ensure!(
            error.code() == "evidence_invalid:user_verification",
            "{}",
            error.code()
        ),
        Ok(done) => bail!("registered without UV: {done:?}"),
    }
    let done = register(
        &fx,
        &TestKey::from_seed("with uv")?,
        UP | AuthenticatorFlags::UV,
        Statement::None,
    )??;
    ensure!(done.level == KeyLevel::Fido2Unattested);
    Ok(())
}
