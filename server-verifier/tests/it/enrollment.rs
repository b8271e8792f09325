//! The enrollment ceremony over a real swtpm driven by tpm2-tools (no agent): tokens, challenge
//! life cycle, credential activation in the TPM, the registry entries it leaves, and the HTTP
//! router's bounds and codes. The agent end to end is in hwsign-e2e's `tpm_*` tests.

use crate::attestation_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, ensure};
use attestation_support::{AK, EK_RSA, KEY, TpmRig};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::{EVIDENCE_VERSION, Evidence, KeyAttestation};
use hwsign_proto::enrollment::{
    ActivateRequest, ActivateResponse, EvidenceRequest, EvidenceResponse, StartRequest,
    StartResponse,
};
use hwsign_verifier::SqliteRegistry;
use hwsign_verifier::attestation::TpmPublic;
use hwsign_verifier::attestation::public::PublicKeyArea;
use hwsign_verifier::enrollment::{
    Enrollment, EnrollmentConfig, EnrollmentError, EnrollmentStore, create_token, router,
};

pub(crate) struct Fixture {
    pub(crate) rig: TpmRig,
    pub(crate) enrollment: Enrollment,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn fixture_with(config: impl FnOnce(&mut EnrollmentConfig)) -> Result<Fixture> {
    let rig = TpmRig::new()?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("verifier.db");
    let mut settings = EnrollmentConfig::new(
        vec![rig.tpm.ca_root_pem()],
        vec![rig.tpm.ca_intermediate_pem()],
    );
    config(&mut settings);
    // The registry first: it creates the file with std::fs, which must happen before any other
    // SQLite connection of this process holds locks on it.
    let registry = Arc::new(SqliteRegistry::open(&db)?);
    let enrollment = Enrollment::new(
        EnrollmentStore::open(&db)?,
        registry,
        settings.trust_anchors()?,
        settings,
    );
    Ok(Fixture {
        rig,
        enrollment,
        _dir: dir,
    })
}

pub(crate) fn fixture() -> Result<Fixture> {
    fixture_with(|_| {})
}

pub(crate) fn key_id_of(rig: &TpmRig, handle: u32) -> Result<String> {
    let public = TpmPublic::parse(&rig.public_area(handle)?)?;
    let PublicKeyArea::Ecc { x, y, .. } = &public.key else {
        anyhow::bail!("not an ECC key");
    };
    Ok(PublicKey::from_affine(x, y)?.key_id())
}

fn token(f: &Fixture, now: SystemTime) -> Result<String> {
    let (_, token) = create_token(f.enrollment.store(), "rig laptop", 600, now)?;
    Ok(token.to_string())
}

pub(crate) fn start(
    f: &Fixture,
    token: &str,
    key_id: &str,
    now: SystemTime,
) -> Result<StartResponse, EnrollmentError> {
    f.enrollment.start(
        &StartRequest {
            token: token.to_owned(),
            key_id: key_id.to_owned(),
        },
        now,
    )
}

pub(crate) fn evidence_for(
    f: &Fixture,
    key: u32,
    started: &StartResponse,
) -> Result<EvidenceRequest> {
    let nonce = URL_SAFE_NO_PAD.decode(&started.nonce)?;
    Ok(EvidenceRequest {
        challenge_id: started.challenge_id.clone(),
        evidence: KeyAttestation {
            version: EVIDENCE_VERSION,
            key_id: key_id_of(&f.rig, key)?,
            level: KeyLevel::Tpm,
            evidence: Evidence::Tpm(f.rig.evidence_with(AK, key, &nonce)?),
        },
    })
}

pub(crate) fn activate_in_tpm(f: &Fixture, credential: &EvidenceResponse) -> Result<String> {
    let secret = f.rig.activate(
        AK,
        EK_RSA,
        &STANDARD.decode(&credential.credential_blob)?,
        &STANDARD.decode(&credential.encrypted_secret)?,
    )?;
    Ok(STANDARD.encode(secret))
}

pub(crate) fn code<T: std::fmt::Debug>(result: Result<T, EnrollmentError>) -> String {
    match result {
        Ok(value) => format!("accepted: {value:?}"),
        Err(error) => error.code(),
    }
}

#[test]
fn ceremony_registers_a_tpm_key_with_its_device() -> Result<()> {
    let f = fixture()?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let token = token(&f, now)?;
    let started = start(&f, &token, &key_id, now)?;
    let credential = f
        .enrollment
        .submit_evidence(&evidence_for(&f, KEY, &started)?, now)?;
    let secret = activate_in_tpm(&f, &credential)?;
    let done: ActivateResponse = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id.clone(),
            secret,
        },
        now,
    )?;
    ensure!(done.key_id == key_id && done.level == KeyLevel::Tpm);

    let registry = f.enrollment.registry();
    let key = registry.lookup(&key_id)?.context("key not registered")?;
    ensure!(key.level == KeyLevel::Tpm && !key.revoked && key.label == "rig laptop");
    ensure!(key.device_id.as_deref() == Some(done.device_id.as_str()));
    let device = registry.device(&done.device_id)?.context("no device")?;
    ensure!(device.pcr_baseline.len() == 8 && !device.revoked);
    ensure!(device.ak_public == f.rig.public_area(AK)?);

    // The token is spent and the challenge gone.
    ensure!(code(start(&f, &token, &key_id, now)) == "token_used");
    ensure!(f.enrollment.store().pending_challenges()? == 0);
    let replay = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id,
            secret: STANDARD.encode([0u8; 32]),
        },
        now,
    );
    ensure!(code(replay) == "challenge_unknown");
    Ok(())
}

