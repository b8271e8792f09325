//! The PKCS#11 backend suite, run against SoftHSM2 (`pkcs11_softhsm.rs`) and tpm2-pkcs11 on
//! swtpm (`pkcs11_tpm2.rs`) so the backend is shown not to depend on one module's quirks.

// Each test binary uses a different subset of the phases.
#![allow(dead_code)]

pub(crate) mod harness;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hwsign_agent::backends::pkcs11::{Pkcs11Backend, Pkcs11Config, Pkcs11Error};
use hwsign_agent::backends::{BackendError, KeyBackend};
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::Evidence;
use hwsign_proto::keys::check_key_id;
use sha2::{Digest as _, Sha256};

use self::harness::TestEnv;

/// Backend configuration for the test's token.
pub(crate) fn config(env: &TestEnv) -> Pkcs11Config {
    Pkcs11Config {
        module_path: env.backend_module.clone(),
        token_label: env.token.clone(),
        pin_file: Some(env.pin_file.clone()),
        pin_credential: None,
        key_label_prefix: None,
    }
}

fn digest_of(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Create, list, sign, verify; concurrent signing; sign latency.
pub(crate) fn create_list_sign(env: &TestEnv) -> Result<()> {
    let backend = Arc::new(Pkcs11Backend::open(&config(env))?);
    ensure!(backend.health().available, "{:?}", backend.health());
    assert_eq!(backend.name(), "pkcs11");

    let key = backend.create_key("laptop")?;
    check_key_id(&key.id)?;
    assert_eq!(key.level, KeyLevel::HardwareUnattested);
    assert_eq!(key.label, "laptop");
    assert_eq!(key.public_key.key_id(), key.id);
    let other = backend.create_key("second")?;
    assert_ne!(other.id, key.id);

    let listed = backend.list_keys()?;
    let found = listed
        .iter()
        .find(|k| k.id == key.id)
        .context("created key not listed")?;
    assert_eq!(found.label, "laptop");
    assert_eq!(found.public_key, key.public_key);
    assert_eq!(found.level, KeyLevel::HardwareUnattested);
    assert!(listed.iter().any(|k| k.id == other.id));

    let digest = digest_of("GET /v1/things");
    let signature = backend.sign_digest(&key.id, &digest)?;
    assert!(key.public_key.verify_digest(&digest, &signature));
    let mut tampered = digest;
    tampered[0] ^= 1;
    assert!(!key.public_key.verify_digest(&tampered, &signature));
    assert!(!other.public_key.verify_digest(&digest, &signature));
    let by_other = backend.sign_digest(&other.id, &digest)?;
    assert!(other.public_key.verify_digest(&digest, &by_other));

    let unknown = "hk1_00000000000000000000000000000000";
    assert!(matches!(
        backend.sign_digest(unknown, &digest),
        Err(BackendError::UnknownKey)
    ));
    assert!(matches!(
        backend.sign_digest("not-a-key-id", &digest),
        Err(BackendError::UnknownKey)
    ));

    // The agent calls the backend from several blocking threads at once.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let backend = Arc::clone(&backend);
            let key = key.clone();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..10 {
                    let digest = digest_of(&format!("thread {t} request {i}"));
                    let signature = backend.sign_digest(&key.id, &digest)?;
                    ensure!(key.public_key.verify_digest(&digest, &signature));
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("signing thread panicked"))??;
    }

    report_latency(&*backend, &key.id, &key.public_key)?;
    Ok(())
}

/// Prints median and p99 of `sign_digest` (session, find key, C_Sign, DER).
fn report_latency(backend: &dyn KeyBackend, key_id: &str, public_key: &PublicKey) -> Result<()> {
    const ROUNDS: usize = 100;
    let mut micros = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let digest = digest_of(&format!("latency {i}"));
        let start = Instant::now();
        let signature = backend.sign_digest(key_id, &digest)?;
        micros.push(start.elapsed().as_micros());
        ensure!(public_key.verify_digest(&digest, &signature));
    }
    micros.sort_unstable();
    println!(
        "pkcs11: sign_digest over {ROUNDS} rounds: median {} µs, p99 {} µs",
        micros[ROUNDS / 2],
        micros[ROUNDS * 99 / 100]
    );
    Ok(())
}

