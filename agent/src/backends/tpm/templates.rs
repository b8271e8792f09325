//! Key templates and the checks applied to what the TPM returns for them.

use hwsign_proto::PublicKey;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{
    EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public,
    PublicBuilder, PublicEccParametersBuilder, SymmetricDefinitionObject,
};

use super::error::TpmError;

fn build_error(what: &'static str) -> impl Fn(tss_esapi::Error) -> TpmError {
    move |e| TpmError::Unexpected(format!("building the {what} template: {e}"))
}

/// The ECC P-256 storage root key (TCG Provisioning Guidance SRK template: restricted decrypt,
/// AES-128-CFB, noDA, userWithAuth, zero-filled 32-byte unique). CreatePrimary over the same
/// template in the owner hierarchy yields the same key until the owner seed changes (TPM2_Clear).
pub(crate) fn srk() -> Result<Public, TpmError> {
    let err = build_error("SRK");
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(&err)?;
    let parameters = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(&err)?;
    let zero = EccParameter::try_from(vec![0u8; 32]).map_err(&err)?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::new(zero.clone(), zero))
        .build()
        .map_err(&err)
}

/// The signing key: ECC P-256, ECDSA-SHA256, fixedTPM|fixedParent|sensitiveDataOrigin|
/// userWithAuth|sign. Not restricted, so it signs external digests; no decrypt.
pub(crate) fn signing_key() -> Result<Public, TpmError> {
    let err = build_error("signing key");
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(&err)?;
    let parameters = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(false)
        .build()
        .map_err(&err)?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(&err)
}

/// The P-256 public key of a TPM ECC public area, after checking it is what [`signing_key`]
/// asked for (a blob file could have been swapped for another key's).
pub(crate) fn signing_public_key(public: &Public) -> Result<PublicKey, TpmError> {
    let Public::Ecc {
        object_attributes,
        parameters,
        unique,
        ..
    } = public
    else {
        return Err(TpmError::Unexpected("signing key is not an ECC key".into()));
    };
    if parameters.ecc_curve() != EccCurve::NistP256 {
        return Err(TpmError::Unexpected("signing key is not on P-256".into()));
    }
    let attrs = object_attributes;
    if !(attrs.fixed_tpm()
        && attrs.fixed_parent()
        && attrs.sensitive_data_origin()
        && attrs.sign_encrypt())
        || attrs.restricted()
        || attrs.decrypt()
    {
        return Err(TpmError::Unexpected(
            "signing key attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|sign".into(),
        ));
    }
    ecc_point_key(unique)
}

/// The P-256 key of an ECC point (coordinates may be shorter than 32 bytes).
pub(crate) fn ecc_point_key(point: &EccPoint) -> Result<PublicKey, TpmError> {
    PublicKey::from_affine(point.x().value(), point.y().value())
        .map_err(|e| TpmError::Unexpected(format!("TPM public point: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_template_has_the_promised_attributes() -> Result<(), TpmError> {
        let public = signing_key()?;
        let attrs = public.object_attributes();
        assert!(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.sensitive_data_origin());
        assert!(attrs.user_with_auth() && attrs.sign_encrypt());
        assert!(!attrs.restricted() && !attrs.decrypt() && !attrs.admin_with_policy());
        Ok(())
    }

    #[test]
    fn srk_template_is_a_restricted_decryption_key() -> Result<(), TpmError> {
        let attrs = srk()?.object_attributes();
        assert!(attrs.restricted() && attrs.decrypt() && !attrs.sign_encrypt());
        assert!(attrs.fixed_tpm() && attrs.fixed_parent() && attrs.no_da());
        Ok(())
    }
}
