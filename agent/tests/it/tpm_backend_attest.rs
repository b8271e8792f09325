//! TPM backend attestation against a real swtpm: the evidence is checked field by field with
//! tss-esapi's unmarshalling and pure-Rust signature checks, the EK certificate with openssl,
//! and ActivateCredential with a credential made in software by `tpm2_makecredential -T none`.
#![cfg(feature = "tpm")]

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_agent::backends::tpm::{TpmBackend, TpmConfig};
use hwsign_agent::backends::{BackendError, BackendKey, KeyBackend};
use hwsign_proto::PublicKey;
use hwsign_proto::attestation::{Evidence, TpmEvidence};
use hwsign_test_support::swtpm::Swtpm;
use sha2::{Digest, Sha256};
use tss_esapi::interface_types::structure_tags::AttestationType;
use tss_esapi::structures::{Attest, AttestInfo, Public, Signature};
use tss_esapi::traits::UnMarshall;

fn open(tpm: &Swtpm, state: &Path) -> Result<TpmBackend> {
    let config = TpmConfig {
        tcti: tpm.tcti(),
        ..TpmConfig::default()
    };
    Ok(TpmBackend::open(&config, state)?)
}

fn b64(field: &str) -> Result<Vec<u8>> {
    Ok(STANDARD.decode(field)?)
}

fn tpm_evidence(evidence: Evidence) -> Result<TpmEvidence> {
    match evidence {
        Evidence::Tpm(tpm) => Ok(tpm),
        other => bail!("expected TPM evidence, got {other:?}"),
    }
}

/// The P-256 key of an ECC public area.
fn ecc_key(public: &Public) -> Result<PublicKey> {
    let Public::Ecc { unique, .. } = public else {
        bail!("not an ECC public area");
    };
    Ok(PublicKey::from_affine(
        unique.x().value(),
        unique.y().value(),
    )?)
}

/// Checks a TPMT_SIGNATURE (ECDSA-SHA256) over `signed` with `key`.
fn check_signature(key: &PublicKey, signed: &[u8], signature: &[u8]) -> Result<()> {
    let Signature::EcDsa(ecdsa) = Signature::unmarshall(signature)? else {
        bail!("not an ECDSA signature");
    };
    let der = hwsign_proto::keys::raw_signature_to_der(
        ecdsa.signature_r().value(),
        ecdsa.signature_s().value(),
    )?;
    let digest: [u8; 32] = Sha256::digest(signed).into();
    ensure!(
        key.verify_digest(&digest, &der),
        "AK signature does not verify"
    );
    Ok(())
}

fn name_of(public_area: &[u8]) -> Vec<u8> {
    let mut name = vec![0x00, 0x0b];
    name.extend_from_slice(&Sha256::digest(public_area));
    name
}