/// Phase 1 of the restart test: create a key and remember it.
pub(crate) fn restart_create(env: &TestEnv) -> Result<()> {
    let backend = Pkcs11Backend::open(&config(env))?;
    let key = backend.create_key("survivor")?;
    fs::write(env.dir.join("key-id"), &key.id)?;
    fs::write(env.dir.join("key.pem"), key.public_key.to_pem())?;
    Ok(())
}

/// Phase 2, in a new process: the key is found on the token and signs.
pub(crate) fn restart_find(env: &TestEnv) -> Result<()> {
    let id = fs::read_to_string(env.dir.join("key-id"))?;
    let public_key = PublicKey::from_spki_pem(&fs::read_to_string(env.dir.join("key.pem"))?)?;
    let backend = Pkcs11Backend::open(&config(env))?;
    let keys = backend.list_keys()?;
    let key = keys
        .iter()
        .find(|k| k.id == id)
        .context("key not found after restart")?;
    assert_eq!(key.public_key, public_key);
    assert_eq!(key.label, "survivor");
    let digest = digest_of("after restart");
    assert!(public_key.verify_digest(&digest, &backend.sign_digest(&id, &digest)?));
    Ok(())
}

/// Keys are sensitive and not extractable, and carry CKA_ID = the key id. Checked with a
/// separate cryptoki session, as any other application on the machine could.
pub(crate) fn non_extractable(env: &TestEnv) -> Result<()> {
    let backend = Pkcs11Backend::open(&config(env))?;
    let key = backend.create_key("vault")?;

    let ctx = Pkcs11::new(&env.module)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(e.into()),
    }
    let slot = ctx
        .get_slots_with_token()?
        .into_iter()
        .find(|slot| {
            ctx.get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == env.token)
        })
        .context("token not found")?;
    let session = ctx.open_ro_session(slot)?;
    let pin = fs::read_to_string(&env.pin_file)?;
    match session.login(
        UserType::User,
        Some(&AuthPin::from(pin.trim_end().to_owned())),
    ) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(e.into()),
    }
    let private = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"hwsign:vault".to_vec()),
        ])?
        .into_iter()
        .next()
        .context("private key not found by label")?;
    let attributes = session.get_attributes(
        private,
        &[
            AttributeType::Value,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Id,
        ],
    )?;
    let mut saw_sensitive = false;
    let mut saw_extractable = false;
    let mut saw_id = false;
    for attribute in attributes {
        match attribute {
            // A sensitive attribute is reported as unavailable (skipped) or empty, never returned.
            Attribute::Value(value) => ensure!(value.is_empty(), "CKA_VALUE readable"),
            Attribute::Sensitive(v) => {
                ensure!(v, "CKA_SENSITIVE false");
                saw_sensitive = true;
            }
            Attribute::Extractable(v) => {
                ensure!(!v, "CKA_EXTRACTABLE true");
                saw_extractable = true;
            }
            Attribute::Id(id) => {
                assert_eq!(
                    format!("hk1_{}", hex::encode(id)),
                    key.id,
                    "CKA_ID is not the key id"
                );
                saw_id = true;
            }
            _ => {}
        }
    }
    ensure!(
        saw_sensitive && saw_extractable && saw_id,
        "attributes missing"
    );
    Ok(())
}