#[test]
fn tokens_need_their_secret_and_expire() -> Result<()> {
    let f = fixture()?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let token = token(&f, now)?;
    // Same id, another secret.
    let (id, _) = token.split_once('.').context("token shape")?;
    let forged = format!("{id}.{}", URL_SAFE_NO_PAD.encode([9u8; 32]));
    ensure!(code(start(&f, &forged, &key_id, now)) == "invalid_token");
    ensure!(code(start(&f, "hwt1_nonsense", &key_id, now)) == "invalid_token");
    let later = now + Duration::from_secs(601);
    ensure!(code(start(&f, &token, &key_id, later)) == "token_expired");
    ensure!(code(start(&f, &token, "not-a-key", now)) == "malformed_request");

    let revoked = self::token(&f, now)?;
    let revoked_id = revoked
        .strip_prefix("hwt1_")
        .and_then(|rest| rest.split_once('.'))
        .context("token shape")?
        .0;
    f.enrollment.store().revoke_token(revoked_id)?;
    ensure!(code(start(&f, &revoked, &key_id, now)) == "invalid_token");
    // Listing shows ids and states, never secrets.
    let listed = f.enrollment.store().list_tokens()?;
    ensure!(listed.len() == 2 && listed.iter().any(|t| t.revoked));
    Ok(())
}

#[test]
fn a_wrong_secret_ends_the_ceremony() -> Result<()> {
    let f = fixture()?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let credential = f
        .enrollment
        .submit_evidence(&evidence_for(&f, KEY, &started)?, now)?;
    let wrong = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id.clone(),
            secret: STANDARD.encode([0u8; 32]),
        },
        now,
    );
    ensure!(code(wrong) == "activation_failed");
    // One try: the right secret afterwards finds no challenge.
    let secret = activate_in_tpm(&f, &credential)?;
    let late = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id,
            secret,
        },
        now,
    );
    ensure!(code(late) == "challenge_unknown");
    ensure!(f.enrollment.registry().lookup(&key_id)?.is_none());
    Ok(())
}

#[test]
fn steps_out_of_order_or_late_are_refused() -> Result<()> {
    let f = fixture_with(|c| {
        c.challenge_ttl_secs = 60;
        c.max_pending_challenges = 2;
    })?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;

    // Activation before evidence.
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let early = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id.clone(),
            secret: STANDARD.encode([0u8; 32]),
        },
        now,
    );
    ensure!(code(early) == "challenge_state");
    // Evidence twice.
    let evidence = evidence_for(&f, KEY, &started)?;
    f.enrollment.submit_evidence(&evidence, now)?;
    ensure!(code(f.enrollment.submit_evidence(&evidence, now)) == "challenge_state");

    // Bounded: two pending already.
    let other = start(&f, &token(&f, now)?, &key_id, now)?;
    ensure!(code(start(&f, &token(&f, now)?, &key_id, now)) == "too_many_challenges");

    // Late evidence.
    let late = evidence_for(&f, KEY, &other)?;
    let after = now + Duration::from_secs(61);
    ensure!(code(f.enrollment.submit_evidence(&late, after)) == "challenge_expired");
    ensure!(code(f.enrollment.submit_evidence(&late, now)) == "challenge_unknown");
    ensure!(
        code(f.enrollment.submit_evidence(
            &EvidenceRequest {
                challenge_id: "ch_../../etc".into(),
                ..late
            },
            now
        )) == "challenge_unknown"
    );
    Ok(())
}