/// Everything a verifier checks, done here with independent tools.
fn check_evidence(ev: &TpmEvidence, key: &BackendKey, nonce: &[u8], tpm: &Swtpm) -> Result<()> {
    let key_public = b64(&ev.key_public)?;
    let ak_public_bytes = b64(&ev.ak_public)?;
    let ak_public = Public::unmarshall(&ak_public_bytes)?;
    let ak_key = ecc_key(&ak_public)?;

    // The presented key area is the key the backend signs with.
    let key_area = Public::unmarshall(&key_public)?;
    ensure!(ecc_key(&key_area)? == key.public_key);
    let attrs = key_area.object_attributes();
    ensure!(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.sensitive_data_origin());
    ensure!(attrs.sign_encrypt() && !attrs.restricted() && !attrs.decrypt());

    // AK: restricted signing key that never leaves the TPM.
    let attrs = ak_public.object_attributes();
    ensure!(attrs.restricted() && attrs.sign_encrypt() && !attrs.decrypt());
    ensure!(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.sensitive_data_origin());

    // Certify: right type, nonce, certified name; signed by the AK.
    let certify_bytes = b64(&ev.certify_info)?;
    let certify = Attest::unmarshall(&certify_bytes)?;
    ensure!(certify.attestation_type() == AttestationType::Certify);
    ensure!(certify.extra_data().value() == nonce);
    let AttestInfo::Certify { info } = certify.attested() else {
        bail!("certify_info is not a certify structure");
    };
    ensure!(info.name().value() == name_of(&key_public).as_slice());
    check_signature(&ak_key, &certify_bytes, &b64(&ev.certify_signature)?)?;
    // The AK lives in the endorsement hierarchy, so the counters are real, not obfuscated
    // (a fresh swtpm has restarted a handful of times at most).
    let clock = certify.clock_info();
    ensure!(
        clock.reset_count() < 100 && clock.restart_count() < 100,
        "counters look obfuscated: reset {} restart {}",
        clock.reset_count(),
        clock.restart_count()
    );

    // Quote: nonce, PCR digest over the reported values, signed by the AK.
    let quote_bytes = b64(&ev.quote_info)?;
    let quote = Attest::unmarshall(&quote_bytes)?;
    ensure!(quote.attestation_type() == AttestationType::Quote);
    ensure!(quote.extra_data().value() == nonce);
    let AttestInfo::Quote { info } = quote.attested() else {
        bail!("quote_info is not a quote structure");
    };
    ensure!(ev.pcrs_sha256.len() == 8);
    let mut pcr_hash = Sha256::new();
    for pcr in &ev.pcrs_sha256 {
        let value = hex::decode(pcr)?;
        ensure!(value.len() == 32);
        pcr_hash.update(&value);
    }
    ensure!(info.pcr_digest().value() == pcr_hash.finalize().as_slice());
    check_signature(&ak_key, &quote_bytes, &b64(&ev.quote_signature)?)?;

    // EK certificate: RSA-2048 on swtpm, chains to swtpm's local CA, and certifies the EK
    // public area the evidence presents.
    ensure!(ev.ek_certificate_nv_index == 0x01c0_0002);
    let scratch = tpm.scratch();
    let der_path = scratch.join("ek.der");
    let pem_path = scratch.join("ek.pem");
    std::fs::write(&der_path, b64(&ev.ek_certificate)?)?;
    run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&der_path)
        .arg("-out")
        .arg(&pem_path))?;
    run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(tpm.ca_root_pem())
        .arg("-untrusted")
        .arg(tpm.ca_intermediate_pem())
        .arg(&pem_path))?;
    let modulus = run(Command::new("openssl")
        .args(["x509", "-noout", "-modulus", "-in"])
        .arg(&pem_path))?;
    let Public::Rsa { unique, .. } = Public::unmarshall(&b64(&ev.ek_public)?)? else {
        bail!("EK public area is not RSA");
    };
    ensure!(
        modulus.trim() == format!("Modulus={}", hex::encode_upper(unique.value())),
        "EK certificate does not certify the presented EK"
    );
    Ok(())
}