/// The token's claims, marked as claims.
pub(crate) fn attestation_claims(env: &TestEnv) -> Result<()> {
    let backend = Pkcs11Backend::open(&config(env))?;
    let key = backend.create_key("attested")?;
    let evidence = backend.attest(&key.id, b"verifier nonce")?;
    let Evidence::Pkcs11Claims(claims) = &evidence else {
        bail!("expected token claims, got {evidence:?}");
    };
    assert!(claims.claims_not_proof);
    assert_eq!(claims.local, Some(true));
    assert_eq!(claims.never_extractable, Some(true));
    assert_eq!(claims.always_sensitive, Some(true));
    assert_eq!(claims.token_label, env.token);
    assert!(!claims.manufacturer.is_empty());
    assert!(!claims.model.is_empty());
    let json = serde_json::to_value(&evidence)?;
    assert_eq!(json["kind"], "pkcs11-claims");
    assert_eq!(json["claims_not_proof"], true);
    assert!(matches!(
        backend.attest("hk1_00000000000000000000000000000000", b"n"),
        Err(BackendError::UnknownKey)
    ));
    Ok(())
}

/// A wrong PIN is presented to the token once, however often the backend is asked; a corrected
/// PIN file is picked up without a restart.
pub(crate) fn wrong_pin_not_retried(env: &TestEnv) -> Result<()> {
    let pin_file = env.dir.join("operator.pin");
    fs::write(&pin_file, "999999\n")?;
    let mut cfg = config(env);
    cfg.pin_file = Some(pin_file.clone());
    let backend = Pkcs11Backend::open(&cfg)?;
    let digest = digest_of("x");
    for _ in 0..3 {
        assert!(matches!(
            backend.list_keys(),
            Err(BackendError::PinIncorrect)
        ));
        assert!(matches!(
            backend.create_key("k"),
            Err(BackendError::PinIncorrect)
        ));
        assert!(matches!(
            backend.sign_digest("hk1_00000000000000000000000000000000", &digest),
            Err(BackendError::PinIncorrect)
        ));
    }
    assert_eq!(
        env.login_calls()?,
        1,
        "the wrong PIN was presented more than once"
    );
    let health = backend.health();
    assert!(!health.available);
    assert!(health.detail.unwrap_or_default().contains("PIN"));

    fs::write(&pin_file, fs::read(&env.pin_file)?)?;
    let key = backend.create_key("after-fix")?;
    assert!(backend.list_keys()?.iter().any(|k| k.id == key.id));
    assert_eq!(env.login_calls()?, 2);
    assert!(backend.health().available);
    Ok(())
}

/// A token reporting its user PIN locked gets no login attempt at all.
pub(crate) fn locked_pin(env: &TestEnv) -> Result<()> {
    let backend = Pkcs11Backend::open(&config(env))?;
    assert!(matches!(
        backend.create_key("k"),
        Err(BackendError::PinLocked)
    ));
    assert!(matches!(backend.list_keys(), Err(BackendError::PinLocked)));
    let health = backend.health();
    assert!(!health.available);
    assert!(health.detail.unwrap_or_default().contains("locked"));
    assert_eq!(env.login_calls()?, 0, "a locked token was sent a PIN");
    Ok(())
}

/// An absent token label is its own clear error; the same module keeps serving the token that
/// is present, in the same process.
pub(crate) fn absent_token(env: &TestEnv) -> Result<()> {
    let mut cfg = config(env);
    cfg.token_label = "no-such-token".into();
    let Err(BackendError::Unavailable(cause)) = Pkcs11Backend::open(&cfg) else {
        bail!("open with an absent token did not fail as unavailable");
    };
    // The token stack's own error survives the trait as a typed cause, not a string.
    ensure!(
        cause.downcast_ref::<Pkcs11Error>().is_some(),
        "cause is not a Pkcs11Error: {cause:?}"
    );
    let message = hwsign_agent::error_chain(cause.as_ref());
    assert!(message.contains("no-such-token"), "{message}");
    assert!(
        message.contains(&env.token),
        "present tokens not named: {message}"
    );

    let deferred = Pkcs11Backend::open_or_defer(cfg)?;
    let health = deferred.health();
    assert!(!health.available);
    assert!(health.detail.unwrap_or_default().contains("no-such-token"));
    assert!(matches!(
        deferred.create_key("k"),
        Err(BackendError::Unavailable(_))
    ));

    let present = Pkcs11Backend::open(&config(env))?;
    let key = present.create_key("still-serving")?;
    let digest = digest_of("y");
    assert!(
        key.public_key
            .verify_digest(&digest, &present.sign_digest(&key.id, &digest)?)
    );
    Ok(())
}

