//! TPM2_MakeCredential in software (TPM 2.0 Part 1 "Credential Protection", Part 3
//! TPM2_MakeCredential): wraps a secret so that only the TPM holding the EK, and only for an
//! object with the given Name (the AK), will release it through TPM2_ActivateCredential.

use aes::cipher::KeyIvInit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use getrandom_sys_rng::SysRng;
use hwsign_proto::attestation::ActivateCredentialRequest;
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use rsa::Oaep;
use sha2::{Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq as _;
use thiserror::Error;
use zeroize::Zeroizing;

use super::alg::{EccCurve, HashAlg, TPM_ALG_AES, TPM_ALG_CFB};
use super::crypto::{rsa_public_key, sec1_uncompressed};
use super::kdf::{hmac, kdf_a, kdf_e};
use super::public::{ObjectAttributes, PublicKeyArea, TpmPublic};
use super::reader::put_tpm2b;

/// Label of the seed (OAEP label, KDFe "Use"); the TPM includes the terminating NUL.
const IDENTITY: &[u8] = b"IDENTITY";
/// KDFa label for the credential encryption key.
const STORAGE: &[u8] = b"STORAGE";
/// KDFa label for the integrity HMAC key.
const INTEGRITY: &[u8] = b"INTEGRITY";

/// What TPM2_MakeCredential returns, as the contents of its two TPM2Bs.
#[derive(Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT contents: TPM2B_DIGEST(integrity HMAC) ‖ encrypted identity.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents: the OAEP ciphertext of the seed (RSA EK), or the
    /// marshalled TPMS_ECC_POINT of the ephemeral public key (ECC EK).
    pub encrypted_secret: Vec<u8>,
}

impl std::fmt::Debug for MadeCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MadeCredential")
            .field("credential_blob_len", &self.credential_blob.len())
            .field("encrypted_secret_len", &self.encrypted_secret.len())
            .finish()
    }
}

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The EK is not a restricted decryption (storage) key, so the TPM would refuse it.
    #[error("the EK is not a restricted decryption key")]
    NotStorageKey,
    /// The EK's symmetric definition is missing or not AES-CFB with 128 or 256-bit keys.
    #[error("unsupported EK symmetric definition")]
    UnsupportedSymmetric,
    /// The EK's public key is not usable.
    #[error("invalid EK public key")]
    InvalidEkKey,
    /// The secret is empty or longer than the EK's name hash (the TPM's own bound).
    #[error("secret must be 1..={max} bytes, got {len}")]
    SecretSize {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The object name is empty or too long for a TPM2B_NAME.
    #[error("invalid object name")]
    InvalidName,
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
    /// RSA-OAEP encryption of the seed failed.
    #[error("seed encryption failed")]
    Encryption,
}

impl MadeCredential {
    /// The wire form of enrollment step 3 (`POST /v1/keys/{id}/activate-credential`).
    pub fn to_request(&self) -> ActivateCredentialRequest {
        ActivateCredentialRequest {
            credential_blob: STANDARD.encode(&self.credential_blob),
            encrypted_secret: STANDARD.encode(&self.encrypted_secret),
        }
    }
}

/// A fresh 32-byte activation secret (fits every EK name hash, SHA-256 and up).
pub fn new_activation_secret() -> Result<Zeroizing<[u8; 32]>, CredentialError> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom_sys_rng::fill(secret.as_mut()).map_err(|_| CredentialError::Random)?;
    Ok(secret)
}

/// Compares the secret the agent returned with the one sent, in constant time.
pub fn activation_secret_matches(expected: &[u8], returned: &[u8]) -> bool {
    bool::from(expected.ct_eq(returned))
}

/// Makes a credential for the object named `object_name` (the AK's Name), protected by `ek`.
pub fn make_credential(
    ek: &TpmPublic,
    object_name: &[u8],
    secret: &[u8],
) -> Result<MadeCredential, CredentialError> {
    if !ek
        .attributes
        .contains(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT)
    {
        return Err(CredentialError::NotStorageKey);
    }
    let symmetric = ek.symmetric.ok_or(CredentialError::UnsupportedSymmetric)?;
    if symmetric.algorithm != TPM_ALG_AES
        || symmetric.mode != TPM_ALG_CFB
        || !matches!(symmetric.key_bits, 128 | 256)
    {
        return Err(CredentialError::UnsupportedSymmetric);
    }
    let name_alg = ek.name_alg;
    if secret.is_empty() || secret.len() > name_alg.size() {
        return Err(CredentialError::SecretSize {
            len: secret.len(),
            max: name_alg.size(),
        });
    }
    if object_name.is_empty() || object_name.len() > 2 + super::alg::MAX_DIGEST_SIZE {
        return Err(CredentialError::InvalidName);
    }

    let (seed, encrypted_secret) = match &ek.key {
        PublicKeyArea::Rsa { modulus, .. } => {
            let exponent = ek.rsa_exponent().ok_or(CredentialError::InvalidEkKey)?;
            rsa_seed(name_alg, modulus, exponent)?
        }
        PublicKeyArea::Ecc { curve, x, y, .. } => ecc_seed(name_alg, *curve, x, y)?,
    };

    let sym_key = kdf_a(
        name_alg,
        &seed,
        STORAGE,
        object_name,
        &[],
        u32::from(symmetric.key_bits),
    );
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(2 + secret.len()));
    put_tpm2b(&mut enc_identity, secret).ok_or(CredentialError::SecretSize {
        len: secret.len(),
        max: name_alg.size(),
    })?;
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;

    let hmac_key = kdf_a(
        name_alg,
        &seed,
        INTEGRITY,
        &[],
        &[],
        (name_alg.size() * 8) as u32,
    );
    let outer_hmac = hmac(name_alg, &hmac_key, &[&enc_identity, object_name]);

    let mut credential_blob = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    put_tpm2b(&mut credential_blob, &outer_hmac).ok_or(CredentialError::InvalidName)?;
    credential_blob.extend_from_slice(&enc_identity);
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
    })
}

