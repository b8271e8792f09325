//! The individual checks of enrollment: key attributes, TPM2_Certify and TPM2_Quote.

use subtle::ConstantTimeEq as _;

use super::alg::{EccCurve, TPM_ALG_SHA256};
use super::attest::{
    Attested, TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, TPM_ST_ATTEST_QUOTE, TpmAttest,
};
use super::error::{AttestationError, AttributeProblem, Structure};
use super::public::{ObjectAttributes, PublicKeyArea, TpmPublic};
use super::signature::{TpmSignature, verify_tpm_signature};

/// Number of PCRs quoted (0–7: firmware, boot loader, configuration).
pub const QUOTED_PCRS: usize = 8;

/// Checks an attestation key: restricted, signing, fixedTPM, fixedParent, sensitiveDataOrigin,
/// not decrypt.
pub fn check_ak_attributes(ak: &TpmPublic) -> Result<(), AttestationError> {
    let attributes = ak.attributes;
    check_resident(attributes).map_err(AttestationError::AkAttributes)?;
    if !attributes.contains(ObjectAttributes::RESTRICTED) {
        return Err(AttestationError::AkAttributes(
            AttributeProblem::NotRestricted,
        ));
    }
    Ok(())
}

/// Checks a request-signing key: fixedTPM, fixedParent, sensitiveDataOrigin, sign, not
/// restricted, not decrypt, ECC P-256.
pub fn check_signing_key(key: &TpmPublic) -> Result<(), AttestationError> {
    let attributes = key.attributes;
    check_resident(attributes).map_err(AttestationError::KeyAttributes)?;
    if attributes.contains(ObjectAttributes::RESTRICTED) {
        return Err(AttestationError::KeyAttributes(
            AttributeProblem::Restricted,
        ));
    }
    match key.key {
        PublicKeyArea::Ecc {
            curve: EccCurve::NistP256,
            ..
        } => Ok(()),
        _ => Err(AttestationError::KeyAlgorithm),
    }
}

/// The attributes both the AK and a signing key need: generated in, and bound to, this TPM, and
/// signing only.
fn check_resident(attributes: ObjectAttributes) -> Result<(), AttributeProblem> {
    let required = [
        (ObjectAttributes::FIXED_TPM, AttributeProblem::NotFixedTpm),
        (
            ObjectAttributes::FIXED_PARENT,
            AttributeProblem::NotFixedParent,
        ),
        (
            ObjectAttributes::SENSITIVE_DATA_ORIGIN,
            AttributeProblem::NotSensitiveDataOrigin,
        ),
        (ObjectAttributes::SIGN, AttributeProblem::NotSigning),
    ];
    for (bit, problem) in required {
        if !attributes.contains(bit) {
            return Err(problem);
        }
    }
    if attributes.contains(ObjectAttributes::DECRYPT) {
        return Err(AttributeProblem::Decrypt);
    }
    Ok(())
}

/// TPM_RH_ENDORSEMENT: the Qualified Name of the endorsement hierarchy itself.
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000b;

/// Checks that `attest` was signed by `ak` as a direct child of the primary `ek` in the
/// endorsement hierarchy (the TPM reports the signer's Qualified Name in every attestation).
pub fn check_ak_under_ek(
    attest: &TpmAttest,
    ak: &TpmPublic,
    ek: &TpmPublic,
) -> Result<(), AttestationError> {
    let ek_qualified_name = ek.qualified_name(&TPM_RH_ENDORSEMENT.to_be_bytes());
    let expected = ak.qualified_name(&ek_qualified_name);
    if attest.qualified_signer != expected {
        return Err(AttestationError::AkNotUnderEk);
    }
    Ok(())
}

/// Checks the parts every AK-signed attestation shares: magic, type, nonce, signature.
/// `structure` is [`Structure::Certify`] or [`Structure::Quote`].
fn check_attestation(
    structure: Structure,
    attest_bytes: &[u8],
    attest: &TpmAttest,
    signature: &TpmSignature,
    ak: &TpmPublic,
    nonce: &[u8],
) -> Result<(), AttestationError> {
    let (expected_type, signature_structure) = match structure {
        Structure::Quote => (TPM_ST_ATTEST_QUOTE, Structure::QuoteSignature),
        _ => (TPM_ST_ATTEST_CERTIFY, Structure::CertifySignature),
    };
    if attest.magic != TPM_GENERATED_VALUE {
        return Err(AttestationError::BadMagic {
            structure,
            found: attest.magic,
        });
    }
    if attest.attest_type != expected_type {
        return Err(AttestationError::WrongType {
            structure,
            expected: expected_type,
            found: attest.attest_type,
        });
    }
    if !bool::from(attest.extra_data.ct_eq(nonce)) {
        return Err(AttestationError::NonceMismatch { structure });
    }
    verify_tpm_signature(ak, attest_bytes, signature)
        .map_err(AttestationError::signature(signature_structure))
}

/// Checks TPM2_Certify output: made by the TPM, over `nonce`, for the object whose public area is
/// `key`, signed by `ak`.
pub fn check_certify(
    attest_bytes: &[u8],
    attest: &TpmAttest,
    signature: &TpmSignature,
    ak: &TpmPublic,
    key: &TpmPublic,
    nonce: &[u8],
) -> Result<(), AttestationError> {
    check_attestation(
        Structure::Certify,
        attest_bytes,
        attest,
        signature,
        ak,
        nonce,
    )?;
    let Attested::Certify { name, .. } = &attest.attested else {
        return Err(AttestationError::WrongType {
            structure: Structure::Certify,
            expected: TPM_ST_ATTEST_CERTIFY,
            found: attest.attest_type,
        });
    };
    if name.as_slice() != key.name().as_slice() {
        return Err(AttestationError::CertifiedNameMismatch);
    }
    Ok(())
}

/// Checks TPM2_Quote output: made by the TPM, over `nonce`, selecting exactly sha256 PCRs 0–7,
/// whose digest is that of `pcrs` (in index order), signed by `ak`.
pub fn check_quote(
    attest_bytes: &[u8],
    attest: &TpmAttest,
    signature: &TpmSignature,
    ak: &TpmPublic,
    pcrs: &[[u8; 32]],
    nonce: &[u8],
) -> Result<(), AttestationError> {
    check_attestation(Structure::Quote, attest_bytes, attest, signature, ak, nonce)?;
    let Attested::Quote {
        pcr_select,
        pcr_digest,
    } = &attest.attested
    else {
        return Err(AttestationError::WrongType {
            structure: Structure::Quote,
            expected: TPM_ST_ATTEST_QUOTE,
            found: attest.attest_type,
        });
    };
    let [selection] = pcr_select.as_slice() else {
        return Err(AttestationError::PcrSelection);
    };
    let selects_0_to_7 = selection.select.first() == Some(&0xff)
        && selection.select.iter().skip(1).all(|&byte| byte == 0);
    if selection.hash != TPM_ALG_SHA256 || !selects_0_to_7 || pcrs.len() != QUOTED_PCRS {
        return Err(AttestationError::PcrSelection);
    }
    // The TPM hashes the selected PCR values with the signing scheme's hash.
    let parts: Vec<&[u8]> = pcrs.iter().map(|pcr| pcr.as_slice()).collect();
    let expected = signature.hash().digest(&parts);
    if !bool::from(expected.ct_eq(pcr_digest)) {
        return Err(AttestationError::PcrDigestMismatch);
    }
    Ok(())
}
