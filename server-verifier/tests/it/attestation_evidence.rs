//! verify_evidence against real TPM2_Certify and TPM2_Quote output from swtpm, and each refusal
//! with its own error.

use crate::attestation_support;

use std::time::SystemTime;

use anyhow::Result;
use attestation_support::{AK, KEY, TpmRig, nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_proto::attestation::TpmEvidence;
use hwsign_verifier::attestation::reader::{ParseError, ParseFailure};
use hwsign_verifier::attestation::{
    AttestationError, AttributeProblem, Structure, TpmPublic, verify_evidence,
};

/// Re-encodes one base64 evidence field after `change`.
fn tamper(field: &mut String, change: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
    let mut bytes = STANDARD.decode(&*field)?;
    change(&mut bytes);
    *field = STANDARD.encode(bytes);
    Ok(())
}

fn verify(
    rig: &TpmRig,
    evidence: &TpmEvidence,
    nonce: &[u8],
) -> Result<Result<(), AttestationError>> {
    let anchors = rig.anchors()?;
    Ok(verify_evidence(evidence, nonce, &anchors, SystemTime::now(), None).map(|_| ()))
}

#[test]
fn real_certify_and_quote_verify() -> Result<()> {
    let rig = TpmRig::new()?;
    // A PCR that is not all zeros, so the digest check compares real values.
    rig.extend_pcr(7, &[0x42; 32])?;
    let nonce = nonce()?;
    let evidence = rig.evidence(&nonce)?;
    let attested = verify_evidence(&evidence, &nonce, &rig.anchors()?, SystemTime::now(), None)?;

    let key_public = TpmPublic::parse(&rig.public_area(KEY)?)?;
    assert_eq!(attested.ak_name, rig.name_from_tools(AK)?);
    assert_eq!(key_public.name(), rig.name_from_tools(KEY)?);
    assert!(attested.key_id.starts_with("hk1_"));
    assert_eq!(attested.key_id, attested.public_key.key_id());
    assert_eq!(attested.pcrs_sha256.len(), 8);
    assert_ne!(attested.pcrs_sha256[7], [0u8; 32]);
    assert_eq!(
        attested.manufacturer.manufacturer.as_deref(),
        Some("id:00001014")
    );
    assert_eq!(attested.manufacturer.model.as_deref(), Some("swtpm"));
    assert!(attested.manufacturer.version.is_some());
    assert_eq!(attested.ek_certificate_fingerprint_sha256.len(), 64);
    // The AK is in the endorsement hierarchy, so its clock info is not obfuscated.
    assert!(attested.clock.reset_count < 100);
    Ok(())
}

#[test]
fn rsa_ak_verifies_too() -> Result<()> {
    let rig = TpmRig::new()?;
    let rsa_ak = 0x8100_0013;
    rig.create_ak(rsa_ak, &["-G", "rsa", "-g", "sha256", "-s", "rsassa"])?;
    let nonce = nonce()?;
    let evidence = rig.evidence_with(rsa_ak, KEY, &nonce)?;
    let attested = verify_evidence(&evidence, &nonce, &rig.anchors()?, SystemTime::now(), None)?;
    assert_eq!(attested.ak_name, rig.name_from_tools(rsa_ak)?);
    Ok(())
}

#[test]
fn tampered_evidence_is_refused_with_its_reason() -> Result<()> {
    let rig = TpmRig::new()?;
    let nonce = nonce()?;
    let evidence = rig.evidence(&nonce)?;
    assert!(verify(&rig, &evidence, &nonce)?.is_ok());

    // Another nonce: the evidence is stale or replayed.
    let mut other_nonce = nonce;
    other_nonce[0] ^= 1;
    assert_eq!(
        verify(&rig, &evidence, &other_nonce)?,
        Err(AttestationError::NonceMismatch {
            structure: Structure::Certify
        })
    );

    // Not made by the TPM.
    let mut bad = evidence.clone();
    tamper(&mut bad.certify_info, |bytes| bytes[0] ^= 0xff)?;
    assert!(matches!(
        verify(&rig, &bad, &nonce)?,
        Err(AttestationError::BadMagic {
            structure: Structure::Certify,
            ..
        })
    ));

    // Certify output with the quote's type.
    let mut bad = evidence.clone();
    bad.certify_info = evidence.quote_info.clone();
    bad.certify_signature = evidence.quote_signature.clone();
    assert!(matches!(
        verify(&rig, &bad, &nonce)?,
        Err(AttestationError::WrongType {
            structure: Structure::Certify,
            expected: 0x8017,
            found: 0x8018
        })
    ));

    // One changed byte inside the signed data (the firmware version).
    let mut bad = evidence.clone();
    tamper(&mut bad.certify_info, |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
    })?;
    assert!(matches!(
        verify(&rig, &bad, &nonce)?,
        Err(AttestationError::CertifiedNameMismatch | AttestationError::Signature { .. })
    ));
    let mut bad = evidence.clone();
    tamper(&mut bad.quote_signature, |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
    })?;
    assert!(matches!(
        verify(&rig, &bad, &nonce)?,
        Err(AttestationError::Signature {
            structure: Structure::QuoteSignature,
            ..
        })
    ));

    // Truncated structures.
    for field in [
        "certify_info",
        "quote_info",
        "key_public",
        "ak_public",
        "certify_signature",
    ] {
        let mut bad = evidence.clone();
        let target = match field {
            "certify_info" => &mut bad.certify_info,
            "quote_info" => &mut bad.quote_info,
            "key_public" => &mut bad.key_public,
            "ak_public" => &mut bad.ak_public,
            _ => &mut bad.certify_signature,
        };
        tamper(target, |bytes| bytes.truncate(bytes.len() - 1))?;
        let result = verify(&rig, &bad, &nonce)?;
        assert!(
            matches!(
                result,
                Err(AttestationError::Parse {
                    source: ParseFailure {
                        error: ParseError::Truncated { .. },
                        ..
                    },
                    ..
                })
            ),
            "{field}: {result:?}"
        );
    }

    // PCR values that are not the quoted ones.
    let mut bad = evidence.clone();
    bad.pcrs_sha256[3] = "11".repeat(32);
    assert_eq!(
        verify(&rig, &bad, &nonce)?,
        Err(AttestationError::PcrDigestMismatch)
    );

    // Not base64.
    let mut bad = evidence.clone();
    bad.ak_public = "***".into();
    assert_eq!(
        verify(&rig, &bad, &nonce)?,
        Err(AttestationError::Encoding { field: "ak_public" })
    );
    Ok(())
}