/// A random seed of the name hash's size, OAEP-encrypted to the EK with label "IDENTITY\0".
fn rsa_seed(
    name_alg: HashAlg,
    modulus: &[u8],
    exponent: u32,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CredentialError> {
    let key = rsa_public_key(modulus, exponent).map_err(|_| CredentialError::InvalidEkKey)?;
    let mut seed = Zeroizing::new(vec![0u8; name_alg.size()]);
    getrandom_sys_rng::fill(&mut seed).map_err(|_| CredentialError::Random)?;
    let mut label = IDENTITY.to_vec();
    label.push(0);
    let mut rng = SysRng;
    let encrypted = match name_alg {
        HashAlg::Sha256 => key.encrypt(&mut rng, Oaep::<Sha256>::new_with_label(label), &seed),
        HashAlg::Sha384 => key.encrypt(&mut rng, Oaep::<Sha384>::new_with_label(label), &seed),
        HashAlg::Sha512 => key.encrypt(&mut rng, Oaep::<Sha512>::new_with_label(label), &seed),
    }
    .map_err(|_| CredentialError::Encryption)?;
    Ok((seed, encrypted))
}

/// An ephemeral ECDH on the EK's curve; seed = KDFe(nameAlg, Z, "IDENTITY", ephemeral x, EK x).
fn ecc_seed(
    name_alg: HashAlg,
    curve: EccCurve,
    ek_x: &[u8],
    ek_y: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CredentialError> {
    let ek_point =
        sec1_uncompressed(curve, ek_x, ek_y).map_err(|_| CredentialError::InvalidEkKey)?;
    let (z, ephemeral_point) = match curve {
        EccCurve::NistP256 => {
            let ek = p256::PublicKey::from_sec1_bytes(&ek_point)
                .map_err(|_| CredentialError::InvalidEkKey)?;
            let ephemeral = p256::ecdh::EphemeralSecret::try_generate_from_rng(&mut SysRng)
                .map_err(|_| CredentialError::Random)?;
            let shared = ephemeral.diffie_hellman(&ek);
            let z = Zeroizing::new(shared.raw_secret_bytes().to_vec());
            let point = ephemeral
                .public_key()
                .to_sec1_point(false)
                .as_bytes()
                .to_vec();
            (z, point)
        }
        EccCurve::NistP384 => {
            let ek = p384::PublicKey::from_sec1_bytes(&ek_point)
                .map_err(|_| CredentialError::InvalidEkKey)?;
            let ephemeral = p384::ecdh::EphemeralSecret::try_generate_from_rng(&mut SysRng)
                .map_err(|_| CredentialError::Random)?;
            let shared = ephemeral.diffie_hellman(&ek);
            let z = Zeroizing::new(shared.raw_secret_bytes().to_vec());
            let point = ephemeral
                .public_key()
                .to_sec1_point(false)
                .as_bytes()
                .to_vec();
            (z, point)
        }
    };
    let size = curve.coordinate_size();
    let ephemeral_x = ephemeral_point
        .get(1..1 + size)
        .ok_or(CredentialError::InvalidEkKey)?;
    let ephemeral_y = ephemeral_point
        .get(1 + size..)
        .ok_or(CredentialError::InvalidEkKey)?;
    let seed = kdf_e(
        name_alg,
        &z,
        IDENTITY,
        ephemeral_x,
        ek_x,
        (name_alg.size() * 8) as u32,
    );
    let mut encrypted_secret = Vec::with_capacity(4 + 2 * size);
    put_tpm2b(&mut encrypted_secret, ephemeral_x).ok_or(CredentialError::InvalidEkKey)?;
    put_tpm2b(&mut encrypted_secret, ephemeral_y).ok_or(CredentialError::InvalidEkKey)?;
    Ok((seed, encrypted_secret))
}

/// AES-CFB with a zero IV, in place; the key length picks AES-128 or AES-256.
fn aes_cfb_encrypt(key: &[u8], buffer: &mut [u8]) -> Result<(), CredentialError> {
    let iv = [0u8; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .map_err(|_| CredentialError::UnsupportedSymmetric)?
            .encrypt(buffer),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(|_| CredentialError::UnsupportedSymmetric)?
            .encrypt(buffer),
        _ => return Err(CredentialError::UnsupportedSymmetric),
    }
    Ok(())
}