/// A missing module, and a library that is not a PKCS#11 module, are unavailable with a reason.
/// A backend whose PIN file is missing cannot log in, so it is not reported available; once the
/// file is there it is, without a restart.
pub(crate) fn missing_pin_not_available(env: &TestEnv) -> Result<()> {
    let pin_file = env.dir.join("pin-not-yet-there");
    let mut cfg = config(env);
    cfg.pin_file = Some(pin_file.clone());
    let backend = Pkcs11Backend::open(&cfg)?;
    let health = backend.health();
    ensure!(!health.available, "reported available: {health:?}");
    let detail = health.detail.unwrap_or_default();
    ensure!(
        detail.contains("PIN file") && detail.contains("pin-not-yet-there"),
        "{detail}"
    );
    fs::copy(&env.pin_file, &pin_file)?;
    let health = backend.health();
    ensure!(health.available, "still unavailable: {health:?}");
    Ok(())
}

pub(crate) fn missing_module(env: &TestEnv) -> Result<()> {
    let mut cfg = config(env);
    cfg.module_path = PathBuf::from("/nonexistent/vendor/libvendor-pkcs11.so");
    let Err(BackendError::Unavailable(cause)) = Pkcs11Backend::open(&cfg) else {
        bail!("missing module did not fail as unavailable");
    };
    let message = hwsign_agent::error_chain(cause.as_ref());
    assert!(
        message.contains("libvendor-pkcs11.so") && message.contains("not found"),
        "{message}"
    );
    let deferred = Pkcs11Backend::open_or_defer(cfg)?;
    assert!(!deferred.health().available);
    assert!(matches!(
        deferred.list_keys(),
        Err(BackendError::Unavailable(_))
    ));

    let mut not_pkcs11 = config(env);
    not_pkcs11.module_path = PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1");
    let Err(BackendError::Unavailable(cause)) = Pkcs11Backend::open(&not_pkcs11) else {
        bail!("a non-PKCS#11 library did not fail as unavailable");
    };
    let message = hwsign_agent::error_chain(cause.as_ref());
    assert!(message.contains("cannot load"), "{message}");
    Ok(())
}

/// A module whose directory or file others can write is refused; fixing the permissions brings
/// the deferred backend up on its next use.
pub(crate) fn writable_module_refused(env: &TestEnv) -> Result<()> {
    let dir = env.dir.join("modules");
    fs::create_dir(&dir)?;
    let module = dir.join("libtoken-pkcs11.so");
    fs::copy(&env.module, &module)?;
    fs::set_permissions(&module, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
    let mut cfg = config(env);
    cfg.module_path = module.clone();

    let Err(BackendError::Unavailable(cause)) = Pkcs11Backend::open(&cfg) else {
        bail!("world-writable module directory accepted");
    };
    let message = hwsign_agent::error_chain(cause.as_ref());
    assert!(message.contains("writable"), "{message}");
    let deferred = Pkcs11Backend::open_or_defer(cfg.clone())?;
    let health = deferred.health();
    assert!(!health.available);
    assert!(health.detail.unwrap_or_default().contains("writable"));

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&module, fs::Permissions::from_mode(0o666))?;
    let Err(BackendError::Unavailable(cause)) = Pkcs11Backend::open(&cfg) else {
        bail!("world-writable module file accepted");
    };
    let message = hwsign_agent::error_chain(cause.as_ref());
    assert!(message.contains("writable"), "{message}");

    fs::set_permissions(&module, fs::Permissions::from_mode(0o755))?;
    assert!(deferred.health().available, "{:?}", deferred.health());
    let key = deferred.create_key("late")?;
    let digest = digest_of("z");
    assert!(
        key.public_key
            .verify_digest(&digest, &deferred.sign_digest(&key.id, &digest)?)
    );
    Ok(())
}