#[test]
fn certify_of_another_key_is_refused() -> Result<()> {
    let rig = TpmRig::new()?;
    let other = 0x8100_0012;
    rig.create_key(
        other,
        "ecc256:ecdsa-sha256",
        attestation_support::SIGNING_KEY_ATTRIBUTES,
    )?;
    let nonce = nonce()?;
    let mut evidence = rig.evidence(&nonce)?;
    // The certify is over KEY; present the other key's public area.
    evidence.key_public = STANDARD.encode(rig.public_area(other)?);
    assert_eq!(
        verify(&rig, &evidence, &nonce)?,
        Err(AttestationError::CertifiedNameMismatch)
    );
    Ok(())
}

#[test]
fn unrestricted_ak_is_refused() -> Result<()> {
    let rig = TpmRig::new()?;
    // An ordinary signing key can certify and quote, but it would also sign any digest, so a
    // forged TPMS_ATTEST could carry its signature.
    let fake_ak = 0x8100_0014;
    rig.create_key(
        fake_ak,
        "ecc256:ecdsa-sha256",
        attestation_support::SIGNING_KEY_ATTRIBUTES,
    )?;
    let nonce = nonce()?;
    let evidence = rig.evidence_with(fake_ak, KEY, &nonce)?;
    assert_eq!(
        verify(&rig, &evidence, &nonce)?,
        Err(AttestationError::AkAttributes(
            AttributeProblem::NotRestricted
        ))
    );
    Ok(())
}

#[test]
fn duplicable_key_is_refused() -> Result<()> {
    let rig = TpmRig::new()?;
    let duplicable = 0x8100_0015;
    rig.create_key(
        duplicable,
        "ecc256:ecdsa-sha256",
        "sensitivedataorigin|userwithauth|sign",
    )?;
    let nonce = nonce()?;
    let evidence = rig.evidence_with(AK, duplicable, &nonce)?;
    assert_eq!(
        verify(&rig, &evidence, &nonce)?,
        Err(AttestationError::KeyAttributes(
            AttributeProblem::NotFixedTpm
        ))
    );
    Ok(())
}

#[test]
fn ak_outside_the_endorsement_hierarchy_is_refused() -> Result<()> {
    let rig = TpmRig::new()?;
    // Restricted signing key with all the right attributes, but under the owner's storage
    // primary: its clock values are obfuscated and it is not the certified EK's child.
    let owner_ak = 0x8100_0016;
    rig.create_key(
        owner_ak,
        "ecc256:ecdsa-sha256:null",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )?;
    let nonce = nonce()?;
    let evidence = rig.evidence_with(owner_ak, KEY, &nonce)?;
    assert_eq!(
        verify(&rig, &evidence, &nonce)?,
        Err(AttestationError::AkNotUnderEk)
    );
    Ok(())
}
