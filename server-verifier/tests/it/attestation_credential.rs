//! Software MakeCredential against the real TPM: what make_credential produces must come back out
//! of TPM2_ActivateCredential in swtpm, for the RSA-2048 EK and the ECC P-384 EK, and only for the
//! AK it was made for.

use crate::attestation_support;

use anyhow::Result;
use attestation_support::{AK, EK_P256, EK_P384, EK_RSA, TpmRig, nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_verifier::attestation::credential::CredentialError;
use hwsign_verifier::attestation::public::PublicKeyArea;
use hwsign_verifier::attestation::{
    TpmPublic, activation_secret_matches, make_credential, new_activation_secret,
};

#[test]
fn rsa_ek_credential_activates_in_the_tpm() -> Result<()> {
    let rig = TpmRig::new()?;
    let ek = TpmPublic::parse(&rig.public_area(EK_RSA)?)?;
    assert!(matches!(ek.key, PublicKeyArea::Rsa { key_bits: 2048, .. }));
    let ak_name = TpmPublic::parse(&rig.public_area(AK)?)?.name();
    let secret = new_activation_secret()?;

    let made = make_credential(&ek, &ak_name, secret.as_slice())?;
    let request = made.to_request();
    assert_eq!(
        STANDARD.decode(&request.credential_blob)?,
        made.credential_blob
    );
    assert_eq!(
        STANDARD.decode(&request.encrypted_secret)?,
        made.encrypted_secret
    );
    // TPM2B_DIGEST(sha256 HMAC) ‖ AES-CFB(TPM2B(secret)); a 2048-bit OAEP ciphertext.
    assert_eq!(made.credential_blob.len(), 2 + 32 + 2 + secret.len());
    assert_eq!(made.encrypted_secret.len(), 256);
    let activated = rig.activate(AK, EK_RSA, &made.credential_blob, &made.encrypted_secret)?;
    assert!(activation_secret_matches(secret.as_slice(), &activated));
    assert!(!activation_secret_matches(
        secret.as_slice(),
        &activated[1..]
    ));
    Ok(())
}

#[test]
fn p384_ek_credential_activates_in_the_tpm() -> Result<()> {
    let rig = TpmRig::new()?;
    let ek = TpmPublic::parse(&rig.public_area(EK_P384)?)?;
    assert!(matches!(ek.key, PublicKeyArea::Ecc { .. }));
    let ak_name = TpmPublic::parse(&rig.public_area(AK)?)?.name();
    // The P-384 template hashes names with SHA-384: secrets up to 48 bytes.
    let secret: Vec<u8> = (0u8..48).collect();

    let made = make_credential(&ek, &ak_name, &secret)?;
    assert_eq!(made.credential_blob.len(), 2 + 48 + 2 + secret.len());
    // TPMS_ECC_POINT of the ephemeral key.
    assert_eq!(made.encrypted_secret.len(), 2 + 48 + 2 + 48);
    let activated = rig.activate(AK, EK_P384, &made.credential_blob, &made.encrypted_secret)?;
    assert_eq!(activated, secret);
    Ok(())
}

#[test]
fn p256_ek_credential_activates_in_the_tpm() -> Result<()> {
    let rig = TpmRig::new()?;
    rig.create_p256_ek()?;
    let ek = TpmPublic::parse(&rig.public_area(EK_P256)?)?;
    assert!(matches!(ek.key, PublicKeyArea::Ecc { .. }));
    let ak_name = TpmPublic::parse(&rig.public_area(AK)?)?.name();
    let secret = nonce()?;

    let made = make_credential(&ek, &ak_name, &secret)?;
    assert_eq!(made.encrypted_secret.len(), 2 + 32 + 2 + 32);
    let activated = rig.activate(AK, EK_P256, &made.credential_blob, &made.encrypted_secret)?;
    assert_eq!(activated, secret);
    Ok(())
}

#[test]
fn credential_for_another_name_does_not_activate() -> Result<()> {
    let rig = TpmRig::new()?;
    let ek = TpmPublic::parse(&rig.public_area(EK_RSA)?)?;
    let mut wrong_name = TpmPublic::parse(&rig.public_area(AK)?)?.name();
    wrong_name[5] ^= 1;
    let made = make_credential(&ek, &wrong_name, b"for some other key")?;
    assert!(
        rig.activate(AK, EK_RSA, &made.credential_blob, &made.encrypted_secret)
            .is_err()
    );

    // A flipped bit in the blob breaks the integrity HMAC.
    let ak_name = TpmPublic::parse(&rig.public_area(AK)?)?.name();
    let mut made = make_credential(&ek, &ak_name, b"secret")?;
    let last = made.credential_blob.len() - 1;
    made.credential_blob[last] ^= 1;
    assert!(
        rig.activate(AK, EK_RSA, &made.credential_blob, &made.encrypted_secret)
            .is_err()
    );
    Ok(())
}

#[test]
fn make_credential_refuses_bad_inputs() -> Result<()> {
    let rig = TpmRig::new()?;
    let ek = TpmPublic::parse(&rig.public_area(EK_RSA)?)?;
    let ak = TpmPublic::parse(&rig.public_area(AK)?)?;
    assert!(matches!(
        make_credential(&ek, &ak.name(), &[0u8; 33]),
        Err(CredentialError::SecretSize { len: 33, max: 32 })
    ));
    assert!(matches!(
        make_credential(&ek, &ak.name(), &[]),
        Err(CredentialError::SecretSize { .. })
    ));
    assert!(matches!(
        make_credential(&ek, &[], b"secret"),
        Err(CredentialError::InvalidName)
    ));
    // The AK is a signing key, not a storage key: the TPM would refuse to use it.
    assert!(matches!(
        make_credential(&ak, &ak.name(), b"secret"),
        Err(CredentialError::NotStorageKey)
    ));
    Ok(())
}
