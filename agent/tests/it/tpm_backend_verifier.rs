//! The TPM backend's evidence through the verifier's own attestation code (no libtss2 there):
//! `verify_evidence` accepts it, and a credential from the verifier's software MakeCredential
//! is released by the real TPM's ActivateCredential.
#![cfg(feature = "tpm")]

use std::time::SystemTime;

use anyhow::{Result, bail, ensure};
use hwsign_agent::backends::KeyBackend;
use hwsign_agent::backends::tpm::{TpmBackend, TpmConfig};
use hwsign_proto::attestation::{Evidence, TpmEvidence};
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::attestation::{TrustAnchors, make_credential, verify_evidence};

fn tpm_evidence(evidence: Evidence) -> Result<TpmEvidence> {
    match evidence {
        Evidence::Tpm(tpm) => Ok(tpm),
        other => bail!("expected TPM evidence, got {other:?}"),
    }
}

#[test]
fn verifier_accepts_evidence_and_tpm_activates_its_credential() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    let state = tempfile::tempdir()?;
    let config = TpmConfig {
        tcti: tpm.tcti(),
        ..TpmConfig::default()
    };
    let backend = TpmBackend::open(&config, state.path())?;
    let key = backend.create_key("enrolled")?;
    let anchors = TrustAnchors::from_pem_files(&[tpm.ca_root_pem()], &[tpm.ca_intermediate_pem()])?;

    let nonce = b"fresh verifier nonce";
    let evidence = tpm_evidence(backend.attest(&key.id, nonce)?)?;
    let attested = verify_evidence(&evidence, nonce, &anchors, SystemTime::now(), None)?;
    ensure!(attested.public_key == key.public_key);
    ensure!(attested.key_id == key.id);

    // Bound to the nonce: the same evidence under another nonce is refused.
    ensure!(verify_evidence(&evidence, b"other nonce", &anchors, SystemTime::now(), None).is_err());

    // Enrollment step 2-3: the verifier wraps a secret to the EK for the AK's name; only this
    // TPM releases it.
    let secret = *b"0123456789abcdef0123456789abcdef";
    let made = make_credential(&attested.ek_public, &attested.ak_name, &secret)?;
    let released = backend.activate_credential(&made.credential_blob, &made.encrypted_secret)?;
    ensure!(released == secret);

    // A later attestation does not go backwards from the recorded clock.
    let later = tpm_evidence(backend.attest(&key.id, b"second nonce")?)?;
    let again = verify_evidence(
        &later,
        b"second nonce",
        &anchors,
        SystemTime::now(),
        Some(attested.clock),
    )?;
    ensure!(again.ak_name == attested.ak_name);
    ensure!(backend.transient_handles()?.len() == 1);
    Ok(())
}

#[test]
fn ecc_p384_ek_is_used_when_it_is_the_only_certificate() -> Result<()> {
    let tpm = Swtpm::start_tcp()?;
    // Remove the RSA-2048 EK certificate (swtpm's platform auth is empty), leaving P-384.
    let output = tpm
        .tool("tpm2_nvundefine")
        .args(["-C", "p", "0x01c00002"])
        .output()?;
    ensure!(output.status.success(), "{output:?}");

    let state = tempfile::tempdir()?;
    let config = TpmConfig {
        tcti: tpm.tcti(),
        ..TpmConfig::default()
    };
    let backend = TpmBackend::open(&config, state.path())?;
    let key = backend.create_key("ecc ek")?;
    let anchors = TrustAnchors::from_pem_files(&[tpm.ca_root_pem()], &[tpm.ca_intermediate_pem()])?;
    let nonce = b"p384 nonce";
    let evidence = tpm_evidence(backend.attest(&key.id, nonce)?)?;
    ensure!(evidence.ek_certificate_nv_index == 0x01c0_0016);
    let attested = verify_evidence(&evidence, nonce, &anchors, SystemTime::now(), None)?;
    ensure!(attested.key_id == key.id);

    // ECC credential protection (ECDH + KDFe) against the real TPM.
    let secret = [0x5au8; 32];
    let made = make_credential(&attested.ek_public, &attested.ak_name, &secret)?;
    let released = backend.activate_credential(&made.credential_blob, &made.encrypted_secret)?;
    ensure!(released == secret);
    ensure!(backend.transient_handles()?.len() == 1);
    Ok(())
}
