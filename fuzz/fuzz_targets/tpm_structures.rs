//! The verifier's TPM structure and EK certificate parsers (server-verifier/src/attestation/) on
//! arbitrary bytes, and the crypto that runs on what they return.
//!
//! Every input goes through every parser: TPMS_ATTEST, TPMT_PUBLIC, TPM2B_PUBLIC,
//! TPMT_SIGNATURE, DER certificate, EK certificate, PEM bundle. A public area that parses is also
//! used as an EK for MakeCredential (hostile RSA moduli and curve points). An input that splits as
//! `TPM2B(TPMT_PUBLIC) ‖ TPM2B(message) ‖ TPMT_SIGNATURE` (a "bundle" seed) is also verified,
//! and checked as a certify and as a quote.
//!
//! Invariants: nothing panics; a parsed public area keeps exactly the bytes it came from, and its
//! Name is nameAlg plus a digest of the right size.
#![no_main]

use std::time::{Duration, SystemTime};

use hwsign_fuzz::split_tpm2b;
use hwsign_verifier::attestation::attest::TpmAttest;
use hwsign_verifier::attestation::certificate::ParsedCertificate;
use hwsign_verifier::attestation::checks::{
    check_ak_attributes, check_ak_under_ek, check_certify, check_quote, check_signing_key,
};
use hwsign_verifier::attestation::ek_cert::EkCertificate;
use hwsign_verifier::attestation::signature::{TpmSignature, verify_tpm_signature};
use hwsign_verifier::attestation::{TpmPublic, make_credential};
use libfuzzer_sys::fuzz_target;

/// 2026-01-01T00:00:00Z: a fixed "now" keeps runs reproducible.
const NOW_UNIX: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let _ = TpmAttest::parse(data);
    let _ = TpmSignature::parse(data);
    if let Ok(public) = TpmPublic::parse(data) {
        assert_eq!(public.as_bytes(), data);
        exercise_public(&public);
    }
    if let Ok(public) = TpmPublic::parse_tpm2b(data) {
        assert_eq!(Some(public.as_bytes()), data.get(2..));
        exercise_public(&public);
    }
    certificates(data);
    if let Some((public, rest)) = split_tpm2b(data) {
        if let Some((message, signature)) = split_tpm2b(rest) {
            bundle(public, message, signature);
        }
    }
});

fn exercise_public(public: &TpmPublic) {
    let name = public.name();
    assert_eq!(name.len(), 2 + public.name_alg.size());
    assert_eq!(name[..2], public.name_alg.tpm_id().to_be_bytes());
    let _ = public.qualified_name(&name);
    let _ = public.rsa_exponent();
    let _ = check_ak_attributes(public);
    let _ = check_signing_key(public);
    // As an EK: RSA-OAEP or ECDH with whatever key material the bytes hold.
    let _ = make_credential(public, &name, &[0x5a; 16]);
}

fn certificates(data: &[u8]) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_UNIX);
    if let Ok(certificate) = ParsedCertificate::from_der(data) {
        assert_eq!(certificate.der(), data);
        let _ = certificate.certified_key();
        let _ = certificate.fingerprint_sha256();
        let _ = certificate.is_valid_at(now);
        // Self-signed check: walks the hand-written TBSCertificate locator and the key import.
        let _ = certificate.verifies(&certificate, Default::default());
    }
    if let Ok(ek) = EkCertificate::from_der(data) {
        let _ = ek.manufacturer_info();
    }
    if let Ok(bundle) = ParsedCertificate::from_pem_bundle(data) {
        for certificate in &bundle {
            let _ = certificate.certified_key();
        }
    }
}

fn bundle(public: &[u8], message: &[u8], signature: &[u8]) {
    let (Ok(public), Ok(signature)) = (TpmPublic::parse(public), TpmSignature::parse(signature))
    else {
        return;
    };
    let _ = verify_tpm_signature(&public, message, &signature);
    if let Ok(attest) = TpmAttest::parse(message) {
        let nonce = attest.extra_data.clone();
        let _ = check_certify(message, &attest, &signature, &public, &public, &nonce);
        let _ = check_quote(
            message,
            &attest,
            &signature,
            &public,
            &[[0u8; 32]; 8],
            &nonce,
        );
        let _ = check_ak_under_ek(&attest, &public, &public);
    }
    if let Ok(ek) = EkCertificate::from_der(message) {
        let _ = ek.check_certifies(&public);
    }
}