/// End to end: an agent (in this process) serving the token on its Unix socket, the client
/// library creating a key and signing a request there, the verifier accepting the request.
pub(crate) fn agent_end_to_end(env: &TestEnv) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(agent_end_to_end_async(env))
}

async fn agent_end_to_end_async(env: &TestEnv) -> Result<()> {
    use hwsign_client::AgentClient;
    use hwsign_proto::api::{HeaderField, SignRequest};
    use hwsign_proto::canonical::RequestParts;
    use hwsign_verifier::{
        MemoryRegistry, MemoryReplayCache, RegisteredKey, Verifier, VerifierConfig,
    };

    let dir = env.dir.join("agent");
    let mut agent_config =
        hwsign_agent::Config::for_state_dir(dir.join("state"), dir.join("run/agent.sock"));
    agent_config.backends.pkcs11 = Some(config(env));
    let agent_config = Arc::new(agent_config);
    let listener = hwsign_agent::socket::bind(&agent_config.socket_path)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(hwsign_agent::run(
        listener,
        Arc::clone(&agent_config),
        async move {
            let _ = stopped.await;
        },
    ));

    let client = AgentClient::new(&agent_config.socket_path);
    let status = client.status().await?;
    let pkcs11 = status
        .backends
        .iter()
        .find(|b| b.name == "pkcs11")
        .context("pkcs11 backend not in status")?;
    ensure!(pkcs11.available, "{pkcs11:?}");

    let key = client.create_key("pkcs11", "e2e").await?;
    assert_eq!(key.backend, "pkcs11");
    assert_eq!(key.level, KeyLevel::HardwareUnattested);
    let public_key = PublicKey::from_spki_pem(&key.public_key_pem)?;

    let body = b"{\"hello\":\"token\"}";
    let body_sha256: [u8; 32] = Sha256::digest(body).into();
    let request = SignRequest {
        key_id: key.id.clone(),
        audience: "things-api".into(),
        method: "POST".into(),
        authority: "api.example.test".into(),
        path: "/v1/things".into(),
        query: String::new(),
        headers: vec![HeaderField {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body_sha256: hex::encode(body_sha256),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: Default::default(),
    };
    let signed = client.sign(&request).await?;
    assert_eq!(signed.key_id, key.id);

    let registry = Arc::new(MemoryRegistry::new());
    hwsign_verifier::KeyRegistry::add(
        &*registry,
        RegisteredKey::new(public_key, "e2e", KeyLevel::HardwareUnattested, 0),
    )?;
    let verifier = Verifier::new(
        VerifierConfig::new("things-api", ["api.example.test"]),
        registry,
        Arc::new(MemoryReplayCache::new(1000)),
    )?;
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "api.example.test".into()),
        ("content-type".into(), "application/json".into()),
    ];
    headers.extend(
        signed
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone())),
    );
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let parts = RequestParts {
        method: "POST",
        path: "/v1/things",
        query: "",
        headers: &header_refs,
    };
    let now = std::time::SystemTime::now();
    let principal = verifier
        .verify(&parts, &body_sha256, now)
        .map_err(|r| anyhow::anyhow!("verifier rejected: {r:?}"))?;
    assert_eq!(principal.key_id, key.id);
    assert_eq!(principal.level, KeyLevel::HardwareUnattested);
    // The same request again is a replay; a different body does not match.
    ensure!(verifier.verify(&parts, &body_sha256, now).is_err());
    let other_body: [u8; 32] = Sha256::digest(b"other").into();
    ensure!(verifier.verify(&parts, &other_body, now).is_err());

    let attestation = client
        .attestation(&key.id, "bm9uY2UtZnJvbS12ZXJpZmllcg")
        .await?;
    assert_eq!(attestation.level, KeyLevel::HardwareUnattested);
    ensure!(matches!(attestation.evidence, Evidence::Pkcs11Claims(ref c) if c.claims_not_proof));

    let _ = stop.send(());
    agent.await??;
    Ok(())
}