/// Issue 9 §5: one token starting ceremony after ceremony cannot hold every pending challenge
/// against other devices. Each new start replaces the token's oldest pending challenge, and
/// another device's token still gets a challenge and completes its enrollment.
#[test]
fn hardening_one_token_cannot_hold_every_pending_challenge() -> Result<()> {
    let f = fixture_with(|c| {
        c.max_pending_challenges = 4;
        c.max_pending_per_token = 2;
    })?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let greedy = token(&f, now)?;
    let mut started = Vec::new();
    for _ in 0..10 {
        started.push(start(&f, &greedy, &key_id, now)?);
        let pending = f.enrollment.store().pending_challenges()?;
        ensure!(pending <= 2, "one token holds {pending} pending challenges");
    }
    // The replaced challenges are gone (and did not spend the token).
    let oldest = started.first().context("no challenge")?;
    let replaced = f
        .enrollment
        .submit_evidence(&evidence_for(&f, KEY, oldest)?, now);
    ensure!(code(replaced) == "challenge_unknown");

    // Another device's token: served, and its ceremony completes.
    let other = token(&f, now)?;
    let mine = start(&f, &other, &key_id, now)?;
    let credential = f
        .enrollment
        .submit_evidence(&evidence_for(&f, KEY, &mine)?, now)?;
    let secret = activate_in_tpm(&f, &credential)?;
    let done = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: mine.challenge_id,
            secret,
        },
        now,
    )?;
    ensure!(done.key_id == key_id);
    ensure!(f.enrollment.registry().lookup(&key_id)?.is_some());
    Ok(())
}

#[test]
fn a_duplicable_key_is_refused_even_when_certified_by_the_real_ak() -> Result<()> {
    let f = fixture()?;
    const DUPLICABLE: u32 = 0x8100_0012;
    f.rig.create_key(
        DUPLICABLE,
        "ecc256:ecdsa-sha256",
        "sensitivedataorigin|userwithauth|sign",
    )?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, DUPLICABLE)?;
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let refused = f
        .enrollment
        .submit_evidence(&evidence_for(&f, DUPLICABLE, &started)?, now);
    ensure!(code(refused) == "evidence_invalid:key_not_fixed_tpm");
    // The refusal spent the token and ended the ceremony.
    ensure!(f.enrollment.store().pending_challenges()? == 0);
    Ok(())
}

#[test]
fn evidence_for_another_key_than_challenged_is_refused() -> Result<()> {
    let f = fixture()?;
    let now = SystemTime::now();
    let started = start(
        &f,
        &token(&f, now)?,
        "hk1_0123456789abcdef0123456789abcdef",
        now,
    )?;
    let mut request = evidence_for(&f, KEY, &started)?;
    ensure!(code(f.enrollment.submit_evidence(&request, now)) == "evidence_invalid:key_mismatch");
    // Claiming the challenged key id over another key's evidence does not help either.
    let started = start(
        &f,
        &token(&f, now)?,
        "hk1_0123456789abcdef0123456789abcdef",
        now,
    )?;
    request = evidence_for(&f, KEY, &started)?;
    request.evidence.key_id = "hk1_0123456789abcdef0123456789abcdef".into();
    ensure!(code(f.enrollment.submit_evidence(&request, now)) == "evidence_invalid:key_mismatch");
    Ok(())
}

async fn call(app: &axum::Router, path: &str, body: Vec<u8>) -> Result<(u16, serde_json::Value)> {
    use http_body_util::BodyExt as _;
    use tower_service::Service as _;
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))?;
    let response = app.clone().call(request).await?;
    let status = response.status().as_u16();
    ensure!(
        response
            .headers()
            .get("cache-control")
            .is_some_and(|v| v == "no-store")
    );
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes)?))
}

