//! Public-key verification shared by TPM signatures and X.509 certificate links: RSA PKCS#1 v1.5
//! and ECDSA on P-256 / P-384, over a digest the caller computed.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::BoxedUint;
use rsa::pkcs1v15::Pkcs1v15Sign;
use sha2::{Sha256, Sha384, Sha512};

use super::alg::{EccCurve, HashAlg};

/// A verification key of one of the supported kinds.
#[derive(Debug, Clone)]
pub(crate) enum VerifyKey {
    /// RSA (PKCS#1 v1.5 signatures).
    Rsa(rsa::PublicKey),
    /// ECDSA P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA P-384.
    P384(p384::ecdsa::VerifyingKey),
}

/// The key material was not a valid public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidKey;

impl VerifyKey {
    /// RSA from a big-endian modulus and the exponent.
    pub(crate) fn rsa(modulus: &[u8], exponent: u32) -> Result<Self, InvalidKey> {
        let key = rsa_public_key(modulus, exponent)?;
        Ok(Self::Rsa(key))
    }

    /// ECDSA from affine coordinates (left-padded to the curve size here).
    pub(crate) fn ecc(curve: EccCurve, x: &[u8], y: &[u8]) -> Result<Self, InvalidKey> {
        let point = sec1_uncompressed(curve, x, y)?;
        Self::ecc_sec1(curve, &point)
    }

    /// ECDSA from a SEC1 encoded point.
    pub(crate) fn ecc_sec1(curve: EccCurve, point: &[u8]) -> Result<Self, InvalidKey> {
        match curve {
            EccCurve::NistP256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(Self::P256)
                .map_err(|_| InvalidKey),
            EccCurve::NistP384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(Self::P384)
                .map_err(|_| InvalidKey),
        }
    }

    /// Verifies an RSASSA-PKCS1-v1_5 signature over `digest` made with `hash`.
    pub(crate) fn verify_pkcs1(&self, hash: HashAlg, digest: &[u8], signature: &[u8]) -> bool {
        let Self::Rsa(key) = self else {
            return false;
        };
        let scheme = match hash {
            HashAlg::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            HashAlg::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
            HashAlg::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        };
        key.verify(scheme, digest, signature).is_ok()
    }

    /// Verifies an RSASSA-PKCS1-v1_5 signature over a SHA-1 digest (legacy certificate links
    /// only; TPM structures never accept SHA-1).
    pub(crate) fn verify_pkcs1_sha1(&self, digest: &[u8], signature: &[u8]) -> bool {
        let Self::Rsa(key) = self else {
            return false;
        };
        key.verify(Pkcs1v15Sign::new::<sha1::Sha1>(), digest, signature)
            .is_ok()
    }

    /// Verifies an ECDSA signature given as big-endian `r` and `s` (left-padded here, since TPMs
    /// drop leading zeros). High-S values are accepted: TPMs do not normalize them.
    pub(crate) fn verify_ecdsa(&self, digest: &[u8], r: &[u8], s: &[u8]) -> bool {
        match self {
            Self::P256(key) => {
                let Some(raw) = pad_pair::<64>(r, s) else {
                    return false;
                };
                p256::ecdsa::Signature::from_slice(&raw)
                    .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok())
            }
            Self::P384(key) => {
                let Some(raw) = pad_pair::<96>(r, s) else {
                    return false;
                };
                p384::ecdsa::Signature::from_slice(&raw)
                    .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok())
            }
            Self::Rsa(_) => false,
        }
    }

    /// Verifies a DER ECDSA signature (as in X.509).
    pub(crate) fn verify_ecdsa_der(&self, digest: &[u8], der: &[u8]) -> bool {
        match self {
            Self::P256(key) => p256::ecdsa::Signature::from_der(der)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
            Self::P384(key) => p384::ecdsa::Signature::from_der(der)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
            Self::Rsa(_) => false,
        }
    }
}

/// An RSA public key from big-endian modulus bytes and an exponent.
pub(crate) fn rsa_public_key(modulus: &[u8], exponent: u32) -> Result<rsa::PublicKey, InvalidKey> {
    let modulus = strip_leading_zeros(modulus);
    if modulus.is_empty() {
        return Err(InvalidKey);
    }
    let n = BoxedUint::from_be_slice_vartime(modulus);
    let e = BoxedUint::from(u64::from(exponent));
    rsa::PublicKey::new(n, e).map_err(|_| InvalidKey)
}

/// `04 ‖ x ‖ y` with both coordinates left-padded to the curve size.
pub(crate) fn sec1_uncompressed(
    curve: EccCurve,
    x: &[u8],
    y: &[u8],
) -> Result<Vec<u8>, InvalidKey> {
    let size = curve.coordinate_size();
    let x = strip_leading_zeros(x);
    let y = strip_leading_zeros(y);
    if x.len() > size || y.len() > size {
        return Err(InvalidKey);
    }
    let mut point = vec![0u8; 1 + 2 * size];
    point[0] = 4;
    point[1 + size - x.len()..1 + size].copy_from_slice(x);
    point[1 + 2 * size - y.len()..].copy_from_slice(y);
    Ok(point)
}

/// Left-pads `r` and `s` into one `N`-byte buffer (`N / 2` each).
fn pad_pair<const N: usize>(r: &[u8], s: &[u8]) -> Option<[u8; N]> {
    let half = N / 2;
    let r = strip_leading_zeros(r);
    let s = strip_leading_zeros(s);
    if r.len() > half || s.len() > half {
        return None;
    }
    let mut raw = [0u8; N];
    raw[half - r.len()..half].copy_from_slice(r);
    raw[N - s.len()..].copy_from_slice(s);
    Some(raw)
}

/// The slice without leading zero bytes.
pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or(&[])
}
