//! EK certificates from swtpm's NV: parsing (TPM manufacturer attributes in the SAN), the chain to
//! swtpm's local CA, and the match with the EK public area.

use crate::attestation_support;

use std::time::{Duration, SystemTime};

use anyhow::Result;
use attestation_support::{EK_P384, EK_P384_CERT_NV, EK_RSA, EK_RSA_CERT_NV, TpmRig};
use hwsign_verifier::attestation::alg::{EccCurve, HashAlg};
use hwsign_verifier::attestation::certificate::ParsedCertificate;
use hwsign_verifier::attestation::chain::{ChainError, verify_chain};
use hwsign_verifier::attestation::ek_cert::{EkCertificate, EkCertificateError};
use hwsign_verifier::attestation::public::{ObjectAttributes, PublicKeyArea};
use hwsign_verifier::attestation::{TpmPublic, TrustAnchors};

#[test]
fn real_ek_structures_parse_and_match() -> Result<()> {
    let rig = TpmRig::new()?;

    let rsa_ek = TpmPublic::parse(&rig.public_area(EK_RSA)?)?;
    assert_eq!(rsa_ek.name_alg, HashAlg::Sha256);
    assert!(rsa_ek.attributes.contains(
        ObjectAttributes::FIXED_TPM | ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT
    ));
    assert_eq!(rsa_ek.auth_policy.len(), 32);
    let symmetric = rsa_ek
        .symmetric
        .ok_or_else(|| anyhow::anyhow!("no symmetric"))?;
    assert_eq!(
        (symmetric.algorithm, symmetric.key_bits, symmetric.mode),
        (0x0006, 128, 0x0043)
    );
    assert_eq!(rsa_ek.rsa_exponent(), Some(65_537));
    assert_eq!(rsa_ek.name(), rig.name_from_tools(EK_RSA)?);

    let p384_ek = TpmPublic::parse(&rig.public_area(EK_P384)?)?;
    assert_eq!(p384_ek.name_alg, HashAlg::Sha384);
    assert!(matches!(
        p384_ek.key,
        PublicKeyArea::Ecc {
            curve: EccCurve::NistP384,
            ..
        }
    ));
    assert_eq!(p384_ek.symmetric.map(|s| s.key_bits), Some(256));
    assert_eq!(p384_ek.name(), rig.name_from_tools(EK_P384)?);

    let rsa_cert = EkCertificate::from_der(&rig.ek_certificate(EK_RSA_CERT_NV)?)?;
    rsa_cert.check_certifies(&rsa_ek)?;
    assert_eq!(
        rsa_cert.check_certifies(&p384_ek),
        Err(EkCertificateError::KeyMismatch)
    );
    let info = rsa_cert.manufacturer_info();
    assert_eq!(info.manufacturer.as_deref(), Some("id:00001014"));
    assert_eq!(info.model.as_deref(), Some("swtpm"));
    assert_eq!(info.version.as_deref(), Some("id:20191023"));

    let p384_cert = EkCertificate::from_der(&rig.ek_certificate(EK_P384_CERT_NV)?)?;
    p384_cert.check_certifies(&p384_ek)?;
    assert_eq!(
        p384_cert.check_certifies(&rsa_ek),
        Err(EkCertificateError::KeyMismatch)
    );
    // The same bytes swtpm_setup wrote out.
    let file = std::fs::read(rig.tpm.ek_cert_dir().join("ek-secp384r1.crt"))?;
    assert_eq!(p384_cert.certificate().der(), file.as_slice());
    Ok(())
}

#[test]
fn ek_chains_to_its_local_ca_only() -> Result<()> {
    let rig = TpmRig::new()?;
    let now = SystemTime::now();
    for nv_index in [EK_RSA_CERT_NV, EK_P384_CERT_NV] {
        let cert = EkCertificate::from_der(&rig.ek_certificate(nv_index)?)?;
        verify_chain(cert.certificate(), &[], &rig.anchors()?, now)?;

        // The root alone does not reach the leaf; the intermediate sent by the device does.
        let root_only = TrustAnchors::from_pem(&std::fs::read(rig.tpm.ca_root_pem())?, b"")?;
        assert!(matches!(
            verify_chain(cert.certificate(), &[], &root_only, now),
            Err(ChainError::UnknownIssuer { .. })
        ));
        let intermediate =
            ParsedCertificate::from_pem_bundle(&std::fs::read(rig.tpm.ca_intermediate_pem())?)?;
        verify_chain(cert.certificate(), &intermediate, &root_only, now)?;

        // The intermediate as a root is not a configured root.
        let intermediate_as_root =
            TrustAnchors::from_pem(&std::fs::read(rig.tpm.ca_intermediate_pem())?, b"")?;
        verify_chain(cert.certificate(), &[], &intermediate_as_root, now)?;

        // Before the certificates existed.
        assert!(matches!(
            verify_chain(
                cert.certificate(),
                &[],
                &rig.anchors()?,
                SystemTime::UNIX_EPOCH
            ),
            Err(ChainError::OutsideValidity { .. })
        ));
        // Far past notAfter (9999-12-31).
        let year_10000 = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400);
        assert!(matches!(
            verify_chain(cert.certificate(), &[], &rig.anchors()?, year_10000),
            Err(ChainError::OutsideValidity { .. })
        ));
    }

    // Another swtpm's CA has the same names but other keys.
    let stranger = hwsign_test_support::swtpm::Swtpm::start()?;
    let stranger_anchors =
        TrustAnchors::from_pem_files(&[stranger.ca_root_pem()], &[stranger.ca_intermediate_pem()])?;
    let cert = EkCertificate::from_der(&rig.ek_certificate(EK_RSA_CERT_NV)?)?;
    let result = verify_chain(
        cert.certificate(),
        &[],
        &stranger_anchors,
        SystemTime::now(),
    );
    assert!(
        matches!(result, Err(ChainError::BadSignature { .. })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn untrusted_ek_certificate_fails_verify_evidence() -> Result<()> {
    let rig = TpmRig::new()?;
    let stranger = hwsign_test_support::swtpm::Swtpm::start()?;
    let stranger_anchors =
        TrustAnchors::from_pem_files(&[stranger.ca_root_pem()], &[stranger.ca_intermediate_pem()])?;
    let nonce = attestation_support::nonce()?;
    let evidence = rig.evidence(&nonce)?;
    let result = hwsign_verifier::attestation::verify_evidence(
        &evidence,
        &nonce,
        &stranger_anchors,
        SystemTime::now(),
        None,
    );
    assert!(matches!(
        result,
        Err(hwsign_verifier::attestation::AttestationError::Chain(
            ChainError::BadSignature { .. }
        ))
    ));
    Ok(())
}

#[test]
fn malformed_certificates_are_refused() {
    assert!(EkCertificate::from_der(b"").is_err());
    assert!(EkCertificate::from_der(&[0x30, 0x82, 0xff, 0xff, 0x30]).is_err());
    assert!(EkCertificate::from_der(&vec![0x30; 100_000]).is_err());
    assert!(TrustAnchors::from_pem(b"not pem", b"").is_err());
}