#[tokio::test]
async fn router_bounds_bodies_and_answers_with_codes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("v.db");
    let rig_free_config = EnrollmentConfig::new(vec![Path::new("unused").into()], vec![]);
    let registry = Arc::new(SqliteRegistry::open(&db)?);
    let store = EnrollmentStore::open(&db)?;
    let (_, token) = create_token(&store, "r", 60, SystemTime::now())?;
    let enrollment = Enrollment::new(
        store,
        registry,
        hwsign_verifier::attestation::TrustAnchors::default(),
        rig_free_config,
    );
    let app = router(Arc::new(enrollment));

    let (status, body) = call(&app, "/enroll/start", b"{".to_vec()).await?;
    ensure!(
        status == 400 && body["error"]["code"] == "malformed_request",
        "{body}"
    );
    let big = vec![b' '; 65 * 1024];
    let (status, body) = call(&app, "/enroll/evidence", big).await?;
    ensure!(
        status == 413 && body["error"]["code"] == "too_large",
        "{body}"
    );
    // A refused token's message does not echo it.
    let wrong =
        serde_json::json!({"token": 12345, "key_id": "hk1_0123456789abcdef0123456789abcdef"});
    let (status, body) = call(&app, "/enroll/start", serde_json::to_vec(&wrong)?).await?;
    ensure!(
        status == 400 && !body.to_string().contains("12345"),
        "{body}"
    );

    let good = serde_json::json!({"token": token.as_str(), "key_id": "hk1_0123456789abcdef0123456789abcdef"});
    let (status, body) = call(&app, "/enroll/start", serde_json::to_vec(&good)?).await?;
    ensure!(status == 200, "{body}");
    let nonce = URL_SAFE_NO_PAD.decode(body["nonce"].as_str().context("nonce")?)?;
    ensure!(nonce.len() == 32);
    let activate = serde_json::json!({"challenge_id": body["challenge_id"], "secret": "AAAA"});
    let (status, body) = call(&app, "/enroll/activate", serde_json::to_vec(&activate)?).await?;
    ensure!(
        status == 409 && body["error"]["code"] == "challenge_state",
        "{body}"
    );
    Ok(())
}

/// Two ceremonies started with one token: the first evidence spends it, the second is refused.
#[test]
fn one_token_completes_one_ceremony() -> Result<()> {
    let f = fixture()?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let token = token(&f, now)?;
    let first = start(&f, &token, &key_id, now)?;
    let second = start(&f, &token, &key_id, now)?;
    f.enrollment
        .submit_evidence(&evidence_for(&f, KEY, &first)?, now)?;
    let refused = f
        .enrollment
        .submit_evidence(&evidence_for(&f, KEY, &second)?, now);
    ensure!(code(refused) == "token_used");
    ensure!(f.enrollment.store().pending_challenges()? == 1);
    Ok(())
}

/// Evidence that passes every check is not enough: until the AK has been credential-activated
/// (proving it sits in the EK's TPM) nothing is registered, and once the challenge expires even
/// the right secret is refused.
#[test]
fn an_ak_never_credential_activated_registers_nothing() -> Result<()> {
    let f = fixture_with(|c| c.challenge_ttl_secs = 60)?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let credential = f
        .enrollment
        .submit_evidence(&evidence_for(&f, KEY, &started)?, now)?;
    ensure!(f.enrollment.registry().lookup(&key_id)?.is_none());
    let secret = activate_in_tpm(&f, &credential)?;
    let late = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id,
            secret,
        },
        now + Duration::from_secs(61),
    );
    let refused = code(late);
    ensure!(
        refused == "challenge_expired" || refused == "challenge_unknown",
        "late activation: {refused}"
    );
    ensure!(f.enrollment.registry().lookup(&key_id)?.is_none());
    Ok(())
}