fn run(command: &mut Command) -> Result<String> {
    let output = command.output().context("running a tool")?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[test]
fn evidence_checks_out_and_ak_persists() -> Result<()> {
    let mut tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    let key = backend.create_key("attested")?;

    let nonce = b"verifier nonce 0123456789abcdef";
    let started = std::time::Instant::now();
    let first = tpm_evidence(backend.attest(&key.id, nonce)?)?;
    println!(
        "first attest (creates the AK): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    check_evidence(&first, &key, nonce, &tpm)?;
    // A TPM that never lost power without an orderly shutdown reports a safe clock. (After the
    // kill in the restart below, `safe` is clear: that is the TPM telling the truth.)
    ensure!(
        Attest::unmarshall(&b64(&first.certify_info)?)?
            .clock_info()
            .safe()
    );
    ensure!(
        backend.transient_handles()?.len() == 1,
        "attest leaked a handle"
    );

    // The longest nonce a TPM2B_DATA holds.
    let long_nonce = [0xa5u8; 64];
    let started = std::time::Instant::now();
    let second = tpm_evidence(backend.attest(&key.id, &long_nonce)?)?;
    println!("attest: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    check_evidence(&second, &key, &long_nonce, &tpm)?;
    ensure!(second.ak_public == first.ak_public, "AK must be reused");
    ensure!(second.certify_info != first.certify_info);

    for bad in [&[][..], &[0u8; 65][..]] {
        ensure!(matches!(
            backend.attest(&key.id, bad),
            Err(BackendError::InvalidInput(_))
        ));
    }
    ensure!(matches!(
        backend.attest("hk1_00000000000000000000000000000000", nonce),
        Err(BackendError::UnknownKey)
    ));

    // After agent and TPM restart, the same AK and key are attested again.
    drop(backend);
    tpm.restart()?;
    let backend = open(&tpm, state.path())?;
    let third = tpm_evidence(backend.attest(&key.id, b"after restart")?)?;
    check_evidence(&third, &key, b"after restart", &tpm)?;
    ensure!(third.ak_public == first.ak_public);
    ensure!(third.ek_public == first.ek_public);
    let restarted = Attest::unmarshall(&b64(&third.certify_info)?)?;
    let before = Attest::unmarshall(&b64(&first.certify_info)?)?;
    ensure!(
        restarted.clock_info().reset_count() > before.clock_info().reset_count()
            || restarted.clock_info().restart_count() > before.clock_info().restart_count(),
        "a TPM restart must advance resetCount or restartCount"
    );
    ensure!(backend.transient_handles()?.len() == 1);
    Ok(())
}

/// tpm2-tools' credential file: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT,
/// TPM2B_ENCRYPTED_SECRET.
fn parse_tools_credential(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    ensure!(bytes.len() > 12 && bytes[..4] == [0xba, 0xdc, 0xc0, 0xde]);
    ensure!(bytes[4..8] == [0, 0, 0, 1]);
    let mut rest = &bytes[8..];
    let mut take = || -> Result<Vec<u8>> {
        ensure!(rest.len() >= 2);
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        ensure!(rest.len() >= 2 + len);
        let value = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        Ok(value)
    };
    let blob = take()?;
    let secret = take()?;
    Ok((blob, secret))
}

fn make_credential_with_tools(
    tpm: &Swtpm,
    ek_public: &[u8],
    object_name: &[u8],
    secret: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let dir = tpm.scratch();
    let ek_file = dir.join("ek.pub");
    let mut tpm2b = u16::try_from(ek_public.len())?.to_be_bytes().to_vec();
    tpm2b.extend_from_slice(ek_public);
    std::fs::write(&ek_file, tpm2b)?;
    std::fs::write(dir.join("secret.bin"), secret)?;
    run(Command::new("tpm2_makecredential")
        .args(["-T", "none", "-u"])
        .arg(&ek_file)
        .arg("-s")
        .arg(dir.join("secret.bin"))
        .arg("-n")
        .arg(hex::encode(object_name))
        .arg("-o")
        .arg(dir.join("cred.out")))?;
    parse_tools_credential(&std::fs::read(dir.join("cred.out"))?)
}

#[test]
fn activate_credential_releases_the_secret_for_the_ak_only() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let backend = open(&tpm, state.path())?;
    let key = backend.create_key("enrolling")?;
    let ev = tpm_evidence(backend.attest(&key.id, b"enrollment nonce")?)?;
    let ek_public = b64(&ev.ek_public)?;
    let ak_name = name_of(&b64(&ev.ak_public)?);

    let secret: [u8; 32] = Sha256::digest(b"the verifier's challenge").into();
    let (blob, encrypted) = make_credential_with_tools(&tpm, &ek_public, &ak_name, &secret)?;
    let started = std::time::Instant::now();
    let released = backend.activate_credential(&blob, &encrypted)?;
    println!(
        "activate_credential: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    ensure!(released == secret, "wrong secret released");
    ensure!(
        backend.transient_handles()?.len() == 1,
        "activation leaked a handle"
    );

    // A credential for another object (the signing key) is refused by the TPM.
    let key_name = name_of(&b64(&ev.key_public)?);
    let (blob, encrypted) = make_credential_with_tools(&tpm, &ek_public, &key_name, &secret)?;
    let refused = backend.activate_credential(&blob, &encrypted);
    ensure!(
        refused.is_err(),
        "credential for another name must not activate"
    );

    // Tampered blob.
    let (mut blob, encrypted) = make_credential_with_tools(&tpm, &ek_public, &ak_name, &secret)?;
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let refused = backend.activate_credential(&blob, &encrypted);
    ensure!(
        matches!(refused, Err(BackendError::InvalidInput(_))),
        "{refused:?}"
    );

    // Size bounds are checked before the TPM sees anything.
    ensure!(matches!(
        backend.activate_credential(&[0u8; 4096], &encrypted),
        Err(BackendError::InvalidInput(_))
    ));
    ensure!(matches!(
        backend.activate_credential(&[], &encrypted),
        Err(BackendError::InvalidInput(_))
    ));
    ensure!(
        backend.transient_handles()?.len() == 1,
        "failed activations leaked a handle"
    );

    // Still works after the failures.
    let (blob, encrypted) = make_credential_with_tools(&tpm, &ek_public, &ak_name, &secret)?;
    ensure!(backend.activate_credential(&blob, &encrypted)? == secret);
    Ok(())
}