/// Enrollment records the attestation it checked among the device's facts: `boot_state`
/// `unchanged` at first; after `tpm2_pcrextend` changes PCR 4 on the swtpm, a later attestation
/// of the same device (here: enrolling its key again) records `changed`, and a policy that
/// demands an unchanged boot chain on /v1/admin refuses the device until an administrator
/// approves the new PCR values as its baseline.
#[test]
fn policy_boot_state_changes_after_a_pcr_extend_and_the_policy_refuses_until_approved() -> Result<()>
{
    use hwsign_verifier::policy::{PolicyEngine, PolicyRequest};
    use hwsign_verifier::registry::BootState;

    const ADMIN: &str = r#"
@id("baseline")
permit(principal, action, resource);

@id("admin-tpm-unchanged-boot")
forbid(principal, action, resource in Hws::Route::"/v1/admin")
unless { context.level == "tpm" && context.boot_state == "unchanged" &&
         context has attestation_age_secs && context.attestation_age_secs < 3600 };
"#;
    let f = fixture()?;
    let engine = PolicyEngine::from_sources(&[("admin.cedar".into(), ADMIN.into())])?;
    let key_id = key_id_of(&f.rig, KEY)?;
    let enroll = |at: SystemTime| -> Result<ActivateResponse> {
        let token = token(&f, at)?;
        let started = start(&f, &token, &key_id, at)?;
        let credential = f
            .enrollment
            .submit_evidence(&evidence_for(&f, KEY, &started)?, at)?;
        let secret = activate_in_tpm(&f, &credential)?;
        Ok(f.enrollment.activate(
            &ActivateRequest {
                challenge_id: started.challenge_id,
                secret,
            },
            at,
        )?)
    };
    let registry = f.enrollment.registry();
    let decide = |device_id: &str, now_unix: i64| -> Result<(bool, Vec<String>)> {
        let key = registry.lookup(&key_id)?.context("key not registered")?;
        let device = registry.device(device_id)?;
        let facts = registry.device_facts(device_id)?;
        let decision = engine.decide(&PolicyRequest {
            key: &key,
            device: device.as_ref(),
            facts: facts.as_ref(),
            method: "POST",
            path: "/v1/admin/keys",
            delegated: false,
            now_unix,
            source_ip: None,
            owner: None,
            signature: Default::default(),
        })?;
        Ok((decision.allowed, decision.determining))
    };
    let unix = |t: SystemTime| -> Result<i64> {
        Ok(i64::try_from(
            t.duration_since(SystemTime::UNIX_EPOCH)?.as_secs(),
        )?)
    };

    let first = SystemTime::now();
    let done = enroll(first)?;
    let facts = registry
        .device_facts(&done.device_id)?
        .context("enrollment recorded no facts")?;
    let attestation = facts.last_attestation.context("no attestation recorded")?;
    ensure!(attestation.boot_state == BootState::Unchanged);
    ensure!(attestation.at_unix == unix(first)?);
    ensure!(decide(&done.device_id, unix(first)? + 10)? == (true, vec!["baseline".into()]));
    // The same device an hour later: the attestation is too old.
    ensure!(!decide(&done.device_id, unix(first)? + 3600)?.0);

    f.rig.extend_pcr(4, &[0x42; 32])?;
    let second = first + Duration::from_secs(60);
    let again = enroll(second)?;
    ensure!(again.device_id == done.device_id);
    let facts = registry
        .device_facts(&done.device_id)?
        .context("no facts")?;
    let attestation = facts.last_attestation.context("no attestation recorded")?;
    ensure!(
        attestation.boot_state == BootState::Changed,
        "{attestation:?}"
    );
    ensure!(attestation.at_unix == unix(second)?);
    // The baseline is what enrollment first saw; it is not silently replaced.
    let device = registry.device(&done.device_id)?.context("no device")?;
    ensure!(device.pcr_baseline.len() == 8);
    let (allowed, determining) = decide(&done.device_id, unix(second)? + 10)?;
    ensure!(
        !allowed && determining == ["admin-tpm-unchanged-boot"],
        "{determining:?}"
    );

    // Until an administrator approves the new boot chain: the quoted PCRs become the baseline.
    let approved =
        hwsign_verifier::admin::approve_boot_baseline(registry.as_ref(), &done.device_id)?;
    ensure!(approved == 8);
    let device = registry.device(&done.device_id)?.context("no device")?;
    let pcrs: Vec<String> = device.pcr_baseline.iter().map(hex::encode).collect();
    ensure!(
        pcrs == f.rig.pcrs()?,
        "the approved baseline is not the TPM's PCRs"
    );
    ensure!(decide(&done.device_id, unix(second)? + 10)?.0);
    // And the next attestation compares with the approved baseline.
    let third = second + Duration::from_secs(60);
    enroll(third)?;
    let facts = registry
        .device_facts(&done.device_id)?
        .context("no facts")?;
    ensure!(facts.last_attestation.map(|a| a.boot_state) == Some(BootState::Unchanged));
    Ok(())
}

/// The field guide's RSA row: a device whose attestation key is RSA-2048 (RSASSA with SHA-256,
/// as Windows and many TPM 1.2-era tools create them) enrolls end to end on swtpm: evidence,
/// credential activation by that AK, registration.
#[test]
fn field_rsa_2048_ak_enrolls_end_to_end() -> Result<()> {
    let f = fixture()?;
    let rsa_ak = 0x8100_0013;
    f.rig
        .create_ak(rsa_ak, &["-G", "rsa", "-g", "sha256", "-s", "rsassa"])?;
    let ak = TpmPublic::parse(&f.rig.public_area(rsa_ak)?)?;
    ensure!(matches!(ak.key, PublicKeyArea::Rsa { key_bits: 2048, .. }));
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let nonce = URL_SAFE_NO_PAD.decode(&started.nonce)?;
    let request = EvidenceRequest {
        challenge_id: started.challenge_id.clone(),
        evidence: KeyAttestation {
            version: EVIDENCE_VERSION,
            key_id: key_id.clone(),
            level: KeyLevel::Tpm,
            evidence: Evidence::Tpm(f.rig.evidence_with(rsa_ak, KEY, &nonce)?),
        },
    };
    let credential = f.enrollment.submit_evidence(&request, now)?;
    let secret = f.rig.activate(
        rsa_ak,
        EK_RSA,
        &STANDARD.decode(&credential.credential_blob)?,
        &STANDARD.decode(&credential.encrypted_secret)?,
    )?;
    let done = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id,
            secret: STANDARD.encode(secret),
        },
        now,
    )?;
    ensure!(done.key_id == key_id && done.level == KeyLevel::Tpm);
    let device = f
        .enrollment
        .registry()
        .device(&done.device_id)?
        .context("no device")?;
    ensure!(device.ak_public == f.rig.public_area(rsa_ak)?);
    Ok(())
}

/// The other side of the legacy-algorithm policy: attestation signatures made with SHA-1 (an
/// RSA AK whose scheme hash is SHA-1) are refused whatever `ek_sha1_links` says — only chain
/// links of vendor certificates may use SHA-1.
#[test]
fn field_sha1_attestation_signatures_are_refused_even_with_sha1_links_on() -> Result<()> {
    let f = fixture_with(|config| config.ek_sha1_links = true)?;
    let sha1_ak = 0x8100_0014;
    f.rig
        .create_ak(sha1_ak, &["-G", "rsa", "-g", "sha1", "-s", "rsassa"])?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let nonce = URL_SAFE_NO_PAD.decode(&started.nonce)?;
    let request = EvidenceRequest {
        challenge_id: started.challenge_id.clone(),
        evidence: KeyAttestation {
            version: EVIDENCE_VERSION,
            key_id,
            level: KeyLevel::Tpm,
            evidence: Evidence::Tpm(f.rig.evidence_signed_with(sha1_ak, KEY, &nonce, "sha1")?),
        },
    };
    let result = f.enrollment.submit_evidence(&request, now);
    let error = result.err().context("a SHA-1 AK was accepted")?;
    let text = hwsign_verifier::ErrorChain(&error).to_string();
    ensure!(
        error.code().starts_with("evidence_invalid"),
        "{} {text}",
        error.code()
    );
    ensure!(text.contains("signature hash is SHA-1"), "{text}");
    Ok(())
}

/// A TPM without an EK certificate (some firmware TPMs, Azure and Amazon vTPMs): refused with
/// `ek_unregistered` until an administrator registers its EK public key, then enrolled with the
/// full ceremony (credential activation by that EK) at level `tpm`, its device id derived from
/// the registered key. A different EK's registration does not help it.
#[test]
fn field_tpm_without_ek_certificate_enrolls_only_once_its_ek_is_registered() -> Result<()> {
    let eks_dir = tempfile::tempdir()?;
    let eks = hwsign_verifier::attestation::RegisteredEks::new(eks_dir.path().join("eks"));
    let f = fixture_with(|config| config.registered_eks = Some(eks.dir().to_owned()))?;
    let now = SystemTime::now();
    let key_id = key_id_of(&f.rig, KEY)?;
    let without_certificate = |started: &StartResponse| -> Result<EvidenceRequest> {
        let mut request = evidence_for(&f, KEY, started)?;
        let Evidence::Tpm(evidence) = &mut request.evidence.evidence else {
            anyhow::bail!("not TPM evidence");
        };
        evidence.ek_certificate.clear();
        Ok(request)
    };

    let unregistered = || -> Result<bool> {
        let started = start(&f, &token(&f, now)?, &key_id, now)?;
        Ok(code(
            f.enrollment
                .submit_evidence(&without_certificate(&started)?, now),
        ) == "evidence_invalid:ek_unregistered")
    };

    // Not registered: refused, and the message names the EK's fingerprint.
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let refused = f
        .enrollment
        .submit_evidence(&without_certificate(&started)?, now)
        .err()
        .context("an unregistered EK without certificate was accepted")?;
    ensure!(
        refused.code() == "evidence_invalid:ek_unregistered",
        "{}",
        refused.code()
    );
    let message = hwsign_verifier::ErrorChain(&refused).to_string();
    ensure!(
        message.contains("is not registered") && message.len() > 64,
        "{message}"
    );

    // Another TPM's EK registered: still refused.
    let other = TpmRig::new()?;
    other.tool(
        "tpm2_readpublic",
        &["-c", "0x81010001", "-f", "pem", "-o", "ek.pem"],
    )?;
    eks.add(&other.read("ek.pem")?, "another laptop")?;
    ensure!(unregistered()?, "accepted");

    // This TPM's EK, read on the device with tpm2-tools, registered: the ceremony completes.
    f.rig.tool(
        "tpm2_readpublic",
        &["-c", "0x81010001", "-f", "pem", "-o", "ek.pem"],
    )?;
    let registered = eks.add(&f.rig.read("ek.pem")?, "rig laptop (no EK certificate)")?;
    ensure!(
        eks.add(&f.rig.read("ek.pem")?, "again").is_err(),
        "registered twice"
    );
    let started = start(&f, &token(&f, now)?, &key_id, now)?;
    let credential = f
        .enrollment
        .submit_evidence(&without_certificate(&started)?, now)?;
    let done = f.enrollment.activate(
        &ActivateRequest {
            challenge_id: started.challenge_id,
            secret: activate_in_tpm(&f, &credential)?,
        },
        now,
    )?;
    ensure!(done.key_id == key_id && done.level == KeyLevel::Tpm);
    ensure!(
        done.device_id == hwsign_verifier::enrollment::device_id_for(&registered.fingerprint),
        "device id {} not derived from the registered EK",
        done.device_id
    );
    let listed = eks.list()?;
    ensure!(listed.len() == 2 && listed.iter().any(|e| e.label == registered.label));

    // Removed: the next enrollment without certificate is refused again.
    eks.remove(&registered.fingerprint)?;
    ensure!(unregistered()?, "accepted");
    Ok(())
}

/// Registered-EK input is checked: not PEM, a certificate instead of a key, a bad label.
#[test]
fn field_registered_ek_input_is_checked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let eks = hwsign_verifier::attestation::RegisteredEks::new(dir.path());
    let rig = TpmRig::new()?;
    rig.tool(
        "tpm2_readpublic",
        &["-c", "0x81010001", "-f", "pem", "-o", "ek.pem"],
    )?;
    let pem = rig.read("ek.pem")?;
    let message = |result: Result<_, hwsign_verifier::attestation::RegisteredEkError>| {
        result.err().map(|e| e.to_string()).unwrap_or_default()
    };
    ensure!(message(eks.add(b"not a key", "x")).contains("not a PEM public key"));
    ensure!(
        message(eks.add(&std::fs::read(rig.tpm.ca_root_pem())?, "x"))
            .contains("not a PEM public key")
    );
    ensure!(message(eks.add(&pem, "")).contains("label"));
    ensure!(message(eks.add(&pem, "two\nlines")).contains("label"));
    ensure!(eks.remove("not-a-fingerprint").is_err());
    let added = eks.add(&pem, "ok")?;
    ensure!(added.fingerprint.len() == 64);
    Ok(())
}
